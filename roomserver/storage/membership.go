package storage

import (
	"context"
	"database/sql"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Membership is a user's current membership of a room.
type Membership struct {
	RoomNID    int64
	UserID     string
	Membership string
	EventNID   int64
	Forgotten  bool
}

// UpsertMembership records a user's current membership, logs the
// membership event, and clears "forgotten" with any new membership event
// (as Synapse: a room is forgotten while the member event that was current
// when the user forgot it still is). A join or the end of one also counts
// in rs_joined_servers (see SelectJoinedServers). It returns the previous
// membership ("" for none).
func UpsertMembership(ctx context.Context, tx *sqlutil.Tx, roomNID int64, userID, membership string, eventNID int64) (string, error) {
	var prev string
	err := tx.QueryRowContext(ctx, `SELECT membership FROM rs_membership WHERE room_nid = ? AND user_id = ?`, roomNID, userID).Scan(&prev)
	if err != nil && sqlutil.NotFound(err) != ErrNotFound {
		return "", err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO rs_membership (room_nid, user_id, membership, event_nid) VALUES (?, ?, ?, ?)
		ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
		forgotten = CASE WHEN excluded.event_nid = rs_membership.event_nid THEN rs_membership.forgotten ELSE FALSE END`,
		roomNID, userID, membership, eventNID)
	if err != nil {
		return "", err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO rs_member_events (room_nid, user_id, event_nid, membership) VALUES (?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, roomNID, userID, eventNID, membership)
	if err != nil {
		return "", err
	}
	if was, is := prev == joined, membership == joined; was != is {
		err = countJoinedServer(ctx, tx, roomNID, userID, is)
	}
	return prev, err
}

const joined = "join"

// countJoinedServer adds one joined user of userID's server to a room
// (join) or takes one away; a server with none left is no longer listed.
// A user ID without a server name (which no room's auth rules let join)
// counts for no server.
func countJoinedServer(ctx context.Context, tx *sqlutil.Tx, roomNID int64, userID string, join bool) error {
	_, server, err := gomatrixserverlib.SplitID('@', userID)
	if err != nil {
		return nil
	}
	if join {
		_, err = tx.ExecContext(ctx, `INSERT INTO rs_joined_servers (room_nid, server_name, joined) VALUES (?, ?, 1)
			ON CONFLICT (room_nid, server_name) DO UPDATE SET joined = rs_joined_servers.joined + 1`, roomNID, string(server))
		return err
	}
	if _, err = tx.ExecContext(ctx, `UPDATE rs_joined_servers SET joined = joined - 1 WHERE room_nid = ? AND server_name = ?`,
		roomNID, string(server)); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM rs_joined_servers WHERE room_nid = ? AND server_name = ? AND joined <= 0`, roomNID, string(server))
	return err
}

// SelectJoinedServers lists, sorted, the servers with a user joined to a
// room: one row a server, whatever the number of members.
func SelectJoinedServers(ctx context.Context, q sqlutil.Querier, roomNID int64) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT server_name FROM rs_joined_servers WHERE room_nid = ? ORDER BY server_name`, roomNID)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (string, error) {
		var s string
		err := rows.Scan(&s)
		return s, err
	})
}

// ServerJoined reports whether a user of server is joined to a room.
func ServerJoined(ctx context.Context, q sqlutil.Querier, roomNID int64, server string) (bool, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT joined FROM rs_joined_servers WHERE room_nid = ? AND server_name = ?`, roomNID, server).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return n > 0, err
}

// SelectMembership returns the user's current membership, or ErrNotFound.
func SelectMembership(ctx context.Context, q sqlutil.Querier, roomNID int64, userID string) (*Membership, error) {
	m := Membership{RoomNID: roomNID, UserID: userID}
	err := q.QueryRowContext(ctx, `SELECT membership, event_nid, forgotten FROM rs_membership WHERE room_nid = ? AND user_id = ?`,
		roomNID, userID).Scan(&m.Membership, &m.EventNID, &m.Forgotten)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	return &m, nil
}

func scanMemberships(rows *sql.Rows, err error) ([]Membership, error) {
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Membership, error) {
		var m Membership
		err := rows.Scan(&m.RoomNID, &m.UserID, &m.Membership, &m.EventNID, &m.Forgotten)
		return m, err
	})
}

// SelectRoomsForUser lists the user's current memberships among the given
// kinds.
func SelectRoomsForUser(ctx context.Context, q sqlutil.Querier, userID string, memberships []string) ([]Membership, error) {
	return scanMemberships(q.QueryContext(ctx, `SELECT room_nid, user_id, membership, event_nid, forgotten FROM rs_membership
		WHERE user_id = ? AND membership IN (`+sqlutil.InList(len(memberships))+`) ORDER BY room_nid`, sqlutil.Args(memberships, userID)...))
}

// SelectMembers lists the current memberships of a room among the given
// kinds.
func SelectMembers(ctx context.Context, q sqlutil.Querier, roomNID int64, memberships []string) ([]Membership, error) {
	return scanMemberships(q.QueryContext(ctx, `SELECT room_nid, user_id, membership, event_nid, forgotten FROM rs_membership
		WHERE room_nid = ? AND membership IN (`+sqlutil.InList(len(memberships))+`) ORDER BY user_id`, sqlutil.Args(memberships, roomNID)...))
}

// SetForgotten marks a room as forgotten by a user whose current member
// event is eventNID; ok is false when it is not (the membership changed).
func SetForgotten(ctx context.Context, q sqlutil.Querier, roomNID int64, userID string, eventNID int64) (ok bool, err error) {
	res, err := q.ExecContext(ctx, `UPDATE rs_membership SET forgotten = TRUE WHERE room_nid = ? AND user_id = ? AND event_nid = ?`,
		roomNID, userID, eventNID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// JoinedSince reports whether the user has joined the room with an event
// stored after afterNID.
func JoinedSince(ctx context.Context, q sqlutil.Querier, roomNID int64, userID string, afterNID int64) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM rs_member_events WHERE room_nid = ? AND user_id = ? AND membership = 'join' AND event_nid > ?`,
		roomNID, userID, afterNID).Scan(&n)
	return n > 0, err
}

// CountJoined counts the joined members of a room.
func CountJoined(ctx context.Context, q sqlutil.Querier, roomNID int64) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM rs_membership WHERE room_nid = ? AND membership = 'join'`, roomNID).Scan(&n)
	return n, err
}
