package tests

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers (prefix epT) ----

// epTSyncUntil runs incremental syncs from since (each waiting at most
// 500 ms) until cond holds for a response, which it returns; it fails
// after timeout.
func epTSyncUntil(c *testutil.Client, since string, timeout time.Duration, what string, cond func(m map[string]any) bool) map[string]any {
	c.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := msgTSync(c, "since", since, "timeout", "500")
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			c.T.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		since = msgTNext(m)
	}
}

// epTEphemeral returns the ephemeral events of a joined room in a sync
// response.
func epTEphemeral(t testing.TB, m map[string]any, roomID string) []map[string]any {
	t.Helper()
	room := msgTJoinedRoom(m, roomID)
	if room == nil {
		return nil
	}
	return msgTEvents(t, room, "ephemeral")
}

// epTTyping returns the user_ids of the room's m.typing event, and whether
// there is one.
func epTTyping(t testing.TB, m map[string]any, roomID string) ([]string, bool) {
	t.Helper()
	for _, e := range epTEphemeral(t, m, roomID) {
		if e["type"] == "m.typing" {
			c := roomTMap(t, e["content"], "m.typing content")
			users := roomTStrings(t, c["user_ids"], "m.typing user_ids")
			slices.Sort(users)
			return users, true
		}
	}
	return nil, false
}

// epTReceipt returns the receipt of userID of type typ on eventID in the
// room's m.receipt events of a sync response, or nil.
func epTReceipt(t testing.TB, m map[string]any, roomID, eventID, typ, userID string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, e := range epTEphemeral(t, m, roomID) {
		if e["type"] != "m.receipt" {
			continue
		}
		c := roomTMap(t, e["content"], "m.receipt content")
		ev, _ := c[eventID].(map[string]any)
		types, _ := ev[typ].(map[string]any)
		if r, ok := types[userID].(map[string]any); ok {
			if ts, ok := r["ts"].(float64); !ok || ts <= 0 {
				t.Fatalf("receipt of %s on %s without ts: %v", userID, eventID, r)
			}
			found = r
		}
	}
	return found
}

// epTHasText reports whether the JSON form of a response contains s.
func epTHasText(m map[string]any, s string) bool {
	b, _ := json.Marshal(m)
	return strings.Contains(string(b), s)
}

// epTRoomAccountData returns the content of a room account data event in
// a sync response, or nil.
func epTRoomAccountData(t testing.TB, m map[string]any, roomID, typ string) map[string]any {
	t.Helper()
	room := msgTJoinedRoom(m, roomID)
	if room == nil {
		return nil
	}
	for _, e := range msgTEvents(t, room, "account_data") {
		if e["type"] == typ {
			return roomTMap(t, e["content"], typ+" content")
		}
	}
	return nil
}

func epTTypingPath(roomID, userID string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", roomID, userID)
}

func epTReceiptPath(roomID, typ, eventID string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/receipt/%s/%s", roomID, typ, eventID)
}

func epTReadMarkersPath(roomID string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/read_markers", roomID)
}

// epTRoom is a room where alice sent three messages and bob and carol
// joined; eve is in no room.
type epTRoom struct {
	roomID                 string
	alice, bob, carol, eve *testutil.Client
	evs                    []string
}

func epTSetup(t *testing.T, srv *testserver.Server) *epTRoom {
	t.Helper()
	r := &epTRoom{alice: roomTUser(t, srv, "alice"), bob: roomTUser(t, srv, "bob"), carol: roomTUser(t, srv, "carol"), eve: roomTUser(t, srv, "eve")}
	r.roomID = roomTCreate(r.alice, map[string]any{"preset": "public_chat"})
	roomTJoin(r.bob, r.roomID)
	roomTJoin(r.carol, r.roomID)
	r.evs = msgTSendN(r.alice, r.roomID, "e", 3)
	return r
}

func epTIsEmpty(t testing.TB, m map[string]any) {
	t.Helper()
	if len(m) != 0 {
		t.Fatalf("response %v, want {}", m)
	}
}

// ---- typing ----

func TestTyping(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	alice, bob := r.alice, r.bob
	since := msgTNext(msgTSync(bob))

	epTIsEmpty(t, alice.MustDo("PUT", epTTypingPath(r.roomID, alice.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK))
	typingIs := func(want ...string) func(m map[string]any) bool {
		slices.Sort(want)
		return func(m map[string]any) bool {
			users, ok := epTTyping(t, m, r.roomID)
			return ok && slices.Equal(users, want)
		}
	}
	m := epTSyncUntil(bob, since, 5*time.Second, "alice typing in bob's sync", typingIs(alice.UserID))

	// Another device's initial sync shows who is typing now.
	bob2 := bob.Login(bob.UserID, "pw")
	if users, ok := epTTyping(t, msgTSync(bob2), r.roomID); !ok || !slices.Equal(users, []string{alice.UserID}) {
		t.Fatalf("initial sync m.typing %v (%v), want alice", users, ok)
	}

	bob.MustDo("PUT", epTTypingPath(r.roomID, bob.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK)
	m = epTSyncUntil(bob, msgTNext(m), 5*time.Second, "alice and bob typing", typingIs(alice.UserID, bob.UserID))
	// typing false (the timeout may be left out) removes the user.
	alice.MustDo("PUT", epTTypingPath(r.roomID, alice.UserID), map[string]any{"typing": false}, http.StatusOK)
	m = epTSyncUntil(bob, msgTNext(m), 5*time.Second, "only bob typing", typingIs(bob.UserID))
	bob.MustDo("PUT", epTTypingPath(r.roomID, bob.UserID), map[string]any{"typing": false}, http.StatusOK)
	epTSyncUntil(bob, msgTNext(m), 5*time.Second, "nobody typing", typingIs())

	t.Run("errors", func(t *testing.T) {
		a, b, e := roomTBind(t, alice), roomTBind(t, bob), roomTBind(t, r.eve)
		// Someone else's typing.
		b.MustFail("PUT", epTTypingPath(r.roomID, alice.UserID), map[string]any{"typing": true, "timeout": 1000}, http.StatusForbidden, "M_FORBIDDEN")
		// Not in the room.
		e.MustFail("PUT", epTTypingPath(r.roomID, e.UserID), map[string]any{"typing": true, "timeout": 1000}, http.StatusForbidden, "M_FORBIDDEN")
		// Bodies.
		roomTFail(a, "PUT", epTTypingPath(r.roomID, a.UserID), map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM", "M_BAD_JSON")
		roomTFail(a, "PUT", epTTypingPath(r.roomID, a.UserID), map[string]any{"timeout": 1000}, http.StatusBadRequest, "M_MISSING_PARAM", "M_BAD_JSON")
		a.MustFail("PUT", epTTypingPath(r.roomID, a.UserID), map[string]any{"typing": "yes", "timeout": 1000}, http.StatusBadRequest, "M_BAD_JSON")
		a.MustFail("PUT", epTTypingPath(r.roomID, a.UserID), testutil.Raw(`{"typing": tr`), http.StatusBadRequest, "M_NOT_JSON")
		// Nothing of that reached the room.
		if users, ok := epTTyping(t, msgTSync(roomTBind(t, r.carol)), r.roomID); ok && len(users) > 0 {
			t.Fatalf("after refused typing requests: m.typing %v", users)
		}
	})
}

// A typing notification ends by itself when its timeout passes.
func TestTypingExpiry(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	since := msgTNext(msgTSync(r.bob))
	start := time.Now()
	r.alice.MustDo("PUT", epTTypingPath(r.roomID, r.alice.UserID), map[string]any{"typing": true, "timeout": 500}, http.StatusOK)
	m := epTSyncUntil(r.bob, since, 5*time.Second, "alice typing", func(m map[string]any) bool {
		users, _ := epTTyping(t, m, r.roomID)
		return slices.Contains(users, r.alice.UserID)
	})
	epTSyncUntil(r.bob, msgTNext(m), 10*time.Second, "alice's typing to expire", func(m map[string]any) bool {
		users, ok := epTTyping(t, m, r.roomID)
		return ok && !slices.Contains(users, r.alice.UserID)
	})
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("typing with a 500 ms timeout ended after %v", d)
	}
	if users, _ := epTTyping(t, msgTSync(r.carol), r.roomID); slices.Contains(users, r.alice.UserID) {
		t.Fatalf("initial sync after the expiry still shows alice typing: %v", users)
	}
}

// Typing again before the timeout extends it; leaving the room ends it (as
// Synapse does).
func TestTypingRefreshAndLeave(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	put := func(c *testutil.Client, timeout int) {
		c.T.Helper()
		c.MustDo("PUT", epTTypingPath(r.roomID, c.UserID), map[string]any{"typing": true, "timeout": timeout}, http.StatusOK)
	}
	put(r.alice, 300)
	put(r.alice, 30000)
	for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); {
		if users, _ := epTTyping(t, msgTSync(r.carol), r.roomID); !slices.Contains(users, r.alice.UserID) {
			t.Fatalf("typing renewed with a 30 s timeout ended early: m.typing %v", users)
		}
		time.Sleep(50 * time.Millisecond)
	}

	put(r.bob, 30000)
	since := msgTNext(msgTSync(r.carol))
	roomTLeave(r.alice, r.roomID)
	m := epTSyncUntil(r.carol, since, 5*time.Second, "alice's typing to end when she left", func(m map[string]any) bool {
		users, ok := epTTyping(t, m, r.roomID)
		return ok && !slices.Contains(users, r.alice.UserID)
	})
	if users, _ := epTTyping(t, m, r.roomID); !slices.Equal(users, []string{r.bob.UserID}) {
		t.Fatalf("after alice left: m.typing %v, want bob", users)
	}
	if users, _ := epTTyping(t, msgTSync(r.carol), r.roomID); !slices.Equal(users, []string{r.bob.UserID}) {
		t.Fatalf("initial sync after alice left: m.typing %v, want bob", users)
	}
}

// A long-polling sync returns as soon as someone starts typing.
func TestTypingWakesLongPoll(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	// Presence is filtered out so that it does not end the long-poll; bob
	// starts offline, and going online tells when his long-poll is in.
	flt := msgTFilter(map[string]any{"presence": map[string]any{"types": []string{}}})
	since := msgTNext(msgTSync(r.bob, "filter", flt, "set_presence", "offline"))
	if p := r.alice.MustDo("GET", testutil.Path("/_matrix/client/v3/presence/%s/status", r.bob.UserID), nil, http.StatusOK); p["presence"] != "offline" {
		t.Fatalf("bob's presence before the long-poll: %v", p)
	}

	type result struct {
		status int
		body   map[string]any
		err    error
		at     time.Time
	}
	done := make(chan result, 1)
	go func() {
		q := url.Values{"since": {since}, "timeout": {"10000"}, "filter": {flt}}
		req, _ := http.NewRequest("GET", srv.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+r.bob.AccessToken)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		res := result{err: err}
		if err == nil {
			res.status = resp.StatusCode
			res.err = json.NewDecoder(resp.Body).Decode(&res.body)
			resp.Body.Close()
		}
		res.at = time.Now()
		done <- res
	}()
	testutil.Eventually(t, 5*time.Second, "bob's long-poll to start (bob online)", func() bool {
		p := r.alice.MustDo("GET", testutil.Path("/_matrix/client/v3/presence/%s/status", r.bob.UserID), nil, http.StatusOK)
		return p["presence"] == "online"
	})
	put := time.Now()
	r.alice.MustDo("PUT", epTTypingPath(r.roomID, r.alice.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK)
	var res result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll did not return")
	}
	if res.err != nil || res.status != http.StatusOK {
		t.Fatalf("long-poll: status %d, error %v", res.status, res.err)
	}
	if d := res.at.Sub(put); d > 5*time.Second {
		t.Fatalf("the long-poll returned %v after alice started typing", d)
	}
	if users, _ := epTTyping(t, res.body, r.roomID); !slices.Equal(users, []string{r.alice.UserID}) {
		t.Fatalf("the long-poll returned without alice typing: %v", res.body)
	}
}

// ---- receipts ----

func TestReceipts(t *testing.T) {
	srv := testserver.Start(t)

	t.Run("m.read", func(t *testing.T) {
		r := epTSetup(t, srv)
		sinceA, sinceC := msgTNext(msgTSync(r.alice)), msgTNext(msgTSync(r.carol))
		epTIsEmpty(t, r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[1]), map[string]any{}, http.StatusOK))
		for _, c := range []*testutil.Client{r.alice, r.carol} {
			since := sinceA
			if c == r.carol {
				since = sinceC
			}
			m := epTSyncUntil(c, since, 5*time.Second, "bob's receipt", func(m map[string]any) bool {
				return epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil
			})
			if rc := epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID); rc["thread_id"] != nil {
				t.Fatalf("unthreaded receipt with thread_id: %v", rc)
			}
		}
		// Initial syncs carry the current receipts, the sender's too.
		if epTReceipt(t, msgTSync(r.bob), r.roomID, r.evs[1], "m.read", r.bob.UserID) == nil {
			t.Fatal("bob's initial sync lacks his receipt")
		}
		// Incremental syncs carry only new receipts (deltas).
		m := epTSyncUntil(r.alice, sinceA, 5*time.Second, "bob's receipt again", func(m map[string]any) bool {
			return epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil
		})
		r.carol.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[0]), map[string]any{}, http.StatusOK)
		epTSyncUntil(r.alice, msgTNext(m), 5*time.Second, "carol's receipt", func(m map[string]any) bool {
			if epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil {
				t.Fatalf("an incremental sync repeats bob's older receipt: %v", epTEphemeral(t, m, r.roomID))
			}
			return epTReceipt(t, m, r.roomID, r.evs[0], "m.read", r.carol.UserID) != nil
		})
		// A newer receipt replaces it.
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[2]), map[string]any{}, http.StatusOK)
		m = msgTSync(r.carol)
		if epTReceipt(t, m, r.roomID, r.evs[2], "m.read", r.bob.UserID) == nil || epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil {
			t.Fatalf("after moving the receipt: %v", epTEphemeral(t, m, r.roomID))
		}
	})

	t.Run("m.read.private", func(t *testing.T) {
		r := epTSetup(t, srv)
		sinceA, sinceB := msgTNext(msgTSync(r.alice)), msgTNext(msgTSync(r.bob))
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read.private", r.evs[2]), map[string]any{}, http.StatusOK)
		epTSyncUntil(r.bob, sinceB, 5*time.Second, "bob's private receipt in his own sync", func(m map[string]any) bool {
			return epTReceipt(t, m, r.roomID, r.evs[2], "m.read.private", r.bob.UserID) != nil
		})
		// carol's public receipt comes after bob's private one: alice gets
		// it, and never the private one.
		r.carol.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[0]), map[string]any{}, http.StatusOK)
		epTSyncUntil(r.alice, sinceA, 5*time.Second, "carol's receipt", func(m map[string]any) bool {
			if epTHasText(m, "m.read.private") {
				t.Fatalf("alice's sync shows a private receipt: %v", epTEphemeral(t, m, r.roomID))
			}
			return epTReceipt(t, m, r.roomID, r.evs[0], "m.read", r.carol.UserID) != nil
		})
		for _, c := range []*testutil.Client{r.alice, r.carol} {
			if m := msgTSync(c); epTHasText(m, "m.read.private") {
				t.Fatalf("%s's initial sync shows a private receipt: %v", c.UserID, epTEphemeral(t, m, r.roomID))
			}
		}
		if epTReceipt(t, msgTSync(r.bob), r.roomID, r.evs[2], "m.read.private", r.bob.UserID) == nil {
			t.Fatal("bob's initial sync lacks his private receipt")
		}
		// Another device of bob's sees it too.
		if epTReceipt(t, msgTSync(r.bob.Login(r.bob.UserID, "pw")), r.roomID, r.evs[2], "m.read.private", r.bob.UserID) == nil {
			t.Fatal("bob's other device lacks his private receipt")
		}
	})

	t.Run("threaded", func(t *testing.T) {
		r := epTSetup(t, srv)
		root := r.evs[2]
		reply := roomTEventID(t, r.alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", r.roomID, roomTTxn()),
			map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}, http.StatusOK))
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[0]), map[string]any{}, http.StatusOK)
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[1]), map[string]any{"thread_id": "main"}, http.StatusOK)
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", reply), map[string]any{"thread_id": root}, http.StatusOK)
		m := msgTSync(r.alice)
		un := epTReceipt(t, m, r.roomID, r.evs[0], "m.read", r.bob.UserID)
		if un == nil || un["thread_id"] != nil {
			t.Fatalf("unthreaded receipt next to threaded ones: %v", un)
		}
		if rc := epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID); rc == nil || rc["thread_id"] != "main" {
			t.Fatalf("main-timeline receipt: %v", rc)
		}
		if rc := epTReceipt(t, m, r.roomID, reply, "m.read", r.bob.UserID); rc == nil || rc["thread_id"] != root {
			t.Fatalf("thread receipt: %v, want thread_id %s", rc, root)
		}
		// Unthreaded and threaded receipts of the same event, in either
		// order: the unthreaded one shows (MSC4102).
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[2]), map[string]any{}, http.StatusOK)
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[2]), map[string]any{"thread_id": "main"}, http.StatusOK)
		if rc := epTReceipt(t, msgTSync(r.alice), r.roomID, r.evs[2], "m.read", r.bob.UserID); rc == nil || rc["thread_id"] != nil {
			t.Fatalf("unthreaded and threaded receipts of one event: %v, want the unthreaded one", rc)
		}
	})

	t.Run("errors", func(t *testing.T) {
		r := epTSetup(t, srv)
		b := r.bob
		ev := r.evs[1]
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.unknown", ev), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.read", ev), map[string]any{"thread_id": "sideways"}, http.StatusBadRequest, "M_INVALID_PARAM")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.read", ev), map[string]any{"thread_id": ""}, http.StatusBadRequest, "M_INVALID_PARAM")
		roomTFail(b, "POST", epTReceiptPath(r.roomID, "m.read", ev), map[string]any{"thread_id": 5}, http.StatusBadRequest, "M_INVALID_PARAM", "M_BAD_JSON")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.fully_read", ev), map[string]any{"thread_id": "main"}, http.StatusBadRequest, "M_INVALID_PARAM")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.read", ev), testutil.Raw(`{"thread_id": `), http.StatusBadRequest, "M_NOT_JSON")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.read", "$unknownevent"), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
		other := roomTCreate(r.alice, map[string]any{"preset": "public_chat"})
		roomTJoin(b, other)
		otherEv := roomTSend(r.alice, other, "elsewhere")
		b.MustFail("POST", epTReceiptPath(r.roomID, "m.read", otherEv), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
		r.eve.MustFail("POST", epTReceiptPath(r.roomID, "m.read", ev), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		r.eve.MustFail("POST", epTReceiptPath(r.roomID, "m.read.private", ev), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		// None of it was stored.
		if m := msgTSync(r.carol); epTReceipt(t, m, r.roomID, ev, "m.read", b.UserID) != nil || epTReceipt(t, m, r.roomID, ev, "m.read", r.eve.UserID) != nil {
			t.Fatalf("a refused receipt was stored: %v", epTEphemeral(t, m, r.roomID))
		}
	})

	t.Run("m.fully_read", func(t *testing.T) {
		r := epTSetup(t, srv)
		sinceB := msgTNext(msgTSync(r.bob))
		r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.fully_read", r.evs[1]), map[string]any{}, http.StatusOK)
		if got := r.bob.MustDo("GET", accountDataPath(r.bob.UserID, "m.fully_read", r.roomID), nil, http.StatusOK); got["event_id"] != r.evs[1] {
			t.Fatalf("m.fully_read account data %v, want event_id %s", got, r.evs[1])
		}
		epTSyncUntil(r.bob, sinceB, 5*time.Second, "m.fully_read in the room's account data", func(m map[string]any) bool {
			c := epTRoomAccountData(t, m, r.roomID, "m.fully_read")
			return c != nil && c["event_id"] == r.evs[1]
		})
		// It is not a receipt.
		for _, c := range []*testutil.Client{r.alice, r.bob} {
			if m := msgTSync(c); epTReceipt(t, m, r.roomID, r.evs[1], "m.fully_read", r.bob.UserID) != nil {
				t.Fatalf("m.fully_read appears under m.receipt: %v", epTEphemeral(t, m, r.roomID))
			}
		}
	})
}

// As Synapse: receipts and the fully read marker only move forward; an
// older event leaves them where they are.
func TestReceiptsDoNotMoveBackwards(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[2]), map[string]any{}, http.StatusOK)
	r.bob.MustDo("POST", epTReceiptPath(r.roomID, "m.read", r.evs[0]), map[string]any{}, http.StatusOK)
	m := msgTSync(r.carol)
	if epTReceipt(t, m, r.roomID, r.evs[2], "m.read", r.bob.UserID) == nil || epTReceipt(t, m, r.roomID, r.evs[0], "m.read", r.bob.UserID) != nil {
		t.Errorf("m.read moved back from e2 to e0: %v", epTEphemeral(t, m, r.roomID))
	}
	r.bob.MustDo("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.fully_read": r.evs[2]}, http.StatusOK)
	r.bob.MustDo("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.fully_read": r.evs[0]}, http.StatusOK)
	if got := r.bob.MustDo("GET", accountDataPath(r.bob.UserID, "m.fully_read", r.roomID), nil, http.StatusOK); got["event_id"] != r.evs[2] {
		t.Errorf("m.fully_read moved back: %v, want event_id %s", got, r.evs[2])
	}
}

// ---- POST /rooms/{roomId}/read_markers ----

func TestReadMarkers(t *testing.T) {
	srv := testserver.Start(t)
	r := epTSetup(t, srv)
	sinceA, sinceB := msgTNext(msgTSync(r.alice)), msgTNext(msgTSync(r.bob))
	epTIsEmpty(t, r.bob.MustDo("POST", epTReadMarkersPath(r.roomID),
		map[string]any{"m.fully_read": r.evs[1], "m.read": r.evs[1], "m.read.private": r.evs[2]}, http.StatusOK))

	if got := r.bob.MustDo("GET", accountDataPath(r.bob.UserID, "m.fully_read", r.roomID), nil, http.StatusOK); got["event_id"] != r.evs[1] {
		t.Fatalf("m.fully_read account data %v, want event_id %s", got, r.evs[1])
	}
	var fullyRead, read, private bool
	epTSyncUntil(r.bob, sinceB, 5*time.Second, "bob's marker and receipts", func(m map[string]any) bool {
		if c := epTRoomAccountData(t, m, r.roomID, "m.fully_read"); c != nil {
			if c["event_id"] != r.evs[1] {
				t.Fatalf("m.fully_read in sync: %v", c)
			}
			fullyRead = true
		}
		read = read || epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil
		private = private || epTReceipt(t, m, r.roomID, r.evs[2], "m.read.private", r.bob.UserID) != nil
		return fullyRead && read && private
	})
	epTSyncUntil(r.alice, sinceA, 5*time.Second, "bob's public receipt", func(m map[string]any) bool {
		if epTHasText(m, "m.read.private") || epTHasText(m, "m.fully_read") {
			t.Fatalf("alice's sync shows bob's private receipt or marker: %v", m)
		}
		return epTReceipt(t, m, r.roomID, r.evs[1], "m.read", r.bob.UserID) != nil
	})
	if m := msgTSync(r.alice); epTHasText(m, "m.read.private") || epTHasText(m, "m.fully_read") {
		t.Fatalf("alice's initial sync shows bob's private receipt or marker: %v", m)
	}

	// Only the marker.
	r.bob.MustDo("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.fully_read": r.evs[2]}, http.StatusOK)
	if got := r.bob.MustDo("GET", accountDataPath(r.bob.UserID, "m.fully_read", r.roomID), nil, http.StatusOK); got["event_id"] != r.evs[2] {
		t.Fatalf("m.fully_read account data %v, want event_id %s", got, r.evs[2])
	}
	if m := msgTSync(r.carol); epTReceipt(t, m, r.roomID, r.evs[2], "m.read", r.bob.UserID) != nil {
		t.Fatal("a marker alone made a public receipt")
	}

	t.Run("errors", func(t *testing.T) {
		b := roomTBind(t, r.bob)
		roomTBind(t, r.eve).MustFail("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.fully_read": r.evs[0]}, http.StatusForbidden, "M_FORBIDDEN")
		b.MustFail("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.fully_read": "$unknownevent"}, http.StatusNotFound, "M_NOT_FOUND")
		b.MustFail("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.read": "$unknownevent"}, http.StatusNotFound, "M_NOT_FOUND")
		b.MustFail("POST", epTReadMarkersPath(r.roomID), testutil.Raw(`{"m.read": `), http.StatusBadRequest, "M_NOT_JSON")
		b.MustFail("POST", epTReadMarkersPath(r.roomID), map[string]any{"m.read": 5}, http.StatusBadRequest, "M_BAD_JSON")
		if got := b.MustDo("GET", accountDataPath(b.UserID, "m.fully_read", r.roomID), nil, http.StatusOK); got["event_id"] != r.evs[2] {
			t.Fatalf("a refused request moved the marker: %v", got)
		}
	})
}
