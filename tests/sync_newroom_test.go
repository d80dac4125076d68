package tests

import (
	"net/http"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// A room joined since the token: its timeline is limited (as in Synapse)
// unless it holds the room from its create event, since the client has
// none of its history; prev_batch leads back to what the timeline lacks.
func TestSyncNewlyJoinedTimeline(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	early := syncTSendN(alice, room, 4, "early")
	messagesOnly := syncTFilter(map[string]any{"room": map[string]any{
		"timeline": map[string]any{"limit": 10, "types": []string{"m.room.message"}},
		"state":    map[string]any{"types": []string{}},
	}})
	since := syncTInitial(bob, "filter", messagesOnly).NextBatch
	late := syncTSendN(alice, room, 4, "late")
	roomTJoin(bob, room)

	// Every message fits in the timeline, but not the rest of the room:
	// the client lacks history, the timeline is limited.
	tl := syncTJoin(t, syncTSince(bob, since, "filter", messagesOnly), room).Timeline
	if want := append(slices.Clone(early), late...); !slices.Equal(syncTIDs(tl.Events), want) {
		t.Fatalf("timeline %v, want the messages %v", syncTIDs(tl.Events), want)
	}
	if !tl.Limited {
		t.Fatalf("timeline of a newly joined room without its start is not limited")
	}
	if back := syncTIDs(syncTMessages(bob, room, "dir", "b", "from", tl.PrevBatch, "limit", "50")); len(back) == 0 ||
		slices.Contains(back, early[0]) {
		t.Fatalf("/messages back from prev_batch = %v, want the events before the timeline", back)
	}

	// The whole room in the timeline, from its create event: not limited.
	small := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	since = syncTInitial(bob).NextBatch
	roomTJoin(bob, small)
	tl = syncTJoin(t, syncTSince(bob, since), small).Timeline
	if tl.Limited || len(tl.Events) == 0 || tl.Events[0]["type"] != "m.room.create" {
		t.Fatalf("timeline of a small newly joined room: limited %v, events %v", tl.Limited, syncTIDs(tl.Events))
	}

	// Once joined, a sync without a gap is not limited.
	next := syncTSince(bob, since).NextBatch
	m := roomTSend(alice, small, "more")
	tl = syncTJoin(t, syncTSince(bob, next), small).Timeline
	if tl.Limited || !slices.Equal(syncTIDs(tl.Events), []string{m}) {
		t.Fatalf("incremental timeline %v, limited %v, want [%s] not limited", syncTIDs(tl.Events), tl.Limited, m)
	}
}

// GET /members?at= a timeline's prev_batch: the members at that point of
// the sync. When the timeline holds the room from its create event,
// prev_batch is the point of the sync (as in Synapse).
func TestSyncMembersAtPrevBatch(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTSend(alice, room, "hello")
	tl := syncTJoin(t, syncTInitial(alice), room).Timeline
	if tl.Limited || tl.Events[0]["type"] != "m.room.create" {
		t.Fatalf("timeline of a small room: limited %v, %v", tl.Limited, syncTIDs(tl.Events))
	}
	roomTJoin(bob, room)
	roomTSend(bob, room, "hello back")
	if got := roomTMembers(alice, room, "?at="+tl.PrevBatch); !slices.Equal(got, []string{alice.UserID}) {
		t.Fatalf("members at prev_batch %v, want only alice", got)
	}
	if got := roomTMembers(alice, room, ""); !slices.Equal(got, roomTSorted(alice.UserID, bob.UserID)) {
		t.Fatalf("members now %v, want alice and bob", got)
	}

	// A limited timeline: prev_batch is its start, where bob was not
	// joined yet and carol was.
	busy := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(carol, busy)
	syncTSendN(alice, busy, 3, "before")
	roomTJoin(bob, busy)
	syncTSendN(alice, busy, 3, "after")
	tl = syncTJoin(t, syncTInitial(alice, "filter", syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 4}}})), busy).Timeline
	if !tl.Limited || tl.Events[0]["type"] != "m.room.member" || tl.Events[0]["state_key"] != bob.UserID {
		t.Fatalf("limited timeline %v, want it to start with bob's join", syncTIDs(tl.Events))
	}
	if got := roomTMembers(alice, busy, "?at="+tl.PrevBatch); !slices.Equal(got, roomTSorted(alice.UserID, carol.UserID)) {
		t.Fatalf("members at the start of the timeline %v, want alice and carol", got)
	}
	roomTFail(alice, "GET", testutil.Path("/_matrix/client/v3/rooms/%s/members?at=nonsense", busy), nil, http.StatusBadRequest, "M_INVALID_PARAM")
}
