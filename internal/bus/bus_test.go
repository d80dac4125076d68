package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
)

var testStream = bus.StreamSpec{Name: "Test", Subjects: []string{"Test.>"}, DuplicateWindow: time.Minute}

func open(t *testing.T, dir string) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Config{StoreDir: dir}, nil)
	if err != nil {
		t.Fatalf("open bus: %v", err)
	}
	if err := b.EnsureStreams(context.Background(), testStream); err != nil {
		b.Close()
		t.Fatalf("ensure streams: %v", err)
	}
	return b
}

type recorder struct {
	mu   sync.Mutex
	seen []string
	seqs []uint64
}

func (r *recorder) add(m *bus.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, string(m.Data))
	r.seqs = append(r.seqs, m.Seq)
}

func (r *recorder) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.seen) >= n {
			out := append([]string(nil), r.seen...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %d messages", n)
	return nil
}

func TestPublishConsumeInOrder(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	for i := range 50 {
		if _, err := b.Publish(ctx, "Test.a", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	var r recorder
	stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "inorder"}, func(_ context.Context, m *bus.Msg) error {
		r.add(m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	got := r.waitFor(t, 50)
	for i, s := range got {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d = %s: out of order", i, s)
		}
	}
}

func TestDuplicatePublishIsDropped(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	s1, err := b.Publish(ctx, "Test.d", "x", "id-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.Publish(ctx, "Test.d", "x", "id-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Fatalf("duplicate publish stored twice: seq %d and %d", s1, s2)
	}
}

func TestTransientErrorIsRetriedAndPermanentTerminated(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	for _, s := range []string{"flaky", "bad", "good"} {
		if _, err := b.Publish(ctx, "Test.r", s, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	attempts := map[uint64]int{}
	var mu sync.Mutex
	var r recorder
	stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "retry"}, func(_ context.Context, m *bus.Msg) error {
		mu.Lock()
		attempts[m.Seq]++
		n := attempts[m.Seq]
		mu.Unlock()
		switch m.Seq {
		case 1:
			if n < 3 {
				return errors.New("transient")
			}
		case 2:
			return bus.Permanent(errors.New("undecodable"))
		}
		r.add(m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	r.waitFor(t, 2)
	mu.Lock()
	defer mu.Unlock()
	if attempts[1] != 3 {
		t.Fatalf("message 1 attempts = %d, want 3", attempts[1])
	}
	if attempts[2] != 1 {
		t.Fatalf("terminated message delivered %d times, want 1", attempts[2])
	}
	if r.seqs[0] != 1 || r.seqs[1] != 3 {
		t.Fatalf("handled seqs %v, want [1 3]", r.seqs)
	}
}

// A durable consumer resumes where it stopped across a restart of the
// embedded server, and skips what LastApplied says is already applied.
func TestDurableResumeAndLastApplied(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := open(t, dir)
	for i := range 5 {
		if _, err := b.Publish(ctx, "Test.x", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	b = open(t, dir)
	defer b.Close()
	var r recorder
	stop, err := b.Consume(ctx, bus.ConsumerSpec{
		Stream: "Test", Durable: "resume", FilterSubjects: []string{"Test.x"},
		LastApplied: func(context.Context) (uint64, error) { return 3, nil },
	}, func(_ context.Context, m *bus.Msg) error { r.add(m); return nil })
	if err != nil {
		t.Fatal(err)
	}
	got := r.waitFor(t, 2)
	stop()
	if len(got) != 2 || got[0] != "3" || got[1] != "4" {
		t.Fatalf("got %v, want [3 4] (sequences 4 and 5)", got)
	}
}

// A message delivered to a consumer that went away unacked (a kill -9 in the
// middle of handling it) is redelivered as soon as the consumer starts
// again, not after the ack wait: with MaxAckPending 1 it holds up
// everything behind it. (The suite had only restarted idle consumers.)
func TestPendingMessageOfDeadConsumerIsRedeliveredAtOnce(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	spec := bus.ConsumerSpec{Stream: "Test", Durable: "dead", FilterSubjects: []string{"Test.d"}}
	b := open(t, dir)
	for i := range 3 {
		if _, err := b.Publish(ctx, "Test.d", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stop, err := b.Consume(ctx, spec, func(context.Context, *bus.Msg) error {
		once.Do(func() { close(started) })
		<-release
		return errors.New("gone")
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	b.Close() // the process dies with message 0 unacked
	defer func() { close(release); stop() }()

	b = open(t, dir)
	defer b.Close()
	var r recorder
	t0 := time.Now()
	stop2, err := b.Consume(ctx, spec, func(_ context.Context, m *bus.Msg) error { r.add(m); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	got := r.waitFor(t, 3)
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("pending message redelivered after %v, want at once", d)
	}
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Errorf("got %v, want [0 1 2]", got)
	}
}

// stop drains: the handler in flight finishes with its context intact and
// its message is acked; no further message is handled.
func TestStopLetsHandlerInFlightFinish(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := open(t, dir)
	defer b.Close()
	for i := range 3 {
		if _, err := b.Publish(ctx, "Test.s", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	spec := bus.ConsumerSpec{Stream: "Test", Durable: "drain", FilterSubjects: []string{"Test.s"}}
	started := make(chan struct{})
	var handled []string
	var ctxErr error
	stop, err := b.Consume(ctx, spec, func(ctx context.Context, m *bus.Msg) error {
		close(started)
		time.Sleep(200 * time.Millisecond)
		ctxErr = ctx.Err()
		handled = append(handled, string(m.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	if len(handled) != 1 || ctxErr != nil {
		t.Fatalf("after stop: handled %v (context error %v), want the message in flight finished uncancelled", handled, ctxErr)
	}
	var r recorder
	stop2, err := b.Consume(ctx, spec, func(_ context.Context, m *bus.Msg) error { r.add(m); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if got := r.waitFor(t, 2); fmt.Sprint(got) != "[1 2]" {
		t.Errorf("next consumer got %v, want [1 2] (message 0 acked by the drain)", got)
	}
}

// A handler that runs longer than the ack wait keeps its message: it is
// handled once, not redelivered behind itself.
func TestLongHandlerIsNotRedelivered(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	for i := range 2 {
		if _, err := b.Publish(ctx, "Test.l", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	var r recorder
	stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "long", FilterSubjects: []string{"Test.l"}, AckWait: 300 * time.Millisecond},
		func(_ context.Context, m *bus.Msg) error {
			if m.Seq == 1 {
				time.Sleep(time.Second)
			}
			r.add(m)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 2)
	time.Sleep(500 * time.Millisecond) // a redelivery would have come by now
	stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	if fmt.Sprint(r.seen) != "[0 1]" {
		t.Errorf("handled %v, want [0 1]", r.seen)
	}
}
