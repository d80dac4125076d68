package tests

import (
	"net/http"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers (prefix presT) ----

func presTPath(userID string) string {
	return testutil.Path("/_matrix/client/v3/presence/%s/status", userID)
}

// presTGet returns GET /presence/{userId}/status as c.
func presTGet(c *testutil.Client, userID string) map[string]any {
	c.T.Helper()
	return c.MustDo("GET", presTPath(userID), nil, http.StatusOK)
}

// presTSet sets c's presence (and status message when given).
func presTSet(c *testutil.Client, presence string, msg ...string) {
	c.T.Helper()
	body := map[string]any{"presence": presence}
	if len(msg) > 0 {
		body["status_msg"] = msg[0]
	}
	epTIsEmpty(c.T, c.MustDo("PUT", presTPath(c.UserID), body, http.StatusOK))
}

// presTEvents returns the presence events of a sync response.
func presTEvents(t testing.TB, m map[string]any) []map[string]any {
	t.Helper()
	return msgTEvents(t, m, "presence")
}

// presTFind returns the content of the last m.presence event of userID in
// a sync response, or nil.
func presTFind(t testing.TB, m map[string]any, userID string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, e := range presTEvents(t, m) {
		if e["type"] != "m.presence" {
			t.Fatalf("presence section with a %v event: %v", e["type"], e)
		}
		if e["sender"] == userID {
			found = roomTMap(t, e["content"], "m.presence content")
		}
	}
	return found
}

// presTShared returns alice and bob, who share a room, and carol, who
// shares none with them.
func presTShared(t *testing.T, srv *testserver.Server) (alice, bob, carol *testutil.Client, roomID string) {
	t.Helper()
	alice, bob, carol = roomTUser(t, srv, "alice"), roomTUser(t, srv, "bob"), roomTUser(t, srv, "carol")
	roomID = roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, roomID)
	roomTCreate(carol, map[string]any{"preset": "private_chat"})
	// Presence requests do not wait for the read model to catch up (see
	// TestPresenceAfterMembershipChange); /messages does, so after it the
	// join is known.
	msgTGet(bob, roomID, "dir", "b", "limit", "1")
	return
}

// presTCheckOnline checks the presence of an online, active user.
func presTCheckOnline(t testing.TB, p map[string]any, statusMsg string) {
	t.Helper()
	if p["presence"] != "online" {
		t.Fatalf("presence %v, want online", p)
	}
	if ago, ok := p["last_active_ago"].(float64); !ok || ago < 0 || ago > 60000 {
		t.Fatalf("last_active_ago of a user active just now: %v", p)
	}
	if p["currently_active"] != true {
		t.Fatalf("currently_active of a user active just now: %v", p)
	}
	if statusMsg == "" {
		if _, ok := p["status_msg"]; ok && p["status_msg"] != nil {
			t.Fatalf("status_msg %v, want none", p["status_msg"])
		}
	} else if p["status_msg"] != statusMsg {
		t.Fatalf("status_msg %v, want %q", p["status_msg"], statusMsg)
	}
}

// ---- tests ----

func TestPresenceStatus(t *testing.T) {
	srv := testserver.Start(t)
	alice, bob, carol, _ := presTShared(t, srv)

	presTSet(alice, "online", "at work")
	presTCheckOnline(t, presTGet(alice, alice.UserID), "at work")
	presTCheckOnline(t, presTGet(bob, alice.UserID), "at work")

	presTSet(alice, "unavailable", "lunch")
	if p := presTGet(bob, alice.UserID); p["presence"] != "unavailable" || p["status_msg"] != "lunch" {
		t.Fatalf("after setting unavailable: %v", p)
	}
	// Without status_msg, the message is cleared.
	presTSet(alice, "online")
	presTCheckOnline(t, presTGet(bob, alice.UserID), "")
	presTSet(alice, "offline")
	if p := presTGet(bob, alice.UserID); p["presence"] != "offline" {
		t.Fatalf("after setting offline: %v", p)
	}

	t.Run("errors", func(t *testing.T) {
		a, b, c := roomTBind(t, alice), roomTBind(t, bob), roomTBind(t, carol)
		// Only one's own presence can be set.
		b.MustFail("PUT", presTPath(a.UserID), map[string]any{"presence": "online"}, http.StatusForbidden, "M_FORBIDDEN")
		roomTFail(a, "PUT", presTPath(a.UserID), map[string]any{"presence": "busy-ish"}, http.StatusBadRequest, "M_INVALID_PARAM", "M_BAD_JSON")
		roomTFail(a, "PUT", presTPath(a.UserID), map[string]any{"status_msg": "no state"}, http.StatusBadRequest, "M_MISSING_PARAM", "M_BAD_JSON")
		a.MustFail("PUT", presTPath(a.UserID), map[string]any{"presence": 5}, http.StatusBadRequest, "M_BAD_JSON")
		a.MustFail("PUT", presTPath(a.UserID), testutil.Raw(`{"presence": `), http.StatusBadRequest, "M_NOT_JSON")
		// Users sharing no room cannot see each other's presence.
		c.MustFail("GET", presTPath(a.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
		a.MustFail("GET", presTPath(c.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
		// Nor can a user who is in no room at all.
		loner := roomTUser(t, srv, "loner")
		loner.MustFail("GET", presTPath(a.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
		a.MustFail("GET", presTPath(loner.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
		a.MustFail("GET", presTPath("not-a-user-id"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
		// The refused requests changed nothing.
		if p := presTGet(b, a.UserID); p["presence"] != "offline" {
			t.Fatalf("after refused requests: %v", p)
		}
	})
}

func TestPresenceInSync(t *testing.T) {
	srv := testserver.Start(t)
	alice, bob, carol, _ := presTShared(t, srv)
	presTSet(alice, "online", "hi")
	presTSet(carol, "online", "stranger")

	m := msgTSync(bob)
	c := presTFind(t, m, alice.UserID)
	if c == nil {
		t.Fatalf("bob's initial sync without alice's presence: %v", m["presence"])
	}
	presTCheckOnline(t, c, "hi")
	if presTFind(t, m, carol.UserID) != nil {
		t.Fatal("bob's sync shows the presence of carol, who shares no room with him")
	}
	// Users get their own presence too (as Synapse).
	if c := presTFind(t, msgTSync(alice), alice.UserID); c == nil || c["status_msg"] != "hi" {
		t.Fatalf("alice's sync shows her own presence as %v", c)
	}

	// Changes come down incremental syncs; a stranger's do not.
	presTSet(carol, "unavailable", "stranger away")
	presTSet(alice, "unavailable", "away")
	epTSyncUntil(bob, msgTNext(m), 5*time.Second, "alice unavailable in bob's sync", func(m map[string]any) bool {
		if presTFind(t, m, carol.UserID) != nil {
			t.Fatal("bob's sync shows carol's presence")
		}
		c := presTFind(t, m, alice.UserID)
		return c != nil && c["presence"] == "unavailable" && c["status_msg"] == "away"
	})

	// set_presence=unavailable on /sync.
	presTSet(alice, "online")
	since := msgTNext(msgTSync(bob))
	msgTSync(alice, "set_presence", "unavailable")
	if p := presTGet(bob, alice.UserID); p["presence"] != "unavailable" {
		t.Fatalf("after a sync with set_presence=unavailable: %v", p)
	}
	epTSyncUntil(bob, since, 5*time.Second, "alice unavailable through set_presence", func(m map[string]any) bool {
		c := presTFind(t, m, alice.UserID)
		return c != nil && c["presence"] == "unavailable"
	})
	roomTFail(alice, "GET", "/_matrix/client/v3/sync?set_presence=away", nil, http.StatusBadRequest, "M_INVALID_PARAM")
}

// GET /presence sees memberships changed before the request: right after
// a join the users share a room, right after a leave they do not.
func TestPresenceAfterMembershipChange(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	for i := range 20 {
		u := roomTUser(t, srv, "visitor")
		roomTJoin(u, roomID)
		if r := alice.Do("GET", presTPath(u.UserID), nil); r.Status != http.StatusOK {
			t.Fatalf("round %d: GET presence right after the user joined: %d %s", i, r.Status, r.Body)
		} else if p := r.JSON(t); p["presence"] != "offline" {
			t.Fatalf("presence of a user never seen online: %v", p)
		}
		if r := u.Do("GET", presTPath(alice.UserID), nil); r.Status != http.StatusOK {
			t.Fatalf("round %d: GET presence right after joining: %d %s", i, r.Status, r.Body)
		}
		roomTLeave(u, roomID)
		u.MustFail("GET", presTPath(alice.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
	}
}

// As Synapse: presence is shared between users joined to a common room; an
// invitation is not enough, neither for GET nor for /sync.
func TestPresenceNotSharedWithInvitees(t *testing.T) {
	srv := testserver.Start(t)
	alice, bob, dave, roomID := presTShared(t, srv)
	roomTInvite(alice, roomID, dave.UserID)
	presTSet(alice, "online", "members only")
	presTSet(dave, "online", "invitee")
	dave.MustFail("GET", presTPath(alice.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
	alice.MustFail("GET", presTPath(dave.UserID), nil, http.StatusForbidden, "M_FORBIDDEN")
	m := msgTSync(dave)
	if rooms, _ := m["rooms"].(map[string]any); rooms == nil || rooms["invite"] == nil {
		t.Fatalf("dave's sync without his invitation: %v", m)
	}
	if c := presTFind(t, m, alice.UserID); c != nil {
		t.Errorf("the invitee's sync shows alice's presence: %v", c)
	}
	for _, c := range []*testutil.Client{alice, bob} {
		if p := presTFind(t, msgTSync(c), dave.UserID); p != nil {
			t.Errorf("%s's sync shows the presence of dave, who is only invited: %v", c.UserID, p)
		}
	}
}

// Idle users become unavailable, and offline when their syncs stop.
func TestPresenceTimeouts(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Presence.IdleAfter = config.Duration(300 * time.Millisecond)
		c.Presence.OfflineAfter = config.Duration(400 * time.Millisecond)
	}})
	alice, bob, _, _ := presTShared(t, srv)
	since := msgTNext(msgTSync(alice))
	if p := presTGet(bob, alice.UserID); p["presence"] != "online" {
		t.Fatalf("a syncing user: %v, want online", p)
	}
	presTSet(alice, "online", "brb")
	bobSince := msgTNext(msgTSync(bob))

	// Syncing without activity: unavailable, never offline.
	syncOnce := func() {
		t.Helper()
		since = msgTNext(msgTSync(alice, "since", since, "timeout", "50"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		syncOnce()
		p := presTGet(bob, alice.UserID)
		if p["presence"] == "unavailable" {
			break
		}
		if p["presence"] != "online" {
			t.Fatalf("a syncing user went %v", p["presence"])
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle user stayed online")
		}
	}
	epTSyncUntil(bob, bobSince, 5*time.Second, "alice unavailable in bob's sync", func(m map[string]any) bool {
		c := presTFind(t, m, alice.UserID)
		return c != nil && c["presence"] == "unavailable"
	})
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		syncOnce()
		if p := presTGet(bob, alice.UserID); p["presence"] != "unavailable" || p["status_msg"] != "brb" {
			t.Fatalf("an idle user who keeps syncing: %v, want unavailable with her status message", p)
		}
	}

	// No more syncs: offline.
	stopped := time.Now()
	testutil.Eventually(t, 5*time.Second, "alice offline after her syncs stopped", func() bool {
		return presTGet(bob, alice.UserID)["presence"] == "offline"
	})
	if d := time.Since(stopped); d < 300*time.Millisecond {
		t.Fatalf("offline %v after the last sync, before offline_after", d)
	}
	if c := presTFind(t, msgTSync(bob), alice.UserID); c == nil || c["presence"] != "offline" {
		t.Fatalf("bob's sync shows alice's presence as %v, want offline", c)
	}
	// Syncing again: online.
	msgTSync(alice)
	if p := presTGet(bob, alice.UserID); p["presence"] != "online" {
		t.Fatalf("after syncing again: %v, want online", p)
	}
}

// Activity (typing, receipts, sending messages) makes an idle user online
// again.
func TestPresenceActivity(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Presence.IdleAfter = config.Duration(300 * time.Millisecond)
		c.Presence.OfflineAfter = config.Duration(time.Minute)
	}})
	alice, bob, _, roomID := presTShared(t, srv)
	ev := roomTSend(bob, roomID, "hello")
	idle := func() {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, "alice idle", func() bool {
			return presTGet(bob, alice.UserID)["presence"] == "unavailable"
		})
	}
	presTSet(alice, "online")
	idle()

	alice.MustDo("PUT", epTTypingPath(roomID, alice.UserID), map[string]any{"typing": true, "timeout": 1000}, http.StatusOK)
	presTCheckOnline(t, presTGet(bob, alice.UserID), "")
	idle()

	alice.MustDo("POST", epTReceiptPath(roomID, "m.read", ev), map[string]any{}, http.StatusOK)
	presTCheckOnline(t, presTGet(bob, alice.UserID), "")
	idle()

	// Sending a message is the spec's example of a pro-active event.
	roomTSend(alice, roomID, "back")
	testutil.Eventually(t, 2*time.Second, "alice online after sending a message", func() bool {
		return presTGet(bob, alice.UserID)["presence"] == "online"
	})
}

// With presence off, everyone is offline and syncs carry no presence.
func TestPresenceDisabled(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Presence.Enabled = false }})
	alice, bob, _, _ := presTShared(t, srv)
	presTSet(alice, "online", "here")
	msgTSync(alice)
	for _, c := range []*testutil.Client{alice, bob} {
		if p := presTGet(c, alice.UserID); p["presence"] != "offline" {
			t.Fatalf("presence with presence disabled: %v", p)
		}
	}
	m := msgTSync(bob)
	if evs := presTEvents(t, m); len(evs) > 0 {
		t.Fatalf("initial sync with presence disabled has presence: %v", evs)
	}
	presTSet(alice, "unavailable")
	m = msgTSync(bob, "since", msgTNext(m), "timeout", "0")
	if evs := presTEvents(t, m); len(evs) > 0 {
		t.Fatalf("incremental sync with presence disabled has presence: %v", evs)
	}
}

// Users who come to share a room get each other's presence in the next
// incremental sync, however long ago it last changed (as in Synapse):
// the joiner gets the members', the members get the joiner's; once.
func TestPresenceOfNewSharers(t *testing.T) {
	srv := testserver.Start(t)
	alice, bob := roomTUser(t, srv, "alice"), roomTUser(t, srv, "bob")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	presTSet(alice, "online", "alice here")
	presTSet(bob, "online", "bob here")
	aliceSince := msgTNext(msgTSync(alice, "timeout", "0"))
	bobSince := msgTNext(msgTSync(bob, "timeout", "0"))
	// Nothing else changes presence from here on but the syncs below,
	// which keep both online.

	roomTJoin(bob, roomID)
	m := msgTSync(bob, "since", bobSince, "timeout", "0")
	if c := presTFind(t, m, alice.UserID); c == nil || c["status_msg"] != "alice here" {
		t.Fatalf("bob's sync after joining: alice's presence %v, want it (status alice here)", m["presence"])
	}
	if c := presTFind(t, msgTSync(bob, "since", msgTNext(m), "timeout", "0"), alice.UserID); c != nil {
		t.Fatalf("alice's unchanged presence comes again in bob's next sync: %v", c)
	}
	m = msgTSync(alice, "since", aliceSince, "timeout", "0")
	if c := presTFind(t, m, bob.UserID); c == nil || c["status_msg"] != "bob here" {
		t.Fatalf("alice's sync after bob joined: bob's presence %v, want it (status bob here)", m["presence"])
	}
	if c := presTFind(t, msgTSync(alice, "since", msgTNext(m), "timeout", "0"), bob.UserID); c != nil {
		t.Fatalf("bob's unchanged presence comes again in alice's next sync: %v", c)
	}

	// A profile change is no join: no presence again.
	since := msgTNext(msgTSync(alice, "timeout", "0"))
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", bob.UserID), map[string]any{"displayname": "Bob"}, http.StatusOK)
	m = msgTSync(alice, "since", since, "timeout", "0")
	if c := presTFind(t, m, bob.UserID); c != nil {
		t.Fatalf("bob's presence comes again after a profile change: %v", c)
	}
}
