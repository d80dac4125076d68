package tests

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// syncTFilterModes runs f twice: with the filter uploaded (filter=<id>)
// and inline (filter=<JSON>). param is the filter query value.
func syncTFilterModes(t *testing.T, c *testutil.Client, flt map[string]any, f func(t *testing.T, c *testutil.Client, param string)) {
	t.Helper()
	t.Run("uploaded", func(t *testing.T) {
		c := roomTBind(t, c)
		m := c.MustDo("POST", testutil.Path("/_matrix/client/v3/user/%s/filter", c.UserID), flt, http.StatusOK)
		id, _ := m["filter_id"].(string)
		if id == "" {
			t.Fatalf("filter upload without filter_id: %v", m)
		}
		f(t, c, id)
	})
	t.Run("inline", func(t *testing.T) {
		f(t, roomTBind(t, c), syncTFilter(flt))
	})
}

// syncTTimelineFilter is {"room":{"timeline":tf}} with a high limit
// unless tf sets one.
func syncTTimelineFilter(tf map[string]any) map[string]any {
	if _, ok := tf["limit"]; !ok {
		tf["limit"] = 100
	}
	return map[string]any{"room": map[string]any{"timeline": tf}}
}

func TestSyncFilterTimelineLimit(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	syncTSendN(alice, room, 5, "m")
	syncTFilterModes(t, alice, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 2}}}, func(t *testing.T, alice *testutil.Client, flt string) {
		sent := syncTSendN(alice, room, 3, "x")
		s := syncTInitial(alice, "filter", flt)
		j := syncTJoin(t, s, room)
		if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, sent[1:]) || !j.Timeline.Limited {
			t.Fatalf("timeline with limit 2 = %v (limited %v), want %v, limited", ids, j.Timeline.Limited, sent[1:])
		}
		sent = syncTSendN(alice, room, 4, "y")
		j = syncTJoin(t, syncTSince(alice, s.NextBatch, "filter", flt), room)
		if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, sent[2:]) || !j.Timeline.Limited {
			t.Fatalf("incremental timeline with limit 2 = %v (limited %v), want %v, limited", ids, j.Timeline.Limited, sent[2:])
		}
	})
	// A limit above the room's size: everything, not limited.
	small := roomTCreate(alice, map[string]any{})
	j := syncTJoin(t, syncTInitial(alice, "filter", syncTFilter(syncTTimelineFilter(map[string]any{"limit": 50}))), small)
	if j.Timeline.Limited || len(j.Timeline.Events) == 0 || j.Timeline.Events[0]["type"] != "m.room.create" {
		t.Fatalf("timeline with limit 50 in a small room: limited %v, %d events", j.Timeline.Limited, len(j.Timeline.Events))
	}
}

func TestSyncFilterTimelineTypes(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	sendCustom := func(c *testutil.Client, room, k string) string {
		t.Helper()
		return roomTEventID(t, c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/%s/%s", room, "org.example.custom", roomTTxn()),
			map[string]any{"k": k}, http.StatusOK))
	}
	for _, tc := range []struct {
		name   string
		filter map[string]any
		// which of the message, custom and topic events pass
		msg, custom, topic bool
		allow              func(typ string) bool
	}{
		{"types", map[string]any{"types": []any{"m.room.message"}}, true, false, false, func(typ string) bool { return typ == "m.room.message" }},
		{"types wildcard", map[string]any{"types": []any{"org.example.*"}}, false, true, false, func(typ string) bool { return strings.HasPrefix(typ, "org.example.") }},
		{"types several", map[string]any{"types": []any{"m.room.message", "m.room.topic"}}, true, false, true, func(typ string) bool { return typ == "m.room.message" || typ == "m.room.topic" }},
		{"not_types wildcard", map[string]any{"not_types": []any{"m.room.*"}}, false, true, false, func(typ string) bool { return !strings.HasPrefix(typ, "m.room.") }},
		{"not_types wins", map[string]any{"types": []any{"m.room.message", "org.example.custom"}, "not_types": []any{"m.room.*"}}, false, true, false, func(typ string) bool { return typ == "org.example.custom" }},
		{"types empty", map[string]any{"types": []any{}}, false, false, false, func(string) bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syncTFilterModes(t, alice, syncTTimelineFilter(tc.filter), func(t *testing.T, alice *testutil.Client, flt string) {
				room := roomTCreate(alice, map[string]any{"name": "Types"})
				sent := func() []string {
					msg := roomTSend(alice, room, "text")
					custom := sendCustom(alice, room, "v")
					topic := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "t" + roomTTxn()})
					var want []string
					for _, x := range []struct {
						id string
						ok bool
					}{{msg, tc.msg}, {custom, tc.custom}, {topic, tc.topic}} {
						if x.ok {
							want = append(want, x.id)
						}
					}
					return want
				}
				check := func(s *syncTResponse, want []string) {
					t.Helper()
					var evs []map[string]any
					if j := s.Rooms.Join[room]; j != nil && j.Timeline != nil {
						evs = j.Timeline.Events
					}
					for _, e := range evs {
						if !tc.allow(e["type"].(string)) {
							t.Fatalf("timeline holds an event of type %s", e["type"])
						}
					}
					ids := syncTIDs(evs)
					for _, id := range want {
						if !slices.Contains(ids, id) {
							t.Fatalf("timeline %v lacks %s", ids, id)
						}
					}
				}
				want := sent()
				s := syncTInitial(alice, "filter", flt)
				check(s, want)
				// Incremental syncs filter the same way.
				want = sent()
				s2 := syncTSince(alice, s.NextBatch, "filter", flt)
				check(s2, want)
				if j := s2.Rooms.Join[room]; j != nil && len(j.Timeline.Events) != len(want) {
					t.Fatalf("incremental timeline %v, want %v", syncTIDs(j.Timeline.Events), want)
				}
			})
		})
	}
}

func TestSyncFilterSenders(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	roomTSend(alice, room, "from alice")
	roomTSend(bob, room, "from bob")
	for _, tc := range []struct {
		name   string
		filter map[string]any
		allow  func(sender string) bool
	}{
		{"senders", map[string]any{"senders": []any{bob.UserID}}, func(s string) bool { return s == bob.UserID }},
		{"not_senders", map[string]any{"not_senders": []any{bob.UserID}}, func(s string) bool { return s != bob.UserID }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syncTFilterModes(t, alice, syncTTimelineFilter(tc.filter), func(t *testing.T, alice *testutil.Client, flt string) {
				evs := syncTJoin(t, syncTInitial(alice, "filter", flt), room).Timeline.Events
				var bodies []string
				for _, e := range evs {
					if !tc.allow(e["sender"].(string)) {
						t.Fatalf("timeline holds an event of %s: %v", e["sender"], e)
					}
				}
				bodies = syncTBodies(evs)
				if tc.allow(bob.UserID) && !slices.Contains(bodies, "from bob") || tc.allow(alice.UserID) && !slices.Contains(bodies, "from alice") {
					t.Fatalf("timeline messages %v lack allowed senders", bodies)
				}
			})
		})
	}
}

func TestSyncFilterContainsURL(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	img := roomTEventID(t, alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, roomTTxn()),
		map[string]any{"msgtype": "m.image", "body": "cat.png", "url": "mxc://example.org/cat"}, http.StatusOK))
	text := roomTSend(alice, room, "no url")
	for _, want := range []bool{true, false} {
		name := "true"
		if !want {
			name = "false"
		}
		t.Run(name, func(t *testing.T) {
			syncTFilterModes(t, alice, syncTTimelineFilter(map[string]any{"contains_url": want}), func(t *testing.T, alice *testutil.Client, flt string) {
				s := syncTInitial(alice, "filter", flt)
				var evs []map[string]any
				if j := s.Rooms.Join[room]; j != nil && j.Timeline != nil {
					evs = j.Timeline.Events
				}
				for _, e := range evs {
					_, has := syncTContent(t, e)["url"]
					if has != want {
						t.Fatalf("contains_url %v: timeline holds %v", want, e)
					}
				}
				ids := syncTIDs(evs)
				if want && !slices.Equal(ids, []string{img}) {
					t.Fatalf("contains_url true: timeline %v, want [%s]", ids, img)
				}
				if !want && (!slices.Contains(ids, text) || slices.Contains(ids, img)) {
					t.Fatalf("contains_url false: timeline %v, want %s and not %s", ids, text, img)
				}
			})
		})
	}
}

func TestSyncFilterRooms(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	r1 := roomTCreate(alice, map[string]any{})
	r2 := roomTCreate(alice, map[string]any{})
	t.Run("rooms", func(t *testing.T) {
		syncTFilterModes(t, alice, map[string]any{"room": map[string]any{"rooms": []any{r1}}}, func(t *testing.T, alice *testutil.Client, flt string) {
			s := syncTInitial(alice, "filter", flt)
			syncTJoin(t, s, r1)
			syncTNotIn(t, s, r2, "join")
			roomTSend(alice, r2, "filtered out")
			syncTNotIn(t, syncTSince(alice, s.NextBatch, "filter", flt), r2, "join")
		})
	})
	t.Run("not_rooms", func(t *testing.T) {
		syncTFilterModes(t, alice, map[string]any{"room": map[string]any{"not_rooms": []any{r1}}}, func(t *testing.T, alice *testutil.Client, flt string) {
			s := syncTInitial(alice, "filter", flt)
			syncTJoin(t, s, r2)
			syncTNotIn(t, s, r1, "join")
			roomTSend(alice, r1, "filtered out")
			syncTNotIn(t, syncTSince(alice, s.NextBatch, "filter", flt), r1, "join")
		})
	})
}

// room.state filters the state section.
func TestSyncFilterState(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat", "name": "State filter",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 50}}})
	roomTJoin(bob, room)
	roomTPutState(bob, room, "org.example.bobstate", "", map[string]any{"k": "v"})
	syncTSendN(alice, room, 12, "pad")
	for _, tc := range []struct {
		name  string
		state map[string]any
		allow func(e map[string]any) bool
		need  [][2]string
	}{
		{"types", map[string]any{"types": []any{"m.room.name"}}, func(e map[string]any) bool { return e["type"] == "m.room.name" }, [][2]string{{"m.room.name", ""}}},
		{"not_types", map[string]any{"not_types": []any{"m.room.member"}}, func(e map[string]any) bool { return e["type"] != "m.room.member" },
			[][2]string{{"m.room.create", ""}, {"org.example.bobstate", ""}}},
		{"types wildcard", map[string]any{"types": []any{"m.room.j*"}}, func(e map[string]any) bool { return e["type"] == "m.room.join_rules" }, [][2]string{{"m.room.join_rules", ""}}},
		{"senders", map[string]any{"senders": []any{bob.UserID}}, func(e map[string]any) bool { return e["sender"] == bob.UserID },
			[][2]string{{"org.example.bobstate", ""}, {"m.room.member", bob.UserID}}},
		{"not_senders", map[string]any{"not_senders": []any{bob.UserID}}, func(e map[string]any) bool { return e["sender"] != bob.UserID },
			[][2]string{{"m.room.create", ""}, {"m.room.member", alice.UserID}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syncTFilterModes(t, alice, map[string]any{"room": map[string]any{"state": tc.state}}, func(t *testing.T, alice *testutil.Client, flt string) {
				j := syncTJoin(t, syncTInitial(alice, "filter", flt), room)
				evs := syncTList(j.State)
				for _, e := range evs {
					if !tc.allow(e) {
						t.Fatalf("state holds %s/%v from %v", e["type"], e["state_key"], e["sender"])
					}
				}
				for _, k := range tc.need {
					if syncTFind(evs, k[0], k[1]) == nil {
						t.Fatalf("state lacks %v: %v", k, evs)
					}
				}
				// The timeline is not filtered by the state filter.
				if len(j.Timeline.Events) != 10 {
					t.Fatalf("timeline has %d events, want 10", len(j.Timeline.Events))
				}
			})
		})
	}
}

func TestSyncFilterEphemeral(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	msg := roomTSend(bob, room, "read me")
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", room, bob.UserID), map[string]any{"typing": true, "timeout": 60000}, http.StatusOK)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", room, msg), map[string]any{}, http.StatusOK)

	j := syncTJoin(t, syncTInitial(alice), room)
	typing := syncTOfType(syncTList(j.Ephemeral), "m.typing")
	if typing == nil || !slices.Equal(roomTStrings(t, syncTContent(t, typing)["user_ids"], "user_ids"), []string{bob.UserID}) {
		t.Fatalf("unfiltered ephemeral events lack bob typing: %v", syncTList(j.Ephemeral))
	}
	if !syncTHasType(syncTList(j.Ephemeral), "m.receipt") {
		t.Fatalf("unfiltered ephemeral events lack the receipt: %v", syncTList(j.Ephemeral))
	}
	for _, tc := range []struct {
		name string
		eph  map[string]any
	}{
		{"not_types", map[string]any{"not_types": []any{"m.typing"}}},
		{"types", map[string]any{"types": []any{"m.receipt"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syncTFilterModes(t, alice, map[string]any{"room": map[string]any{"ephemeral": tc.eph}}, func(t *testing.T, alice *testutil.Client, flt string) {
				j := syncTJoin(t, syncTInitial(alice, "filter", flt), room)
				if syncTHasType(syncTList(j.Ephemeral), "m.typing") {
					t.Fatalf("filtered ephemeral events hold m.typing: %v", syncTList(j.Ephemeral))
				}
				if !syncTHasType(syncTList(j.Ephemeral), "m.receipt") {
					t.Fatalf("filtered ephemeral events lack m.receipt: %v", syncTList(j.Ephemeral))
				}
			})
		})
	}
}

func TestSyncFilterAccountData(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	for _, typ := range []string{"org.example.a", "org.example.b", "com.example.c"} {
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/account_data/%s", alice.UserID, typ), map[string]any{"t": typ}, http.StatusOK)
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/account_data/%s", alice.UserID, room, typ), map[string]any{"t": typ}, http.StatusOK)
	}
	typesOf := func(evs []map[string]any) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e["type"].(string))
		}
		slices.Sort(out)
		return out
	}
	flt := map[string]any{
		"account_data": map[string]any{"types": []any{"org.example.a"}},
		"room":         map[string]any{"account_data": map[string]any{"not_types": []any{"org.example.*"}}},
	}
	syncTFilterModes(t, alice, flt, func(t *testing.T, alice *testutil.Client, flt string) {
		s := syncTInitial(alice, "filter", flt)
		if got := typesOf(syncTList(s.AccountData)); !slices.Equal(got, []string{"org.example.a"}) {
			t.Fatalf("global account data %v, want [org.example.a]", got)
		}
		if got := typesOf(syncTList(syncTJoin(t, s, room).AccountData)); !slices.Equal(got, []string{"com.example.c"}) {
			t.Fatalf("room account data %v, want [com.example.c]", got)
		}
	})
	// Unfiltered: everything.
	s := syncTInitial(alice)
	if got := typesOf(syncTList(s.AccountData)); !slices.Contains(got, "org.example.b") || !slices.Contains(got, "com.example.c") {
		t.Fatalf("unfiltered global account data %v", got)
	}
	if got := typesOf(syncTList(syncTJoin(t, s, room).AccountData)); len(got) != 3 {
		t.Fatalf("unfiltered room account data %v", got)
	}
}

func TestSyncFilterPresence(t *testing.T) {
	srv := testserver.Start(t) // presence on
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/presence/%s/status", bob.UserID), map[string]any{"presence": "online", "status_msg": "here"}, http.StatusOK)
	hasBob := func(s *syncTResponse) bool {
		for _, e := range syncTList(s.Presence) {
			if e["type"] == "m.presence" && e["sender"] == bob.UserID {
				return true
			}
		}
		return false
	}
	if s := syncTInitial(alice); !hasBob(s) {
		t.Fatalf("unfiltered sync lacks bob's presence: %s", syncTShort(s.Body))
	}
	for name, f := range map[string]map[string]any{
		"types empty": {"presence": map[string]any{"types": []any{}}},
		"not_senders": {"presence": map[string]any{"not_senders": []any{bob.UserID}}},
	} {
		t.Run(name, func(t *testing.T) {
			syncTFilterModes(t, alice, f, func(t *testing.T, alice *testutil.Client, flt string) {
				s := syncTInitial(alice, "filter", flt)
				if hasBob(s) {
					t.Fatalf("filtered sync holds bob's presence: %s", syncTShort(s.Body))
				}
				if name == "types empty" && len(syncTList(s.Presence)) != 0 {
					t.Fatalf("presence types [] still returns presence: %v", syncTList(s.Presence))
				}
			})
		})
	}
}

func TestSyncFilterEventFields(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{"name": "Fields"})
	syncTSendN(alice, room, 12, "fields")
	syncTFilterModes(t, alice, map[string]any{"event_fields": []any{"type", "content.body"}}, func(t *testing.T, alice *testutil.Client, flt string) {
		j := syncTJoin(t, syncTInitial(alice, "filter", flt), room)
		if len(j.Timeline.Events) != 10 || len(syncTList(j.State)) == 0 {
			t.Fatalf("timeline %d events, state %d", len(j.Timeline.Events), len(syncTList(j.State)))
		}
		for _, e := range append(slices.Clone(j.Timeline.Events), syncTList(j.State)...) {
			for k := range e {
				if k != "type" && k != "content" {
					t.Fatalf("event_fields [type content.body]: event has %s: %v", k, e)
				}
			}
			if _, ok := e["type"].(string); !ok {
				t.Fatalf("event without type: %v", e)
			}
			if c, ok := e["content"].(map[string]any); ok {
				for k := range c {
					if k != "body" {
						t.Fatalf("event_fields [type content.body]: content has %s: %v", k, e)
					}
				}
			}
		}
		for i, e := range j.Timeline.Events {
			if e["type"] != "m.room.message" || syncTContent(t, e)["body"] == nil {
				t.Fatalf("timeline event %d = %v, want a message with its body", i, e)
			}
		}
	})
}

func TestSyncFilterEventFormat(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	syncTSendN(alice, room, 12, "fmt")
	syncTFilterModes(t, alice, map[string]any{"event_format": "federation"}, func(t *testing.T, alice *testutil.Client, flt string) {
		j := syncTJoin(t, syncTInitial(alice, "filter", flt), room)
		evs := append(slices.Clone(j.Timeline.Events), syncTList(j.State)...)
		if len(evs) < 12 {
			t.Fatalf("only %d events", len(evs))
		}
		for _, e := range evs {
			for _, k := range []string{"auth_events", "prev_events", "signatures", "hashes", "depth", "room_id", "sender", "type", "content", "event_id"} {
				if _, ok := e[k]; !ok {
					t.Fatalf("federation format event without %s: %v", k, e)
				}
			}
			if e["room_id"] != room {
				t.Fatalf("federation event room_id %v", e["room_id"])
			}
		}
	})
	// The client format (explicit) has none of them.
	j := syncTJoin(t, syncTInitial(alice, "filter", syncTFilter(map[string]any{"event_format": "client"})), room)
	for _, e := range append(slices.Clone(j.Timeline.Events), syncTList(j.State)...) {
		syncTCheckEvent(t, e)
	}
}

func TestSyncFilterErrors(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	syncPath := func(flt string) string { return "/_matrix/client/v3/sync?filter=" + url.QueryEscape(flt) }
	for _, bad := range []string{
		`{"room":{"timeline":{"limit":"ten"}}}`,
		`{"event_format":"xml"}`,
		`{"room":{"rooms":"!a:b"}}`,
		`{"room":{"timeline":{"senders":["not a user"]}}}`,
		`{"event_fields":"type"}`,
	} {
		alice.MustFail("GET", syncPath(bad), nil, http.StatusBadRequest, "M_BAD_JSON")
	}
	// Not JSON at all.
	roomTFail(alice, "GET", syncPath(`{"room":`), nil, http.StatusBadRequest, "M_BAD_JSON", "M_NOT_JSON")
	// Unknown filter IDs.
	for _, id := range []string{"123456", "abc"} {
		alice.MustFail("GET", syncPath(id), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	// Filters belong to their user.
	id := alice.MustDo("POST", testutil.Path("/_matrix/client/v3/user/%s/filter", alice.UserID), map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}, http.StatusOK)["filter_id"].(string)
	syncTDo(alice, "filter="+url.QueryEscape(id))
	bob.MustFail("GET", syncPath(id), nil, http.StatusBadRequest, "M_INVALID_PARAM")
}

// Lazy loading: only the members of the timeline's senders (and the
// syncing user), not repeated unless include_redundant_members is set.
func TestSyncLazyLoadMembers(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	dave := roomTUser(t, srv, "dave")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	for _, u := range []*testutil.Client{bob, carol, dave} {
		roomTJoin(u, room)
	}
	members := func(evs []map[string]any) []string {
		var out []string
		for _, e := range evs {
			if e["type"] == "m.room.member" {
				out = append(out, e["state_key"].(string))
			}
		}
		slices.Sort(out)
		return out
	}
	lazy := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3}, "state": map[string]any{"lazy_load_members": true}}}
	syncTFilterModes(t, alice, lazy, func(t *testing.T, alice *testutil.Client, flt string) {
		bob, carol := roomTBind(t, bob), roomTBind(t, carol)
		sent := syncTSendN(bob, room, 5, "bob")
		s := syncTInitial(alice, "filter", flt)
		j := syncTJoin(t, s, room)
		if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, sent[2:]) {
			t.Fatalf("timeline %v, want %v", ids, sent[2:])
		}
		if got, want := members(syncTList(j.State)), roomTSorted(alice.UserID, bob.UserID); !slices.Equal(got, want) {
			t.Fatalf("lazy state members %v, want the sender and the syncing user %v", got, want)
		}
		for _, k := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules"} {
			if syncTFind(syncTList(j.State), k, "") == nil {
				t.Fatalf("lazy state lacks %s", k)
			}
		}
		if j.Summary == nil || roomTNum(t, j.Summary["m.joined_member_count"], "m.joined_member_count") != 4 {
			t.Fatalf("lazy loading sync summary %v, want m.joined_member_count 4", j.Summary)
		}
		if heroes := roomTStrings(t, j.Summary["m.heroes"], "m.heroes"); len(heroes) != 3 || slices.Contains(heroes, alice.UserID) {
			t.Fatalf("lazy loading sync m.heroes %v, want the 3 others", heroes)
		}

		// Bob again: his member event is not repeated.
		m := roomTSend(bob, room, "bob again")
		s2 := syncTSince(alice, s.NextBatch, "filter", flt)
		j = syncTJoin(t, s2, room)
		if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, []string{m}) {
			t.Fatalf("incremental timeline %v, want [%s]", ids, m)
		}
		if got := members(syncTList(j.State)); len(got) != 0 {
			t.Fatalf("incremental lazy state repeats members %v", got)
		}
		// A new sender: their member event comes along.
		c := roomTSend(carol, room, "carol speaks")
		j = syncTJoin(t, syncTSince(alice, s2.NextBatch, "filter", flt), room)
		if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, []string{c}) {
			t.Fatalf("incremental timeline %v, want [%s]", ids, c)
		}
		if got := members(syncTList(j.State)); !slices.Equal(got, []string{carol.UserID}) {
			t.Fatalf("incremental lazy state members %v, want carol's", got)
		}
	})

	redundant := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3},
		"state": map[string]any{"lazy_load_members": true, "include_redundant_members": true}}}
	syncTFilterModes(t, alice, redundant, func(t *testing.T, alice *testutil.Client, flt string) {
		bob := roomTBind(t, bob)
		syncTSendN(bob, room, 3, "bob")
		s := syncTInitial(alice, "filter", flt)
		if got, want := members(syncTList(syncTJoin(t, s, room).State)), roomTSorted(alice.UserID, bob.UserID); !slices.Equal(got, want) {
			t.Fatalf("lazy state members %v, want %v", got, want)
		}
		roomTSend(bob, room, "bob again")
		j := syncTJoin(t, syncTSince(alice, s.NextBatch, "filter", flt), room)
		if got := members(syncTList(j.State)); !slices.Contains(got, bob.UserID) || slices.Contains(got, carol.UserID) || slices.Contains(got, dave.UserID) {
			t.Fatalf("include_redundant_members: incremental state members %v, want bob's again (and not carol's or dave's)", got)
		}
	})

	// Without lazy loading: every member.
	j := syncTJoin(t, syncTInitial(alice, "filter", syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3}}})), room)
	if got, want := members(syncTList(j.State)), roomTSorted(alice.UserID, bob.UserID, carol.UserID, dave.UserID); !slices.Equal(got, want) {
		t.Fatalf("state members without lazy loading %v, want all %v", got, want)
	}
}

// A timeline limit of 0 (accepted, as in Synapse): rooms with their state
// alone; a left room's state is as the user left it, their leave included.
func TestSyncTimelineLimitZero(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	roomTPutState(alice, room, "org.example.state", "", map[string]any{"when": "before"})
	roomTLeave(bob, room)
	roomTPutState(alice, room, "org.example.state", "", map[string]any{"when": "after"})

	f := syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 0}, "include_leave": true}})
	s := syncTInitial(bob, "filter", f)
	l := syncTLeave(t, s, room)
	if len(l.Timeline.Events) != 0 || !l.Timeline.Limited {
		t.Fatalf("timeline with limit 0: %v, limited %v", syncTIDs(l.Timeline.Events), l.Timeline.Limited)
	}
	if m := syncTMember(syncTList(l.State), bob.UserID); m == nil || syncTMembership(m) != "leave" {
		t.Fatalf("left room's state lacks bob's leave: %v", syncTIDs(syncTList(l.State)))
	}
	if e := syncTFind(syncTList(l.State), "org.example.state", ""); e == nil || syncTContent(t, e)["when"] != "before" {
		t.Fatalf("left room's state %v, want the state when bob left", e)
	}
	j := syncTJoin(t, syncTInitial(alice, "filter", f), room)
	if len(j.Timeline.Events) != 0 || syncTFind(syncTList(j.State), "org.example.state", "") == nil {
		t.Fatalf("joined room with limit 0: timeline %v, state %v", syncTIDs(j.Timeline.Events), syncTIDs(syncTList(j.State)))
	}
	roomTFail(bob, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": -1}}})),
		nil, http.StatusBadRequest, "M_BAD_JSON", "M_INVALID_PARAM")
}
