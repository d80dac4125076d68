package bus

import (
	"context"
	"database/sql"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// The two tables every producer and consumer keeps, each component its own
// (named with its prefix, created by its migrations), with the SQL for
// both engines written once here.

// OutboxTable is the name of a component's outbox table, of columns
// (id: in insert order, subject, msg_id, payload): the messages its
// transactions committed for publishing. Each component that publishes
// writes its rows in the transaction of the change they announce and
// publishes them with Outbox after the commit.
type OutboxTable string

// Insert queues a message in the transaction that produced it. The
// message ID makes a second publish of it (a flush that failed after
// publishing, a relay after a crash) a no-op for the stream.
func (t OutboxTable) Insert(ctx context.Context, tx *sqlutil.Tx, subject, msgID string, payload []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+string(t)+` (subject, msg_id, payload) VALUES (?, ?, ?)`, subject, msgID, string(payload))
	return err
}

// Select returns the first limit queued messages in order.
func (t OutboxTable) Select(ctx context.Context, q sqlutil.Querier, limit int) ([]OutboxRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, subject, msg_id, payload FROM `+string(t)+` ORDER BY id LIMIT ?`, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (OutboxRow, error) {
		var m OutboxRow
		var p string
		err := rows.Scan(&m.ID, &m.Subject, &m.MsgID, &p)
		m.Payload = []byte(p)
		return m, err
	})
}

// Delete removes published messages.
func (t OutboxTable) Delete(ctx context.Context, q sqlutil.Querier, ids []int64) error {
	return sqlutil.InBatches(ids, 500, func(batch []int64) error {
		_, err := q.ExecContext(ctx, `DELETE FROM `+string(t)+` WHERE id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return err
	})
}

// Outbox is the publisher of the table's rows, read and emptied on q.
func (t OutboxTable) Outbox(q sqlutil.Querier) *Outbox[OutboxRow] {
	return TableOutbox(q, t.Select, t.Delete)
}

// PositionTable is a component's table of consumer positions: the last
// stream sequence each of its consumers (or partitions) applied, stored
// in the transaction of the effect of that message (the last-applied
// pattern of Consume). Key and Seq name its columns.
type PositionTable struct {
	Table, Key, Seq string
}

// Get returns the last sequence key applied (0: none).
func (t PositionTable) Get(ctx context.Context, q sqlutil.Querier, key any) (uint64, error) {
	var seq int64
	err := q.QueryRowContext(ctx, `SELECT `+t.Seq+` FROM `+t.Table+` WHERE `+t.Key+` = ?`, key).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(seq), err
}

// Set records seq as the last sequence key applied, in the transaction of
// its effect.
func (t PositionTable) Set(ctx context.Context, tx *sqlutil.Tx, key any, seq uint64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+t.Table+` (`+t.Key+`, `+t.Seq+`) VALUES (?, ?)
		ON CONFLICT (`+t.Key+`) DO UPDATE SET `+t.Seq+` = excluded.`+t.Seq, key, int64(seq))
	return err
}

// LastApplied is ConsumerSpec.LastApplied for key, read on q.
func (t PositionTable) LastApplied(q sqlutil.Querier, key any) func(context.Context) (uint64, error) {
	return func(ctx context.Context) (uint64, error) { return t.Get(ctx, q, key) }
}
