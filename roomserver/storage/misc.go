package storage

import (
	"context"
	"database/sql"
	"errors"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// SelectTxn returns the event a device's transaction produced, or "".
func SelectTxn(ctx context.Context, q sqlutil.Querier, userID, deviceID, key string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT event_id FROM rs_txns WHERE user_id = ? AND device_id = ? AND txn_key = ?`, userID, deviceID, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// SelectTxnOfEvent returns the key of the device's transaction that made
// the event, or "".
func SelectTxnOfEvent(ctx context.Context, q sqlutil.Querier, userID, deviceID, eventID string) (string, error) {
	var key sql.NullString
	err := q.QueryRowContext(ctx, `SELECT MIN(txn_key) FROM rs_txns WHERE event_id = ? AND user_id = ? AND device_id = ?`,
		eventID, userID, deviceID).Scan(&key)
	return key.String, err
}

// InsertTxn records the event a device's transaction produced.
func InsertTxn(ctx context.Context, tx *sqlutil.Tx, userID, deviceID, key, eventID string, ts int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rs_txns (user_id, device_id, txn_key, event_id, created_ts) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, userID, deviceID, key, eventID, ts)
	return err
}

// InsertRedaction records a redaction of target.
func InsertRedaction(ctx context.Context, tx *sqlutil.Tx, redactionID, targetID string, applied bool) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rs_redactions (redaction_event_id, redacts_event_id, applied) VALUES (?, ?, ?)
		ON CONFLICT (redaction_event_id) DO UPDATE SET applied = excluded.applied`, redactionID, targetID, applied)
	return err
}

// SelectPendingRedactions returns the unapplied redactions of target.
func SelectPendingRedactions(ctx context.Context, q sqlutil.Querier, targetID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT redaction_event_id FROM rs_redactions WHERE redacts_event_id = ? AND NOT applied`, targetID)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}

// InsertAlias maps an alias to a room; ErrExists if it is taken.
func InsertAlias(ctx context.Context, q sqlutil.Querier, alias, roomID, creator string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO rs_aliases (alias, room_id, creator) VALUES (?, ?, ?)`, alias, roomID, creator)
	if sqlutil.IsUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// SelectAlias returns an alias's room and creator, or ErrNotFound.
func SelectAlias(ctx context.Context, q sqlutil.Querier, alias string) (roomID, creator string, err error) {
	err = q.QueryRowContext(ctx, `SELECT room_id, creator FROM rs_aliases WHERE alias = ?`, alias).Scan(&roomID, &creator)
	return roomID, creator, sqlutil.NotFound(err)
}

// DeleteAlias removes an alias and returns its room and creator.
func DeleteAlias(ctx context.Context, tx *sqlutil.Tx, alias string) (roomID, creator string, err error) {
	err = tx.QueryRowContext(ctx, `DELETE FROM rs_aliases WHERE alias = ? RETURNING room_id, creator`, alias).Scan(&roomID, &creator)
	return roomID, creator, sqlutil.NotFound(err)
}

// SelectAliasesForRoom lists a room's aliases.
func SelectAliasesForRoom(ctx context.Context, q sqlutil.Querier, roomID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT alias FROM rs_aliases WHERE room_id = ? ORDER BY alias`, roomID)
	out, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []string{} // never nil: GET /rooms/{roomId}/aliases serves it as a JSON array
	}
	return out, nil
}

// SetPublished adds a room to the published directory or removes it.
func SetPublished(ctx context.Context, q sqlutil.Querier, roomID string, published bool, ts int64) error {
	if !published {
		_, err := q.ExecContext(ctx, `DELETE FROM rs_published_rooms WHERE room_id = ?`, roomID)
		return err
	}
	_, err := q.ExecContext(ctx, `INSERT INTO rs_published_rooms (room_id, published_ts) VALUES (?, ?) ON CONFLICT (room_id) DO NOTHING`, roomID, ts)
	return err
}

// SelectPublished reports whether a room is in the directory.
func SelectPublished(ctx context.Context, q sqlutil.Querier, roomID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM rs_published_rooms WHERE room_id = ?`, roomID).Scan(&n)
	return n > 0, err
}

// PublishedRoom is a directory entry with its member count.
type PublishedRoom struct {
	RoomNID       int64
	RoomID        string
	JoinedMembers int64
}

// SetAppServicePublished adds a room to the directory of an application
// service's network, or removes it.
func SetAppServicePublished(ctx context.Context, q sqlutil.Querier, appServiceID, networkID, roomID string, published bool, ts int64) error {
	if !published {
		_, err := q.ExecContext(ctx, `DELETE FROM rs_appservice_rooms WHERE appservice_id = ? AND network_id = ? AND room_id = ?`,
			appServiceID, networkID, roomID)
		return err
	}
	_, err := q.ExecContext(ctx, `INSERT INTO rs_appservice_rooms (appservice_id, network_id, room_id, published_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (appservice_id, network_id, room_id) DO NOTHING`, appServiceID, networkID, roomID, ts)
	return err
}

// Directory lists SelectPublishedRooms reads: the server's own, one
// network of an application service, or both kinds (as Synapse's
// network_tuple: (None, None), (service, network) or None).
const (
	ownDirectory   = `SELECT room_id FROM rs_published_rooms`
	networkRooms   = `SELECT room_id FROM rs_appservice_rooms WHERE appservice_id = ? AND network_id = ?`
	allDirectories = ownDirectory + ` UNION SELECT room_id FROM rs_appservice_rooms`
)

// SelectPublishedRooms lists the published rooms, most joined first: of
// every directory when all is set, else of the network of appServiceID, or
// the server's own directory when appServiceID is "".
func SelectPublishedRooms(ctx context.Context, q sqlutil.Querier, all bool, appServiceID, networkID string) ([]PublishedRoom, error) {
	list, args := ownDirectory, []any(nil)
	switch {
	case all:
		list = allDirectories
	case appServiceID != "":
		list, args = networkRooms, []any{appServiceID, networkID}
	}
	rows, err := q.QueryContext(ctx, `SELECT r.room_nid, r.room_id, r.joined_members FROM (`+list+`) p
		JOIN rs_rooms r ON r.room_id = p.room_id ORDER BY r.joined_members DESC, r.room_id`, args...)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (PublishedRoom, error) {
		var p PublishedRoom
		err := rows.Scan(&p.RoomNID, &p.RoomID, &p.JoinedMembers)
		return p, err
	})
}

// inputPositions keeps the last RoomInput sequence each partition applied.
var inputPositions = bus.PositionTable{Table: "rs_input_positions", Key: "partition_id", Seq: "last_seq"}

// SelectInputPosition returns the last RoomInput sequence a partition applied.
func SelectInputPosition(ctx context.Context, q sqlutil.Querier, partition int) (uint64, error) {
	return inputPositions.Get(ctx, q, partition)
}

// UpdateInputPosition records the last RoomInput sequence a partition applied.
func UpdateInputPosition(ctx context.Context, tx *sqlutil.Tx, partition int, seq uint64) error {
	return inputPositions.Set(ctx, tx, partition, seq)
}

// OutboxMessage is a RoomOutput message waiting to be published.
type OutboxMessage = bus.OutboxRow

// outbox is rs_outbox: RoomOutput in commit order.
var outbox = bus.OutboxTable("rs_outbox")

// InsertOutbox queues a message in the transaction that produced it.
func InsertOutbox(ctx context.Context, tx *sqlutil.Tx, subject, msgID string, payload []byte) error {
	return outbox.Insert(ctx, tx, subject, msgID, payload)
}

// SelectOutbox returns queued messages in commit order.
func SelectOutbox(ctx context.Context, q sqlutil.Querier, limit int) ([]OutboxMessage, error) {
	return outbox.Select(ctx, q, limit)
}

// DeleteOutbox removes published messages.
func DeleteOutbox(ctx context.Context, q sqlutil.Querier, ids []int64) error {
	return outbox.Delete(ctx, q, ids)
}
