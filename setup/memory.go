package setup

import (
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/myelin-chat/myelin/config"
)

// ApplyMemoryLimit sets the Go runtime's soft memory limit from
// memory_limit, which overrides GOMEMLIMIT; memory_limit 0 leaves the
// runtime's own setting (GOMEMLIMIT when set, else none). It logs the limit
// in force and returns it in bytes (math.MaxInt64: none). It changes the
// whole process, so only the binary calls it, once, before setup.New.
func ApplyMemoryLimit(cfg *config.Config, log *slog.Logger) int64 {
	source := "none"
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
		source = "memory_limit"
	} else if v := os.Getenv("GOMEMLIMIT"); v != "" && v != "off" {
		source = "GOMEMLIMIT"
	}
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		log.Info("no memory limit (set memory_limit or GOMEMLIMIT to give the garbage collector one)")
	} else {
		log.Info("memory limit", slog.Int64("bytes", limit), slog.String("from", source))
	}
	return limit
}

// idleRelease is how long the server must go without a request before the
// memory freed since is returned to the operating system. The runtime's
// background scavenger returns it too, but slowly (and only down to the
// heap goal, about twice what is live), so after a burst of work RSS would
// stay near its peak for minutes.
const idleRelease = 30 * time.Second

// idleRegrowth is how much the memory held may grow while the server stays
// idle before it is returned again: work goes on without requests (the
// consumers catching up on a backlog, presence timing out).
const idleRegrowth = 8 << 20

// idleReleaser notes when requests arrive and, once the server has been
// idle for idleRelease, collects garbage and returns the free memory to the
// OS: once per idle period, and again while the period lasts whenever the
// memory held has grown by idleRegrowth since.
type idleReleaser struct {
	last     atomic.Int64 // unix nanoseconds of the last request
	released atomic.Bool  // since the last request
	after    time.Duration
	log      *slog.Logger
	// heldAfter is what was held after the last release (check's
	// goroutine only).
	heldAfter uint64
	now       func() time.Time // time.Now; tests move it
	held      func() uint64    // heldBytes; tests replace it
	// also runs at each release: the database's (C) memory.
	also func()
}

func newIdleReleaser(after time.Duration, log *slog.Logger, also func()) *idleReleaser {
	r := &idleReleaser{after: after, log: log, now: time.Now, held: heldBytes, also: also}
	r.last.Store(r.now().UnixNano())
	return r
}

// heldBytes is the memory the Go runtime holds from the OS and has not
// returned.
func heldBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// wrap notes every request that h serves.
func (r *idleReleaser) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.last.Store(r.now().UnixNano())
		r.released.Store(false)
		h.ServeHTTP(w, req)
	})
}

// run checks for idleness until stop is closed.
func (r *idleReleaser) run(stop <-chan struct{}) {
	t := time.NewTicker(r.after / 4)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.check()
		}
	}
}

// check releases memory when the server has been idle long enough; it
// reports whether it did.
func (r *idleReleaser) check() bool {
	if r.now().Sub(time.Unix(0, r.last.Load())) < r.after {
		return false
	}
	if r.released.Load() && r.held() < r.heldAfter+idleRegrowth {
		return false
	}
	r.released.Store(true)
	t0 := time.Now()
	// Two collections: the first moves what sync.Pools hold (such as
	// JetStream's block buffers) to their victim caches, the second frees
	// them; FreeOSMemory's own collection then returns the pages.
	runtime.GC()
	debug.FreeOSMemory()
	if r.also != nil {
		r.also()
	}
	r.heldAfter = r.held()
	r.log.Debug("idle: memory returned to the OS", slog.Duration("took", time.Since(t0)), slog.Uint64("held_bytes", r.heldAfter))
	return true
}
