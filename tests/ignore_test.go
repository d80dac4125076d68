package tests

import (
	"net/http"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// ignoreUsers sets the user's m.ignored_user_list and waits until /sync
// shows it, so that what follows is read with it.
func ignoreUsers(t *testing.T, c *testutil.Client, users ...string) {
	t.Helper()
	list := map[string]any{}
	for _, u := range users {
		list[u] = map[string]any{}
	}
	setAccountData(t, c, "m.ignored_user_list", map[string]any{"ignored_users": list})
}

// Ignoring users (ignore_users.md): their messages leave /sync timelines
// (the limit counting only what is shown), /messages and notifications;
// their state events still show; their invites are not shown; and it all
// stops once they are no longer ignored.
func TestIgnoredUsers(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	carol := srv.Client().Register("carol", "pw")
	room := pushRoom(t, carol, alice, bob)
	ignoreUsers(t, alice, bob.UserID)
	since := syncTInitial(alice).NextBatch

	hello := roomTSend(carol, room, "hello from carol")
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", room, bob.UserID),
		map[string]any{"membership": "join", "displayname": "Bobby"}, http.StatusOK)
	syncTSendN(bob, room, 5, "bob")
	pushSend(t, bob, room, "m.room.message", text("alice, look")) // would notify alice by her name
	last := roomTSend(carol, room, "bye from carol")

	// The incremental sync: carol's two messages and bob's new name, limited
	// to 3 events, none of bob's messages taking the room.
	s := syncTSince(alice, since, "filter", syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3}}}))
	evs := syncTList(&syncTEvents{Events: syncTJoin(t, s, room).Timeline.Events})
	if ids := syncTIDs(evs); len(ids) != 3 || ids[0] != hello || ids[2] != last || syncTFind(evs, "m.room.member", bob.UserID) == nil {
		t.Fatalf("alice's timeline %v, want carol's two messages around bob's member event: %s", ids, syncTShort(s.Body))
	}
	for _, e := range evs {
		if e["sender"] == bob.UserID && e["type"] == "m.room.message" {
			t.Fatalf("alice's timeline has bob's message %v", e)
		}
	}
	// /messages leaves them out too.
	for _, e := range syncTMessages(alice, room, "dir", "b", "limit", "50") {
		if e["sender"] == bob.UserID && e["type"] == "m.room.message" {
			t.Fatalf("/messages has bob's message %v", e)
		}
	}
	// Bob's messages did not notify alice; carol's did.
	countsOf(t, alice, since, room, pushCount{Notifications: 2})
	notifs := alice.MustDo("GET", "/_matrix/client/v3/notifications", nil, http.StatusOK)["notifications"].([]any)
	for _, n := range notifs {
		if ev := n.(map[string]any)["event"].(map[string]any); ev["sender"] == bob.UserID {
			t.Fatalf("alice was notified of bob's event %v", ev)
		}
	}
	// Others still see bob's messages.
	if bodies := syncTBodies(syncTMessages(carol, room, "dir", "b", "limit", "50")); !slices.Contains(bodies, "alice, look") {
		t.Fatalf("carol's /messages lacks bob's message: %v", bodies)
	}

	// Invites: bob's is not shown, carol's is.
	since = syncTInitial(alice).NextBatch
	bobRoom := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{alice.UserID}}, http.StatusOK)["room_id"].(string)
	carolRoom := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{alice.UserID}}, http.StatusOK)["room_id"].(string)
	for s = syncTSince(alice, since, "timeout", "5000"); s.Rooms.Invite[carolRoom] == nil; s = syncTSince(alice, s.NextBatch, "timeout", "5000") {
	}
	if s.Rooms.Invite[bobRoom] != nil {
		t.Fatalf("alice's sync shows bob's invite: %s", syncTShort(s.Body))
	}
	if s := syncTInitial(alice); s.Rooms.Invite[bobRoom] != nil || s.Rooms.Invite[carolRoom] == nil {
		t.Fatalf("alice's initial sync invites: %s", syncTShort(s.Body))
	}

	// No longer ignored: bob's new messages show again.
	ignoreUsers(t, alice)
	since = syncTInitial(alice).NextBatch
	again := roomTSend(bob, room, "bob again")
	s = syncTSince(alice, since, "timeout", "5000")
	if ids := syncTIDs(syncTJoin(t, s, room).Timeline.Events); !slices.Contains(ids, again) {
		t.Fatalf("after un-ignoring, alice's timeline %v lacks bob's %s", ids, again)
	}
}
