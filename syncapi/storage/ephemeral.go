package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Outbox is the sync API's outbox for FederationOut: the EDUs of local
// users' public read receipts, queued in the transaction that stores them.
var Outbox = bus.OutboxTable("sync_outbox")

// Receipt is a read receipt.
type Receipt struct {
	RoomID, Type, UserID, ThreadID, EventID string
	TS, Pos                                 int64
}

// UpsertReceipt stores a user's latest receipt of a type and thread.
func UpsertReceipt(ctx context.Context, tx *sqlutil.Tx, r *Receipt) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, pos)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET
		event_id = excluded.event_id, ts = excluded.ts, pos = excluded.pos`, r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, r.Pos)
	return err
}

// ReceiptEventPos returns the timeline position of the event a user's
// receipt of a type and thread points at (found false when none).
func ReceiptEventPos(ctx context.Context, q sqlutil.Querier, roomID, typ, userID, threadID string) (pos int64, found bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT e.pos FROM sync_receipts r JOIN sync_events e ON e.event_id = r.event_id
		WHERE r.room_id = ? AND r.receipt_type = ? AND r.user_id = ? AND r.thread_id = ?`, roomID, typ, userID, threadID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// ReceiptsSince returns the receipts of rooms that changed in (from, to].
func ReceiptsSince(ctx context.Context, q sqlutil.Querier, rooms []string, from, to int64) ([]Receipt, error) {
	var out []Receipt
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, pos FROM sync_receipts
			WHERE pos > ? AND pos <= ? AND room_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch, from, to)...)
		rs, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (Receipt, error) {
			var r Receipt
			err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.Pos)
			return r, err
		})
		out = append(out, rs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AccountData is an account data item with its position.
type AccountData struct {
	RoomID, Type string
	Content      json.RawMessage
	Pos          int64
}

// UpsertAccountData stores an account data item at pos.
func UpsertAccountData(ctx context.Context, tx *sqlutil.Tx, userID string, d *AccountData) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_account_data (user_id, room_id, type, content, pos) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, pos = excluded.pos`,
		userID, d.RoomID, d.Type, string(d.Content), d.Pos)
	return err
}

// AccountDataSince returns a user's account data changed in (from, to].
func AccountDataSince(ctx context.Context, q sqlutil.Querier, userID string, from, to int64) ([]AccountData, error) {
	rows, err := q.QueryContext(ctx, `SELECT room_id, type, content, pos FROM sync_account_data WHERE user_id = ? AND pos > ? AND pos <= ? ORDER BY pos`,
		userID, from, to)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (AccountData, error) {
		var d AccountData
		var c string
		if err := rows.Scan(&d.RoomID, &d.Type, &c, &d.Pos); err != nil {
			return d, err
		}
		d.Content = json.RawMessage(c)
		return d, nil
	})
}

// Presence is a user's presence.
type Presence struct {
	UserID          string
	Presence        string
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	Pos             int64
}

// UpsertPresence stores a user's presence at its position.
func UpsertPresence(ctx context.Context, tx *sqlutil.Tx, p *Presence) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_presence (user_id, presence, status_msg, last_active_ts, currently_active, pos)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,
		last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active, pos = excluded.pos`,
		p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive, p.Pos)
	return err
}

func scanPresence(sc interface{ Scan(...any) error }) (*Presence, error) {
	var p Presence
	var msg sql.NullString
	if err := sc.Scan(&p.UserID, &p.Presence, &msg, &p.LastActiveTS, &p.CurrentlyActive, &p.Pos); err != nil {
		return nil, err
	}
	if msg.Valid {
		p.StatusMsg = &msg.String
	}
	return &p, nil
}

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, pos`

// SelectPresence returns a user's presence, or ErrNotFound.
func SelectPresence(ctx context.Context, q sqlutil.Querier, userID string) (*Presence, error) {
	p, err := scanPresence(q.QueryRowContext(ctx, `SELECT `+presenceColumns+` FROM sync_presence WHERE user_id = ?`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return p, err
}

// PresenceSince returns the presence of users that changed in (from, to].
func PresenceSince(ctx context.Context, q sqlutil.Querier, users []string, from, to int64) ([]Presence, error) {
	var out []Presence
	err := sqlutil.InBatches(users, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT `+presenceColumns+` FROM sync_presence WHERE pos > ? AND pos <= ? AND user_id IN (`+
			sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch, from, to)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			p, err := scanPresence(rows)
			if err != nil {
				return err
			}
			out = append(out, *p)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// InsertStrippedState stores what an invited or knocking user may see of a
// room.
func InsertStrippedState(ctx context.Context, tx *sqlutil.Tx, userID, roomID string, pos int64, state json.RawMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_stripped_state (user_id, room_id, pos, state) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		userID, roomID, pos, string(state))
	return err
}

// StrippedStates returns the latest stripped state of each room for a user.
func StrippedStates(ctx context.Context, q sqlutil.Querier, userID string, rooms []string) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if len(rooms) == 0 {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT room_id, state FROM sync_stripped_state s WHERE user_id = ? AND room_id IN (`+sqlutil.InList(len(rooms))+`)
		AND pos = (SELECT MAX(pos) FROM sync_stripped_state t WHERE t.user_id = s.user_id AND t.room_id = s.room_id)`, sqlutil.Args(rooms, userID)...)
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var room, st string
		if err := rows.Scan(&room, &st); err != nil {
			return err
		}
		out[room] = json.RawMessage(st)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MaxPositions returns the highest position of each stream table.
func MaxPositions(ctx context.Context, q sqlutil.Querier) (events, receipts, accountData, presence int64, err error) {
	var e, r, a, p sql.NullInt64
	err = q.QueryRowContext(ctx, `SELECT (SELECT MAX(pos) FROM sync_events), (SELECT MAX(pos) FROM sync_receipts),
		(SELECT MAX(pos) FROM sync_account_data), (SELECT MAX(pos) FROM sync_presence)`).Scan(&e, &r, &a, &p)
	return e.Int64, r.Int64, a.Int64, p.Int64, err
}

// consumers is sync_consumers: the last stream sequence each consumer
// applied.
var consumers = bus.PositionTable{Table: "sync_consumers", Key: "name", Seq: "last_seq"}

// ConsumerPosition returns the last stream sequence a consumer applied.
func ConsumerPosition(ctx context.Context, q sqlutil.Querier, name string) (uint64, error) {
	return consumers.Get(ctx, q, name)
}

// SetConsumerPosition records the last stream sequence a consumer applied.
func SetConsumerPosition(ctx context.Context, tx *sqlutil.Tx, name string, seq uint64) error {
	return consumers.Set(ctx, tx, name, seq)
}

// PresenceChanged returns the presence of every user that changed in
// (from, to]: cheaper than PresenceSince when the users are many and the
// range is short.
func PresenceChanged(ctx context.Context, q sqlutil.Querier, from, to int64) ([]Presence, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+presenceColumns+` FROM sync_presence WHERE pos > ? AND pos <= ? ORDER BY pos`, from, to)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Presence, error) {
		p, err := scanPresence(rows)
		if err != nil {
			return Presence{}, err
		}
		return *p, nil
	})
}

// PresenceNotOffline returns the presence of every user who is not
// offline.
func PresenceNotOffline(ctx context.Context, q sqlutil.Querier) ([]Presence, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+presenceColumns+` FROM sync_presence WHERE presence <> 'offline'`)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Presence, error) {
		p, err := scanPresence(rows)
		if err != nil {
			return Presence{}, err
		}
		return *p, nil
	})
}
