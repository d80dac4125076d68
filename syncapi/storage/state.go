package storage

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// StateRow is a piece of room state over an interval of positions.
type StateRow struct {
	RoomID     string
	Type       string
	StateKey   string
	EventID    string
	Membership string
	JSON       []byte
	FromPos    int64
}

// CurrentStateEvent returns the current event of a state key ("" if none).
func CurrentStateEvent(ctx context.Context, q sqlutil.Querier, roomID, typ, stateKey string) (eventID string, js []byte, err error) {
	var s string
	err = q.QueryRowContext(ctx, `SELECT event_id, event_json FROM sync_state WHERE room_id = ? AND type = ? AND state_key = ? AND to_pos IS NULL`,
		roomID, typ, stateKey).Scan(&eventID, &s)
	if err == sql.ErrNoRows {
		return "", nil, nil
	}
	return eventID, []byte(s), err
}

// CloseState ends the current rows of the given events at pos.
func CloseState(ctx context.Context, tx *sqlutil.Tx, roomID string, eventIDs []string, pos int64) error {
	if len(eventIDs) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `UPDATE sync_state SET to_pos = ? WHERE room_id = ? AND to_pos IS NULL AND event_id IN (`+sqlutil.InList(len(eventIDs))+`)`,
		sqlutil.Args(eventIDs, pos, roomID)...)
	return err
}

// CloseStateKey ends the current row of a state key at pos.
func CloseStateKey(ctx context.Context, tx *sqlutil.Tx, roomID, typ, stateKey string, pos int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE sync_state SET to_pos = ? WHERE room_id = ? AND type = ? AND state_key = ? AND to_pos IS NULL`,
		pos, roomID, typ, stateKey)
	return err
}

// InsertState adds a current state row.
func InsertState(ctx context.Context, tx *sqlutil.Tx, r *StateRow) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_state (room_id, type, state_key, event_id, membership, event_json, from_pos)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key, from_pos) DO UPDATE SET event_id = excluded.event_id,
		membership = excluded.membership, event_json = excluded.event_json, to_pos = NULL`,
		r.RoomID, r.Type, r.StateKey, r.EventID, nullable(r.Membership), string(r.JSON), r.FromPos)
	return err
}

// StateQuery asks for the state of a room valid at position At (after the
// event at At): the rows that started after Since; with Lazy, of the member
// events only those of the users in Members (whenever they started); with
// MembersOnly, no other state.
//
// With Before (the event at At), the state is the one before that event
// rather than after it: its own change is undone, while the other changes
// at At stay (state that came with it and is in no timeline, such as the
// room's whole state when a user joins over federation).
type StateQuery struct {
	RoomID      string
	At          int64
	Since       int64
	Lazy        bool
	MembersOnly bool
	Members     []string
	Before      *BeforeEvent
}

// BeforeEvent is the event whose state change a StateQuery undoes.
type BeforeEvent struct {
	EventID  string
	Type     string
	StateKey *string // nil: not a state event
}

// States answers state queries in one statement per batch of rooms.
func States(ctx context.Context, q sqlutil.Querier, queries []StateQuery) (map[string][]StateRow, error) {
	out := map[string][]StateRow{}
	err := sqlutil.InBatches(queries, 200, func(batch []StateQuery) error {
		var values, lazy []string
		var args []any
		for _, sq := range batch {
			values = append(values, "(?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS INTEGER), CAST(? AS INTEGER), ?, ?, ?)")
			var skipEvent, skipType, skipKey string
			if b := sq.Before; b != nil {
				skipEvent = b.EventID
				if b.StateKey != nil {
					skipType, skipKey = b.Type, *b.StateKey
				}
			}
			args = append(args, sq.RoomID, sq.At, sq.Since, boolInt(sq.Lazy), boolInt(sq.MembersOnly), skipEvent, skipType, skipKey)
		}
		for _, sq := range batch {
			for _, m := range sq.Members {
				lazy = append(lazy, "(?, ?)")
				args = append(args, sq.RoomID, m)
			}
		}
		if len(lazy) == 0 {
			lazy = append(lazy, "('', '')")
		}
		rows, err := q.QueryContext(ctx, `WITH qs (room_id, at_pos, since_pos, lazy, members_only, skip_event, skip_type, skip_key) AS (VALUES `+
			strings.Join(values, ", ")+`),
			members (room_id, user_id) AS (VALUES `+strings.Join(lazy, ", ")+`)
			SELECT s.room_id, s.type, s.state_key, s.event_id, s.membership, s.event_json, s.from_pos
			FROM sync_state s JOIN qs ON s.room_id = qs.room_id
			WHERE ((s.from_pos <= qs.at_pos AND (s.to_pos IS NULL OR s.to_pos > qs.at_pos) AND s.event_id <> qs.skip_event)
				OR (s.to_pos = qs.at_pos AND s.type = qs.skip_type AND s.state_key = qs.skip_key))
			AND ((s.type <> 'm.room.member' AND qs.members_only = 0 AND s.from_pos > qs.since_pos)
				OR (s.type = 'm.room.member' AND (
					(qs.lazy = 0 AND s.from_pos > qs.since_pos)
					OR (qs.lazy = 1 AND EXISTS (SELECT 1 FROM members m WHERE m.room_id = s.room_id AND m.user_id = s.state_key)))))
			ORDER BY s.room_id, s.from_pos`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var r StateRow
			var membership sql.NullString
			var js string
			if err := rows.Scan(&r.RoomID, &r.Type, &r.StateKey, &r.EventID, &membership, &js, &r.FromPos); err != nil {
				return err
			}
			r.Membership, r.JSON = membership.String, []byte(js)
			out[r.RoomID] = append(out[r.RoomID], r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Membership is a user's current membership of a room.
type Membership struct {
	RoomID     string
	Membership string
	EventID    string
	Pos        int64 // when it took effect
	// Forgotten: the user forgot the room since this membership (a leave
	// or a ban) took effect.
	Forgotten bool
	// ByOther: a leave or ban someone else sent (a kick, a ban).
	ByOther bool
	// Sender sent the membership event, for a leave, a ban or an invite.
	Sender string
}

// CurrentMemberships lists a user's current memberships.
func CurrentMemberships(ctx context.Context, q sqlutil.Querier, userID string) ([]Membership, error) {
	rows, err := q.QueryContext(ctx, `SELECT s.room_id, s.membership, s.event_id, s.from_pos, f.event_id IS NOT NULL,
		CASE WHEN s.membership IN ('leave', 'ban', 'invite') THEN s.event_json END FROM sync_state s
		LEFT JOIN sync_forgotten f ON f.user_id = s.state_key AND f.room_id = s.room_id AND f.event_id = s.event_id
		WHERE s.state_key = ? AND s.type = 'm.room.member' AND s.to_pos IS NULL ORDER BY s.room_id`, userID)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Membership, error) {
		var m Membership
		var ms, js sql.NullString
		if err := rows.Scan(&m.RoomID, &ms, &m.EventID, &m.Pos, &m.Forgotten, &js); err != nil {
			return m, err
		}
		m.Membership = ms.String
		m.Sender = gjson.Get(js.String, "sender").Str
		m.ByOther = m.Sender != "" && m.Sender != userID && m.Membership != "invite"
		return m, nil
	})
}

// SetForgotten records that a user forgot a room while eventID was their
// current member event of it.
func SetForgotten(ctx context.Context, tx *sqlutil.Tx, userID, roomID, eventID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_forgotten (user_id, room_id, event_id) VALUES (?, ?, ?)
		ON CONFLICT (user_id, room_id) DO UPDATE SET event_id = excluded.event_id`, userID, roomID, eventID)
	return err
}

// Forgotten reports whether a user forgot a room since their current
// membership of it took effect.
func Forgotten(ctx context.Context, q sqlutil.Querier, userID, roomID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sync_forgotten f JOIN sync_state s ON s.room_id = f.room_id
		AND s.type = 'm.room.member' AND s.state_key = f.user_id AND s.event_id = f.event_id AND s.to_pos IS NULL
		WHERE f.user_id = ? AND f.room_id = ?`, userID, roomID).Scan(&n)
	return n > 0, err
}

// RoomMember is one current member of a room.
type RoomMember struct {
	RoomID, UserID, Membership string
	Pos                        int64 // where the membership took effect
}

const joinedOrInvited = ` AND membership IN ('join', 'invite')`

// CurrentMembers lists the joined and invited members of rooms.
func CurrentMembers(ctx context.Context, q sqlutil.Querier, rooms []string) ([]RoomMember, error) {
	if len(rooms) == 0 {
		return nil, nil
	}
	return currentMembers(ctx, q, rooms, joinedOrInvited)
}

// EveryCurrentMember lists the joined and invited members of every room.
func EveryCurrentMember(ctx context.Context, q sqlutil.Querier) ([]RoomMember, error) {
	return currentMembers(ctx, q, nil, joinedOrInvited)
}

// RoomMemberships lists the current member events of rooms whatever
// their membership (left and banned users included), in stream order.
func RoomMemberships(ctx context.Context, q sqlutil.Querier, rooms []string) ([]RoomMember, error) {
	if len(rooms) == 0 {
		return nil, nil
	}
	out, err := currentMembers(ctx, q, rooms, "")
	slices.SortFunc(out, func(a, b RoomMember) int { return cmp.Compare(a.Pos, b.Pos) })
	return out, err
}

func currentMembers(ctx context.Context, q sqlutil.Querier, rooms []string, cond string) ([]RoomMember, error) {
	query := `SELECT room_id, state_key, membership, from_pos FROM sync_state WHERE type = 'm.room.member' AND to_pos IS NULL` + cond
	scan := func(rows *sql.Rows) (RoomMember, error) {
		var m RoomMember
		var ms sql.NullString
		if err := rows.Scan(&m.RoomID, &m.UserID, &ms, &m.Pos); err != nil {
			return m, err
		}
		m.Membership = ms.String
		return m, nil
	}
	if rooms == nil {
		rows, err := q.QueryContext(ctx, query)
		return sqlutil.Collect(rows, err, scan)
	}
	var out []RoomMember
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, query+` AND room_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		members, err := sqlutil.Collect(rows, err, scan)
		out = append(out, members...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MembershipChange is a row of sync_memberships.
type MembershipChange struct {
	UserID, RoomID, Membership, EventID, Sender string
	Pos                                         int64
}

// InsertMembershipChange logs a membership event.
func InsertMembershipChange(ctx context.Context, tx *sqlutil.Tx, m *MembershipChange) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_memberships (user_id, room_id, pos, membership, event_id, sender) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, m.UserID, m.RoomID, m.Pos, m.Membership, m.EventID, m.Sender)
	return err
}

// MembershipChanges returns a user's membership events in (from, to], or
// all of them in the given rooms when rooms is set, in order.
func MembershipChanges(ctx context.Context, q sqlutil.Querier, userID string, from, to int64, rooms []string) ([]MembershipChange, error) {
	query := `SELECT user_id, room_id, pos, membership, event_id, sender FROM sync_memberships WHERE user_id = ? AND pos > ? AND pos <= ?`
	args := []any{userID, from, to}
	if rooms != nil {
		if len(rooms) == 0 {
			return nil, nil
		}
		query += ` AND room_id IN (` + sqlutil.InList(len(rooms)) + `)`
		args = sqlutil.Args(rooms, args...)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY pos`, args...)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (MembershipChange, error) {
		var m MembershipChange
		err := rows.Scan(&m.UserID, &m.RoomID, &m.Pos, &m.Membership, &m.EventID, &m.Sender)
		return m, err
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// StateKey is a (type, state key) pair.
type StateKey struct{ Type, StateKey string }

// CurrentStateEvents returns which of the given events are in a room's
// current state.
func CurrentStateEvents(ctx context.Context, q sqlutil.Querier, roomID string, eventIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := sqlutil.InBatches(eventIDs, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT event_id FROM sync_state WHERE room_id = ? AND to_pos IS NULL AND event_id IN (`+
			sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch, roomID)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out[id] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CloseStateKeys ends the current rows of many state keys of a room at
// pos, a batch of keys per statement.
func CloseStateKeys(ctx context.Context, tx *sqlutil.Tx, roomID string, keys []StateKey, pos int64) error {
	return sqlutil.InBatches(keys, 400, func(batch []StateKey) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 2+2*len(batch))
		args = append(args, pos, roomID)
		for i, k := range batch {
			values[i] = "(?, ?)"
			args = append(args, k.Type, k.StateKey)
		}
		_, err := tx.ExecContext(ctx, `UPDATE sync_state SET to_pos = ? WHERE room_id = ? AND to_pos IS NULL
			AND (type, state_key) IN (VALUES `+strings.Join(values, ", ")+`)`, args...)
		return err
	})
}

// InsertStates adds current state rows (as InsertState does), a batch of
// rows per statement. Rows must not repeat a (room, type, state key,
// from_pos).
func InsertStates(ctx context.Context, tx *sqlutil.Tx, rows []*StateRow) error {
	return sqlutil.InBatches(rows, 300, func(batch []*StateRow) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 7*len(batch))
		for i, r := range batch {
			values[i] = "(?, ?, ?, ?, ?, ?, CAST(? AS BIGINT))"
			args = append(args, r.RoomID, r.Type, r.StateKey, r.EventID, nullable(r.Membership), string(r.JSON), r.FromPos)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_state (room_id, type, state_key, event_id, membership, event_json, from_pos)
			VALUES `+strings.Join(values, ", ")+` ON CONFLICT (room_id, type, state_key, from_pos) DO UPDATE SET event_id = excluded.event_id,
			membership = excluded.membership, event_json = excluded.event_json, to_pos = NULL`, args...)
		return err
	})
}

// InsertMembershipChanges logs membership events (as
// InsertMembershipChange does), a batch per statement.
func InsertMembershipChanges(ctx context.Context, tx *sqlutil.Tx, ms []*MembershipChange) error {
	return sqlutil.InBatches(ms, 300, func(batch []*MembershipChange) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 6*len(batch))
		for i, m := range batch {
			values[i] = "(?, ?, CAST(? AS BIGINT), ?, ?, ?)"
			args = append(args, m.UserID, m.RoomID, m.Pos, m.Membership, m.EventID, m.Sender)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_memberships (user_id, room_id, pos, membership, event_id, sender) VALUES `+
			strings.Join(values, ", ")+` ON CONFLICT DO NOTHING`, args...)
		return err
	})
}

// FirstStatePos is the position where the sync API's state of a room
// begins (found false when it has none): the state before it, such as
// that of backfilled history, is unknown.
func FirstStatePos(ctx context.Context, q sqlutil.Querier, roomID string) (pos int64, found bool, err error) {
	var n sql.NullInt64
	err = q.QueryRowContext(ctx, `SELECT MIN(from_pos) FROM sync_state WHERE room_id = ?`, roomID).Scan(&n)
	return n.Int64, n.Valid, err
}
