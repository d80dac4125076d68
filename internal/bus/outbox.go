package bus

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// published is the highest stream sequence a flush got: once a
	// Flush returns nil, every row committed before it began is at or
	// below it.
	published atomic.Uint64
	// failed is set when a flush fails and cleared by one that empties
	// the table; Relay retries while it is set.
	failed atomic.Bool
}

// Published returns the highest stream sequence a publish of the outbox
// got: after a Flush that returned nil, the position that covers every
// row committed before that Flush, for read-your-writes (WriteMarks).
func (o *Outbox[M]) Published() uint64 { return o.published.Load() }

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
	err := o.flush(ctx, b)
	o.failed.Store(err != nil)
	return err
}

func (o *Outbox[M]) flush(ctx context.Context, b *Bus) error {
	for {
		rows, err := o.Load(ctx, o.Batch)
		if err != nil || len(rows) == 0 {
			return err
		}
		for i, m := range rows {
			subject, msgID, payload := o.Message(m)
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			seq, err := b.Publish(pctx, subject, json.RawMessage(payload), msgID, nil)
			cancel()
			if err != nil {
				if i > 0 {
					_ = o.Delete(ctx, rows[:i])
				}
				return err
			}
			if seq > o.published.Load() {
				o.published.Store(seq)
			}
		}
		if err := o.Delete(ctx, rows); err != nil || len(rows) < o.Batch {
			return err
		}
	}
}

// Relay flushes the outbox now and then every interval after a flush
// failed, until stop is called: what a failed publish (NATS away, a
// request cancelled after its commit) left behind goes out without
// waiting for the next change. Failures are logged.
func (o *Outbox[M]) Relay(b *Bus, every time.Duration, log *slog.Logger) (stop func()) {
	if b == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	o.failed.Store(true)
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if o.failed.Load() {
				if err := o.Flush(ctx, b); err != nil && ctx.Err() == nil && log != nil {
					log.Warn("outbox relay: publish failed, will retry", slog.String("error", err.Error()))
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
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
