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

// ConsumeBatch hands messages over in stream order, several at a time
// once they queue up behind a slow batch, never more than the batch size.
func TestConsumeBatchInOrder(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	for i := range 100 {
		if _, err := b.Publish(ctx, "Test.b", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	var r recorder
	var mu sync.Mutex
	largest := 0
	stop, err := b.ConsumeBatch(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "batch", FilterSubjects: []string{"Test.b"}}, 8,
		func(_ context.Context, msgs []*bus.Msg) error {
			mu.Lock()
			largest = max(largest, len(msgs))
			mu.Unlock()
			for _, m := range msgs {
				r.add(m)
			}
			time.Sleep(5 * time.Millisecond)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	got := r.waitFor(t, 100)
	for i, s := range got {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d = %s: out of order", i, s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if largest < 2 || largest > 8 {
		t.Errorf("largest batch %d, want 2..8", largest)
	}
}

// A failed batch is handed over again, whole and before anything behind
// it, and is acked once it succeeds; LastApplied skips what was applied.
func TestConsumeBatchRetriesInPlace(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	ctx := context.Background()
	for i := range 20 {
		if _, err := b.Publish(ctx, "Test.f", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	var r recorder
	calls := 0
	spec := bus.ConsumerSpec{Stream: "Test", Durable: "batchretry", FilterSubjects: []string{"Test.f"},
		LastApplied: func(context.Context) (uint64, error) { return 5, nil }}
	stop, err := b.ConsumeBatch(ctx, spec, 4, func(_ context.Context, msgs []*bus.Msg) error {
		calls++
		if calls <= 2 {
			return errors.New("transient")
		}
		for _, m := range msgs {
			r.add(m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := r.waitFor(t, 15)
	stop()
	if fmt.Sprint(got) != fmt.Sprint([]string{"5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19"}) {
		t.Fatalf("got %v, want 5..19 in order", got)
	}
	b.Close()

	// Everything was acked: a new consumer gets nothing again.
	b = open(t, dir)
	defer b.Close()
	var again recorder
	stop, err = b.ConsumeBatch(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "batchretry", FilterSubjects: []string{"Test.f"}}, 4,
		func(_ context.Context, msgs []*bus.Msg) error {
			for _, m := range msgs {
				again.add(m)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := b.Publish(ctx, "Test.f", "last", "", nil); err != nil {
		t.Fatal(err)
	}
	if got := again.waitFor(t, 1); got[0] != `"last"` {
		t.Errorf("after restart got %v, want only the new message", got)
	}
}

// stop lets the batch in flight finish and ack; the rest is redelivered
// to the next consumer.
func TestConsumeBatchStopDrains(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	for i := range 10 {
		if _, err := b.Publish(ctx, "Test.s2", i, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	spec := bus.ConsumerSpec{Stream: "Test", Durable: "batchdrain", FilterSubjects: []string{"Test.s2"}}
	started := make(chan struct{})
	var once sync.Once
	var handled []string
	stop, err := b.ConsumeBatch(ctx, spec, 3, func(ctx context.Context, msgs []*bus.Msg) error {
		once.Do(func() { close(started) })
		time.Sleep(200 * time.Millisecond)
		for _, m := range msgs {
			handled = append(handled, string(m.Data))
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	n := len(handled)
	if n == 0 || n > 3 {
		t.Fatalf("after stop: handled %v, want the batch in flight (1 to 3 messages)", handled)
	}
	var r recorder
	stop2, err := b.ConsumeBatch(ctx, spec, 3, func(_ context.Context, msgs []*bus.Msg) error {
		for _, m := range msgs {
			r.add(m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	got := r.waitFor(t, 10-n)
	if got[0] != fmt.Sprint(n) {
		t.Errorf("next consumer started at %v, want %d (the drained batch acked, the rest redelivered)", got, n)
	}
}
