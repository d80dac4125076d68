package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// ToDevice is a send-to-device message for one device.
type ToDevice struct {
	UserID, DeviceID string
	Pos              int64
	Sender, Type     string
	Content          json.RawMessage
}

// toDeviceBatch is how many inbox rows one INSERT carries (6 arguments
// each, well under both engines' limits).
const toDeviceBatch = 500

// InsertToDevice stores messages in their devices' inboxes, in as few
// statements as the batch size allows. Messages already there (same
// device and position: a redelivered EDU) are left as they are.
func InsertToDevice(ctx context.Context, tx *sqlutil.Tx, msgs []ToDevice) error {
	return sqlutil.InBatches(msgs, toDeviceBatch, func(batch []ToDevice) error {
		var q strings.Builder
		q.WriteString(`INSERT INTO sync_to_device_inbox (user_id, device_id, pos, sender, type, content) VALUES `)
		args := make([]any, 0, len(batch)*6)
		for i, m := range batch {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, m.UserID, m.DeviceID, m.Pos, m.Sender, m.Type, string(m.Content))
		}
		q.WriteString(` ON CONFLICT (user_id, device_id, pos) DO NOTHING`)
		_, err := tx.ExecContext(ctx, q.String(), args...)
		return err
	})
}

// ToDeviceSince returns a device's messages at positions in (from, to], in
// order, at most limit of them.
func ToDeviceSince(ctx context.Context, q sqlutil.Querier, userID, deviceID string, from, to int64, limit int) ([]ToDevice, error) {
	rows, err := q.QueryContext(ctx, `SELECT pos, sender, type, content FROM sync_to_device_inbox
		WHERE user_id = ? AND device_id = ? AND pos > ? AND pos <= ? ORDER BY pos LIMIT ?`, userID, deviceID, from, to, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (ToDevice, error) {
		m := ToDevice{UserID: userID, DeviceID: deviceID}
		var c string
		err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &c)
		m.Content = json.RawMessage(c)
		return m, err
	})
}

// DeleteToDeviceUpTo deletes the messages a device has acknowledged: those
// at positions up to upTo.
func DeleteToDeviceUpTo(ctx context.Context, q sqlutil.Querier, userID, deviceID string, upTo int64) error {
	_, err := q.ExecContext(ctx, `DELETE FROM sync_to_device_inbox WHERE user_id = ? AND device_id = ? AND pos <= ?`, userID, deviceID, upTo)
	return err
}

// DeleteToDeviceOfDevices empties the inboxes of deleted devices.
func DeleteToDeviceOfDevices(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) error {
	return sqlutil.InBatches(deviceIDs, 500, func(batch []string) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sync_to_device_inbox WHERE user_id = ? AND device_id IN (`+sqlutil.InList(len(batch))+`)`,
			sqlutil.Args(batch, userID)...)
		return err
	})
}

// ToDeviceInbox is the range of positions a device's inbox holds.
type ToDeviceInbox struct {
	UserID, DeviceID string
	Min, Max         int64
}

// ToDeviceInboxes lists the devices with messages waiting.
func ToDeviceInboxes(ctx context.Context, q sqlutil.Querier) ([]ToDeviceInbox, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, device_id, MIN(pos), MAX(pos) FROM sync_to_device_inbox GROUP BY user_id, device_id`)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (ToDeviceInbox, error) {
		var b ToDeviceInbox
		err := rows.Scan(&b.UserID, &b.DeviceID, &b.Min, &b.Max)
		return b, err
	})
}

// ToDevicePos returns the highest to-device position handed out.
func ToDevicePos(ctx context.Context, q sqlutil.Querier) (int64, error) {
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT pos FROM sync_to_device_stream WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return pos, err
}

// SetToDevicePos records the highest to-device position handed out.
func SetToDevicePos(ctx context.Context, tx *sqlutil.Tx, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_to_device_stream (id, pos) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET pos = excluded.pos`, pos)
	return err
}

// ToDeviceTxn identifies a /sendToDevice transaction of a device.
type ToDeviceTxn struct {
	UserID, DeviceID, EventType, TxnID string
}

// ToDeviceTxnSeen reports whether a device already made a transaction.
func ToDeviceTxnSeen(ctx context.Context, q sqlutil.Querier, t *ToDeviceTxn) (bool, error) {
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT pos FROM sync_to_device_txns WHERE user_id = ? AND device_id = ? AND event_type = ? AND txn_id = ?`,
		t.UserID, t.DeviceID, t.EventType, t.TxnID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// InsertToDeviceTxn records a transaction; inserted is false when it was
// recorded already (a concurrent retry got there first).
func InsertToDeviceTxn(ctx context.Context, tx *sqlutil.Tx, t *ToDeviceTxn, pos, ts int64) (inserted bool, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO sync_to_device_txns (user_id, device_id, event_type, txn_id, pos, ts) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, device_id, event_type, txn_id) DO NOTHING`, t.UserID, t.DeviceID, t.EventType, t.TxnID, pos, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// InsertToDeviceFederationSeen records an EDU taken in from origin;
// inserted is false when it was taken in before.
func InsertToDeviceFederationSeen(ctx context.Context, tx *sqlutil.Tx, origin, messageID string, ts int64) (inserted bool, err error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO sync_to_device_federation_seen (origin, message_id, ts) VALUES (?, ?, ?)
		ON CONFLICT (origin, message_id) DO NOTHING`, origin, messageID, ts)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PruneToDevice forgets the transactions recorded before txnBefore and the
// federation EDUs taken in before fedBefore (milliseconds).
func PruneToDevice(ctx context.Context, q sqlutil.Querier, txnBefore, fedBefore int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM sync_to_device_txns WHERE ts < ?`, txnBefore); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `DELETE FROM sync_to_device_federation_seen WHERE ts < ?`, fedBefore)
	return err
}

// ToDeviceOutbound is an m.direct_to_device EDU waiting to be published on
// FederationOut.
type ToDeviceOutbound struct {
	Pos         int64
	Destination string
	MsgID       string
	Payload     json.RawMessage
}

// InsertToDeviceOutbox queues EDUs in the transaction of their request.
func InsertToDeviceOutbox(ctx context.Context, tx *sqlutil.Tx, edus []ToDeviceOutbound) error {
	return sqlutil.InBatches(edus, 500, func(batch []ToDeviceOutbound) error {
		var q strings.Builder
		q.WriteString(`INSERT INTO sync_to_device_outbox (pos, destination, msg_id, payload) VALUES `)
		args := make([]any, 0, len(batch)*4)
		for i, e := range batch {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?, ?, ?, ?)")
			args = append(args, e.Pos, e.Destination, e.MsgID, string(e.Payload))
		}
		_, err := tx.ExecContext(ctx, q.String(), args...)
		return err
	})
}

// SelectToDeviceOutbox returns queued EDUs in position order.
func SelectToDeviceOutbox(ctx context.Context, q sqlutil.Querier, limit int) ([]ToDeviceOutbound, error) {
	rows, err := q.QueryContext(ctx, `SELECT pos, destination, msg_id, payload FROM sync_to_device_outbox ORDER BY pos, destination LIMIT ?`, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (ToDeviceOutbound, error) {
		var e ToDeviceOutbound
		var p string
		err := rows.Scan(&e.Pos, &e.Destination, &e.MsgID, &p)
		e.Payload = json.RawMessage(p)
		return e, err
	})
}

// DeleteToDeviceOutbox removes published EDUs (those up to and including
// the position and destination of last, in the outbox's order).
func DeleteToDeviceOutbox(ctx context.Context, q sqlutil.Querier, last *ToDeviceOutbound) error {
	_, err := q.ExecContext(ctx, `DELETE FROM sync_to_device_outbox WHERE pos < ? OR (pos = ? AND destination <= ?)`,
		last.Pos, last.Pos, last.Destination)
	return err
}
