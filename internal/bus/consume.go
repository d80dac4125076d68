package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Msg is a message handed to a Handler.
type Msg struct {
	Subject string
	Data    []byte
	Header  nats.Header
	// Seq is the message's stream sequence: store it with the effect of
	// handling it (see ConsumerSpec.LastApplied).
	Seq uint64
	// Delivered counts deliveries of this message, starting at 1.
	Delivered uint64
	// Published is when the stream stored the message.
	Published time.Time
}

// Handler handles one message. Returning nil acks it; an error wrapped with
// Permanent terminates it (it is logged and never redelivered); any other
// error naks it for redelivery after a backoff.
type Handler func(ctx context.Context, m *Msg) error

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that redelivery cannot fix, such as a message
// that does not decode.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err (or one it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var perm permanentError
	return errors.As(err, &perm)
}

// ConsumerSpec describes a durable consumer.
type ConsumerSpec struct {
	Stream  string
	Durable string
	// FilterSubjects restricts the consumer to these subjects (relative to
	// the prefix); empty means all subjects of the stream.
	FilterSubjects []string
	// MaxAckPending is how many messages may be in flight; 1 (the default)
	// handles messages strictly in stream order.
	MaxAckPending int
	// AckWait is how long a delivered message may stay unacked before it is
	// redelivered (default one minute). A handler that runs longer keeps its
	// message with progress heartbeats, so only a message whose consumer died
	// waits for it (and Consume redelivers those at once at start).
	AckWait time.Duration
	// LastApplied, when set, returns the highest stream sequence whose effect
	// the consumer has stored. Messages at or below it are acked unhandled.
	LastApplied func(ctx context.Context) (uint64, error)
}

// DrainTimeout bounds how long stop waits for the handler in flight before
// cancelling its context.
const DrainTimeout = 3 * time.Second

// Consume starts a durable consumer running h on its own goroutine until ctx
// is done or stop is called. Cancelling ctx cancels the handler in flight;
// stop instead drains: it takes no further message and lets the handler in
// flight finish (for up to DrainTimeout, then cancels it), so that a
// shutdown completes the work it had begun. Messages fetched but not handled
// stay unacked and are redelivered when the consumer next starts.
func (b *Bus) Consume(ctx context.Context, spec ConsumerSpec, h Handler) (stop func(), err error) {
	c, err := b.startConsumer(ctx, &spec)
	if err != nil {
		return nil, err
	}
	go func() {
		defer c.finished()
		for {
			jm, ok := c.next()
			if !ok {
				return
			}
			b.handle(c.ctx, c.log, jm, c.last, spec.AckWait/3, h)
		}
	}()
	return c.stop, nil
}

// BatchHandler handles messages in stream order, several at a time: all
// those delivered and not yet handled when it is called, up to the batch
// size. Returning nil acks them all. An error leaves them unacked and the
// same batch is handed to it again after a backoff (in this process, so
// that nothing behind the batch overtakes it), until it succeeds or the
// consumer stops: the handler decides what to give up on, and how to tell
// whom.
type BatchHandler func(ctx context.Context, msgs []*Msg) error

// ConsumeBatch starts a durable consumer that hands messages to h in
// batches of up to maxBatch, strictly in stream order (spec.MaxAckPending is
// raised to maxBatch so that the next messages are delivered while a batch
// is handled). Stop, cancellation and redelivery at start are as for
// Consume. A message redelivered after the ack wait while its first
// delivery was handled is acked unhandled.
func (b *Bus) ConsumeBatch(ctx context.Context, spec ConsumerSpec, maxBatch int, h BatchHandler) (stop func(), err error) {
	maxBatch = max(maxBatch, 1)
	spec.MaxAckPending = max(spec.MaxAckPending, maxBatch)
	c, err := b.startConsumer(ctx, &spec)
	if err != nil {
		return nil, err
	}
	// The iterator blocks, so a goroutine feeds the delivered messages to
	// the batching loop, which takes what is there without waiting.
	msgs := make(chan jetstream.Msg, spec.MaxAckPending)
	go func() {
		defer close(msgs)
		for {
			jm, ok := c.next()
			if !ok {
				return
			}
			select {
			case msgs <- jm:
			case <-c.quit:
				return
			case <-c.ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer c.finished()
		last := c.last
		batch := make([]jetstream.Msg, 0, maxBatch)
		for jm := range msgs {
			batch = append(batch[:0], jm)
		more:
			for len(batch) < maxBatch {
				select {
				case jm, ok := <-msgs:
					if !ok {
						break more
					}
					batch = append(batch, jm)
				default:
					break more
				}
			}
			if c.ctx.Err() != nil || c.stopping() {
				return // what is left is redelivered at the next start
			}
			if !b.handleBatch(c.ctx, c.log, batch, &last, spec.AckWait/3, h) {
				return
			}
		}
	}()
	return c.stop, nil
}

// handleBatch runs h on the messages of batch above last until it succeeds,
// acks them and moves last. It returns false when ctx ended first.
func (b *Bus) handleBatch(ctx context.Context, log *slog.Logger, batch []jetstream.Msg, last *uint64, heartbeat time.Duration, h BatchHandler) bool {
	msgs := make([]*Msg, 0, len(batch))
	todo := make([]jetstream.Msg, 0, len(batch))
	for _, jm := range batch {
		md, err := jm.Metadata()
		if err != nil {
			log.Error("message without metadata: terminated", slog.String("error", err.Error()))
			_ = jm.Term()
			continue
		}
		if md.Sequence.Stream <= *last {
			_ = jm.Ack() // applied already: a redelivery, or skipped at start
			continue
		}
		msgs = append(msgs, &Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers(), Seq: md.Sequence.Stream, Delivered: md.NumDelivered, Published: md.Timestamp})
		todo = append(todo, jm)
	}
	if len(msgs) == 0 {
		return true
	}
	handled := make(chan struct{})
	go func() {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, jm := range todo {
					_ = jm.InProgress()
				}
			case <-handled:
				return
			}
		}
	}()
	defer close(handled)
	for attempt := 1; ; attempt++ {
		err := h(ctx, msgs)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false // unacked: redelivered when the consumer next starts
		}
		delay := min(time.Duration(1<<min(attempt, 8))*100*time.Millisecond, 30*time.Second)
		log.Warn("batch failed: will retry", slog.Uint64("first_seq", msgs[0].Seq), slog.Int("messages", len(msgs)),
			slog.Duration("delay", delay), slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
	}
	for _, jm := range todo {
		_ = jm.Ack()
	}
	*last = msgs[len(msgs)-1].Seq
	return true
}

// consumer is a started durable consumer: its message iterator and what
// stops it.
type consumer struct {
	ctx    context.Context
	cancel context.CancelFunc
	iter   jetstream.MessagesContext
	log    *slog.Logger
	// last is the highest sequence LastApplied reported at start.
	last   uint64
	done   chan struct{}
	unlist func()
	// quit is closed when stop begins.
	quit     chan struct{}
	quitOnce sync.Once
}

func (c *consumer) stopping() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// startConsumer creates or updates the durable consumer of spec (filling
// in its defaults), redelivers what an earlier instance left pending and
// opens its message iterator.
func (b *Bus) startConsumer(ctx context.Context, spec *ConsumerSpec) (*consumer, error) {
	if spec.MaxAckPending <= 0 {
		spec.MaxAckPending = 1
	}
	if spec.AckWait <= 0 {
		spec.AckWait = time.Minute
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       b.Name(spec.Durable),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       spec.AckWait,
		MaxAckPending: spec.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	for _, s := range spec.FilterSubjects {
		cfg.FilterSubjects = append(cfg.FilterSubjects, b.Name(s))
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, b.Name(spec.Stream), cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", spec.Durable, spec.Stream, err)
	}
	// The process consuming is the consumer's only owner, so a message still
	// pending when it starts was delivered to an instance that is gone (killed,
	// crashed, or stopped with the message unacked). Left alone it would be
	// redelivered only after the ack wait, holding up everything behind it
	// (MaxAckPending is 1 for ordered consumers); rewinding to the ack floor
	// redelivers it at once. Redelivery is harmless: messages at or below
	// LastApplied are skipped.
	// An external NATS server without the consumer reset API only delays
	// them, so that is a warning.
	log := b.log.With("consumer", spec.Durable)
	if info := cons.CachedInfo(); info != nil && info.NumAckPending > 0 {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.JS.ResetConsumer(rctx, b.Name(spec.Stream), cfg.Durable)
		rcancel()
		if err != nil {
			log.Warn("could not redeliver the messages pending at start at once: they wait for the ack wait",
				slog.Int("pending", info.NumAckPending), slog.String("error", err.Error()))
		}
	}
	var last uint64
	if spec.LastApplied != nil {
		if last, err = spec.LastApplied(ctx); err != nil {
			return nil, fmt.Errorf("bus: consumer %s: last applied sequence: %w", spec.Durable, err)
		}
	}
	// Pull requests expire after 5 s (not the client's default 30 s, with
	// heartbeats every 15 s): when the client's count of messages still owed
	// by its pull requests drifts from the server's (seen with
	// MaxAckPending 1 when the process is slow, as under -race), no request
	// is outstanding and the consumer stalls until the next expiry or missed
	// heartbeat; 5 s bounds that and the stall no longer showed.
	iter, err := cons.Messages(jetstream.PullMaxMessages(max(spec.MaxAckPending, 16)), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s: %w", spec.Durable, err)
	}
	c := &consumer{iter: iter, log: log, last: last, done: make(chan struct{}), quit: make(chan struct{}), unlist: b.consumers.add(spec.Stream, spec.Durable, cons)}
	c.ctx, c.cancel = context.WithCancel(ctx)
	go func() {
		<-c.ctx.Done()
		iter.Stop()
	}()
	return c, nil
}

// next returns the next delivered message, or false once the consumer
// stops. It retries failed fetches every second.
func (c *consumer) next() (jetstream.Msg, bool) {
	for {
		jm, err := c.iter.Next()
		if err == nil {
			return jm, true
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || c.ctx.Err() != nil {
			return nil, false
		}
		c.log.Warn("consumer fetch failed", slog.String("error", err.Error()))
		select {
		case <-c.ctx.Done():
			return nil, false
		case <-time.After(time.Second):
		}
	}
}

// finished is called by the handling goroutine when it returns.
func (c *consumer) finished() {
	c.unlist()
	close(c.done)
}

// stop drains the consumer: no further message, the handler in flight
// finishes (cancelled after DrainTimeout).
func (c *consumer) stop() {
	c.quitOnce.Do(func() { close(c.quit) })
	c.iter.Stop()
	select {
	case <-c.done:
	case <-time.After(DrainTimeout):
		c.log.Warn("consumer handler still running at shutdown: cancelled")
		c.cancel()
		<-c.done
	}
	c.cancel()
}

func (b *Bus) handle(ctx context.Context, log *slog.Logger, jm jetstream.Msg, last uint64, heartbeat time.Duration, h Handler) {
	md, err := jm.Metadata()
	if err != nil {
		log.Error("message without metadata: terminated", slog.String("error", err.Error()))
		_ = jm.Term()
		return
	}
	if md.Sequence.Stream <= last {
		_ = jm.Ack()
		return
	}
	m := &Msg{Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers(), Seq: md.Sequence.Stream, Delivered: md.NumDelivered, Published: md.Timestamp}
	handled := make(chan struct{})
	go func() {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = jm.InProgress()
			case <-handled:
				return
			}
		}
	}()
	err = h(ctx, m)
	close(handled)
	var perm permanentError
	switch {
	case err == nil:
		_ = jm.Ack()
	case errors.As(err, &perm):
		log.Error("message terminated", slog.Uint64("seq", m.Seq), slog.String("subject", m.Subject), slog.String("error", err.Error()))
		_ = jm.Term()
	case ctx.Err() != nil:
		_ = jm.Nak()
	default:
		delay := min(time.Duration(1<<min(md.NumDelivered, 8))*100*time.Millisecond, 30*time.Second)
		log.Warn("message failed: will retry", slog.Uint64("seq", m.Seq), slog.Duration("delay", delay), slog.String("error", err.Error()))
		_ = jm.NakWithDelay(delay)
	}
}
