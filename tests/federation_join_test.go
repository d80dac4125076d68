package tests

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Joins, invites, rejections, leaves and backfill between two Myelin
// servers.

// fjTSyncUntil syncs from since until cond holds on a response (failing
// after a deadline) and returns that response.
func fjTSyncUntil(t testing.TB, c *testutil.Client, since, what string, cond func(*syncTResponse) bool) *syncTResponse {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := syncTDo(c, syncTQuery("since", since, "timeout", "500"))
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out; last sync %s", what, syncTShort(s.Body))
		}
		if since != "" {
			since = s.NextBatch
		}
	}
}

// fjTTimelineHas reports whether a sync shows an event of the room with
// the given body in its timeline.
func fjTTimelineHas(s *syncTResponse, roomID, body string) bool {
	jr := s.Rooms.Join[roomID]
	if jr == nil || jr.Timeline == nil {
		return false
	}
	for _, e := range jr.Timeline.Events {
		if c, ok := e["content"].(map[string]any); ok && c["body"] == body {
			return true
		}
	}
	return false
}

// Two servers in every room version that matters (10, 11 and 12, whose
// room IDs come from the create event): bob of hs2 joins alice's public
// room by alias and by room ID with via, they talk both ways, alice
// invites charlie of hs2 who accepts, dave of hs2 rejects his invite, and
// bob leaves.
func TestFederationJoinBetweenServers(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	charlie := testutil.NewClient(t, hs2.URL).Register("charlie", "charlie-password")
	dave := testutil.NewClient(t, hs2.URL).Register("dave", "dave-password")
	for _, v := range []string{"10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			aliasName := "lobby" + v
			roomID := roomTCreate(alice, map[string]any{"preset": "public_chat", "room_version": v, "name": "Lobby " + v, "room_alias_name": aliasName})
			alias := "#" + aliasName + ":hs1.test"
			// hs2 resolves the alias over federation.
			m := bob.MustDo("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", alias), nil, http.StatusOK)
			if servers, _ := m["servers"].([]any); m["room_id"] != roomID || !slices.Contains(servers, any("hs1.test")) {
				t.Fatalf("alias lookup from hs2: %v", m)
			}
			bobSince := syncTInitial(bob, "timeout", "0").NextBatch
			if v == "11" {
				m = bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID)+"?via=hs1.test", map[string]any{}, http.StatusOK)
			} else {
				m = bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", alias), map[string]any{}, http.StatusOK)
			}
			if m["room_id"] != roomID {
				t.Fatalf("join answered %v", m)
			}
			fedTWaitMembers(t, alice, roomID, alice.UserID, bob.UserID)
			fedTWaitMembers(t, bob, roomID, alice.UserID, bob.UserID)
			// bob's /sync shows the room with its name.
			fjTSyncUntil(t, bob, bobSince, "the room in bob's sync", func(s *syncTResponse) bool {
				jr := s.Rooms.Join[roomID]
				if jr == nil {
					return false
				}
				var evs []map[string]any
				if jr.State != nil {
					evs = append(evs, jr.State.Events...)
				}
				if jr.Timeline != nil {
					evs = append(evs, jr.Timeline.Events...)
				}
				name := syncTFind(evs, "m.room.name", "")
				return name != nil && name["content"].(map[string]any)["name"] == "Lobby "+v
			})
			// Messages both ways reach each side's /sync.
			aliceSince := syncTInitial(alice, "timeout", "0").NextBatch
			bobSince = syncTInitial(bob, "timeout", "0").NextBatch
			roomTSend(alice, roomID, "hello bob "+v)
			roomTSend(bob, roomID, "hello alice "+v)
			fjTSyncUntil(t, bob, bobSince, "alice's message at bob", func(s *syncTResponse) bool { return fjTTimelineHas(s, roomID, "hello bob "+v) })
			fjTSyncUntil(t, alice, aliceSince, "bob's message at alice", func(s *syncTResponse) bool { return fjTTimelineHas(s, roomID, "hello alice "+v) })

			// alice invites charlie (hs2), who sees the invite and accepts.
			charlieSince := syncTInitial(charlie, "timeout", "0").NextBatch
			alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", roomID), map[string]any{"user_id": charlie.UserID}, http.StatusOK)
			fjTSyncUntil(t, charlie, charlieSince, "charlie's invite", func(s *syncTResponse) bool {
				inv := s.Rooms.Invite[roomID]
				return inv != nil && inv.InviteState != nil && syncTFind(inv.InviteState.Events, "m.room.name", "") != nil
			})
			charlie.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
			fedTWaitMembers(t, alice, roomID, alice.UserID, bob.UserID, charlie.UserID)

			// dave (hs2) is invited to a private room of alice and rejects.
			priv := roomTCreate(alice, map[string]any{"preset": "private_chat", "room_version": v})
			daveSince := syncTInitial(dave, "timeout", "0").NextBatch
			alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", priv), map[string]any{"user_id": dave.UserID}, http.StatusOK)
			fjTSyncUntil(t, dave, daveSince, "dave's invite", func(s *syncTResponse) bool { return s.Rooms.Invite[priv] != nil })
			dave.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", priv), map[string]any{"reason": "busy"}, http.StatusOK)
			fedTEventually(t, "dave's rejection at hs1", func() string {
				if got := membMembership(alice, priv, dave.UserID); got != "leave" {
					return "dave's membership at hs1 is " + got
				}
				return ""
			})
			fjTSyncUntil(t, dave, daveSince, "the rejected room in dave's sync", func(s *syncTResponse) bool {
				return s.Rooms.Leave[priv] != nil && s.Rooms.Invite[priv] == nil
			})

			// bob leaves: alice sees it; bob's other servers' users stay.
			bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
			fedTWaitMembers(t, alice, roomID, alice.UserID, charlie.UserID)
			// And bob can come back (hs2 is still in the room through charlie).
			bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
			fedTWaitMembers(t, alice, roomID, alice.UserID, bob.UserID, charlie.UserID)
			// Once every user of hs2 left, hs2's state of the room goes
			// stale: a join goes through hs1 again (found in that state,
			// without via even for v12 room IDs), and catches up with what
			// was said meanwhile.
			charlie.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
			bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
			fedTWaitMembers(t, alice, roomID, alice.UserID)
			roomTPutState(alice, roomID, "m.room.topic", "", map[string]any{"topic": "while hs2 was away"})
			bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
			fedTWaitMembers(t, alice, roomID, alice.UserID, bob.UserID)
			fedTEventually(t, "the topic at hs2", func() string {
				st := roomTState(bob, roomID, "m.room.topic", "")
				if st["topic"] != "while hs2 was away" {
					return fmt.Sprintf("topic %v", st)
				}
				return ""
			})
		})
	}
}

// hs2 joins a room of hs1 with 500 events of history and pages /messages
// back through all of them, backfilling from hs1.
func TestFederationJoinBackfill(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat", "room_version": "11"})
	const total = 500
	for i := range total {
		roomTSend(alice, roomID, fmt.Sprintf("history %d", i))
	}
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID)+"?via=hs1.test", map[string]any{}, http.StatusOK)
	bodies := messageBodies(t, bob, roomID, 100, 200)
	if len(bodies) != total {
		t.Fatalf("bob paged back through %d messages, want %d", len(bodies), total)
	}
	for i, b := range bodies {
		if want := fmt.Sprintf("history %d", total-1-i); b != want {
			t.Fatalf("message %d is %q, want %q", i, b, want)
		}
	}
}

// /timestamp_to_event on a server that joined late: what it holds begins
// at its join, so it asks the server that has the room's history, then
// backfills the event found, whose /context pages back through the older
// history (Complement TestJumpToDateEndpoint federation subtests; the
// suite had only tried it on a single server).
func TestFederationTimestampToEvent(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	type room struct {
		id, a, b        string
		beforeA, afterB int64
	}
	newRoom := func() room {
		roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
		newest := msgTGet(alice, roomID, "dir", "b", "limit", "1").chunk[0]
		msgTWaitClockPast(t, msgTTS(t, newest))
		r := room{id: roomID, beforeA: time.Now().UnixMilli()}
		r.a = roomTSend(alice, roomID, "A")
		msgTWaitClockPast(t, msgTTS(t, roomTEvent(alice, roomID, r.a)))
		r.b = roomTSend(alice, roomID, "B")
		msgTWaitClockPast(t, msgTTS(t, roomTEvent(alice, roomID, r.b)))
		r.afterB = time.Now().UnixMilli()
		bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID)+"?via=hs1.test", map[string]any{}, http.StatusOK)
		return r
	}
	find := func(r room, ts int64, dir string) string {
		t.Helper()
		m := bob.MustDo("GET", testutil.Path("/_matrix/client/v1/rooms/%s/timestamp_to_event", r.id)+"?"+
			syncTQuery("ts", strconv.FormatInt(ts, 10), "dir", dir), nil, http.StatusOK)
		id, _ := m["event_id"].(string)
		return id
	}
	// A and B are here, with the history before them, in order.
	pagesBack := func(r room) {
		t.Helper()
		ctx := bob.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/context/%s", r.id, r.b)+"?limit=0", nil, http.StatusOK)
		start, _ := ctx["start"].(string)
		page := msgTGet(bob, r.id, "dir", "b", "limit", "100", "from", start)
		if ids := syncTIDs(page.chunk); len(ids) == 0 || ids[0] != r.a {
			t.Fatalf("paging back from B's context: %v, want A %s first", ids, r.a)
		}
	}

	// Backwards first: hs2 holds nothing so old.
	r := newRoom()
	if got := find(r, r.afterB, "b"); got != r.b {
		t.Fatalf("before the time after B: %s, want B %s", got, r.b)
	}
	// Forwards: hs2's first event after the time before A is its join,
	// which follows a gap; hs1 knows A.
	if got := find(r, r.beforeA, "f"); got != r.a {
		t.Fatalf("after the time before A: %s, want A %s", got, r.a)
	}
	pagesBack(r)

	// Forwards first.
	r = newRoom()
	if got := find(r, r.beforeA, "f"); got != r.a {
		t.Fatalf("after the time before A: %s, want A %s", got, r.a)
	}
	if got := find(r, r.afterB, "b"); got != r.b {
		t.Fatalf("before the time after B: %s, want B %s", got, r.b)
	}
	pagesBack(r)
	// Where hs2's own answer is whole, it stands.
	if got := find(r, time.Now().UnixMilli()+1000, "b"); got == r.a || got == r.b || got == "" {
		t.Fatalf("before now: %s", got)
	}
}

// bob of hs2 joins, leaves, and rejoins after alice sent more messages
// than catching up fetches: paging back from his rejoin, hs2 backfills
// the gap in the middle of what it holds, and bob sees every message
// (Complement TestMessagesOverFederation re-joining; the suite had only
// backfilled before the oldest event held, never a gap in the middle).
func TestFederationRejoinBackfillsGap(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	join := testutil.Path("/_matrix/client/v3/join/%s", roomID) + "?via=hs1.test"
	bob.MustDo("POST", join, map[string]any{}, http.StatusOK)
	roomTLeave(bob, roomID)
	testutil.Eventually(t, 10*time.Second, "bob's leave to reach hs1", func() bool {
		return !slices.Contains(roomTMembers(alice, roomID, "?membership=join"), "@bob:hs2.test")
	})
	const total = 60
	for i := range total {
		roomTSend(alice, roomID, fmt.Sprintf("while away %d", i))
	}
	bob.MustDo("POST", join, map[string]any{}, http.StatusOK)
	var bodies []string
	from := ""
	for range 50 {
		q := []string{"dir", "b", "limit", "10"}
		if from != "" {
			q = append(q, "from", from)
		}
		page := msgTGet(bob, roomID, q...)
		for _, e := range page.chunk {
			if c, ok := e["content"].(map[string]any); ok && e["type"] == "m.room.message" {
				bodies = append(bodies, c["body"].(string))
			}
		}
		if !page.hasEnd {
			break
		}
		from = page.end
	}
	var want []string
	for i := total - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("while away %d", i))
	}
	if !slices.Equal(bodies, want) {
		t.Fatalf("bob paged back through %d messages: %v", len(bodies), bodies)
	}
}
