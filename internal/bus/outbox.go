package bus

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// OutboxRow is one message of an outbox table: committed in the
// transaction of the change it describes, published after the commit.
type OutboxRow struct {
	ID      int64 // the table's order
	Subject string
	MsgID   string
	Payload []byte // JSON
}

// Outbox publishes the rows (of type M) of a component's outbox table in
// order and deletes what it published. Publishing is idempotent (message
// IDs), so a crash between a publish and the delete only repeats what the
// stream drops.
type Outbox[M any] struct {
	// Batch is how many rows a flush reads at a time.
	Batch int
	// Load returns the first limit rows in order.
	Load func(ctx context.Context, limit int) ([]M, error)
	// Message is the subject, message ID and JSON payload of a row.
	Message func(m M) (subject, msgID string, payload []byte)
	// Delete removes published rows, a prefix of what Load returned.
	Delete func(ctx context.Context, published []M) error

	mu sync.Mutex // one flush at a time keeps the order
}

// publishTimeout bounds one publish of a flush.
const publishTimeout = 10 * time.Second

// Flush publishes everything the table holds on b. A failure keeps the
// unpublished rest for the next flush. Without a bus (a command that runs
// without the server) the messages wait for the server.
func (o *Outbox[M]) Flush(ctx context.Context, b *Bus) error {
	if b == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		rows, err := o.Load(ctx, o.Batch)
		if err != nil || len(rows) == 0 {
			return err
		}
		for i, m := range rows {
			subject, msgID, payload := o.Message(m)
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			_, err := b.Publish(pctx, subject, json.RawMessage(payload), msgID, nil)
			cancel()
			if err != nil {
				if i > 0 {
					_ = o.Delete(ctx, rows[:i])
				}
				return err
			}
		}
		if err := o.Delete(ctx, rows); err != nil || len(rows) < o.Batch {
			return err
		}
	}
}

// TableOutbox is the Outbox of a table read by sel and emptied by row ID
// by del (a component's storage functions) on q.
func TableOutbox(q sqlutil.Querier,
	sel func(ctx context.Context, q sqlutil.Querier, limit int) ([]OutboxRow, error),
	del func(ctx context.Context, q sqlutil.Querier, ids []int64) error) *Outbox[OutboxRow] {
	return &Outbox[OutboxRow]{
		Batch:   200,
		Load:    func(ctx context.Context, n int) ([]OutboxRow, error) { return sel(ctx, q, n) },
		Message: func(m OutboxRow) (string, string, []byte) { return m.Subject, m.MsgID, m.Payload },
		Delete: func(ctx context.Context, done []OutboxRow) error {
			ids := make([]int64, len(done))
			for i, r := range done {
				ids[i] = r.ID
			}
			return del(ctx, q, ids)
		},
	}
}
