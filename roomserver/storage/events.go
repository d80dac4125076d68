package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Event kinds.
const (
	KindNormal   = 1 // in the DAG, with state
	KindOutlier  = 2 // stored for auth chains or invites; no state
	KindRejected = 3 // failed auth; kept so it is never fetched again
)

// Event is a row of rs_events.
type Event struct {
	NID         int64
	RoomNID     int64
	EventID     string
	TypeNID     int64
	StateKeyNID int64 // 0: not a state event
	Depth       int64
	Kind        int
	SoftFailed  bool
	StateBefore int64
	StateAfter  int64
	Sender      string
	OriginTS    int64
	Redacted    bool
	JSON        []byte
}

// InsertEvent stores an event and returns its numeric ID; ErrExists if the
// event ID is already stored.
func InsertEvent(ctx context.Context, tx *sqlutil.Tx, e *Event) (int64, error) {
	var nid int64
	err := tx.QueryRowContext(ctx, `INSERT INTO rs_events (room_nid, event_id, type_nid, state_key_nid, depth, kind, soft_failed,
		state_before_nid, state_after_nid, sender, origin_server_ts, redacted, event_json)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING RETURNING event_nid`,
		e.RoomNID, e.EventID, e.TypeNID, e.StateKeyNID, e.Depth, e.Kind, e.SoftFailed, e.StateBefore, e.StateAfter,
		e.Sender, e.OriginTS, e.Redacted, string(e.JSON)).Scan(&nid)
	if err == sql.ErrNoRows {
		return 0, ErrExists
	}
	return nid, err
}

// InsertPrevEvents records the prev_events of an event.
func InsertPrevEvents(ctx context.Context, tx *sqlutil.Tx, nid int64, prevIDs []string) error {
	for _, p := range prevIDs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO rs_prev_events (prev_event_id, event_nid) VALUES (?, ?) ON CONFLICT DO NOTHING`, p, nid); err != nil {
			return err
		}
	}
	return nil
}

const eventColumns = `event_nid, room_nid, event_id, type_nid, state_key_nid, depth, kind, soft_failed,
	state_before_nid, state_after_nid, sender, origin_server_ts, redacted, event_json`

func scanEvent(rows *sql.Rows) (Event, error) {
	var e Event
	var js string
	if err := rows.Scan(&e.NID, &e.RoomNID, &e.EventID, &e.TypeNID, &e.StateKeyNID, &e.Depth, &e.Kind, &e.SoftFailed,
		&e.StateBefore, &e.StateAfter, &e.Sender, &e.OriginTS, &e.Redacted, &js); err != nil {
		return e, err
	}
	e.JSON = []byte(js)
	return e, nil
}

func scanEvents(rows *sql.Rows, err error) ([]Event, error) {
	return sqlutil.Collect(rows, err, scanEvent)
}

// SelectEventsByNID returns the events with the given numeric IDs.
func SelectEventsByNID(ctx context.Context, q sqlutil.Querier, nids []int64) ([]Event, error) {
	var out []Event
	err := sqlutil.InBatches(nids, 500, func(batch []int64) error {
		evs, err := scanEvents(q.QueryContext(ctx, `SELECT `+eventColumns+` FROM rs_events WHERE event_nid IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...))
		out = append(out, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SelectEventsByID returns the events with the given IDs.
func SelectEventsByID(ctx context.Context, q sqlutil.Querier, ids []string) ([]Event, error) {
	var out []Event
	err := sqlutil.InBatches(ids, 500, func(batch []string) error {
		evs, err := scanEvents(q.QueryContext(ctx, `SELECT `+eventColumns+` FROM rs_events WHERE event_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...))
		out = append(out, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateEventJSON replaces an event's JSON (for redaction).
func UpdateEventJSON(ctx context.Context, tx *sqlutil.Tx, nid int64, js []byte, redacted bool) error {
	_, err := tx.ExecContext(ctx, `UPDATE rs_events SET event_json = ?, redacted = ? WHERE event_nid = ?`, string(js), redacted, nid)
	return err
}

// SelectReferencingEvents returns the numeric IDs of stored events that
// name eventID as a prev_event.
func SelectReferencingEvents(ctx context.Context, q sqlutil.Querier, eventID string) ([]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT event_nid FROM rs_prev_events WHERE prev_event_id = ?`, eventID)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[int64])
}

// UpdateEventPlacement sets how a stored event sits in the room: its kind
// (an outlier moving into the DAG), whether it soft-failed, and the state
// before and after it.
func UpdateEventPlacement(ctx context.Context, tx *sqlutil.Tx, nid int64, kind int, softFailed bool, stateBefore, stateAfter int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE rs_events SET kind = ?, soft_failed = ?, state_before_nid = ?, state_after_nid = ?
		WHERE event_nid = ?`, kind, softFailed, stateBefore, stateAfter, nid)
	return err
}

// EventKindOf is how an event is stored: its kind, and whether it has a
// state before it (events of the DAG, rejected ones too; not outliers).
type EventKindOf struct {
	Kind     int
	HasState bool
}

// SelectEventKinds returns how each of the stored events is stored; unknown
// IDs are absent.
func SelectEventKinds(ctx context.Context, q sqlutil.Querier, ids []string) (map[string]EventKindOf, error) {
	out := make(map[string]EventKindOf, len(ids))
	err := sqlutil.InBatches(ids, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT event_id, kind, state_before_nid <> 0 FROM rs_events WHERE event_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var id string
			var k EventKindOf
			if err := rows.Scan(&id, &k.Kind, &k.HasState); err != nil {
				return err
			}
			out[id] = k
			return nil
		})
	})
	return out, err
}

// SelectEventIDs maps numeric event IDs to event IDs.
func SelectEventIDs(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	err := sqlutil.InBatches(nids, 500, func(batch []int64) error {
		rows, err := q.QueryContext(ctx, `SELECT event_nid, event_id FROM rs_events WHERE event_nid IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var nid int64
			var id string
			if err := rows.Scan(&nid, &id); err != nil {
				return err
			}
			out[nid] = id
			return nil
		})
	})
	return out, err
}
