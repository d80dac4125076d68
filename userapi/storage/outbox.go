package storage

import (
	"context"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// OutboxMessage is a UserOutput message waiting to be published.
type OutboxMessage = bus.OutboxRow

// outbox is user_outbox: UserOutput in commit order.
var outbox = bus.OutboxTable("user_outbox")

// InsertOutbox queues a message in the transaction that produced it.
func InsertOutbox(ctx context.Context, tx *sqlutil.Tx, subject, msgID string, payload []byte) error {
	return outbox.Insert(ctx, tx, subject, msgID, payload)
}

// SelectOutbox returns queued messages in commit order (per user: the
// user's changes lock the same rows, so their IDs follow their commits).
func SelectOutbox(ctx context.Context, q sqlutil.Querier, limit int) ([]OutboxMessage, error) {
	return outbox.Select(ctx, q, limit)
}

// DeleteOutbox removes published messages.
func DeleteOutbox(ctx context.Context, q sqlutil.Querier, ids []int64) error {
	return outbox.Delete(ctx, q, ids)
}
