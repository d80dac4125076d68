package periodic_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/periodic"
)

// Every runs the function repeatedly; stop cancels a run in progress,
// waits for it, and no run follows.
func TestEveryRunsUntilStopped(t *testing.T) {
	var runs atomic.Int32
	started := make(chan struct{}, 100)
	var sawCancel atomic.Bool
	stop := periodic.Every(5*time.Millisecond, func(ctx context.Context) {
		runs.Add(1)
		started <- struct{}{}
		if runs.Load() == 3 {
			<-ctx.Done() // a long run: stop must cancel it
			sawCancel.Store(true)
		}
	})
	for i := 0; i < 3; i++ {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d runs", i)
		}
	}
	stop()
	if !sawCancel.Load() {
		t.Fatal("stop returned before the run in progress ended")
	}
	n := runs.Load()
	time.Sleep(30 * time.Millisecond)
	if runs.Load() != n {
		t.Fatalf("ran %d times after stop", runs.Load()-n)
	}
}
