package tests

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// BenchmarkSendLoad is issue 13's send scenario through the client API of
// the real server on SQLite: in each room, senders users send perUser
// messages each, one at a time per user (so rooms×senders requests are in
// flight), and it reports events per second and the latency of the sends
// (50th and 99th percentile). One op is the whole load, so run it with
// -benchtime 1x:
//
//	go test ./tests/ -run XXX -bench SendLoad -benchtime 1x
//
// rooms=1 is 10 users × 200 messages into one room with 10 in flight;
// rooms=16 is the same users spread over 16 rooms, one sender a room.
func BenchmarkSendLoad(b *testing.B) {
	for _, c := range []struct{ rooms, senders, perUser int }{{1, 10, 200}, {16, 1, 200}} {
		b.Run(fmt.Sprintf("rooms=%d", c.rooms), func(b *testing.B) {
			srv := testserver.Start(b)
			type sender struct {
				c    *testutil.Client
				room string
			}
			var senders []sender
			for r := range c.rooms {
				owner := srv.Client().Register(fmt.Sprintf("owner%d", r), "password1")
				roomID := owner.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
				for u := range c.senders {
					s := owner
					if u > 0 {
						s = srv.Client().Register(fmt.Sprintf("user%d-%d", r, u), "password1")
						s.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
					}
					senders = append(senders, sender{s, roomID})
				}
			}
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(senders)}, Timeout: time.Minute}
			run := 0
			var lat []time.Duration
			var elapsed, cpu time.Duration
			for b.Loop() {
				run++
				lat = lat[:0]
				var mu sync.Mutex
				var wg sync.WaitGroup
				start, cpu0 := time.Now(), syncPCPUTime(b)
				for i, s := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						mine := make([]time.Duration, 0, c.perUser)
						for n := range c.perUser {
							body := fmt.Appendf(nil, `{"msgtype":"m.text","body":"message %d of sender %d"}`, n, i)
							req, _ := http.NewRequest(http.MethodPut, srv.URL+testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", s.room, fmt.Sprintf("r%d-%d", run, n)), bytes.NewReader(body))
							req.Header.Set("Authorization", "Bearer "+s.c.AccessToken)
							req.Header.Set("Content-Type", "application/json")
							t0 := time.Now()
							resp, err := hc.Do(req)
							if err != nil {
								b.Error(err)
								return
							}
							data, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							mine = append(mine, time.Since(t0))
							if resp.StatusCode != http.StatusOK {
								b.Errorf("send: %d %s", resp.StatusCode, data)
								return
							}
						}
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					}()
				}
				wg.Wait()
				elapsed, cpu = time.Since(start), syncPCPUTime(b)-cpu0
			}
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 {
				if len(lat) == 0 {
					return 0
				}
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "events/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			// The CPU of the whole test process (server and clients) per
			// event: steadier than the rate on a shared machine.
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(max(len(lat), 1)), "cpu-ms/event")
		})
	}
}
