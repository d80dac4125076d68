package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// The scripted restarts of issue 12: a kill -9 and a SIGTERM in the middle
// of a 2,000-message burst across many rooms. The rest of the suite only
// ever stopped servers when they were idle, so neither a message left in
// flight in a partition's consumer (which froze that partition for the
// consumer's one-minute ack wait) nor consumers stopping at the signal under
// the requests still being served had been seen.

const (
	burstRooms    = 40
	burstMessages = 2000
	burstWorkers  = 24
)

// burstEnv turns the message rate limit off: the burst is one user.
var burstEnv = []string{"MYELIN_RATE_LIMITING_ENABLED=false"}

// sender is a user with rooms and a plain HTTP client whose failures are
// results, not test failures: the server goes away under it.
type sender struct {
	base, token string
	rooms       []string
	http        *http.Client
	txn         atomic.Int64
}

func newSender(t *testing.T, base string) *sender {
	t.Helper()
	alice := testutil.NewClient(t, base).Register("alice", "wonderland")
	s := &sender{base: base, token: alice.AccessToken, http: &http.Client{Timeout: 30 * time.Second}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range burstRooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)
			mu.Lock()
			s.rooms = append(s.rooms, id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return s
}

// send sends one message; it returns the status (0 when the request got no
// response) and the event ID.
func (s *sender) send(c *http.Client, room, body string) (int, string) {
	data, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	path := testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, fmt.Sprintf("t%d", s.txn.Add(1)))
	req, _ := http.NewRequest("PUT", s.base+path, bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var out struct {
		EventID string `json:"event_id"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out.EventID
}

// sent is a send that the server acknowledged.
type sent struct{ room, eventID string }

// burstResult is what a burst saw.
type burstResult struct {
	mu     sync.Mutex
	acked  []sent
	status map[int]int // status (0: no response) → count
	// inFlight are the sends under way when at was called: how long before
	// it each began, and its status.
	inFlight []inFlight
}

type inFlight struct {
	lead   time.Duration
	status int
}

// burst sends burstMessages messages round-robin over the rooms from
// burstWorkers goroutines, calling at once the first time n messages have
// been acknowledged. It returns when every send has been answered or failed.
func (s *sender) burst(n int, at func()) *burstResult {
	res := &burstResult{status: map[int]int{}}
	var next atomic.Int64
	var once sync.Once
	var atAt time.Time // when at was called (guarded by res.mu)
	var wg sync.WaitGroup
	for range burstWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= burstMessages {
					return
				}
				room := s.rooms[i%len(s.rooms)]
				start := time.Now()
				status, id := s.send(s.http, room, fmt.Sprintf("burst %d", i))
				res.mu.Lock()
				if !atAt.IsZero() && start.Before(atAt) {
					res.inFlight = append(res.inFlight, inFlight{atAt.Sub(start), status})
				}
				res.status[status]++
				if status == http.StatusOK {
					res.acked = append(res.acked, sent{room, id})
				}
				k := len(res.acked)
				res.mu.Unlock()
				if k >= n {
					once.Do(func() {
						res.mu.Lock()
						atAt = time.Now()
						res.mu.Unlock()
						at()
					})
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// roomEvents returns the IDs of the room's latest events (up to 1,000).
func (s *sender) roomEvents(c *http.Client, room string) (map[string]bool, error) {
	req, _ := http.NewRequest("GET", s.base+testutil.Path("/_matrix/client/v3/rooms/%s/messages", room)+"?dir=b&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var out struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, e := range out.Chunk {
		ids[e.EventID] = true
	}
	return ids, nil
}

// checkAfterRestart asserts, from ready (when /versions first answered),
// that every room accepts a send within 2 s and every acknowledged event is
// in /messages within 1 s.
func (s *sender) checkAfterRestart(t *testing.T, ready time.Time, acked []sent) {
	t.Helper()
	byRoom := map[string][]string{}
	for _, a := range acked {
		byRoom[a.room] = append(byRoom[a.room], a.eventID)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowSend, slowRead time.Duration
	for _, room := range s.rooms {
		wg.Add(2)
		go func() {
			defer wg.Done()
			status, _ := s.send(c, room, "after restart")
			d := time.Since(ready)
			mu.Lock()
			defer mu.Unlock()
			slowSend = max(slowSend, d)
			if status != http.StatusOK {
				t.Errorf("send into %s after the restart: status %d after %v", room, status, d.Round(time.Millisecond))
			} else if d > 2*time.Second {
				t.Errorf("send into %s answered %v after /versions, want within 2s", room, d.Round(time.Millisecond))
			}
		}()
		go func() {
			defer wg.Done()
			var missing []string
			for {
				missing = missing[:0]
				ids, err := s.roomEvents(c, room)
				for _, id := range byRoom[room] {
					if !ids[id] {
						missing = append(missing, id)
					}
				}
				if err == nil && len(missing) == 0 {
					break
				}
				if time.Since(ready) > 5*time.Second {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			d := time.Since(ready)
			mu.Lock()
			defer mu.Unlock()
			slowRead = max(slowRead, d)
			if len(missing) > 0 {
				t.Errorf("%d acknowledged events of %s (first %s) still missing from /messages %v after /versions", len(missing), room, missing[0], d.Round(time.Millisecond))
			} else if d > time.Second {
				t.Errorf("the acknowledged events of %s took %v after /versions to be in /messages, want within 1s", room, d.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	t.Logf("after the restart: slowest send %v, slowest read %v", slowSend.Round(time.Millisecond), slowRead.Round(time.Millisecond))
}

// kill -9 in the middle of a burst, then a restart: no room partition is
// left waiting for the message that was in flight.
func TestKillDuringBurstThenRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := testutil.FreeLoopbackAddr(t)
	p := startBinary(t, bin, dir, addr, burstEnv...)
	s := newSender(t, "http://"+addr)

	res := s.burst(burstMessages/3, func() { _ = p.cmd.Process.Kill() })
	<-p.done
	t.Logf("burst: %d acknowledged; statuses %v", len(res.acked), res.status)
	if len(res.acked) < burstMessages/3 || len(res.acked) == burstMessages {
		t.Fatalf("the kill did not land mid-burst (%d of %d acknowledged)", len(res.acked), burstMessages)
	}

	p = startBinary(t, bin, dir, addr, burstEnv...)
	s.checkAfterRestart(t, time.Now(), res.acked)
	p.stop(t, syscall.SIGTERM)
}

// SIGTERM in the middle of a burst: the server drains (every request it had
// accepted is answered, none with a 500) and exits 0 within 10 s; after a
// restart every acknowledged event is there.
func TestSIGTERMDuringBurstDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := testutil.FreeLoopbackAddr(t)
	p := startBinary(t, bin, dir, addr, burstEnv...)
	s := newSender(t, "http://"+addr)

	var signalled time.Time
	res := s.burst(burstMessages/3, func() {
		signalled = time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	})
	t.Logf("burst: %d acknowledged; statuses %v", len(res.acked), res.status)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		if d := time.Since(signalled); d > 10*time.Second {
			t.Errorf("took %v to stop after SIGTERM, want within 10s", d.Round(time.Millisecond))
		}
	case <-time.After(time.Until(signalled.Add(15 * time.Second))):
		t.Fatal("still running 15s after SIGTERM")
	}
	// A send begun well before the signal was accepted (loopback) and must
	// be answered; one begun just before it may have raced the listener's
	// close and been refused, which is no failure.
	answered := 0
	for _, f := range res.inFlight {
		switch {
		case f.status == http.StatusOK:
			answered++
		case f.lead >= 20*time.Millisecond || f.status != 0:
			t.Errorf("a send begun %v before SIGTERM got status %d, want 200", f.lead.Round(time.Millisecond), f.status)
		}
	}
	t.Logf("%d sends were in flight at the signal, %d answered 200", len(res.inFlight), answered)
	for status, n := range res.status {
		if status != http.StatusOK && status != 0 {
			t.Errorf("%d sends got status %d during the drain", n, status)
		}
	}

	p = startBinary(t, bin, dir, addr, burstEnv...)
	s.checkAfterRestart(t, time.Now(), res.acked)
	p.stop(t, syscall.SIGTERM)
}
