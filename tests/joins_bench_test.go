package tests

import (
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// BenchmarkJoinBigRoom measures local users joining one public room over
// the client API: MYELIN_BENCH_JOINERS users (1,000 by default), registered
// up front (not timed), join 10 at a time. It reports the join rate, the
// median and 99th percentile of one join's latency, the latency of the
// joins into the room's last tenth (where the room is biggest), and the
// last joiner's first /sync with lazy-loaded members, and the database
// statements and CPU time a join costs until the server is idle again. Each iteration
// uses a fresh server; run it with -benchtime 1x.
func BenchmarkJoinBigRoom(b *testing.B) {
	joiners := 1000
	if n, err := strconv.Atoi(os.Getenv("MYELIN_BENCH_JOINERS")); err == nil && n > 0 {
		joiners = n
	}
	const inFlight = 10
	var rate, p50, p99, lastP50, syncMS, stmtsPerJoin, cpuPerJoin float64
	for range b.N {
		b.StopTimer()
		srv := testserver.Start(b)
		owner := testutil.NewClient(b, srv.URL).Register("jb-owner", "pw")
		roomID := owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "big"}, http.StatusOK)["room_id"].(string)
		users := joinBRegister(b, srv, joiners)
		syncPIdle(b, srv, 100*time.Millisecond)
		b.StartTimer()

		stopProfile := joinBProfile(b)
		q := srv.DB.Queries()
		cpu0 := joinBCPU()
		lat := make([]time.Duration, joiners)
		var next atomic.Int64
		var firstErr error
		var errMu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= joiners {
						return
					}
					t0 := time.Now()
					_, err := syncPDo(users[i], "POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{})
					lat[i] = time.Since(t0)
					if err != nil {
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		last := users[joiners-1]
		t0 := time.Now()
		s := last.MustDo("GET", syncPPath(syncPLazy, "", -1), nil, http.StatusOK)
		syncTime := time.Since(t0)
		// The work a join leaves behind (sync ingest, push evaluation,
		// federation) still counts: wait until the server is idle.
		syncPIdle(b, srv, 100*time.Millisecond)
		settle := time.Since(start)
		stopProfile()
		b.StopTimer()
		stmts := float64(srv.DB.Queries()-q) / float64(joiners)
		cpu := joinBMS(joinBCPU()-cpu0) / float64(joiners)
		joinBCheckSync(b, s, roomID, last.UserID)

		tail := slices.Clone(lat[joiners-joiners/10:])
		slices.Sort(tail)
		slices.Sort(lat)
		rate += float64(joiners) / elapsed.Seconds()
		p50 += joinBMS(lat[len(lat)/2])
		p99 += joinBMS(lat[len(lat)*99/100])
		lastP50 += joinBMS(tail[len(tail)/2])
		syncMS += joinBMS(syncTime)
		stmtsPerJoin += stmts
		cpuPerJoin += cpu
		b.Logf("%d joins in %v: %.0f joins/s, p50 %.1f ms, p99 %.1f ms, last tenth p50 %.1f ms; lazy initial sync %.1f ms; idle after %v, %.1f statements/join, %.2f ms of CPU/join",
			joiners, elapsed.Round(time.Millisecond), float64(joiners)/elapsed.Seconds(), joinBMS(lat[len(lat)/2]), joinBMS(lat[len(lat)*99/100]), joinBMS(tail[len(tail)/2]), joinBMS(syncTime),
			settle.Round(time.Millisecond), stmts, cpu)
		srv.Stop()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(rate/n, "joins/s")
	b.ReportMetric(p50/n, "p50-ms")
	b.ReportMetric(p99/n, "p99-ms")
	b.ReportMetric(lastP50/n, "last10%-p50-ms")
	b.ReportMetric(syncMS/n, "lazy-sync-ms")
	b.ReportMetric(stmtsPerJoin/n, "stmts/join")
	b.ReportMetric(cpuPerJoin/n, "cpu-ms/join")
}

// joinBCPU is the CPU time the process (server and clients) has used: a
// figure that other load on the machine disturbs less than wall time.
func joinBCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// joinBProfile starts a CPU profile of the joins alone (not of the
// registrations before them) into the file MYELIN_BENCH_JOIN_CPUPROFILE
// names, when it is set, and returns the function that stops it.
func joinBProfile(b *testing.B) func() {
	path := os.Getenv("MYELIN_BENCH_JOIN_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func joinBMS(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// joinBRegister registers n users, 8 at a time.
func joinBRegister(b *testing.B, srv *testserver.Server, n int) []*testutil.Client {
	b.Helper()
	users := make([]*testutil.Client, n)
	anon := testutil.NewClient(b, srv.URL)
	var next atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				m, err := syncPDo(anon, "POST", "/_matrix/client/v3/register", map[string]any{
					"username": fmt.Sprintf("jb%04d", i), "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
				})
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				users[i] = anon.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return users
}

// joinBCheckSync checks that a lazy-loaded initial sync holds the room
// with the user's own membership in its state or timeline.
func joinBCheckSync(b *testing.B, s map[string]any, roomID, userID string) {
	b.Helper()
	rooms, _ := s["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	if room == nil {
		b.Fatalf("the last joiner's sync lacks the room: %v", s)
	}
	found := false
	for _, sec := range []string{"state", "timeline"} {
		part, _ := room[sec].(map[string]any)
		evs, _ := part["events"].([]any)
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			if ev["type"] == "m.room.member" && ev["state_key"] == userID {
				found = true
			}
		}
	}
	if !found {
		b.Fatalf("the last joiner's sync lacks its own membership: %v", room)
	}
}
