package pushgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/myelin-chat/myelin/internal/testutil"
)

const wait = 10 * time.Second

// memSource is an in-memory Source whose methods can be made to fail.
type memSource struct {
	mu       sync.Mutex
	notes    map[string][]Notification // by user, in Pos order
	progress map[key]int64
	rejected []Target
	fail     map[string]int // method name: failures left
}

func newMemSource() *memSource {
	return &memSource{notes: map[string][]Notification{}, progress: map[key]int64{}, fail: map[string]int{}}
}

// add appends n notifications for userID and returns their event IDs.
func (s *memSource) add(userID string, n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for range n {
		pos := int64(len(s.notes[userID]) + 1)
		id := fmt.Sprintf("$%s-%d", userID, pos)
		s.notes[userID] = append(s.notes[userID], Notification{Pos: pos, EventID: id, RoomID: "!r:hs",
			Type: "m.room.message", Sender: "@bob:hs", Content: []byte(`{"body":"secret words"}`), Unread: 1})
		ids = append(ids, id)
	}
	return ids
}

func (s *memSource) failNext(method string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[method] = n
}

// failing returns an error if method must fail now; s.mu is held.
func (s *memSource) failing(method string) error {
	if s.fail[method] > 0 {
		s.fail[method]--
		return errors.New("storage unavailable")
	}
	return nil
}

func (s *memSource) Progress(_ context.Context, t Target) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.progress[t.key()], s.failing("Progress")
}

func (s *memSource) Pending(_ context.Context, t Target, after int64, limit int) ([]Notification, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failing("Pending"); err != nil {
		return nil, err
	}
	var out []Notification
	for _, n := range s.notes[t.UserID] {
		if n.Pos > after && len(out) < limit {
			out = append(out, n)
		}
	}
	return out, nil
}

func (s *memSource) Advance(_ context.Context, t Target, pos int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failing("Advance"); err != nil {
		return err
	}
	if pos < s.progress[t.key()] {
		return fmt.Errorf("progress moved back from %d to %d", s.progress[t.key()], pos)
	}
	s.progress[t.key()] = pos
	return nil
}

func (s *memSource) Rejected(_ context.Context, t Target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.failing("Rejected"); err != nil {
		return err
	}
	s.rejected = append(s.rejected, t)
	return nil
}

func (s *memSource) pos(t Target) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.progress[t.key()]
}

func (s *memSource) rejectedTargets() []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Target(nil), s.rejected...)
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// series counts the series of a collector.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newTestPool returns a pool with millisecond backoffs, closed when the
// test ends, and its log.
func newTestPool(t *testing.T, src Source, c *Client, opts ...PoolOption) (*Pool, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]PoolOption{WithBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	p := NewPool(src, c, log, prometheus.NewRegistry(), opts...)
	t.Cleanup(p.Close)
	return p, logs
}

func eventIDs(ns []testutil.PushNotification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.EventID
	}
	return out
}

// checkDelivered fails unless the gateway got exactly want, in order.
func checkDelivered(t *testing.T, gw *testutil.PushGateway, want []string) {
	t.Helper()
	if got := eventIDs(gw.Notifications()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("delivered\n %v\nwant\n %v", got, want)
	}
}

func checkLogsHideSecrets(t *testing.T, logs *syncBuffer) {
	t.Helper()
	if s := logs.String(); strings.Contains(s, "pk-") || strings.Contains(s, "secret words") {
		t.Fatalf("logs show a push key or content:\n%s", s)
	}
}

func TestPoolDeliversInOrder(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient())
	tg := testTarget(t, gw.URL(), "")
	want := src.add(tg.UserID, 25) // more than one batch
	p.Set(tg.UserID, []Target{tg})
	gw.WaitFor(t, 25, wait)
	want = append(want, src.add(tg.UserID, 1)...)
	p.Wake(tg.UserID)
	got := gw.WaitFor(t, 26, wait)
	testutil.Eventually(t, wait, "progress recorded", func() bool { return src.pos(tg) == 26 })
	checkDelivered(t, gw, want)
	jsonEqual(t, got[0].Raw, `{"notification":{"event_id":"$@alice:hs-1","room_id":"!r:hs","type":"m.room.message",
		"sender":"@bob:hs","prio":"low","content":{"body":"secret words"},"counts":{"unread":1},
		"devices":[{"app_id":"org.example.app","pushkey":"pk-alice","pushkey_ts":1700000123,"data":{"custom":{"k":"v"}}}]}}`)
	if n := value(p.m.pushes.WithLabelValues(outcomeOK)); n != 26 {
		t.Errorf("ok pushes = %v, want 26", n)
	}
	if n := series(p.m.duration); n != 1 {
		t.Errorf("duration series = %d, want 1 (outcome ok)", n)
	}
}

func TestPoolRejectedPushKey(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	src := newMemSource()
	src.failNext("Rejected", 2)
	p, logs := newTestPool(t, src, localClient())
	tg := testTarget(t, gw.URL(), "")
	gw.Reject(tg.PushKey)
	src.add(tg.UserID, 3)
	p.Set(tg.UserID, []Target{tg})
	testutil.Eventually(t, wait, "Rejected called", func() bool { return len(src.rejectedTargets()) == 1 })
	testutil.Eventually(t, wait, "worker stopped", func() bool { return value(p.m.workers) == 0 })
	if r := src.rejectedTargets(); !r[0].equal(tg) {
		t.Fatalf("rejected %+v, want %+v", r[0], tg)
	}
	p.Wake(tg.UserID)
	if n := gw.Attempts(); n != 1 || src.pos(tg) != 1 {
		t.Fatalf("after rejection: %d requests, progress %d; want 1 and 1", n, src.pos(tg))
	}
	p.mu.Lock()
	left := len(p.users)
	p.mu.Unlock()
	if left != 0 {
		t.Fatal("rejected worker still in the pool")
	}
	if n := value(p.m.pushes.WithLabelValues(outcomeRejected)); n != 1 {
		t.Errorf("rejected pushes = %v", n)
	}
	checkLogsHideSecrets(t, logs)
}

// After an outage every notification is delivered exactly once, in order.
func TestPoolOutageThenRecovery(t *testing.T) {
	for _, mode := range []string{"503", "connection closed"} {
		t.Run(mode, func(t *testing.T) {
			gw := testutil.NewPushGateway(t)
			src := newMemSource()
			p, logs := newTestPool(t, src, localClient())
			tg := testTarget(t, gw.URL(), "")
			outage := func(on bool) {
				if mode == "503" {
					gw.FailWith(map[bool]int{true: 503}[on])
				} else {
					gw.Drop(on)
				}
			}
			outage(true)
			want := src.add(tg.UserID, 5)
			p.Set(tg.UserID, []Target{tg})
			gw.WaitForAttempts(t, 3, wait)
			want = append(want, src.add(tg.UserID, 3)...)
			p.Wake(tg.UserID)
			if src.pos(tg) != 0 {
				t.Fatal("progress moved during the outage")
			}
			outage(false)
			gw.WaitFor(t, 8, wait)
			testutil.Eventually(t, wait, "progress recorded", func() bool { return src.pos(tg) == 8 })
			checkDelivered(t, gw, want)
			// The third request may have arrived as the outage ended.
			if n := value(p.m.pushes.WithLabelValues(outcomeTransient)); n < 2 {
				t.Errorf("transient failures = %v, want >= 2", n)
			}
			if !strings.Contains(logs.String(), "reachable again") {
				t.Errorf("recovery not logged:\n%s", logs)
			}
			checkLogsHideSecrets(t, logs)
		})
	}
}

func TestPoolPermanentFailureSkipped(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient())
	tg := testTarget(t, gw.URL(), "")
	gw.FailWith(400)
	src.add(tg.UserID, 3)
	p.Set(tg.UserID, []Target{tg})
	testutil.Eventually(t, wait, "refused notifications skipped", func() bool { return src.pos(tg) == 3 })
	if n := gw.Attempts(); n != 3 {
		t.Fatalf("%d requests for 3 refused notifications, want 3 (no retries)", n)
	}
	gw.FailWith(0)
	want := src.add(tg.UserID, 1)
	p.Wake(tg.UserID)
	gw.WaitFor(t, 1, wait)
	checkDelivered(t, gw, want)
	if n := value(p.m.pushes.WithLabelValues(outcomePermanent)); n != 3 {
		t.Errorf("permanent failures = %v, want 3", n)
	}
}

// Without private addresses allowed, the gateway on 127.0.0.1 is never
// contacted and its notifications are dropped, not retried.
func TestPoolBlockedAddressDropped(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	src := newMemSource()
	p, logs := newTestPool(t, src, NewClient(ClientConfig{}))
	tg := testTarget(t, gw.URL(), "")
	src.add(tg.UserID, 2)
	p.Set(tg.UserID, []Target{tg})
	testutil.Eventually(t, wait, "blocked notifications dropped", func() bool { return src.pos(tg) == 2 })
	if n := gw.Attempts(); n != 0 {
		t.Fatalf("gateway got %d requests", n)
	}
	if !strings.Contains(logs.String(), "push.allow_private_addresses") {
		t.Errorf("log does not say how to allow it:\n%s", logs)
	}
	checkLogsHideSecrets(t, logs)
}

func TestPoolRetriesSourceErrors(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	src := newMemSource()
	for _, m := range []string{"Progress", "Pending", "Advance"} {
		src.failNext(m, 2)
	}
	p, _ := newTestPool(t, src, localClient())
	tg := testTarget(t, gw.URL(), "")
	want := src.add(tg.UserID, 3)
	p.Set(tg.UserID, []Target{tg})
	gw.WaitFor(t, 3, wait)
	testutil.Eventually(t, wait, "progress recorded", func() bool { return src.pos(tg) == 3 })
	checkDelivered(t, gw, want) // a failed Advance is retried, not the send
}

func TestPoolSetRemovesAndRestarts(t *testing.T) {
	gwA, gwB := testutil.NewPushGateway(t), testutil.NewPushGateway(t)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient())
	tA := testTarget(t, gwA.URL(), "")
	tB := tA
	tB.PushKey, tB.URL = "pk-b", gwB.URL()
	user := tA.UserID
	workers := func(n float64) func() bool {
		return func() bool { return value(p.m.workers) == n }
	}
	p.Set(user, []Target{tA, tB})
	testutil.Eventually(t, wait, "two workers", workers(2))
	src.add(user, 1)
	p.Wake(user)
	gwA.WaitFor(t, 1, wait)
	gwB.WaitFor(t, 1, wait)

	p.mu.Lock()
	before := p.users[user][tA.key()]
	p.mu.Unlock()
	p.Set(user, []Target{tA})
	testutil.Eventually(t, wait, "removed worker stopped", workers(1))
	p.mu.Lock()
	same := p.users[user][tA.key()] == before
	p.mu.Unlock()
	if !same {
		t.Fatal("unchanged target restarted")
	}
	src.add(user, 1)
	p.Wake(user)
	gwA.WaitFor(t, 2, wait)

	// A new URL restarts the worker, which carries on from its progress.
	testutil.Eventually(t, wait, "progress recorded", func() bool { return src.pos(tA) == 2 })
	moved := tA
	moved.URL = gwB.URL()
	p.Set(user, []Target{moved})
	ids := src.add(user, 1)
	p.Wake(user)
	got := gwB.WaitFor(t, 2, wait)
	if got[1].EventID != ids[0] || got[1].PushKeys[0] != tA.PushKey || len(gwA.Notifications()) != 2 || len(got) != 2 {
		t.Fatalf("after the move: A got %v, B got %v", eventIDs(gwA.Notifications()), eventIDs(got))
	}
	p.Set(user, nil)
	testutil.Eventually(t, wait, "all workers stopped", workers(0))
}

// Close cancels backoff waits; a Wake does not cut a backoff short.
func TestPoolCloseDuringBackoff(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	gw.FailWith(503)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient(), WithBackoff(time.Hour, time.Hour))
	tg := testTarget(t, gw.URL(), "")
	src.add(tg.UserID, 1)
	p.Set(tg.UserID, []Target{tg})
	gw.WaitForAttempts(t, 1, wait)
	p.Wake(tg.UserID)
	closeWithin(t, p, 5*time.Second)
	if n := gw.Attempts(); n != 1 || src.pos(tg) != 0 {
		t.Fatalf("%d requests, progress %d; want 1 request and the notification kept", n, src.pos(tg))
	}
	p.Close() // again: no effect
	p.Set(tg.UserID, []Target{tg})
	if n := value(p.m.workers); n != 0 {
		t.Fatalf("Set after Close started %v workers", n)
	}
}

func closeWithin(t *testing.T, p *Pool, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
	}
}

// A gateway that does not answer holds up only its own target, and Close
// cancels its request.
func TestPoolSlowGatewayDoesNotBlockOthers(t *testing.T) {
	slow, fast := testutil.NewPushGateway(t), testutil.NewPushGateway(t)
	slow.SetDelay(time.Minute)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient())
	tSlow := testTarget(t, slow.URL(), "")
	tFast := tSlow
	tFast.PushKey, tFast.URL = "pk-fast", fast.URL()
	tBob := tFast
	tBob.UserID = "@bob:hs"
	src.add(tSlow.UserID, 3)
	want := src.add(tBob.UserID, 5)
	p.Set(tSlow.UserID, []Target{tSlow, tFast})
	p.Set(tBob.UserID, []Target{tBob})
	slow.WaitForAttempts(t, 1, wait)
	fast.WaitFor(t, 8, wait)
	var bobs []string
	for _, n := range fast.Notifications() {
		if n.PushKeys[0] == "pk-fast" && strings.HasPrefix(n.EventID, "$@bob") {
			bobs = append(bobs, n.EventID)
		}
	}
	if strings.Join(bobs, " ") != strings.Join(want, " ") {
		t.Fatalf("bob got %v, want %v", bobs, want)
	}
	closeWithin(t, p, 5*time.Second)
	if src.pos(tSlow) != 0 || slow.Attempts() != 1 {
		t.Fatalf("slow target: progress %d, %d requests", src.pos(tSlow), slow.Attempts())
	}
}

// A notification committed while another is being sent is not missed.
func TestPoolWakeWhileSending(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	gw.SetDelay(200 * time.Millisecond)
	src := newMemSource()
	p, _ := newTestPool(t, src, localClient())
	tg := testTarget(t, gw.URL(), "")
	want := src.add(tg.UserID, 1)
	p.Set(tg.UserID, []Target{tg})
	gw.WaitForAttempts(t, 1, wait)
	want = append(want, src.add(tg.UserID, 1)...)
	p.Wake(tg.UserID)
	gw.SetDelay(0)
	gw.WaitFor(t, 2, wait)
	checkDelivered(t, gw, want)
}

func TestBackoff(t *testing.T) {
	b := backoff{min: time.Second, max: 10 * time.Second}
	for i, cur := range []time.Duration{1, 2, 4, 8, 10, 10} {
		cur *= time.Second
		d := b.next(0)
		if d < cur*3/4 || d > min(cur*5/4, b.max) {
			t.Errorf("wait %d = %v, want %v ±25%% (at most 10s)", i, d, cur)
		}
	}
	b.reset()
	if d := b.next(0); d > 1250*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
	if d := b.next(5 * time.Second); d < 5*time.Second {
		t.Errorf("Retry-After 5s ignored: %v", d)
	}
	if d := b.next(time.Hour); d != 10*time.Second {
		t.Errorf("Retry-After beyond the cap: %v, want 10s", d)
	}
}
