package storage

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Event is a row of sync_events.
type Event struct {
	Pos           int64
	RoomID        string
	EventID       string
	Type          string
	Sender        string
	StateKey      *string
	Membership    string
	ContainsURL   bool
	OriginTS      int64
	JSON          []byte
	TxnID         string
	DeviceID      string
	Visibility    string // history visibility at the event
	ReplacesState string
	PrevContent   []byte
	PrevSender    string // sender of the replaced state event
	Redacted      bool
	Depth         int64
	// AfterGap: the event's prev events were missing when it arrived
	// (see rsapi.OutputNewEvent.AfterGap).
	AfterGap bool
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// InsertEvent stores a timeline event; ErrExists if the event ID is known.
func InsertEvent(ctx context.Context, tx *sqlutil.Tx, e *Event) error {
	var prev any
	if e.PrevContent != nil {
		prev = string(e.PrevContent)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO sync_events (pos, room_id, event_id, type, sender, state_key, membership, contains_url,
		origin_ts, event_json, txn_id, device_id, visibility, replaces_state, prev_content, prev_sender, redacted, depth, after_gap)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING`,
		e.Pos, e.RoomID, e.EventID, e.Type, e.Sender, e.StateKey, nullable(e.Membership), e.ContainsURL, e.OriginTS,
		string(e.JSON), nullable(e.TxnID), nullable(e.DeviceID), e.Visibility, nullable(e.ReplacesState), prev, nullable(e.PrevSender), e.Redacted, e.Depth, e.AfterGap)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrExists
	}
	return nil
}

// ErrExists is returned for rows already stored.
var ErrExists = errors.New("already exists")

const eventColumns = `pos, room_id, event_id, type, sender, state_key, membership, contains_url, origin_ts, event_json,
	txn_id, device_id, visibility, replaces_state, prev_content, prev_sender, redacted, depth, after_gap`

func scanEvent(rows *sql.Rows) (Event, error) { return scanEventWith(rows) }

// scanEventWith scans a row of extra columns followed by eventColumns.
func scanEventWith(rows *sql.Rows, extra ...any) (Event, error) {
	var e Event
	var sk, membership, txn, dev, replaces, prev, prevSender sql.NullString
	var js string
	dest := append(extra, &e.Pos, &e.RoomID, &e.EventID, &e.Type, &e.Sender, &sk, &membership, &e.ContainsURL, &e.OriginTS, &js,
		&txn, &dev, &e.Visibility, &replaces, &prev, &prevSender, &e.Redacted, &e.Depth, &e.AfterGap)
	if err := rows.Scan(dest...); err != nil {
		return e, err
	}
	if sk.Valid {
		e.StateKey = &sk.String
	}
	e.Membership, e.TxnID, e.DeviceID, e.ReplacesState = membership.String, txn.String, dev.String, replaces.String
	e.PrevSender = prevSender.String
	e.JSON = []byte(js)
	if prev.Valid {
		e.PrevContent = []byte(prev.String)
	}
	return e, nil
}

func scanEvents(rows *sql.Rows, err error) ([]Event, error) {
	return sqlutil.Collect(rows, err, scanEvent)
}

// MaxEventPos is the highest timeline position (0 when empty).
func MaxEventPos(ctx context.Context, q sqlutil.Querier) (int64, error) {
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(pos) FROM sync_events`).Scan(&n)
	return n.Int64, err
}

// EventsByID returns events by ID (unknown ones are absent).
func EventsByID(ctx context.Context, q sqlutil.Querier, ids []string) (map[string]*Event, error) {
	out := map[string]*Event{}
	err := sqlutil.InBatches(ids, 500, func(batch []string) error {
		evs, err := scanEvents(q.QueryContext(ctx, `SELECT `+eventColumns+` FROM sync_events WHERE event_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...))
		if err != nil {
			return err
		}
		for i := range evs {
			out[evs[i].EventID] = &evs[i]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Range asks for the events of a room after From (exclusive) up to To
// (inclusive).
type Range struct {
	RoomID   string
	From, To int64
	// Gaps: the timeline starts at the newest event of the range that
	// follows a gap in the room's history (AfterGap), and is then limited:
	// the client cannot have what came before the gap (as Synapse, for
	// incremental syncs).
	Gaps bool
	// ByDepth: the timeline's latest events are those of the greatest
	// depth, not the last to arrive (as Synapse for initial syncs: a late
	// event on an old fork of the DAG does not push newer ones out).
	ByDepth bool
}

// Timelines returns, for each range, its latest limit events in order, and
// whether more matched (the timeline is limited). cond is an extra filter
// on the sync_events row "e" with its arguments.
func Timelines(ctx context.Context, q sqlutil.Querier, ranges []Range, limit int, cond string, condArgs []any) (map[string][]Event, map[string]bool, error) {
	events := map[string][]Event{}
	limited := map[string]bool{}
	if cond == "" {
		cond = "TRUE"
	}
	err := sqlutil.InBatches(ranges, 300, func(batch []Range) error {
		if err := startAtGaps(ctx, q, batch, limited); err != nil {
			return err
		}
		values := make([]string, len(batch))
		args := make([]any, 0, len(batch)*3+len(condArgs)+1)
		for i, r := range batch {
			values[i] = "(?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS INTEGER))"
			byDepth := 0
			if r.ByDepth {
				byDepth = 1
			}
			args = append(args, r.RoomID, r.From, r.To, byDepth)
		}
		args = append(args, condArgs...)
		args = append(args, limit+1)
		rows, err := q.QueryContext(ctx, `WITH ranges (room_id, lo, hi, by_depth) AS (VALUES `+strings.Join(values, ", ")+`)
			SELECT `+prefixed("t.", eventColumns)+` FROM ranges r JOIN sync_events t ON t.room_id = r.room_id
			WHERE t.pos IN (SELECT e.pos FROM sync_events e WHERE e.room_id = r.room_id AND e.pos > r.lo AND e.pos <= r.hi
				AND (`+cond+`) ORDER BY CASE WHEN r.by_depth = 1 THEN e.depth ELSE 0 END DESC, e.pos DESC LIMIT ?)
			ORDER BY t.room_id, CASE WHEN r.by_depth = 1 THEN t.depth ELSE 0 END, t.pos`, args...)
		err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			e, err := scanEvent(rows)
			if err != nil {
				return err
			}
			events[e.RoomID] = append(events[e.RoomID], e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range batch {
			if evs := events[r.RoomID]; len(evs) > limit {
				events[r.RoomID] = evs[len(evs)-limit:]
				limited[r.RoomID] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return events, limited, nil
}

// startAtGaps moves the start of the ranges that ask for it (Gaps) to
// their newest event that follows a gap, and marks them limited.
func startAtGaps(ctx context.Context, q sqlutil.Querier, batch []Range, limited map[string]bool) error {
	var values []string
	var args []any
	for _, r := range batch {
		if r.Gaps {
			values = append(values, "(?, CAST(? AS BIGINT), CAST(? AS BIGINT))")
			args = append(args, r.RoomID, r.From, r.To)
		}
	}
	if len(values) == 0 {
		return nil
	}
	gaps := map[string]int64{}
	rows, err := q.QueryContext(ctx, `WITH ranges (room_id, lo, hi) AS (VALUES `+strings.Join(values, ", ")+`)
		SELECT r.room_id, MAX(e.pos) FROM ranges r JOIN sync_events e ON e.room_id = r.room_id
		WHERE e.after_gap AND e.pos > r.lo AND e.pos <= r.hi GROUP BY r.room_id`, args...)
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var room string
		var pos int64
		if err := rows.Scan(&room, &pos); err != nil {
			return err
		}
		gaps[room] = pos
		return nil
	})
	if err != nil {
		return err
	}
	for i, r := range batch {
		if pos, ok := gaps[r.RoomID]; ok && r.Gaps {
			batch[i].From = pos - 1
			limited[r.RoomID] = true
		}
	}
	return nil
}

// RoomEvents pages through a room: backwards from before (exclusive) down
// to after (exclusive), or forwards when forward is set, at most limit
// events, nearest first.
func RoomEvents(ctx context.Context, q sqlutil.Querier, roomID string, after, before int64, forward bool, limit int, cond string, condArgs []any) ([]Event, error) {
	if cond == "" {
		cond = "TRUE"
	}
	order := "DESC"
	if forward {
		order = "ASC"
	}
	args := append([]any{roomID, after, before}, condArgs...)
	args = append(args, limit)
	return scanEvents(q.QueryContext(ctx, `SELECT `+eventColumns+` FROM sync_events e
		WHERE room_id = ? AND pos > ? AND pos < ? AND (`+cond+`) ORDER BY pos `+order+` LIMIT ?`, args...))
}

// EventAtTimestamp returns the first event of a room at or after ts
// (forward) or at or before it, within positions up to maxPos.
func EventAtTimestamp(ctx context.Context, q sqlutil.Querier, roomID string, ts int64, forward bool, maxPos int64, limit int) ([]Event, error) {
	query := `SELECT ` + eventColumns + ` FROM sync_events WHERE room_id = ? AND origin_ts <= ? AND pos <= ? ORDER BY origin_ts DESC, pos DESC LIMIT ?`
	if forward {
		query = `SELECT ` + eventColumns + ` FROM sync_events WHERE room_id = ? AND origin_ts >= ? AND pos <= ? ORDER BY origin_ts ASC, pos ASC LIMIT ?`
	}
	return scanEvents(q.QueryContext(ctx, query, roomID, ts, maxPos, limit))
}

// GapFollows reports whether the event of a room after pos follows a gap
// in its history (AfterGap).
func GapFollows(ctx context.Context, q sqlutil.Querier, roomID string, pos int64) (bool, error) {
	var gap bool
	err := q.QueryRowContext(ctx, `SELECT after_gap FROM sync_events WHERE room_id = ? AND pos > ? ORDER BY pos LIMIT 1`, roomID, pos).Scan(&gap)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return gap, err
}

// RedactEvent replaces the JSON of a timeline event and of its state rows.
func RedactEvent(ctx context.Context, tx *sqlutil.Tx, eventID string, redacted []byte) error {
	if _, err := tx.ExecContext(ctx, `UPDATE sync_events SET event_json = ?, redacted = TRUE WHERE event_id = ?`, string(redacted), eventID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE sync_state SET event_json = ? WHERE event_id = ?`, string(redacted), eventID)
	return err
}

// prefixed qualifies a column list with a table alias.
func prefixed(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = alias + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// MinEventPos is the lowest timeline position (0 when empty). Backfilled
// history goes below it.
func MinEventPos(ctx context.Context, q sqlutil.Querier) (int64, error) {
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MIN(pos) FROM sync_events`).Scan(&n)
	return n.Int64, err
}

// OldestEvents returns the n events of a room with the lowest positions,
// oldest first.
func OldestEvents(ctx context.Context, q sqlutil.Querier, roomID string, n int) ([]Event, error) {
	return scanEvents(q.QueryContext(ctx, `SELECT `+eventColumns+` FROM sync_events WHERE room_id = ? ORDER BY pos ASC LIMIT ?`, roomID, n))
}

// NewlyJoined lists the users who joined the given rooms in (from, to]:
// their member event made them joined, from any other membership (a
// profile change of a joined member is not a join).
func NewlyJoined(ctx context.Context, q sqlutil.Querier, rooms []string, from, to int64) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT state_key, prev_content FROM sync_events WHERE pos > ? AND pos <= ?
			AND type = 'm.room.member' AND membership = 'join' AND room_id IN (`+sqlutil.InList(len(batch))+`)`,
			sqlutil.Args(batch, from, to)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var user string
			var prev sql.NullString
			if err := rows.Scan(&user, &prev); err != nil {
				return err
			}
			if prev.Valid && gjson.Get(prev.String, "membership").Str == "join" {
				return nil
			}
			if !seen[user] {
				seen[user] = true
				out = append(out, user)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
