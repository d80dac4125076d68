package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// Group commit. Each RoomInput partition hands the inputs waiting on it
// (up to maxPartitionBatch, in order) to one committer, which takes what
// every partition has handed over and stores it in one transaction: one
// commit, one output flush and one round of replies for many inputs, where
// a transaction per input made the commit, the publish and the hand-offs
// between them the cost of every message. Each partition's inputs keep
// their order; a partition hands over its next inputs only once the
// previous ones are done, so a room is still written by one input at a
// time. An input that is refused or fails is retried alone, so that it
// costs the inputs around it nothing: a failure rolls the transaction back,
// the inputs before it are stored again without it, it runs in a
// transaction of its own, and the others follow.

// maxPartitionBatch bounds how many inputs of one partition one
// transaction takes.
const maxPartitionBatch = 64

// inputEntry is one input on its way through the committer.
type inputEntry struct {
	partition int
	m         *bus.Msg
	msg       api.InputMessage
	attempts  int

	// Set by the committer.
	done    bool // stored (or refused) and answered
	err     error
	started time.Time
	res     *api.InputResult
	outputs bool
}

// handOver is a partition's inputs waiting for the committer.
type handOver struct {
	entries []*inputEntry
	done    chan struct{}
}

// committer stores the inputs of every partition in shared transactions.
type committer struct {
	queue   chan *handOver
	mu      sync.Mutex
	running bool
	stop    chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc
}

func newCommitter() *committer {
	return &committer{queue: make(chan *handOver, api.Partitions)}
}

// startCommitter starts the committer goroutine, which takes what the
// partitions hand over until stopCommitter.
func (r *Roomserver) startCommitter(ctx context.Context) {
	c := r.committer
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return
	}
	c.running = true
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	ctx, c.cancel = context.WithCancel(ctx)
	go r.runCommitter(ctx, c.stop, c.done)
}

func (r *Roomserver) runCommitter(ctx context.Context, stop, done chan struct{}) {
	c := r.committer
	defer close(done)
	var group []*handOver
	for {
		select {
		case h := <-c.queue:
			group = append(group[:0], h)
		case <-stop:
			return
		}
	more:
		for {
			select {
			case h := <-c.queue:
				group = append(group, h)
			default:
				break more
			}
		}
		var entries []*inputEntry
		for _, h := range group {
			entries = append(entries, h.entries...)
		}
		r.runEntries(ctx, entries, map[int]bool{})
		for _, h := range group {
			close(h.done)
		}
	}
}

// stopCommitter stops the committer once no partition is left to hand
// over anything.
func (r *Roomserver) stopCommitter() {
	c := r.committer
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return
	}
	c.running = false
	close(c.stop)
	select {
	case <-c.done:
	case <-time.After(bus.DrainTimeout):
		r.log.Warn("input still running at shutdown: cancelled")
		c.cancel()
		<-c.done
	}
	c.cancel()
}

// handleInputs is a RoomInput partition's batch handler: it hands the
// inputs over to the committer, retries the one that failed after a
// backoff (and what follows it, in order), and gives up on an input after
// maxInputAttempts with an error for its caller.
func (r *Roomserver) handleInputs(ctx context.Context, partition int, msgs []*bus.Msg) error {
	entries := make([]*inputEntry, 0, len(msgs))
	for _, m := range msgs {
		e := &inputEntry{partition: partition, m: m, attempts: int(m.Delivered) - 1}
		if err := json.Unmarshal(m.Data, &e.msg); err != nil {
			r.log.Error("undecodable input: dropped", slog.Uint64("seq", m.Seq), slog.String("error", err.Error()))
			continue
		}
		entries = append(entries, e)
	}
	for len(entries) > 0 {
		h := &handOver{entries: entries, done: make(chan struct{})}
		select {
		case r.committer.queue <- h:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-h.done:
		case <-ctx.Done():
			return ctx.Err() // what was stored is skipped when redelivered
		}
		i := 0
		for i < len(entries) && entries[i].done {
			i++
		}
		if i == len(entries) {
			return nil
		}
		entries = entries[i:]
		e := entries[0]
		if e.err == nil {
			continue // not reached: an earlier failure in the group held the partition
		}
		e.attempts++
		if e.attempts >= maxInputAttempts {
			r.log.Error("input failed", slog.String("room_id", e.msg.RoomID), slog.String("input", e.msg.ID), slog.String("error", e.err.Error()))
			r.metrics.input(&e.msg, e.m.Published, e.started, nil, e.err)
			r.reply(e.msg.ReplyTo, &api.InputResult{Error: &api.InputError{Code: mxerr.CodeUnknown, Message: "Internal server error"}})
			entries = entries[1:]
			continue
		}
		delay := min(time.Duration(1<<min(e.attempts, 8))*100*time.Millisecond, 30*time.Second)
		r.log.Warn("input failed: will retry", slog.String("room_id", e.msg.RoomID), slog.String("input", e.msg.ID),
			slog.Duration("delay", delay), slog.String("error", e.err.Error()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		for _, e := range entries {
			e.err = nil
		}
	}
	return nil
}

// runEntries stores entries (the partitions' inputs, each partition's in
// order) in as few transactions as their outcomes allow. An entry of a
// partition in blocked is left undone: an earlier input of its partition
// failed, and the partition retries from there.
func (r *Roomserver) runEntries(ctx context.Context, entries []*inputEntry, blocked map[int]bool) {
	for {
		kept := entries[:0:0]
		for _, e := range entries {
			if !blocked[e.partition] {
				kept = append(kept, e)
			}
		}
		entries = kept
		if len(entries) == 0 {
			return
		}
		k := 0
		if len(entries) > 1 {
			k = r.tryGroup(ctx, entries)
			if k == len(entries) {
				return
			}
			if k > 0 {
				r.runEntries(ctx, entries[:k], blocked)
			}
		}
		e := entries[k]
		if !blocked[e.partition] {
			r.runAlone(ctx, e)
			if e.err != nil {
				blocked[e.partition] = true
			}
		}
		entries = entries[k+1:]
	}
}

// tryGroup stores entries in one transaction and answers them. When one
// is refused or fails, it rolls back and returns its index; else it
// returns len(entries).
func (r *Roomserver) tryGroup(ctx context.Context, entries []*inputEntry) int {
	started := time.Now()
	failed := 0
	var d *dbctx
	results := make([]*api.InputResult, len(entries))
	outputs := make([]bool, len(entries))
	err := r.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		d = r.inTx(tx)
		positions := map[int]uint64{}
		for i, e := range entries {
			before := d.outputs
			res, err := d.processInput(ctx, &e.msg)
			if err != nil {
				failed = i
				return err
			}
			results[i], outputs[i] = res, d.outputs > before
			positions[e.partition] = max(positions[e.partition], e.m.Seq)
		}
		for p, seq := range positions {
			if err := storage.UpdateInputPosition(ctx, tx, p, seq); err != nil {
				failed = 0
				return err
			}
		}
		return nil
	})
	if err != nil {
		return failed
	}
	d.commit()
	r.metrics.batch.Observe(float64(len(entries)))
	for i, e := range entries {
		e.started, e.res, e.outputs = started, results[i], outputs[i]
	}
	r.answer(ctx, entries)
	return len(entries)
}

// runAlone stores one input in a transaction of its own and answers it: a
// refusal is its result; any other failure is left in e.err.
func (r *Roomserver) runAlone(ctx context.Context, e *inputEntry) {
	e.started = time.Now()
	var d *dbctx
	var res *api.InputResult
	err := r.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		d = r.inTx(tx)
		var err error
		if res, err = d.processInput(ctx, &e.msg); err != nil {
			return err
		}
		return storage.UpdateInputPosition(ctx, tx, e.partition, e.m.Seq)
	})
	var ie *api.InputError
	switch {
	case errors.As(err, &ie):
		e.res = &api.InputResult{RoomID: e.msg.RoomID, Error: ie}
	case err != nil:
		e.err = err
		return
	default:
		d.commit()
		r.metrics.batch.Observe(1)
		e.res, e.outputs = res, d.outputs > 0
	}
	r.answer(ctx, []*inputEntry{e})
}

// answer publishes the output of committed entries, then sends each its
// result.
func (r *Roomserver) answer(ctx context.Context, entries []*inputEntry) {
	var keys []string
	for _, e := range entries {
		if e.outputs {
			for _, k := range r.writers(&e.msg, e.res) {
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
	}
	if len(keys) > 0 {
		r.announce(ctx, keys...)
	}
	for _, e := range entries {
		e.done = true
		r.metrics.input(&e.msg, e.m.Published, e.started, e.res, nil)
		r.reply(e.msg.ReplyTo, e.res)
	}
}
