package setup

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
)

// memory_limit sets the runtime's soft limit; 0 leaves what the runtime
// has (GOMEMLIMIT, read by the runtime at start).
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	log := slog.New(slog.DiscardHandler)
	cfg := config.Defaults("a.org")
	cfg.MemoryLimit = 96 << 20
	if got := ApplyMemoryLimit(cfg, log); got != 96<<20 || debug.SetMemoryLimit(-1) != 96<<20 {
		t.Fatalf("limit %d, runtime %d; want %d", got, debug.SetMemoryLimit(-1), 96<<20)
	}
	debug.SetMemoryLimit(123 << 20) // as GOMEMLIMIT=123MiB would have
	cfg.MemoryLimit = 0
	if got := ApplyMemoryLimit(cfg, log); got != 123<<20 {
		t.Fatalf("memory_limit 0 changed the runtime's limit to %d", got)
	}
}

// After idleRelease without a request, the server collects garbage and
// returns free memory to the OS, again only if what it holds grows by
// idleRegrowth while it stays idle; a request starts a new idle period.
func TestIdleReleaser(t *testing.T) {
	clock := time.Unix(1e9, 0)
	alsoRan := 0
	r := newIdleReleaser(idleRelease, slog.New(slog.DiscardHandler), func() { alsoRan++ })
	r.now = func() time.Time { return clock }
	var held uint64 = 50 << 20
	r.held = func() uint64 { return held }
	h := r.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	serve := func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Body.String() != "ok" {
			t.Fatalf("wrapped handler answered %q", rec.Body.String())
		}
	}
	serve()
	if r.check() {
		t.Fatal("released right after a request")
	}
	clock = clock.Add(idleRelease - time.Second)
	if r.check() {
		t.Fatal("released before the idle time")
	}
	clock = clock.Add(time.Second)
	if !r.check() {
		t.Fatal("not released after the idle time")
	}
	if r.check() {
		t.Fatal("released twice in one idle period")
	}
	held += idleRegrowth - 1
	clock = clock.Add(time.Minute)
	if r.check() {
		t.Fatal("released again though the memory held barely grew")
	}
	held++
	if !r.check() {
		t.Fatal("not released again after the memory held grew while idle")
	}
	serve()
	if r.check() {
		t.Fatal("released right after a new request")
	}
	clock = clock.Add(idleRelease)
	if !r.check() {
		t.Fatal("not released after the second idle period")
	}
	if alsoRan != 3 {
		t.Fatalf("the database's release ran %d times, want 3 (once per release)", alsoRan)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { r.run(stop); close(done) }()
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
}
