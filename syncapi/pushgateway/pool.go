package pushgateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/netguard"
)

// Defaults of the pool's settings.
const (
	// DefaultMinBackoff is the first wait after a failure (Synapse: 1s).
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the doubling waits (Synapse: 1h; shorter
	// here so that a gateway back from an outage gets its backlog soon).
	DefaultMaxBackoff = 10 * time.Minute
	// DefaultBatchSize is how many notifications one Pending call reads.
	DefaultBatchSize = 20
)

// advanceTimeout bounds recording progress after a send while the worker
// is being stopped.
const advanceTimeout = 10 * time.Second

// PoolOption changes a default of NewPool.
type PoolOption func(*Pool)

// WithBackoff bounds the wait after a failure, which doubles (with ±25%
// jitter) from min up to max (defaults DefaultMinBackoff and
// DefaultMaxBackoff). Values <= 0 keep the default.
func WithBackoff(min, max time.Duration) PoolOption {
	return func(p *Pool) {
		if min > 0 {
			p.minBO = min
		}
		if max > 0 {
			p.maxBO = max
		}
	}
}

// WithBatchSize sets the limit of each Source.Pending call (default
// DefaultBatchSize).
func WithBatchSize(n int) PoolOption {
	return func(p *Pool) {
		if n > 0 {
			p.batch = n
		}
	}
}

// Pool delivers notifications to targets, one worker goroutine per target
// (a user's pusher: user ID, app ID and push key).
//
// A worker reads the target's progress once, then repeatedly reads its
// pending notifications and sends them in order, recording progress after
// each. A notification is dropped (progress moves past it) only when the
// gateway refuses it permanently ([Error].Permanent); after a transient
// failure the same notification is retried after a backoff (not cut short
// by Wake), so a gateway outage delays notifications but loses none and
// reorders none. Source errors are retried with backoff too. When the
// gateway rejects the push key, the worker records progress, calls
// Source.Rejected (retried until it succeeds) and stops. With nothing
// pending, a worker waits for Wake, Set or Close.
//
// Delivery is at least once: a notification whose answer is lost, or
// whose progress is not recorded before the process stops, is sent again
// (gateways deduplicate by event_id).
type Pool struct {
	src    Source
	client *Client
	log    *slog.Logger
	m      *metrics
	minBO  time.Duration
	maxBO  time.Duration
	batch  int
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	users  map[string]map[key]*worker
}

// worker is one target's goroutine.
type worker struct {
	p      *Pool
	t      Target
	log    *slog.Logger
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: a wake while busy is kept
	done   chan struct{} // closed when the goroutine returns
	bo     backoff       // gateway failures
	sbo    backoff       // Source failures
}

// NewPool returns a Pool delivering src's notifications with client.
// log receives delivery problems (with user_id and app_id, never the push
// key or content; nil discards them); reg receives the metrics (nil
// registers none; metrics already registered by another pool are shared).
func NewPool(src Source, client *Client, log *slog.Logger, reg prometheus.Registerer, opts ...PoolOption) *Pool {
	p := &Pool{
		src:    src,
		client: client,
		log:    log,
		m:      newMetrics(reg),
		minBO:  DefaultMinBackoff,
		maxBO:  DefaultMaxBackoff,
		batch:  DefaultBatchSize,
		users:  map[string]map[key]*worker{},
	}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.maxBO = max(p.maxBO, p.minBO)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// Set replaces userID's targets with targets (each one's UserID is taken
// to be userID; of two with the same app ID and push key the last wins).
// It starts workers for new targets, which look for pending notifications
// at once, and stops the workers of targets no longer listed. A target
// that changed in any field is restarted: its new worker starts once the
// old one has returned, so the two never send at the same time. An
// unchanged target's worker keeps running undisturbed (its backoff too).
// Set does not wait for stopped workers. After Close it does nothing.
func (p *Pool) Set(userID string, targets []Target) {
	want := make(map[key]Target, len(targets))
	for _, t := range targets {
		t.UserID = userID
		want[t.key()] = t
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	old := p.users[userID]
	next := make(map[key]*worker, len(want))
	for k, t := range want {
		w, ok := old[k]
		if ok && w.t.equal(t) {
			next[k] = w
			continue
		}
		var prev <-chan struct{}
		if ok {
			w.cancel()
			prev = w.done
		}
		next[k] = p.start(t, prev)
	}
	for k, w := range old {
		if _, ok := want[k]; !ok {
			w.cancel()
		}
	}
	if len(next) == 0 {
		delete(p.users, userID)
	} else {
		p.users[userID] = next
	}
}

// start runs a worker for t after prev (if not nil) is closed. p.mu is
// held.
func (p *Pool) start(t Target, prev <-chan struct{}) *worker {
	ctx, cancel := context.WithCancel(p.ctx)
	w := &worker{
		p:      p,
		t:      t,
		log:    p.log.With("user_id", t.UserID, "app_id", t.AppID),
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		bo:     backoff{min: p.minBO, max: p.maxBO},
		sbo:    backoff{min: p.minBO, max: p.maxBO},
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(w.done)
		defer cancel()
		p.m.workers.Inc()
		defer p.m.workers.Dec()
		if prev != nil {
			select {
			case <-prev:
			case <-ctx.Done():
				return
			}
		}
		w.run(ctx)
	}()
	return w
}

// Wake tells the workers of userIDs that new notifications may be
// pending. A worker that is sending looks again when it is done; one in
// backoff looks when its wait is over. Users without targets are ignored.
func (p *Pool) Wake(userIDs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range userIDs {
		for _, w := range p.users[u] {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Badge sends each of userID's targets a notification with nothing but
// the badge count (unread), as Synapse does when a user has read
// something, so that phones update the app's badge. It is best effort:
// not queued and not retried (the next notification carries the count
// again). It does not wait for the sends.
func (p *Pool) Badge(userID string, unread int) {
	p.mu.Lock()
	var targets []Target
	if !p.closed {
		for _, w := range p.users[userID] {
			targets = append(targets, w.t)
		}
	}
	if len(targets) > 0 {
		p.wg.Add(len(targets))
	}
	p.mu.Unlock()
	for _, t := range targets {
		go func() {
			defer p.wg.Done()
			if _, err := p.client.Notify(p.ctx, t, Notification{Unread: unread}); err != nil {
				p.log.Debug("badge update not delivered", "user_id", t.UserID, "app_id", t.AppID, "error", err.Error())
			}
		}()
	}
}

// Close stops every worker, cancelling requests in flight and backoff
// waits, and returns when all have returned. Progress of a notification
// already delivered is still recorded (bounded by a 10s timeout).
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.users = map[string]map[key]*worker{}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// forget removes w from the pool if it is still the worker of its target.
func (p *Pool) forget(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := w.t.key()
	if ws := p.users[w.t.UserID]; ws[k] == w {
		delete(ws, k)
		if len(ws) == 0 {
			delete(p.users, w.t.UserID)
		}
	}
}

// run is the worker's loop; it returns when ctx is done or the push key
// was rejected.
func (w *worker) run(ctx context.Context) {
	src := w.p.src
	var pos int64
	if !w.retry(ctx, "reading progress", func(ctx context.Context) (err error) {
		pos, err = src.Progress(ctx, w.t)
		return err
	}) {
		return
	}
	for {
		// Drained before reading, so that a wake arriving from here on
		// is seen by the wait below.
		select {
		case <-w.wake:
		default:
		}
		var batch []Notification
		if !w.retry(ctx, "reading notifications", func(ctx context.Context) (err error) {
			batch, err = src.Pending(ctx, w.t, pos, w.p.batch)
			return err
		}) {
			return
		}
		if len(batch) == 0 {
			select {
			case <-w.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		for _, n := range batch {
			if n.Pos <= pos {
				continue // not after pos: the Source repeated itself
			}
			if n.EventID == "" {
				// Nothing to send up to n.Pos (see Notification).
				if !w.advance(ctx, n.Pos) {
					return
				}
			} else if !w.deliver(ctx, n) {
				return
			}
			pos = n.Pos
		}
	}
}

// deliver sends n until it is delivered or dropped, and records the
// progress. It returns false when the worker must stop (ctx done, or the
// push key rejected).
func (w *worker) deliver(ctx context.Context, n Notification) bool {
	for attempt := 1; ; attempt++ {
		start := time.Now()
		rejected, err := w.p.client.Notify(ctx, w.t, n)
		if err != nil && ctx.Err() != nil {
			return false // stopping; n is not handled
		}
		var e *Error
		_ = errors.As(err, &e)
		switch {
		case err == nil && rejected:
			w.p.m.observe(outcomeRejected, start)
			w.log.Info("push gateway rejected the push key: deleting the pusher", "gateway", gatewayHost(w.t))
			if !w.advance(ctx, n.Pos) {
				return false
			}
			if w.retry(ctx, "deleting the rejected pusher", func(ctx context.Context) error {
				return w.p.src.Rejected(ctx, w.t)
			}) {
				w.p.forget(w)
			}
			return false
		case err == nil:
			w.p.m.observe(outcomeOK, start)
			if attempt > 1 {
				w.log.Info("push gateway reachable again", "gateway", gatewayHost(w.t), "attempts", attempt)
			}
			w.bo.reset()
			return w.advance(ctx, n.Pos)
		case e != nil && e.Permanent:
			w.p.m.observe(outcomePermanent, start)
			msg := "push gateway refused a notification: dropped"
			if errors.Is(err, netguard.ErrBlocked) {
				msg = "push gateway address not permitted (set push.allow_private_addresses for a gateway on a private network): notification dropped"
			}
			w.log.Warn(msg, "gateway", gatewayHost(w.t), "event_id", n.EventID, "error", err.Error())
			w.bo.reset()
			return w.advance(ctx, n.Pos)
		default:
			w.p.m.observe(outcomeTransient, start)
			var hint time.Duration
			if e != nil {
				hint = e.RetryAfter
			}
			d := w.bo.next(hint)
			level := slog.LevelDebug
			if attempt == 1 {
				level = slog.LevelWarn
			}
			w.log.Log(ctx, level, "push gateway unreachable: retrying", "gateway", gatewayHost(w.t),
				"attempt", attempt, "retry_in", d.Round(time.Millisecond).String(), "error", err.Error())
			if !sleep(ctx, d) {
				return false
			}
		}
	}
}

// advance records that everything up to pos is handled. The first attempt
// is made even if ctx is done (the notification went out: recording it
// avoids sending it again after a restart); later ones until ctx is done.
func (w *worker) advance(ctx context.Context, pos int64) bool {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), advanceTimeout)
	err := w.p.src.Advance(actx, w.t, pos)
	cancel()
	if err == nil {
		return ctx.Err() == nil
	}
	return w.retry(ctx, "recording progress", func(ctx context.Context) error {
		return w.p.src.Advance(ctx, w.t, pos)
	})
}

// retry calls fn until it succeeds (true) or ctx is done (false), backing
// off after each failure.
func (w *worker) retry(ctx context.Context, what string, fn func(context.Context) error) bool {
	for {
		err := fn(ctx)
		if err == nil {
			w.sbo.reset()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d := w.sbo.next(0)
		w.log.Warn("push delivery: "+what+" failed: retrying", "retry_in", d.Round(time.Millisecond).String(), "error", err.Error())
		if !sleep(ctx, d) {
			return false
		}
	}
}

// sleep waits for d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is an exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

// next returns the wait before the next attempt: min after the first
// failure, then doubling up to max, each ±25%, and at least hint (the
// gateway's Retry-After) but never more than max.
func (b *backoff) next(hint time.Duration) time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	d := min(time.Duration(float64(b.cur)*(0.75+0.5*rand.Float64())), b.max)
	if hint > d {
		d = min(hint, b.max)
	}
	return d
}

func (b *backoff) reset() { b.cur = 0 }

// Outcomes of a push, the values of the metrics' outcome label.
const (
	outcomeOK        = "ok"
	outcomeRejected  = "rejected"
	outcomePermanent = "failed_permanent"
	outcomeTransient = "failed_transient"
)

// metrics are the pool's Prometheus metrics.
type metrics struct {
	pushes   *prometheus.CounterVec   // outcome
	duration *prometheus.HistogramVec // outcome
	workers  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "myelin_syncapi_pushes_total",
			Help: "Notifications sent to push gateways, by outcome (ok, rejected, failed_permanent, failed_transient)."},
			[]string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "myelin_syncapi_push_duration_seconds",
			Help:    "Time to send one notification to a push gateway, by outcome.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"outcome"}),
		workers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "myelin_syncapi_push_workers",
			Help: "Pushers with a running delivery worker."}),
	}
	if reg != nil {
		m.pushes = register(reg, m.pushes)
		m.duration = register(reg, m.duration)
		m.workers = register(reg, m.workers)
	}
	return m
}

// register registers c, or returns the collector already registered
// under its name (two pools on one registry share their metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *metrics) observe(outcome string, start time.Time) {
	m.pushes.WithLabelValues(outcome).Inc()
	m.duration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}
