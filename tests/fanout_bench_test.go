package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// BenchmarkFanoutLoad is issue 13's fanout scenario: 50 members long-poll
// /sync while one sends 50 messages a second into their room, for 10 s
// (MYELIN_BENCH_FANOUT_SECONDS sets another duration; the is 60).
// It reports the 99th percentile of the sends and of the deliveries (from
// the send's start to each long-poll that returns the event), how many
// deliveries were lost, and the CPU the process (server and clients) used
// per second. Run it with -benchtime 1x.
func BenchmarkFanoutLoad(b *testing.B) {
	const pollers, rate = 50, 50
	seconds := 10
	if v, err := strconv.Atoi(os.Getenv("MYELIN_BENCH_FANOUT_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	srv := testserver.Start(b)
	sender := srv.Client().Register("fanout-sender", "password1")
	roomID := sender.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	members := make([]*testutil.Client, pollers)
	for i := range members {
		members[i] = srv.Client().Register(fmt.Sprint("fanout-member", i), "password1")
		members[i].MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pollers + 2}, Timeout: time.Minute}
	filter := url.QueryEscape(`{"room":{"rooms":["` + roomID + `"],"timeline":{"limit":200},"state":{"lazy_load_members":true}},"presence":{"types":[]},"account_data":{"types":[]}}`)
	do := func(token, method, path string, body []byte) ([]byte, int, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, srv.URL+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		return data, resp.StatusCode, err
	}
	type syncResp struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						Type    string `json:"type"`
						Content struct {
							Body string `json:"body"`
						} `json:"content"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	for b.Loop() {
		total := seconds * rate
		sentAt := make([]time.Time, total)
		var sentMu sync.Mutex
		var delivery, sends []time.Duration
		var mu sync.Mutex
		received := make([]int, pollers)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, m := range members {
			data, _, err := do(m.AccessToken, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+filter, nil)
			if err != nil {
				b.Fatal(err)
			}
			var r syncResp
			_ = json.Unmarshal(data, &r)
			wg.Add(1)
			go func(since string) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					data, status, err := do(m.AccessToken, "GET", "/_matrix/client/v3/sync?timeout=5000&filter="+filter+"&since="+url.QueryEscape(since), nil)
					if err != nil || status != http.StatusOK {
						continue
					}
					now := time.Now()
					var r syncResp
					if json.Unmarshal(data, &r) != nil {
						continue
					}
					since = r.NextBatch
					for _, e := range r.Rooms.Join[roomID].Timeline.Events {
						var n int
						if _, err := fmt.Sscanf(e.Content.Body, "fanout %d", &n); err != nil || e.Type != "m.room.message" || n < 0 || n >= total {
							continue
						}
						sentMu.Lock()
						at := sentAt[n]
						sentMu.Unlock()
						mu.Lock()
						delivery = append(delivery, now.Sub(at))
						received[i]++
						mu.Unlock()
					}
				}
			}(r.NextBatch)
		}
		start, cpu0 := time.Now(), syncPCPUTime(b)
		tick := time.NewTicker(time.Second / rate)
		for n := range total {
			<-tick.C
			sentMu.Lock()
			sentAt[n] = time.Now()
			sentMu.Unlock()
			t0 := time.Now()
			_, status, err := do(sender.AccessToken, "PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint("f", n)),
				fmt.Appendf(nil, `{"msgtype":"m.text","body":"fanout %d"}`, n))
			if err != nil || status != http.StatusOK {
				b.Fatalf("send %d: %d %v", n, status, err)
			}
			sends = append(sends, time.Since(t0))
		}
		tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(delivery)
			mu.Unlock()
			if n >= total*pollers || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		elapsed, cpu := time.Since(start), syncPCPUTime(b)-cpu0
		close(stop)
		pct := func(l []time.Duration, p float64) float64 {
			slices.Sort(l)
			if len(l) == 0 {
				return 0
			}
			return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
		}
		mu.Lock()
		b.ReportMetric(pct(sends, 0.99), "send-p99-ms")
		b.ReportMetric(pct(delivery, 0.50), "delivery-p50-ms")
		b.ReportMetric(pct(delivery, 0.99), "delivery-p99-ms")
		b.ReportMetric(float64(total*pollers-len(delivery)), "lost")
		b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cpu-cores")
		mu.Unlock()
		b.StopTimer()
		wg.Wait()
		b.StartTimer()
	}
}
