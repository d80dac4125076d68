package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// MainThread is the thread ID of the main timeline.
const MainThread = "main"

// NotificationEvent is a row of sync_notification_events: an event and
// the local users it notified.
type NotificationEvent struct {
	EventPos int64
	RoomID   string
	EventID  string
	ThreadID string
	TS       int64
	// Actions are the distinct actions arrays of the rules that matched.
	Actions []json.RawMessage
	users   string     // the encoded users column
	decoded []Notified // users decoded (or as set)
}

// Notified is a user a notification event notified.
type Notified struct {
	UserID    string
	Highlight bool
	Actions   int // index into NotificationEvent.Actions
}

// SetUsers records (and encodes) the users the event notified.
func (e *NotificationEvent) SetUsers(users []Notified) {
	e.decoded = users
	var b strings.Builder
	b.Grow(len(users) * 32)
	b.WriteByte('\n')
	for _, u := range users {
		b.WriteString(u.UserID)
		if u.Highlight {
			b.WriteString("\t1\t")
		} else {
			b.WriteString("\t0\t")
		}
		b.WriteString(strconv.Itoa(u.Actions))
		b.WriteByte('\n')
	}
	e.users = b.String()
}

// Find returns the entry of a user (ok false when the event did not
// notify them). It is a substring search: no decoding.
func (e *NotificationEvent) Find(userID string) (n Notified, ok bool) {
	i := strings.Index(e.users, "\n"+userID+"\t")
	if i < 0 {
		return n, false
	}
	rest := e.users[i+len(userID)+2:]
	end := strings.IndexByte(rest, '\n')
	if end < 0 || len(rest) < 3 {
		return n, false
	}
	idx, err := strconv.Atoi(rest[2:end])
	if err != nil {
		return n, false
	}
	return Notified{UserID: userID, Highlight: rest[0] == '1', Actions: idx}, true
}

// Users returns every user the event notified (decoded once).
func (e *NotificationEvent) Users() []Notified {
	if e.decoded != nil {
		return e.decoded
	}
	var out []Notified
	for _, line := range strings.Split(strings.Trim(e.users, "\n"), "\n") {
		parts := strings.Split(line, "\t")
		if len(parts) != 3 {
			continue
		}
		idx, _ := strconv.Atoi(parts[2])
		out = append(out, Notified{UserID: parts[0], Highlight: parts[1] == "1", Actions: idx})
	}
	e.decoded = out
	return out
}

// ActionsOf returns the actions of a user's entry.
func (e *NotificationEvent) ActionsOf(n Notified) json.RawMessage {
	if n.Actions >= 0 && n.Actions < len(e.Actions) {
		return e.Actions[n.Actions]
	}
	return json.RawMessage(`["notify"]`)
}

// InsertNotificationEvents stores notification events, a batch per
// statement; a redelivery (same position) changes nothing.
func InsertNotificationEvents(ctx context.Context, tx *sqlutil.Tx, evs []*NotificationEvent) error {
	return sqlutil.InBatches(evs, 100, func(batch []*NotificationEvent) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 7*len(batch))
		for i, e := range batch {
			actions, err := json.Marshal(e.Actions)
			if err != nil {
				return err
			}
			values[i] = "(CAST(? AS BIGINT), ?, ?, ?, CAST(? AS BIGINT), ?, ?)"
			args = append(args, e.EventPos, e.RoomID, e.EventID, e.ThreadID, e.TS, e.users, string(actions))
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_notification_events (event_pos, room_id, event_id, thread_id, ts, users, actions)
			VALUES `+strings.Join(values, ", ")+` ON CONFLICT (event_pos) DO NOTHING`, args...)
		return err
	})
}

const notificationEventCols = `event_pos, room_id, event_id, thread_id, ts, users, actions`

func scanNotificationEvent(rows *sql.Rows) (*NotificationEvent, error) {
	var e NotificationEvent
	var actions string
	if err := rows.Scan(&e.EventPos, &e.RoomID, &e.EventID, &e.ThreadID, &e.TS, &e.users, &actions); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(actions), &e.Actions); err != nil {
		return nil, err
	}
	return &e, nil
}

// NotificationEvents returns up to limit notification events of the
// rooms (nil: every room) with positions in (after, before), oldest first
// or, with desc, newest first.
func NotificationEvents(ctx context.Context, q sqlutil.Querier, rooms []string, after, before int64, desc bool, limit int) ([]*NotificationEvent, error) {
	order := "ASC"
	if desc {
		order = "DESC"
	}
	query := func(cond string, args []any) ([]*NotificationEvent, error) {
		rows, err := q.QueryContext(ctx, `SELECT `+notificationEventCols+` FROM sync_notification_events WHERE event_pos > ? AND event_pos < ?`+
			cond+` ORDER BY event_pos `+order+` LIMIT ?`, append(append([]any{after, before}, args...), limit)...)
		return sqlutil.Collect(rows, err, scanNotificationEvent)
	}
	if rooms == nil {
		return query("", nil)
	}
	var out []*NotificationEvent
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		evs, err := query(` AND room_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch))
		out = append(out, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return (out[i].EventPos < out[j].EventPos) != desc })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Unread is a row of sync_unread.
type Unread struct {
	UserID, RoomID, ThreadID  string
	Notifications, Highlights int
	LastPos                   int64
}

// AllUnread returns every unread count.
func AllUnread(ctx context.Context, q sqlutil.Querier) ([]Unread, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, room_id, thread_id, notifications, highlights, last_pos FROM sync_unread`)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Unread, error) {
		var u Unread
		err := rows.Scan(&u.UserID, &u.RoomID, &u.ThreadID, &u.Notifications, &u.Highlights, &u.LastPos)
		return u, err
	})
}

// DeleteUnreadRooms deletes the unread counts of users' rooms
// ({user, room} pairs), before SaveUnread writes what they are now.
func DeleteUnreadRooms(ctx context.Context, tx *sqlutil.Tx, keys [][2]string) error {
	return sqlutil.InBatches(keys, 300, func(batch [][2]string) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 2*len(batch))
		for i, k := range batch {
			values[i] = "(?, ?)"
			args = append(args, k[0], k[1])
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM sync_unread WHERE (user_id, room_id) IN (VALUES `+strings.Join(values, ", ")+`)`, args...)
		return err
	})
}

// SaveUnread writes unread counts, a batch of rows per statement.
func SaveUnread(ctx context.Context, tx *sqlutil.Tx, us []Unread) error {
	return sqlutil.InBatches(us, 200, func(batch []Unread) error {
		values := make([]string, len(batch))
		args := make([]any, 0, 6*len(batch))
		for i, u := range batch {
			values[i] = "(?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))"
			args = append(args, u.UserID, u.RoomID, u.ThreadID, u.Notifications, u.Highlights, u.LastPos)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_unread (user_id, room_id, thread_id, notifications, highlights, last_pos) VALUES `+
			strings.Join(values, ", ")+` ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET notifications = excluded.notifications,
			highlights = excluded.highlights, last_pos = excluded.last_pos`, args...)
		return err
	})
}

// ReadPosition is where a user has read a room up to, in one thread or
// ("" thread) in all: the further of their m.read and m.read.private
// receipts, as a timeline position.
type ReadPosition struct {
	UserID, RoomID, ThreadID string
	Pos                      int64
}

// ReadPositions returns the read positions of users (nil: all) in rooms.
func ReadPositions(ctx context.Context, q sqlutil.Querier, users, rooms []string) ([]ReadPosition, error) {
	var out []ReadPosition
	err := sqlutil.InBatches(rooms, 400, func(batch []string) error {
		cond, args := ``, sqlutil.Args(batch)
		if users != nil {
			cond = ` AND r.user_id IN (` + sqlutil.InList(len(users)) + `)`
			args = append(args, sqlutil.Args(users)...)
		}
		rows, err := q.QueryContext(ctx, `SELECT r.user_id, r.room_id, r.thread_id, MAX(e.pos) FROM sync_receipts r
			JOIN sync_events e ON e.event_id = r.event_id
			WHERE r.receipt_type IN ('m.read', 'm.read.private') AND r.room_id IN (`+sqlutil.InList(len(batch))+`)`+cond+`
			GROUP BY r.user_id, r.room_id, r.thread_id`, args...)
		ps, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (ReadPosition, error) {
			var p ReadPosition
			err := rows.Scan(&p.UserID, &p.RoomID, &p.ThreadID, &p.Pos)
			return p, err
		})
		out = append(out, ps...)
		return err
	})
	return out, err
}

// UserReads is where one user has read rooms up to, by room and thread
// ("" for the unthreaded receipts), as ReadPositions gives them.
type UserReads map[[2]string]int64

// UserReadPositions returns a user's read positions in rooms.
func UserReadPositions(ctx context.Context, q sqlutil.Querier, userID string, rooms []string) (UserReads, error) {
	ps, err := ReadPositions(ctx, q, []string{userID}, rooms)
	if err != nil {
		return nil, err
	}
	out := UserReads{}
	for _, p := range ps {
		out[[2]string{p.RoomID, p.ThreadID}] = p.Pos
	}
	return out, nil
}

// Position is how far a thread of a room is read: by its own receipts or
// by the unthreaded ones, whichever is further.
func (r UserReads) Position(roomID, threadID string) int64 {
	return max(r[[2]string{roomID, ""}], r[[2]string{roomID, threadID}])
}

// EventsAfter returns the sender, room and content of the timeline
// events after pos, oldest first (for replaying what was not saved).
func EventsAfter(ctx context.Context, q sqlutil.Querier, pos int64) ([]Event, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+eventColumns+` FROM sync_events WHERE pos > ? ORDER BY pos`, pos)
	return scanEvents(rows, err)
}

// PusherProgress returns how far a pusher has been delivered (found false
// for a pusher never seen).
func PusherProgress(ctx context.Context, q sqlutil.Querier, userID, appID, pushKey string) (pos int64, found bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT last_pos FROM sync_pusher_progress WHERE user_id = ? AND app_id = ? AND pushkey = ?`,
		userID, appID, pushKey).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// SetPusherProgress records how far a pusher has been delivered.
func SetPusherProgress(ctx context.Context, tx *sqlutil.Tx, userID, appID, pushKey string, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_pusher_progress (user_id, app_id, pushkey, last_pos) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET last_pos = excluded.last_pos`, userID, appID, pushKey, pos)
	return err
}

// PusherProgressKey identifies a pusher in sync_pusher_progress.
type PusherProgressKey struct{ UserID, AppID, PushKey string }

// PushersWithProgress lists every pusher with recorded progress: the
// pushers to resume at start.
func PushersWithProgress(ctx context.Context, q sqlutil.Querier) ([]PusherProgressKey, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, app_id, pushkey FROM sync_pusher_progress`)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (PusherProgressKey, error) {
		var k PusherProgressKey
		err := rows.Scan(&k.UserID, &k.AppID, &k.PushKey)
		return k, err
	})
}

// DeletePusherProgress forgets the progress of a user's pushers, but
// of those in keep.
func DeletePusherProgress(ctx context.Context, tx *sqlutil.Tx, userID string, keep []PusherProgressKey) error {
	q := `DELETE FROM sync_pusher_progress WHERE user_id = ?`
	args := []any{userID}
	for _, k := range keep {
		q += ` AND NOT (app_id = ? AND pushkey = ?)`
		args = append(args, k.AppID, k.PushKey)
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

// GlobalAccountData returns the content of one type of global account
// data of each user that has it.
func GlobalAccountData(ctx context.Context, q sqlutil.Querier, users []string, dataType string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := sqlutil.InBatches(users, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, content FROM sync_account_data WHERE room_id = '' AND type = ?
			AND user_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch, dataType)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var u, c string
			if err := rows.Scan(&u, &c); err != nil {
				return err
			}
			out[u] = []byte(c)
			return nil
		})
	})
	return out, err
}

// CurrentMemberEvents returns the current m.room.member events of the
// joined members of a room, by user.
func CurrentMemberEvents(ctx context.Context, q sqlutil.Querier, roomID string) (map[string][]byte, error) {
	rows, err := q.QueryContext(ctx, `SELECT state_key, event_json FROM sync_state WHERE room_id = ? AND type = 'm.room.member'
		AND membership = 'join' AND to_pos IS NULL`, roomID)
	out := map[string][]byte{}
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var u, js string
		if err := rows.Scan(&u, &js); err != nil {
			return err
		}
		out[u] = []byte(js)
		return nil
	})
	return out, err
}
