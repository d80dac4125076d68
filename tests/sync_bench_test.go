package tests

import (
	"net/http"
	"testing"
	"time"
)

// Benchmarks of /sync through HTTP on SQLite (the helpers are in
// sync_perf_test.go). Each run sets up its own server: 50 rooms x 55
// events, alice, bob and carol in all of them.

func syncPBenchWorld(b *testing.B) *syncPWorld {
	b.Helper()
	w := syncPNewWorld(b)
	w.addRooms(b, 50, 47)
	w.alice.Do("GET", syncPPath("", "", -1), nil)
	syncPIdle(b, w.srv, 100*time.Millisecond)
	return w
}

// BenchmarkInitialSync50x50 is an initial sync with lazy-loaded members of
// a user in 50 rooms of 55 events.
func BenchmarkInitialSync50x50(b *testing.B) {
	w := syncPBenchWorld(b)
	path := syncPPath(syncPLazy, "", -1)
	q := w.srv.DB.Queries()
	b.ResetTimer()
	for range b.N {
		if r := w.alice.Do("GET", path, nil); r.Status != http.StatusOK {
			b.Fatalf("sync: %d %s", r.Status, r.Body)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(w.srv.DB.Queries()-q)/float64(b.N), "stmts/op")
}

// BenchmarkIncrementalSync is an incremental sync (timeout 0, lazy
// members) of a user in 50 rooms: with nothing new, and with a message in
// one room since the token.
func BenchmarkIncrementalSync(b *testing.B) {
	w := syncPBenchWorld(b)
	now := syncPNextBatch(b, w.alice.Do("GET", syncPPath(syncPLazy, "", -1), nil))
	if _, err := syncPSendMsg(w.bob, w.rooms[7], "news"); err != nil {
		b.Fatal(err)
	}
	syncPIdle(b, w.srv, 100*time.Millisecond)
	for _, c := range []struct{ name, since string }{
		{"one-room-changed", now},
		{"nothing-new", syncPNextBatch(b, w.alice.Do("GET", syncPPath(syncPLazy, now, 0), nil))},
	} {
		b.Run(c.name, func(b *testing.B) {
			path := syncPPath(syncPLazy, c.since, 0)
			q := w.srv.DB.Queries()
			b.ResetTimer()
			for range b.N {
				if r := w.alice.Do("GET", path, nil); r.Status != http.StatusOK {
					b.Fatalf("sync: %d %s", r.Status, r.Body)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(w.srv.DB.Queries()-q)/float64(b.N), "stmts/op")
		})
	}
}
