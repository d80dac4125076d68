package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Performance requirements of /sync (see the sync API issue): a bounded
// number of queries per sync whatever the number of rooms, initial sync of
// 50 rooms x 50 events with lazy loading under 100 ms, a new message
// reaching 20 waiting long-polls in under 20 ms (99th percentile), idle
// long-polls costing no CPU, and the notifier waking only the users an
// event concerns.

// ---- helpers (prefix syncP) ----

var syncPSeq atomic.Int64

// syncPWorld is a server with users who share many rooms: alice created
// them, bob and carol joined, and all three talked.
type syncPWorld struct {
	srv               *testserver.Server
	alice, bob, carol *testutil.Client
	rooms             []string
}

func syncPUser(t testing.TB, srv *testserver.Server, name string) *testutil.Client {
	t.Helper()
	return testutil.NewClient(t, srv.URL).Register(fmt.Sprintf("%s.p%d", name, syncPSeq.Add(1)), "pw")
}

func syncPNewWorld(t testing.TB) *syncPWorld {
	srv := testserver.Start(t)
	return &syncPWorld{srv: srv, alice: syncPUser(t, srv, "alice"), bob: syncPUser(t, srv, "bob"), carol: syncPUser(t, srv, "carol")}
}

// syncPDo sends a request from any goroutine and returns an error unless
// the status is 200.
func syncPDo(c *testutil.Client, method, path string, body any) (map[string]any, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(method, c.BaseURL+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("%s %s: %d, undecodable body: %w", method, path, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %v", method, path, resp.StatusCode, m)
	}
	return m, nil
}

// syncPSendMsg sends a text message and returns its event ID.
func syncPSendMsg(c *testutil.Client, roomID, body string) (string, error) {
	m, err := syncPDo(c, "PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprintf("p%d", syncPSeq.Add(1))),
		map[string]any{"msgtype": "m.text", "body": body})
	if err != nil {
		return "", err
	}
	id, _ := m["event_id"].(string)
	return id, nil
}

// addRooms creates n public rooms that bob and carol join, and sends msgs
// messages in each, from the three users in turn. Rooms are set up in
// parallel (each room's events in order).
func (w *syncPWorld) addRooms(t testing.TB, n, msgs int) {
	t.Helper()
	start := time.Now()
	rooms := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
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
				m, err := syncPDo(w.alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": fmt.Sprintf("room %d", i)})
				if err != nil {
					fail(err)
					return
				}
				room, _ := m["room_id"].(string)
				rooms[i] = room
				for _, c := range []*testutil.Client{w.bob, w.carol} {
					if _, err := syncPDo(c, "POST", testutil.Path("/_matrix/client/v3/rooms/%s/join", room), map[string]any{}); err != nil {
						fail(err)
						return
					}
				}
				senders := []*testutil.Client{w.alice, w.bob, w.carol}
				for j := range msgs {
					if _, err := syncPSendMsg(senders[j%3], room, fmt.Sprintf("message %d", j)); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	w.rooms = append(w.rooms, rooms...)
	t.Logf("set up %d rooms x %d messages in %v", n, msgs, time.Since(start).Round(time.Millisecond))
}

// syncPLazy is a filter with lazy loading of members.
const syncPLazy = `{"room":{"state":{"lazy_load_members":true}}}`

// syncPPath is the path of /sync with an inline filter (none when empty),
// a since token (none when empty) and a timeout in ms (none when < 0).
func syncPPath(filter, since string, timeoutMS int) string {
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	if since != "" {
		q.Set("since", since)
	}
	if timeoutMS >= 0 {
		q.Set("timeout", fmt.Sprint(timeoutMS))
	}
	p := "/_matrix/client/v3/sync"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// syncPIdle waits until no statement has run for quiet (consumers and
// timers are done), failing after 30 s.
func syncPIdle(t testing.TB, srv *testserver.Server, quiet time.Duration) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := srv.DB.Queries()
	for {
		time.Sleep(quiet)
		n := srv.DB.Queries()
		if n == last {
			return
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatalf("the server never went idle: %d statements so far", n)
		}
	}
}

// syncPCount returns the fewest statements one /sync ran over tries
// (other work only adds to a count), checking the response each time.
func syncPCount(t testing.TB, srv *testserver.Server, c *testutil.Client, path string, tries int, check func(*testutil.Response)) uint64 {
	t.Helper()
	best := uint64(math.MaxUint64)
	for range tries {
		syncPIdle(t, srv, 100*time.Millisecond)
		before := srv.DB.Queries()
		r := c.Do("GET", path, nil)
		n := srv.DB.Queries() - before
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		if check != nil {
			check(r)
		}
		best = min(best, n)
	}
	return best
}

// syncPJoined decodes a sync response's joined rooms.
func syncPJoined(t testing.TB, r *testutil.Response) map[string]struct {
	Timeline struct {
		Events  []map[string]any `json:"events"`
		Limited bool             `json:"limited"`
	} `json:"timeline"`
	State struct {
		Events []map[string]any `json:"events"`
	} `json:"state"`
} {
	t.Helper()
	var resp struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events  []map[string]any `json:"events"`
					Limited bool             `json:"limited"`
				} `json:"timeline"`
				State struct {
					Events []map[string]any `json:"events"`
				} `json:"state"`
			} `json:"join"`
		} `json:"rooms"`
	}
	r.Decode(t, &resp)
	return resp.Rooms.Join
}

// syncPCheckInitial checks an initial sync of the world's rooms: every
// room with a full timeline page of messages and its state (with lazy
// loading: only the members of the timeline's senders and of the user).
func (w *syncPWorld) syncPCheckInitial(t testing.TB, lazy bool) func(*testutil.Response) {
	return func(r *testutil.Response) {
		t.Helper()
		join := syncPJoined(t, r)
		if len(join) != len(w.rooms) {
			t.Fatalf("initial sync has %d joined rooms, want %d", len(join), len(w.rooms))
		}
		for _, room := range w.rooms {
			jr, ok := join[room]
			if !ok {
				t.Fatalf("initial sync lacks room %s", room)
			}
			if len(jr.Timeline.Events) != 10 || !jr.Timeline.Limited {
				t.Fatalf("room %s: %d timeline events (limited %v), want 10, limited", room, len(jr.Timeline.Events), jr.Timeline.Limited)
			}
			members, create := 0, false
			for _, e := range jr.State.Events {
				switch e["type"] {
				case "m.room.member":
					members++
				case "m.room.create":
					create = true
				}
			}
			if !create || members != 3 {
				t.Fatalf("room %s: state with create=%v and %d members, want the create event and 3 members (lazy=%v)", room, create, members, lazy)
			}
		}
	}
}

// ---- (a) bounded queries ----

// An initial sync runs a bounded number of statements, one per kind of
// data across all rooms: the count does not grow with the rooms.
func TestInitialSyncQueryCount(t *testing.T) {
	w := syncPNewWorld(t)
	counts := map[string][]uint64{}
	measure := func(rooms int) {
		t.Helper()
		w.alice.Do("GET", syncPPath("", "", -1), nil) // everything consumed
		for _, mode := range []struct {
			name, filter string
		}{{"eager", ""}, {"lazy", syncPLazy}} {
			n := syncPCount(t, w.srv, w.alice, syncPPath(mode.filter, "", -1), 5, w.syncPCheckInitial(t, mode.filter != ""))
			t.Logf("initial sync, %d rooms x 55 events, %s members: %d statements", rooms, mode.name, n)
			counts[mode.name] = append(counts[mode.name], n)
		}
	}
	w.addRooms(t, 25, 47) // with the rooms' 8 state events (create, members, power levels...): 55 events each
	measure(25)
	w.addRooms(t, 25, 47)
	measure(50)
	w.addRooms(t, 50, 47)
	measure(100)

	// An incremental sync too: one room changed or all 100, the same count.
	incremental := func(rooms []string) uint64 {
		t.Helper()
		since := syncPNextBatch(t, w.alice.Do("GET", syncPPath(syncPLazy, "", -1), nil))
		for _, room := range rooms {
			if _, err := syncPSendMsg(w.bob, room, "news"); err != nil {
				t.Fatal(err)
			}
		}
		return syncPCount(t, w.srv, w.alice, syncPPath(syncPLazy, since, 0), 5, func(r *testutil.Response) {
			t.Helper()
			if join := syncPJoined(t, r); len(join) != len(rooms) {
				t.Fatalf("incremental sync after messages in %d rooms has %d rooms", len(rooms), len(join))
			}
		})
	}
	one, all := incremental(w.rooms[:1]), incremental(w.rooms)
	t.Logf("incremental sync, lazy members: %d statements after a message in 1 room, %d after one in each of %d rooms", one, all, len(w.rooms))
	if one > 20 || all != one {
		t.Errorf("incremental sync ran %d statements for 1 changed room and %d for %d: want the same, at most 20", one, all, len(w.rooms))
	}
	for mode, c := range counts {
		if c[0] > 20 {
			t.Errorf("%s initial sync ran %d statements, want at most 20", mode, c[0])
		}
		if !slices.Equal(c, []uint64{c[0], c[0], c[0]}) {
			t.Errorf("%s initial sync: %v statements for 25, 50 and 100 rooms: the count grows with the rooms", mode, c)
		}
	}
}

// ---- (b) initial sync latency ----

// syncPTime returns the durations of runs GETs of path after one warm-up,
// sorted, checking each response.
func syncPTime(t testing.TB, c *testutil.Client, path string, runs int, check func(*testutil.Response)) []time.Duration {
	t.Helper()
	c.Do("GET", path, nil)
	var out []time.Duration
	for range runs {
		start := time.Now()
		r := c.Do("GET", path, nil)
		out = append(out, time.Since(start))
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		if check != nil {
			check(r)
		}
	}
	slices.Sort(out)
	return out
}

// An initial sync of 50 rooms x 50 events with lazy loading takes under
// 100 ms (median of 5 runs after a warm-up).
func TestInitialSyncLatency(t *testing.T) {
	w := syncPNewWorld(t)
	w.addRooms(t, 50, 47)
	w.alice.Do("GET", syncPPath("", "", -1), nil)
	syncPIdle(t, w.srv, 100*time.Millisecond)
	ds := syncPTime(t, w.alice, syncPPath(syncPLazy, "", -1), 5, w.syncPCheckInitial(t, true))
	eager := syncPTime(t, w.alice, syncPPath("", "", -1), 5, nil)
	t.Logf("initial sync, 50 rooms x 55 events, lazy members: median %v (min %v, max %v); without lazy loading: median %v",
		ds[2], ds[0], ds[4], eager[2])
	if syncPRace {
		t.Log("race detector on: latency not asserted")
	} else if ds[2] >= 100*time.Millisecond {
		t.Errorf("initial sync with lazy loading took %v (median of 5), want under 100 ms", ds[2])
	}
}

// ---- (c) long-poll fan-out ----

// syncPLongPoll is a /sync request in flight.
type syncPLongPoll struct {
	done  chan struct{}
	start time.Time
	end   time.Time
	resp  *http.Response
	body  []byte
	err   error
}

// syncPStartPoll starts a long-poll; cancelling ctx aborts it.
func syncPStartPoll(ctx context.Context, c *testutil.Client, path string) *syncPLongPoll {
	p := &syncPLongPoll{done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(p.done)
		req, err := http.NewRequestWithContext(ctx, "GET", c.BaseURL+path, nil)
		if err != nil {
			p.err = err
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			p.err = err
			return
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, p.err = buf.ReadFrom(resp.Body)
		p.end = time.Now()
		p.resp, p.body = resp, buf.Bytes()
	}()
	return p
}

// wait returns the long-poll's response, failing after timeout.
func (p *syncPLongPoll) wait(t testing.TB, timeout time.Duration) *testutil.Response {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("long-poll still waiting after %v", timeout)
	}
	if p.err != nil {
		t.Fatalf("long-poll: %v", p.err)
	}
	if p.resp.StatusCode != http.StatusOK {
		t.Fatalf("long-poll: %d %s", p.resp.StatusCode, p.body)
	}
	return &testutil.Response{Status: p.resp.StatusCode, Header: p.resp.Header, Body: p.body}
}

func syncPNextBatch(t testing.TB, r *testutil.Response) string {
	t.Helper()
	tok, _ := r.JSON(t)["next_batch"].(string)
	if tok == "" {
		t.Fatalf("sync without next_batch: %s", r.Body)
	}
	return tok
}

// syncPTokens gives each user a since token that has seen everything so
// far: an initial sync each, then (once every user is online, which
// others see as presence) an incremental one.
func syncPTokens(t testing.TB, users ...*testutil.Client) []string {
	t.Helper()
	tokens := make([]string, len(users))
	for i, u := range users {
		tokens[i] = syncPNextBatch(t, u.Do("GET", syncPPath("", "", -1), nil))
	}
	for i, u := range users {
		tokens[i] = syncPNextBatch(t, u.Do("GET", syncPPath("", tokens[i], 0), nil))
	}
	return tokens
}

func syncPPercentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// A message reaches 20 waiting long-polls of the room's members in under
// 20 ms (99th percentile), and does not wake a user who is not in the
// room.
func TestLongPollFanout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // no long-poll outlives the test
	srv := testserver.Start(t)
	dora := syncPUser(t, srv, "dora")
	room := roomTCreate(dora, map[string]any{"preset": "public_chat"})
	const waiters = 20
	users := make([]*testutil.Client, waiters)
	tokens := make([]string, waiters)
	for i := range users {
		users[i] = syncPUser(t, srv, fmt.Sprintf("w%d", i))
		roomTJoin(users[i], room)
	}
	// zed is in another room only.
	zed := syncPUser(t, srv, "zed")
	roomTCreate(zed, map[string]any{"preset": "private_chat"})
	// dora is online before the rounds (her first activity would also
	// wake the room with a presence change).
	roomTSend(dora, room, "hello")
	all := syncPTokens(t, append(slices.Clone(users), zed)...)
	copy(tokens, all)
	zedToken := all[waiters]

	const rounds = 20
	var zedPoll *syncPLongPoll
	// measure runs the rounds and returns the sorted latencies.
	measure := func(attempt int) []time.Duration {
		var lat []time.Duration
		for round := range rounds {
			polls := make([]*syncPLongPoll, waiters)
			for i, u := range users {
				polls[i] = syncPStartPoll(ctx, u, syncPPath("", tokens[i], 30000))
			}
			if round == 0 && attempt == 0 {
				zedPoll = syncPStartPoll(ctx, zed, syncPPath("", zedToken, 2000))
			}
			syncPIdle(t, srv, 50*time.Millisecond) // every long-poll is waiting
			for _, p := range polls {
				select {
				case <-p.done:
					t.Fatalf("round %d: a long-poll returned before the message: %v %s", round, p.err, p.body)
				default:
				}
			}
			eventID, err := syncPSendMsg(dora, room, fmt.Sprintf("round %d.%d", attempt, round))
			if err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			for i, p := range polls {
				r := p.wait(t, 10*time.Second)
				lat = append(lat, max(p.end.Sub(sent), 0))
				join := syncPJoined(t, r)
				evs := join[room].Timeline.Events
				if len(evs) == 0 || evs[len(evs)-1]["event_id"] != eventID {
					t.Fatalf("round %d: waiter %d woke without the message %s: %s", round, i, eventID, r.Body)
				}
				tokens[i] = syncPNextBatch(t, r)
			}
		}
		slices.Sort(lat)
		return lat
	}
	// The 99th percentile of 20 rounds of 20 waiters is the slowest round:
	// one pause of this 2-core machine (a GC, another test package running
	// beside this one under go test ./...) fails it. Up to three series
	// are measured; the best must meet the target.
	var p99 time.Duration
	for attempt := range 3 {
		lat := measure(attempt)
		p50, p, worst := syncPPercentile(lat, 0.5), syncPPercentile(lat, 0.99), lat[len(lat)-1]
		t.Logf("message to %d long-polls, %d rounds: median %v, p90 %v, p99 %v, max %v (from the send's response)",
			waiters, rounds, p50, syncPPercentile(lat, 0.9), p, worst)
		if attempt == 0 || p < p99 {
			p99 = p
		}
		if p99 < 20*time.Millisecond || syncPRace {
			break
		}
	}
	if syncPRace {
		t.Log("race detector on: latency not asserted")
	} else if p99 >= 20*time.Millisecond {
		t.Errorf("99th percentile of the wake-up latency is %v in the best of 3 series, want under 20 ms", p99)
	}

	// zed was not woken: his long-poll ran out its 2 s with nothing.
	r := zedPoll.wait(t, 10*time.Second)
	if took := zedPoll.end.Sub(zedPoll.start); took < 1900*time.Millisecond {
		t.Errorf("the long-poll of a user in no room of the messages returned after %v, want its 2 s timeout: %s", took, r.Body)
	}
	if join := syncPJoined(t, r); len(join) != 0 {
		t.Errorf("zed's long-poll returned rooms: %s", r.Body)
	}
	zedToken = syncPNextBatch(t, r)

	// Nor did his sync run at all: statements run while messages are sent
	// are the same with his long-poll waiting as with none (a woken sync
	// runs several). Control: a waiting member's sync shows in the count.
	// Other work (the unread counts saved every 250 ms) only adds to a
	// count, and by how many saves fall in the window: each count is the
	// fewest of three tries, each between waits longer than that period.
	const msgs, tries = 10, 3
	quiet := 300 * time.Millisecond
	sendAll := func(what string, before func() func()) uint64 {
		t.Helper()
		best := uint64(math.MaxUint64)
		for try := range tries {
			after := before()
			syncPIdle(t, srv, quiet)
			start := srv.DB.Queries()
			for i := range msgs {
				if _, err := syncPSendMsg(dora, room, fmt.Sprintf("%s %d.%d", what, try, i)); err != nil {
					t.Fatal(err)
				}
			}
			syncPIdle(t, srv, quiet)
			best = min(best, srv.DB.Queries()-start)
			after()
		}
		return best
	}
	nothing := func() func() { return func() {} }
	base := sendAll("nobody waiting", nothing)
	zedCtx, zedCancel := context.WithCancel(ctx)
	zedPoll = syncPStartPoll(zedCtx, zed, syncPPath("", zedToken, 60000))
	withZed := sendAll("zed waiting", nothing)
	select {
	case <-zedPoll.done:
		t.Errorf("zed's long-poll returned while messages were sent in a room he is not in: %v %s", zedPoll.err, zedPoll.body)
	default:
	}
	zedCancel()
	withMember := sendAll("a member waiting", func() func() {
		tokens[0] = syncPNextBatch(t, users[0].Do("GET", syncPPath("", tokens[0], 0), nil))
		poll := syncPStartPoll(ctx, users[0], syncPPath("", tokens[0], 30000))
		return func() {
			if r := poll.wait(t, 10*time.Second); len(syncPJoined(t, r)[room].Timeline.Events) == 0 {
				t.Errorf("the member's long-poll returned without the messages: %s", r.Body)
			} else {
				tokens[0] = syncPNextBatch(t, r)
			}
		}
	})
	t.Logf("statements for %d messages (fewest of %d tries): %d with nobody waiting, %d with zed waiting, %d with a member waiting",
		msgs, tries, base, withZed, withMember)
	if withZed > base {
		t.Errorf("messages in a room zed is not in ran %d more statements with his long-poll waiting: his sync was woken", withZed-base)
	}
	if withMember <= base {
		t.Errorf("control: a woken member's sync ran no statement (%d vs %d): the count cannot see wake-ups", withMember, base)
	}
	<-zedPoll.done
}

// ---- (d) idle long-polls cost no CPU ----

func syncPCPUTime(t testing.TB) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// 20 long-polls waiting with nothing to say cost (almost) no CPU: the
// process (server and clients) uses under 50 ms of CPU over 3 s.
func TestIdleLongPollNoCPU(t *testing.T) {
	srv := testserver.Start(t)
	owner := syncPUser(t, srv, "owner")
	room := roomTCreate(owner, map[string]any{"preset": "public_chat"})
	users := make([]*testutil.Client, 20)
	for i := range users {
		users[i] = syncPUser(t, srv, fmt.Sprintf("idle%d", i))
		roomTJoin(users[i], room)
	}
	tokens := syncPTokens(t, users...)
	const window = 3 * time.Second
	// measure returns the CPU time and the statements over the window.
	measure := func() (time.Duration, uint64) {
		syncPIdle(t, srv, 200*time.Millisecond)
		before, q := syncPCPUTime(t), srv.DB.Queries()
		time.Sleep(window)
		return syncPCPUTime(t) - before, srv.DB.Queries() - q
	}
	baseline, _ := measure()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polls := make([]*syncPLongPoll, len(users))
	for i, u := range users {
		polls[i] = syncPStartPoll(ctx, u, syncPPath("", tokens[i], 20000))
	}
	used, stmts := measure()
	for i, p := range polls {
		select {
		case <-p.done:
			t.Fatalf("long-poll %d returned while idle: %v %s", i, p.err, p.body)
		default:
		}
	}
	cancel()
	for _, p := range polls {
		<-p.done
	}
	t.Logf("CPU over %v: %v with 20 idle long-polls, %v with none; %d statements while they waited",
		window, used.Round(time.Microsecond), baseline.Round(time.Microsecond), stmts)
	if stmts != 0 {
		t.Errorf("20 idle long-polls ran %d statements in %v, want none", stmts, window)
	}
	if used >= 50*time.Millisecond {
		t.Errorf("20 idle long-polls: %v of CPU over %v, want under 50 ms", used, window)
	}
}

// ---- incremental work follows the changed rooms ----

// An incremental sync with lazy loading holds only the rooms that changed,
// also when the server forgot which members the device has (after a
// restart) or the device's previous sync did not lazy-load: a user in many
// rooms must not get (and the server must not build) every room each time.
func TestIncrementalLazySyncOnlyChangedRooms(t *testing.T) {
	w := syncPNewWorld(t)
	w.addRooms(t, 5, 3)
	check := func(what, since string) {
		t.Helper()
		roomTSend(w.bob, w.rooms[0], what)
		r := w.alice.Do("GET", syncPPath(syncPLazy, since, 0), nil)
		join := syncPJoined(t, r)
		var got []string
		for room := range join {
			got = append(got, room)
		}
		if len(got) != 1 || got[0] != w.rooms[0] {
			t.Errorf("%s: incremental sync after a message in one room has rooms %v, want only %s", what, got, w.rooms[0])
		}
	}
	since := syncPNextBatch(t, w.alice.Do("GET", syncPPath(syncPLazy, "", -1), nil))
	check("lazy after lazy", since)
	since = syncPNextBatch(t, w.alice.Do("GET", syncPPath("", "", -1), nil))
	check("lazy after an initial sync without lazy loading", since)
	since = syncPNextBatch(t, w.alice.Do("GET", syncPPath(syncPLazy, "", -1), nil))
	w.srv.Restart()
	check("lazy after a restart", since)
}
