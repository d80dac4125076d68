package tests

import (
	"net/http"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// POST /rooms/{roomId}/forget: a forgotten room leaves initial syncs (even
// with include_leave) while a leave since the token still shows; its
// history, state and members are 403 for the user (as in Synapse) until
// they are a member again; forgetting needs no membership, but not a
// current one.
func TestRoomForget(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	includeLeave := syncTFilter(map[string]any{"room": map[string]any{"include_leave": true}})
	forget := func(c *testutil.Client, roomID string) {
		c.T.Helper()
		epTIsEmpty(c.T, c.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/forget", roomID), map[string]any{}, http.StatusOK))
	}

	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	hello := roomTSend(alice, room, "hello")
	beforeLeave := syncTInitial(bob).NextBatch
	roomTFail(bob, "POST", testutil.Path("/_matrix/client/v3/rooms/%s/forget", room), map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
	roomTLeave(bob, room)

	// Before forgetting: the left room shows with include_leave and its
	// history up to the leave is readable.
	syncTLeave(t, syncTInitial(bob, "filter", includeLeave), room)
	msgTGet(bob, room, "dir", "b")

	forget(bob, room)
	forget(bob, room) // again: nothing more to forget
	roomTSend(alice, room, "after the forget")
	s := syncTInitial(bob, "filter", includeLeave)
	syncTNotIn(t, s, room, "join", "invite", "knock", "leave")
	// A leave since the token still shows: other devices learn of it.
	syncTLeave(t, syncTSince(bob, beforeLeave, "filter", includeLeave), room)
	syncTLeave(t, syncTSince(bob, beforeLeave), room)

	messages := testutil.Path("/_matrix/client/v3/rooms/%s/messages", room)
	for _, p := range []string{
		messages,
		messages + "?dir=b",
		testutil.Path("/_matrix/client/v3/rooms/%s/context/%s", room, hello),
		testutil.Path("/_matrix/client/v3/rooms/%s/members", room),
		testutil.Path("/_matrix/client/v3/rooms/%s/joined_members", room),
		testutil.Path("/_matrix/client/v3/rooms/%s/state", room),
		roomTStatePath(room, "m.room.create", ""),
	} {
		bob.MustFail("GET", p, nil, http.StatusForbidden, "M_FORBIDDEN")
	}
	// Parameters still count once the room is readable.
	alice.MustFail("GET", messages, nil, http.StatusBadRequest, "M_MISSING_PARAM")

	// Back in the room, the history is there again (shared visibility).
	roomTJoin(bob, room)
	if !slices.Contains(syncTIDs(syncTMessages(bob, room, "dir", "b", "limit", "50")), hello) {
		t.Fatalf("bob does not see %s after rejoining", hello)
	}
	syncTJoin(t, syncTInitial(bob, "filter", includeLeave), room)
	roomTFail(bob, "POST", testutil.Path("/_matrix/client/v3/rooms/%s/forget", room), map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
	// A new leave is not forgotten: the forget was of the old one.
	roomTLeave(bob, room)
	syncTLeave(t, syncTInitial(bob, "filter", includeLeave), room)
	msgTGet(bob, room, "dir", "b")

	// A banned user can forget the room too; a new membership event
	// (here, a ban after the forgotten leave) brings it back.
	forget(bob, room)
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/ban", room), map[string]any{"user_id": bob.UserID}, http.StatusOK)
	syncTLeave(t, syncTInitial(bob, "filter", includeLeave), room)
	forget(bob, room)
	syncTNotIn(t, syncTInitial(bob, "filter", includeLeave), room, "leave")

	// A rejected invite can be forgotten; so can rooms one was never in,
	// and rooms the server does not know (as in Synapse).
	priv := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	roomTInvite(alice, priv, bob.UserID)
	roomTLeave(bob, priv)
	forget(bob, priv)
	syncTNotIn(t, syncTInitial(bob, "filter", includeLeave), priv, "invite", "leave")
	other := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	forget(bob, other)
	forget(bob, "!unknown:"+srv.Config.ServerName)
	roomTFail(bob, "POST", "/_matrix/client/v3/rooms/not-a-room/forget", map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")

	// A world-readable room stays readable after forgetting, as to anyone.
	wr := roomTCreate(alice, map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
		{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	roomTJoin(bob, wr)
	roomTSend(alice, wr, "open")
	roomTLeave(bob, wr)
	forget(bob, wr)
	msgTGet(bob, wr, "dir", "b")
	roomTState(bob, wr, "m.room.create", "")
}

// A server restart keeps what was forgotten.
func TestRoomForgetAcrossRestart(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	roomTLeave(bob, room)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/forget", room), map[string]any{}, http.StatusOK)
	srv.Restart()
	includeLeave := syncTFilter(map[string]any{"room": map[string]any{"include_leave": true}})
	syncTNotIn(t, syncTInitial(bob, "filter", includeLeave), room, "leave")
	bob.MustFail("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages?dir=b", room), nil, http.StatusForbidden, "M_FORBIDDEN")
}
