// Package periodic runs background work on a fixed interval (expiring
// presence, pruning old rows, retrying an outbox, resyncing caches).
package periodic

import (
	"context"
	"time"
)

// Every runs fn every interval until the returned stop is called. stop
// cancels the context fn runs with and waits for a run in progress.
func Every(interval time.Duration, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
	return func() { cancel(); <-stopped }
}
