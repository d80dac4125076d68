package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// concTDo sends a request without failing the test on transport errors
// (for goroutines, and for requests that may meet a restarting server).
func concTDo(hc *http.Client, base, token, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("status %d, body is not a JSON object: %q", resp.StatusCode, data)
	}
	return resp.StatusCode, m, nil
}

func concTSendPath(roomID, txn string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, txn)
}

// concTCheckEvent fetches an event and checks its room, sender and body.
func concTCheckEvent(t *testing.T, c *testutil.Client, roomID, eventID, sender, body string) {
	t.Helper()
	m := c.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, eventID), nil, http.StatusOK)
	content, _ := m["content"].(map[string]any)
	if m["event_id"] != eventID || m["room_id"] != roomID || m["sender"] != sender || m["type"] != "m.room.message" || content["body"] != body {
		t.Fatalf("event %s = %v, want %q from %s in %s", eventID, m, body, sender, roomID)
	}
}

// concTMessageBodies walks a room's DAG back from its forward extremities
// (through the roomserver's queries) and counts the m.room.message events
// of each body.
func concTMessageBodies(t *testing.T, srv *testserver.Server, roomID string) map[string]int {
	t.Helper()
	frontier, err := srv.Rooms.QueryLatestEvents(t.Context(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range frontier {
		seen[id] = true
	}
	bodies := map[string]int{}
	for len(frontier) > 0 {
		evs, err := srv.Rooms.QueryEvents(t.Context(), frontier)
		if err != nil || len(evs) != len(frontier) {
			t.Fatalf("loading %d events of the DAG: got %d, %v", len(frontier), len(evs), err)
		}
		frontier = nil
		for _, ev := range evs {
			if ev.Type() == "m.room.message" {
				var c struct {
					Body string `json:"body"`
				}
				if err := json.Unmarshal(ev.Content(), &c); err != nil {
					t.Fatal(err)
				}
				bodies[c.Body]++
			}
			for _, p := range ev.PrevEventIDs() {
				if !seen[p] {
					seen[p] = true
					frontier = append(frontier, p)
				}
			}
		}
	}
	return bodies
}

// A restart in the middle of a send burst loses no acknowledged event:
// every send that returned 200 with an event ID is served after the
// restart, its transaction ID still maps to it, and the room goes on
// accepting events (also retries of the sends the restart cut off).
func TestRoomsRestartDuringSendBurst(t *testing.T) {
	const senders = 4
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	roomID, _ := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "burst"}, http.StatusOK)["room_id"].(string)
	if roomID == "" {
		t.Fatal("createRoom returned no room_id")
	}
	base, token := srv.URL, alice.AccessToken

	type send struct {
		txn, body, eventID string
		err                string // why an unacknowledged send failed
	}
	var (
		mu        sync.Mutex
		acked     []send
		failed    []send
		ackCount  atomic.Int64
		restarted atomic.Bool
		afterAck  atomic.Int64 // acknowledged sends issued after the restart
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				after := restarted.Load()
				s := send{txn: fmt.Sprintf("burst-%d-%d", g, i), body: fmt.Sprintf("sender %d message %d", g, i)}
				status, m, err := concTDo(hc, base, token, "PUT", concTSendPath(roomID, s.txn), map[string]any{"msgtype": "m.text", "body": s.body})
				id, _ := m["event_id"].(string)
				mu.Lock()
				if err == nil && status == http.StatusOK && id != "" {
					s.eventID = id
					acked = append(acked, s)
					ackCount.Add(1)
					if after {
						afterAck.Add(1)
					}
				} else {
					s.err = fmt.Sprintf("status %d %v %v", status, m, err)
					failed = append(failed, s)
				}
				mu.Unlock()
				if err != nil {
					// The server is going away or not back yet: do not spin.
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	testutil.Eventually(t, 30*time.Second, "sends before the restart", func() bool { return ackCount.Load() >= 40 })
	srv.Restart()
	restarted.Store(true)
	testutil.Eventually(t, 30*time.Second, "sends after the restart", func() bool { return afterAck.Load() >= 40 })
	close(stop)
	wg.Wait()
	t.Logf("%d sends acknowledged (%d after the restart), %d failed during the restart window", len(acked), afterAck.Load(), len(failed))
	for _, s := range failed {
		if !strings.Contains(s.err, "connection refused") {
			t.Logf("failed send %s: %s", s.txn, s.err)
		}
	}

	// After the restart, a fresh client (the old connections are gone).
	alice = srv.Client().As(alice.UserID, alice.DeviceID, alice.AccessToken)
	seen := map[string]string{}
	for _, s := range acked {
		if prev, dup := seen[s.eventID]; dup {
			t.Fatalf("transactions %s and %s got the same event %s", prev, s.txn, s.eventID)
		}
		seen[s.eventID] = s.txn
		concTCheckEvent(t, alice, roomID, s.eventID, alice.UserID, s.body)
	}
	// Transaction IDs survive the restart: resending returns the same event.
	for i, s := range acked {
		if i%10 != 0 {
			continue
		}
		m := alice.MustDo("PUT", concTSendPath(roomID, s.txn), map[string]any{"msgtype": "m.text", "body": s.body}, http.StatusOK)
		if m["event_id"] != s.eventID {
			t.Fatalf("resending transaction %s returned %v, want %s", s.txn, m["event_id"], s.eventID)
		}
	}
	// A client retries what the restart cut off, with the same transaction
	// IDs: each gets exactly one event.
	for _, s := range failed {
		m := alice.MustDo("PUT", concTSendPath(roomID, s.txn), map[string]any{"msgtype": "m.text", "body": s.body}, http.StatusOK)
		id, _ := m["event_id"].(string)
		if id == "" {
			t.Fatalf("retry of %s (first attempt: %s): no event_id", s.txn, s.err)
		}
		if prev, dup := seen[id]; dup {
			t.Fatalf("retry of %s returned %s, the event of transaction %s", s.txn, id, prev)
		}
		seen[id] = s.txn
		concTCheckEvent(t, alice, roomID, id, alice.UserID, s.body)
		again := alice.MustDo("PUT", concTSendPath(roomID, s.txn), map[string]any{"msgtype": "m.text", "body": s.body}, http.StatusOK)
		if again["event_id"] != id {
			t.Fatalf("second retry of %s returned %v, want %s", s.txn, again["event_id"], id)
		}
	}

	// The room's DAG holds every message exactly once: neither the restart
	// nor the retries duplicated a send.
	bodies := concTMessageBodies(t, srv, roomID)
	for _, s := range append(append([]send(nil), acked...), failed...) {
		if n := bodies[s.body]; n != 1 {
			t.Fatalf("message %q (transaction %s) is in the room %d times, want once", s.body, s.txn, n)
		}
	}
	if len(bodies) != len(acked)+len(failed) {
		t.Fatalf("the room holds %d distinct messages, %d were sent", len(bodies), len(acked)+len(failed))
	}

	// The room still takes new events, and its state is intact.
	m := alice.MustDo("PUT", concTSendPath(roomID, "after-restart"), map[string]any{"msgtype": "m.text", "body": "still here"}, http.StatusOK)
	id, _ := m["event_id"].(string)
	concTCheckEvent(t, alice, roomID, id, alice.UserID, "still here")
	name := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.name/", roomID), nil, http.StatusOK)
	if name["name"] != "burst" {
		t.Fatalf("room name after restart: %v", name)
	}
	latest, err := srv.Rooms.QueryLatestEvents(t.Context(), roomID)
	if err != nil || len(latest) != 1 || latest[0] != id {
		t.Fatalf("forward extremities %v %v, want just the last event %s", latest, err, id)
	}
}

// 20 users each create a room and send 20 messages into it, all at once:
// every event is served, in its own room only, and every room's state is
// its creator's.
func TestRoomsManyRoomsInParallel(t *testing.T) {
	const users, perUser = 20, 20
	srv := testserver.Start(t)
	clients := make([]*testutil.Client, users)
	for i := range clients {
		clients[i] = srv.Client().Register(fmt.Sprintf("user%d", i), "pw")
	}

	type room struct {
		id     string
		events []string // event IDs of messages 0..perUser-1
		err    error
	}
	rooms := make([]room, users)
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i]
			hc := &http.Client{Timeout: 60 * time.Second}
			status, m, err := concTDo(hc, srv.URL, c.AccessToken, "POST", "/_matrix/client/v3/createRoom",
				map[string]any{"preset": "public_chat", "name": fmt.Sprintf("room %d", i), "topic": fmt.Sprintf("topic %d", i)})
			id, _ := m["room_id"].(string)
			if err != nil || status != http.StatusOK || id == "" {
				rooms[i].err = fmt.Errorf("createRoom: status %d %v %v", status, m, err)
				return
			}
			rooms[i].id = id
			for j := range perUser {
				status, m, err := concTDo(hc, srv.URL, c.AccessToken, "PUT", concTSendPath(id, fmt.Sprintf("m%d", j)),
					map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("user %d message %d", i, j)})
				ev, _ := m["event_id"].(string)
				if err != nil || status != http.StatusOK || ev == "" {
					rooms[i].err = fmt.Errorf("send %d: status %d %v %v", j, status, m, err)
					return
				}
				rooms[i].events = append(rooms[i].events, ev)
			}
		}()
	}
	wg.Wait()

	seenRooms := map[string]bool{}
	seenEvents := map[string]bool{}
	for i, r := range rooms {
		if r.err != nil {
			t.Fatalf("user %d: %v", i, r.err)
		}
		if seenRooms[r.id] {
			t.Fatalf("room ID %s returned twice", r.id)
		}
		seenRooms[r.id] = true
		c := clients[i]
		for j, ev := range r.events {
			if seenEvents[ev] {
				t.Fatalf("event ID %s returned twice", ev)
			}
			seenEvents[ev] = true
			concTCheckEvent(t, c, r.id, ev, c.UserID, fmt.Sprintf("user %d message %d", i, j))
		}
		// An event is not served through another room.
		other := rooms[(i+1)%users]
		c.MustFail("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", other.id, r.events[0]), nil, http.StatusNotFound, "M_NOT_FOUND")

		state := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state", r.id), nil)
		if state.Status != http.StatusOK {
			t.Fatalf("state of room %d: status %d: %s", i, state.Status, state.Body)
		}
		var evs []map[string]any
		state.Decode(t, &evs)
		byKey := map[string]map[string]any{}
		for _, e := range evs {
			if e["room_id"] != r.id {
				t.Fatalf("state of room %d holds an event of %v", i, e["room_id"])
			}
			key := fmt.Sprintf("%v|%v", e["type"], e["state_key"])
			if _, dup := byKey[key]; dup {
				t.Fatalf("state of room %d has %s twice", i, key)
			}
			byKey[key] = e
		}
		content := func(typ, key string) map[string]any {
			t.Helper()
			e, ok := byKey[typ+"|"+key]
			if !ok {
				t.Fatalf("state of room %d lacks %s/%q: %s", i, typ, key, state.Body)
			}
			m, _ := e["content"].(map[string]any)
			return m
		}
		if e := byKey["m.room.create|"]; e == nil || e["sender"] != c.UserID {
			t.Fatalf("room %d: create event %v, want one sent by %s", i, e, c.UserID)
		}
		if m := content("m.room.member", c.UserID); m["membership"] != "join" {
			t.Fatalf("room %d: creator membership %v", i, m)
		}
		if m := content("m.room.name", ""); m["name"] != fmt.Sprintf("room %d", i) {
			t.Fatalf("room %d: name %v", i, m)
		}
		if m := content("m.room.topic", ""); m["topic"] != fmt.Sprintf("topic %d", i) {
			t.Fatalf("room %d: topic %v", i, m)
		}
		if m := content("m.room.join_rules", ""); m["join_rule"] != "public" {
			t.Fatalf("room %d: join rules %v", i, m)
		}
		if users, _ := content("m.room.power_levels", "")["users"].(map[string]any); users[c.UserID] != float64(100) {
			t.Fatalf("room %d: power levels users %v, want %s at 100", i, users, c.UserID)
		}
		members := 0
		for _, e := range evs {
			if e["type"] == "m.room.member" {
				members++
			}
		}
		if members != 1 {
			t.Fatalf("room %d has %d member events, want only its creator's", i, members)
		}
		jm := c.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/joined_members", r.id), nil, http.StatusOK)
		if joined, _ := jm["joined"].(map[string]any); len(joined) != 1 || joined[c.UserID] == nil {
			t.Fatalf("room %d: joined members %v", i, jm["joined"])
		}
		jr := c.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)
		if ids, _ := jr["joined_rooms"].([]any); len(ids) != 1 || ids[0] != r.id {
			t.Fatalf("user %d: joined rooms %v, want [%s]", i, jr["joined_rooms"], r.id)
		}
		latest, err := srv.Rooms.QueryLatestEvents(t.Context(), r.id)
		if err != nil || len(latest) != 1 || latest[0] != r.events[perUser-1] {
			t.Fatalf("room %d: forward extremities %v %v, want the last message", i, latest, err)
		}
	}
}
