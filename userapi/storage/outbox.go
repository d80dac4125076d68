package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// OutboxMessage is a UserOutput message waiting to be published.
type OutboxMessage = bus.OutboxRow

// InsertOutbox queues a message in the transaction that produced it.
func InsertOutbox(ctx context.Context, tx *sqlutil.Tx, subject, msgID string, payload []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_outbox (subject, msg_id, payload) VALUES (?, ?, ?)`, subject, msgID, string(payload))
	return err
}

// SelectOutbox returns queued messages in commit order (per user: the
// user's changes lock the same row, so their IDs follow their commits).
func SelectOutbox(ctx context.Context, q sqlutil.Querier, limit int) ([]OutboxMessage, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, subject, msg_id, payload FROM user_outbox ORDER BY id LIMIT ?`, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (OutboxMessage, error) {
		var m OutboxMessage
		var p string
		err := rows.Scan(&m.ID, &m.Subject, &m.MsgID, &p)
		m.Payload = []byte(p)
		return m, err
	})
}

// DeleteOutbox removes published messages.
func DeleteOutbox(ctx context.Context, q sqlutil.Querier, ids []int64) error {
	return sqlutil.InBatches(ids, userBatch, func(batch []int64) error {
		_, err := q.ExecContext(ctx, `DELETE FROM user_outbox WHERE id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return err
	})
}
