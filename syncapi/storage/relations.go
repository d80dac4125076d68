package storage

import (
	"bytes"
	"context"
	"database/sql"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Relation is a row of sync_relations: an event (the child) that relates
// to another (the parent) through content."m.relates_to".
type Relation struct {
	EventID, RoomID string
	RelatesTo       string // the parent's event ID
	RelType         string
	Key             string // annotations' aggregation key, "" for none
	Sender, Type    string
	Pos             int64
	EditOK          bool // a candidate replacement: m.replace with m.new_content, not state
}

// Relation types the aggregations know.
const (
	RelThread     = "m.thread"
	RelReplace    = "m.replace"
	RelReference  = "m.reference"
	RelAnnotation = "m.annotation"
)

// InsertRelation indexes a child event and, for a thread reply newer than
// the thread's latest, makes it the thread's latest. A child already
// indexed changes nothing.
func InsertRelation(ctx context.Context, tx *sqlutil.Tx, r *Relation) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO sync_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key, sender, type, pos, edit_ok)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING`,
		r.EventID, r.RoomID, r.RelatesTo, r.RelType, nullable(r.Key), r.Sender, r.Type, r.Pos, r.EditOK); err != nil {
		return err
	}
	if r.RelType != RelThread {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_threads (room_id, thread_id, latest_event_id, latest_pos) VALUES (?, ?, ?, ?)
		ON CONFLICT (room_id, thread_id) DO UPDATE SET latest_event_id = excluded.latest_event_id, latest_pos = excluded.latest_pos
		WHERE excluded.latest_pos > sync_threads.latest_pos`, r.RoomID, r.RelatesTo, r.EventID, r.Pos)
	return err
}

// DeleteRelation removes a redacted child from the index: it relates to
// nothing any more. A thread it was the latest reply of falls back to the
// reply before it, or is gone with its last reply.
func DeleteRelation(ctx context.Context, tx *sqlutil.Tx, eventID string) error {
	var roomID, parent, relType string
	err := tx.QueryRowContext(ctx, `DELETE FROM sync_relations WHERE event_id = ? RETURNING room_id, relates_to_id, rel_type`, eventID).
		Scan(&roomID, &parent, &relType)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil || relType != RelThread {
		return err
	}
	var latestID string
	var latestPos int64
	err = tx.QueryRowContext(ctx, `SELECT event_id, pos FROM sync_relations WHERE relates_to_id = ? AND room_id = ? AND rel_type = ?
		ORDER BY pos DESC LIMIT 1`, parent, roomID, RelThread).Scan(&latestID, &latestPos)
	if err == sql.ErrNoRows {
		_, err = tx.ExecContext(ctx, `DELETE FROM sync_threads WHERE room_id = ? AND thread_id = ?`, roomID, parent)
		return err
	}
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE sync_threads SET latest_event_id = ?, latest_pos = ? WHERE room_id = ? AND thread_id = ?`,
		latestID, latestPos, roomID, parent)
	return err
}

// RelationsQuery asks for the children of an event, a page of them.
type RelationsQuery struct {
	RoomID, ParentID string
	RelType          string // "" for any
	EventType        string // "" for any
	// From, To bound the page by position: backwards, below From down to
	// To (exclusive both); forwards, from From up to To (From inclusive).
	From, To int64
	Forward  bool
	Limit    int
	// Depth: how many more levels of children of children to follow
	// (0: the parent's own children only).
	Depth int
}

// RelationsPage returns the children of a parent event as timeline rows,
// nearest first, at most Limit of them. With Depth, the children of the
// children are followed that many levels down (one recursive query), the
// filters applying to every level.
func RelationsPage(ctx context.Context, q sqlutil.Querier, rq RelationsQuery) ([]Event, error) {
	var conds []string
	args := []any{rq.ParentID, rq.RoomID, rq.Depth}
	if rq.RelType != "" {
		conds = append(conds, "t.rel_type = ?")
		args = append(args, rq.RelType)
	}
	if rq.EventType != "" {
		conds = append(conds, "t.type = ?")
		args = append(args, rq.EventType)
	}
	order := "DESC"
	if rq.Forward {
		conds = append(conds, "t.pos >= ?", "t.pos < ?")
		order = "ASC"
	} else {
		conds = append(conds, "t.pos < ?", "t.pos > ?")
	}
	args = append(args, rq.From, rq.To, rq.Limit)
	return scanEvents(q.QueryContext(ctx, `WITH RECURSIVE tree (event_id, room_id, rel_type, type, pos, depth) AS (
			SELECT event_id, room_id, rel_type, type, pos, 0 FROM sync_relations WHERE relates_to_id = ? AND room_id = ?
			UNION SELECT r.event_id, r.room_id, r.rel_type, r.type, r.pos, tree.depth + 1 FROM sync_relations r
				JOIN tree ON r.relates_to_id = tree.event_id AND r.room_id = tree.room_id
				WHERE tree.depth < ?)
		SELECT `+prefixed("e.", eventColumns)+` FROM (SELECT DISTINCT event_id, rel_type, type, pos FROM tree) t
		JOIN sync_events e ON e.event_id = t.event_id
		WHERE `+strings.Join(conds, " AND ")+` ORDER BY t.pos `+order+` LIMIT ?`, args...))
}

// Parent names an event of a room whose children are aggregated.
type Parent struct{ RoomID, EventID string }

// parentsCTE is a VALUES list of parents, "ps (room_id, event_id)".
func parentsCTE(batch []Parent) (string, []any) {
	values := make([]string, len(batch))
	args := make([]any, 0, 2*len(batch))
	for i, p := range batch {
		values[i] = "(?, ?)"
		args = append(args, p.RoomID, p.EventID)
	}
	return `WITH ps (room_id, event_id) AS (VALUES ` + strings.Join(values, ", ") + `) `, args
}

// ThreadSummary is what m.thread aggregates of a thread root.
type ThreadSummary struct {
	LatestEventID string
	Count         int
	// Participated: userID sent a reply (the caller adds the root's sender).
	Participated bool
}

// ThreadSummaries returns the summaries of the parents that are thread
// roots, with one query for all of them.
func ThreadSummaries(ctx context.Context, q sqlutil.Querier, parents []Parent, userID string) (map[string]ThreadSummary, error) {
	out := map[string]ThreadSummary{}
	err := sqlutil.InBatches(parents, relationParentsBatch, func(batch []Parent) error {
		cte, args := parentsCTE(batch)
		args = append(args, userID, RelThread)
		rows, err := q.QueryContext(ctx, cte+`SELECT t.thread_id, t.latest_event_id, COUNT(r.event_id),
			MAX(CASE WHEN r.sender = ? THEN 1 ELSE 0 END)
			FROM ps JOIN sync_threads t ON t.room_id = ps.room_id AND t.thread_id = ps.event_id
			JOIN sync_relations r ON r.relates_to_id = t.thread_id AND r.room_id = t.room_id AND r.rel_type = ?
			GROUP BY t.thread_id, t.latest_event_id`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var id string
			var s ThreadSummary
			var mine int
			if err := rows.Scan(&id, &s.LatestEventID, &s.Count, &mine); err != nil {
				return err
			}
			s.Participated = mine == 1
			out[id] = s
			return nil
		})
	})
	return out, err
}

// References returns the IDs of the events that reference each parent
// (m.reference), oldest first, with one query for all of them.
func References(ctx context.Context, q sqlutil.Querier, parents []Parent) (map[string][]string, error) {
	out := map[string][]string{}
	err := sqlutil.InBatches(parents, relationParentsBatch, func(batch []Parent) error {
		cte, args := parentsCTE(batch)
		rows, err := q.QueryContext(ctx, cte+`SELECT r.relates_to_id, r.event_id FROM ps
			JOIN sync_relations r ON r.relates_to_id = ps.event_id AND r.room_id = ps.room_id AND r.rel_type = ?
			ORDER BY r.pos`, append(args, RelReference)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var parent, id string
			if err := rows.Scan(&parent, &id); err != nil {
				return err
			}
			out[parent] = append(out[parent], id)
			return nil
		})
	})
	return out, err
}

// LatestEdits returns, for each parent that has one, its most recent valid
// replacement (client-server API "Validity of replacement events"): an
// m.replace with m.new_content from the parent's sender, of the parent's
// type, neither of them state; the most recent by origin_server_ts, then
// the greatest event ID. One query for all of them. The caller leaves out
// parents that are themselves edits, and redacted ones.
func LatestEdits(ctx context.Context, q sqlutil.Querier, parents []Parent) (map[string]*Event, error) {
	out := map[string]*Event{}
	err := sqlutil.InBatches(parents, relationParentsBatch, func(batch []Parent) error {
		cte, args := parentsCTE(batch)
		// The latest by timestamp in SQL; a tie on it is settled here by
		// the event IDs' bytes, which collations would not compare so.
		rows, err := q.QueryContext(ctx, cte+`SELECT x.parent, `+prefixed("e.", eventColumns)+` FROM (
				SELECT r.relates_to_id AS parent, r.event_id AS edit_id,
					RANK() OVER (PARTITION BY r.relates_to_id ORDER BY c.origin_ts DESC) AS n
				FROM ps JOIN sync_relations r ON r.relates_to_id = ps.event_id AND r.room_id = ps.room_id
					AND r.rel_type = ? AND r.edit_ok
				JOIN sync_events o ON o.event_id = ps.event_id
				JOIN sync_events c ON c.event_id = r.event_id
				WHERE r.sender = o.sender AND r.type = o.type AND o.state_key IS NULL) x
			JOIN sync_events e ON e.event_id = x.edit_id WHERE x.n = 1`, append(args, RelReplace)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var parent string
			e, err := scanEventWith(rows, &parent)
			if err != nil {
				return err
			}
			if cur := out[parent]; cur == nil || bytes.Compare([]byte(e.EventID), []byte(cur.EventID)) > 0 {
				out[parent] = &e
			}
			return nil
		})
	})
	return out, err
}

// Thread is a thread root and its latest reply's position.
type Thread struct {
	RootID    string
	LatestPos int64
}

// Threads lists the threads of a room by their latest reply, newest
// first, whose latest reply is below before; with participant, only those
// the user started or replied to.
func Threads(ctx context.Context, q sqlutil.Querier, roomID string, before int64, participant string, limit int) ([]Thread, error) {
	cond, args := "", []any{roomID, before}
	if participant != "" {
		cond = ` AND (EXISTS (SELECT 1 FROM sync_events o WHERE o.event_id = t.thread_id AND o.sender = ?)
			OR EXISTS (SELECT 1 FROM sync_relations p WHERE p.relates_to_id = t.thread_id AND p.room_id = t.room_id
				AND p.rel_type = ? AND p.sender = ?))`
		args = append(args, participant, RelThread, participant)
	}
	args = append(args, limit)
	rows, err := q.QueryContext(ctx, `SELECT t.thread_id, t.latest_pos FROM sync_threads t
		WHERE t.room_id = ? AND t.latest_pos < ?`+cond+` ORDER BY t.latest_pos DESC LIMIT ?`, args...)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Thread, error) {
		var t Thread
		err := rows.Scan(&t.RootID, &t.LatestPos)
		return t, err
	})
}

// ChildKinds returns, for the parents that have children, the relation
// types of those children: one query that tells which aggregations a
// batch of events needs at all.
func ChildKinds(ctx context.Context, q sqlutil.Querier, parents []Parent) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	err := sqlutil.InBatches(parents, relationParentsBatch, func(batch []Parent) error {
		cte, args := parentsCTE(batch)
		rows, err := q.QueryContext(ctx, cte+`SELECT DISTINCT r.relates_to_id, r.rel_type FROM ps
			JOIN sync_relations r ON r.relates_to_id = ps.event_id AND r.room_id = ps.room_id`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var parent, relType string
			if err := rows.Scan(&parent, &relType); err != nil {
				return err
			}
			if out[parent] == nil {
				out[parent] = map[string]bool{}
			}
			out[parent][relType] = true
			return nil
		})
	})
	return out, err
}

// ThreadSubscription is a user's subscription to a thread (MSC4306).
type ThreadSubscription struct {
	Subscribed, Automatic bool
	// UnsubscribedAt is the timeline position of the last unsubscribe
	// (0 and false for none).
	UnsubscribedAt    int64
	HasUnsubscribedAt bool
}

// GetThreadSubscription returns a user's subscription row for a thread,
// or ErrNotFound.
func GetThreadSubscription(ctx context.Context, q sqlutil.Querier, userID, roomID, threadID string) (*ThreadSubscription, error) {
	var s ThreadSubscription
	var at sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT subscribed, automatic, unsubscribed_at FROM sync_thread_subscriptions
		WHERE user_id = ? AND room_id = ? AND thread_id = ?`, userID, roomID, threadID).Scan(&s.Subscribed, &s.Automatic, &at)
	if err == sql.ErrNoRows {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	s.UnsubscribedAt, s.HasUnsubscribedAt = at.Int64, at.Valid
	return &s, nil
}

// SetThreadSubscription writes a user's subscription row for a thread.
func SetThreadSubscription(ctx context.Context, tx *sqlutil.Tx, userID, roomID, threadID string, s *ThreadSubscription) error {
	var at any
	if s.HasUnsubscribedAt {
		at = s.UnsubscribedAt
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_thread_subscriptions (user_id, room_id, thread_id, subscribed, automatic, unsubscribed_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE
		SET subscribed = excluded.subscribed, automatic = excluded.automatic, unsubscribed_at = excluded.unsubscribed_at`,
		userID, roomID, threadID, s.Subscribed, s.Automatic, at)
	return err
}

// relationParentsBatch is how many parents one aggregation query takes
// (two parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535):
// an initial sync's timelines of every room are one batch, so its
// statement count does not grow with the rooms.
const relationParentsBatch = 5000
