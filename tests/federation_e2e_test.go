package tests

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// fedTPair is two Myelin servers sharing a room: alice on hs1 created it,
// bob on hs2 joined it over federation.
type fedTPair struct {
	n          *testserver.Network
	hs1, hs2   *testserver.Server
	alice, bob *testutil.Client
	roomID     string
}

func fedTStart(t *testing.T, preset string) *fedTPair {
	t.Helper()
	n := testserver.NewNetwork(t)
	p := &fedTPair{n: n, hs1: n.Start("hs1.test"), hs2: n.Start("hs2.test")}
	p.alice = testutil.NewClient(t, p.hs1.URL).Register("alice", "alice-password")
	p.bob = testutil.NewClient(t, p.hs2.URL).Register("bob", "bob-password")
	p.roomID = roomTCreate(p.alice, map[string]any{"preset": preset})
	p.bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", p.roomID), map[string]any{}, 200)
	fedTWaitMembers(t, p.alice, p.roomID, "@alice:hs1.test", "@bob:hs2.test")
	return p
}

// fedTEventually polls check until it returns "" or the deadline passes.
func fedTEventually(t testing.TB, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		if last = check(); last == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s", what, last)
}

func fedTWaitMembers(t testing.TB, c *testutil.Client, roomID string, want ...string) {
	t.Helper()
	sort.Strings(want)
	fedTEventually(t, "members of "+roomID, func() string {
		r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/joined_members", roomID), nil)
		if r.Status != 200 {
			return fmt.Sprintf("%d %s", r.Status, r.Body)
		}
		var body struct {
			Joined map[string]any `json:"joined"`
		}
		r.Decode(t, &body)
		var got []string
		for u := range body.Joined {
			got = append(got, u)
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Sprintf("joined %v, want %v", got, want)
		}
		return ""
	})
}

// fedTBodies waits until c sees every body of want among the room's
// messages and returns them in order.
func fedTWaitBodies(t testing.TB, c *testutil.Client, roomID string, want ...string) []string {
	t.Helper()
	var got []string
	fedTEventually(t, c.UserID+" sees the messages", func() string {
		got = ingTBodies(c, roomID)
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Sprintf("%q missing from %v", w, got)
			}
		}
		return ""
	})
	return got
}

// fedTState lists the event IDs of the room's current state as c sees it.
func fedTState(c *testutil.Client, roomID string) []string {
	r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state", roomID), nil)
	var evs []map[string]any
	r.Decode(c.T, &evs)
	var ids []string
	for _, e := range evs {
		ids = append(ids, fmt.Sprint(e["event_id"]))
	}
	sort.Strings(ids)
	return ids
}

func TestFederationMessagesBothWays(t *testing.T) {
	p := fedTStart(t, "public_chat")
	roomTSend(p.alice, p.roomID, "hello bob")
	fedTWaitBodies(t, p.bob, p.roomID, "hello bob")
	roomTSend(p.bob, p.roomID, "hello alice")
	fedTWaitBodies(t, p.alice, p.roomID, "hello bob", "hello alice")
	// Kick and ban across servers.
	roomTKick(p.alice, p.roomID, "@bob:hs2.test")
	fedTEventually(t, "bob sees the kick", func() string {
		if m := fedTMembership(p.bob, p.roomID, "@bob:hs2.test"); m != "leave" {
			return "membership " + m
		}
		return ""
	})
	p.bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", p.roomID), map[string]any{}, 200)
	fedTWaitMembers(t, p.alice, p.roomID, "@alice:hs1.test", "@bob:hs2.test")
	p.alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/ban", p.roomID), map[string]any{"user_id": "@bob:hs2.test"}, 200)
	fedTEventually(t, "hs2 sees the ban", func() string {
		r := p.bob.Do("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", p.roomID), map[string]any{})
		if r.Status != 403 {
			return fmt.Sprintf("a banned user's join: %d %s", r.Status, r.Body)
		}
		return ""
	})
}

func fedTMembership(c *testutil.Client, roomID, userID string) string {
	r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", roomID, userID), nil)
	if r.Status != 200 {
		return fmt.Sprint(r.Status)
	}
	m := r.JSON(c.T)
	s, _ := m["membership"].(string)
	return s
}

func TestFederationEphemeralAndProfiles(t *testing.T) {
	p := fedTStart(t, "public_chat")
	since := syncTInitial(p.alice).NextBatch
	// Typing.
	p.bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", p.roomID, "@bob:hs2.test"),
		map[string]any{"typing": true, "timeout": 20000}, 200)
	fedTEventually(t, "alice sees bob typing", func() string {
		s := syncTSince(p.alice, since)
		if j := s.Rooms.Join[p.roomID]; j != nil && j.Ephemeral != nil {
			for _, e := range j.Ephemeral.Events {
				if e["type"] == "m.typing" && fmt.Sprint(e["content"]) == "map[user_ids:[@bob:hs2.test]]" {
					return ""
				}
			}
		}
		return "no typing"
	})
	// Receipts.
	msg := roomTSend(p.alice, p.roomID, "read me")
	fedTWaitBodies(t, p.bob, p.roomID, "read me")
	p.bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", p.roomID, msg), map[string]any{}, 200)
	fedTEventually(t, "alice sees bob's receipt", func() string {
		s := syncTSince(p.alice, since)
		if j := s.Rooms.Join[p.roomID]; j != nil && j.Ephemeral != nil {
			for _, e := range j.Ephemeral.Events {
				if e["type"] == "m.receipt" && fmt.Sprint(e["content"]) != "" &&
					fmt.Sprint(e["content"].(map[string]any)[msg]) != "<nil>" {
					return ""
				}
			}
		}
		return "no receipt"
	})
	// Presence: bob syncing makes him online for alice.
	syncTInitial(p.bob)
	fedTEventually(t, "alice sees bob's presence", func() string {
		r := p.alice.Do("GET", testutil.Path("/_matrix/client/v3/presence/%s/status", "@bob:hs2.test"), nil)
		if m := r.JSON(t); r.Status != 200 || m["presence"] != "online" {
			return fmt.Sprintf("%d %s", r.Status, r.Body)
		}
		return ""
	})
	// A display name change reaches the other server's member list.
	p.bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", "@bob:hs2.test"), map[string]any{"displayname": "Bobby"}, 200)
	fedTEventually(t, "alice sees bob's new name", func() string {
		r := p.alice.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", p.roomID, "@bob:hs2.test"), nil)
		if m := r.JSON(t); m["displayname"] != "Bobby" {
			return string(r.Body)
		}
		return ""
	})
}

// A partition: both servers send while they cannot reach each other, then
// heal; both end with the same state and every event.
func TestFederationPartitionHeals(t *testing.T) {
	p := fedTStart(t, "public_chat")
	roomTSend(p.alice, p.roomID, "before")
	fedTWaitBodies(t, p.bob, p.roomID, "before")

	p.n.Partition("hs1.test", "hs2.test")
	var want []string
	for i := range 5 {
		a, b := fmt.Sprint("alice ", i), fmt.Sprint("bob ", i)
		roomTSend(p.alice, p.roomID, a)
		roomTSend(p.bob, p.roomID, b)
		want = append(want, a, b)
	}
	// State changes on both sides of the partition.
	roomTPutState(p.alice, p.roomID, "m.room.topic", "", map[string]any{"topic": "from alice during the partition"})
	p.bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", "@bob:hs2.test"), map[string]any{"displayname": "Partitioned Bob"}, 200)
	time.Sleep(300 * time.Millisecond)
	p.n.Heal()
	fedTWaitBodies(t, p.alice, p.roomID, want...)
	fedTWaitBodies(t, p.bob, p.roomID, want...)
	fedTEventually(t, "both servers agree on the state", func() string {
		a, b := fedTState(p.alice, p.roomID), fedTState(p.bob, p.roomID)
		if !slices.Equal(a, b) {
			return fmt.Sprintf("hs1 %v\nhs2 %v", a, b)
		}
		return ""
	})
	for _, c := range []*testutil.Client{p.alice, p.bob} {
		if m := roomTState(c, p.roomID, "m.room.member", "@bob:hs2.test"); m["displayname"] != "Partitioned Bob" {
			t.Fatalf("%s sees bob as %v", c.UserID, m["displayname"])
		}
		if m := roomTState(c, p.roomID, "m.room.topic", ""); m["topic"] != "from alice during the partition" {
			t.Fatalf("%s sees the topic %v", c.UserID, m["topic"])
		}
	}
}

// The sending server restarts with a full queue: nothing is lost.
func TestFederationRestartWithQueue(t *testing.T) {
	p := fedTStart(t, "public_chat")
	p.n.Partition("hs2.test")
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint("queued ", i))
		roomTSend(p.alice, p.roomID, want[i])
	}
	p.hs1.Restart()
	p.alice = roomTBind(t, p.alice)
	p.n.Heal()
	got := fedTWaitBodies(t, p.bob, p.roomID, want...)
	seen := map[string]int{}
	for _, b := range got {
		seen[b]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Fatalf("%q seen %d times by bob", w, seen[w])
		}
	}
}
