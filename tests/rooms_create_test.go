package tests

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers shared by rooms_create_test.go, rooms_send_test.go and
// rooms_read_test.go (prefix roomT) ----

// roomTVersions are the room versions the room tests run on.
var roomTVersions = []string{"1", "6", "10", "11", "12"}

// roomTEachVersion runs f as one subtest per room version.
func roomTEachVersion(t *testing.T, f func(t *testing.T, ver string)) {
	t.Helper()
	for _, v := range roomTVersions {
		t.Run("v"+v, func(t *testing.T) { f(t, v) })
	}
}

// roomTPrivileged reports whether the room version privileges creators
// (room version 12).
func roomTPrivileged(ver string) bool { return ver == "12" }

// roomTCreatorInCreate reports whether m.room.create carries "creator"
// (room versions 1 to 10).
func roomTCreatorInCreate(ver string) bool { return ver != "11" && ver != "12" }

var roomTSeq atomic.Int64

// roomTUser registers a user with a unique localpart starting with name
// and returns a client bound to t.
func roomTUser(t *testing.T, srv *testserver.Server, name string) *testutil.Client {
	t.Helper()
	return testutil.NewClient(t, srv.URL).Register(fmt.Sprintf("%s.%d", name, roomTSeq.Add(1)), "pw")
}

// roomTBind returns a copy of c reporting failures to t.
func roomTBind(t testing.TB, c *testutil.Client) *testutil.Client {
	cc := *c
	cc.T = t
	return &cc
}

// roomTTxn returns a fresh transaction ID.
func roomTTxn() string { return fmt.Sprintf("txn-%d", roomTSeq.Add(1)) }

// roomTCreate creates a room and returns its ID.
func roomTCreate(c *testutil.Client, body map[string]any) string {
	c.T.Helper()
	m := c.MustDo("POST", "/_matrix/client/v3/createRoom", body, http.StatusOK)
	id, _ := m["room_id"].(string)
	if id == "" {
		c.T.Fatalf("createRoom without room_id: %v", m)
	}
	return id
}

// roomTSend sends a message event and returns its ID.
func roomTSend(c *testutil.Client, roomID, body string) string {
	c.T.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, roomTTxn()),
		map[string]any{"msgtype": "m.text", "body": body}, http.StatusOK)
	return roomTEventID(c.T, m)
}

// roomTPutState sends a state event and returns its ID.
func roomTPutState(c *testutil.Client, roomID, typ, key string, content any) string {
	c.T.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/%s/%s", roomID, typ, key), content, http.StatusOK)
	return roomTEventID(c.T, m)
}

// roomTStatePath is the path of a state event (with an empty key: the
// trailing-slash form).
func roomTStatePath(roomID, typ, key string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/state/%s/%s", roomID, typ, key)
}

// roomTState returns the content of a current state event.
func roomTState(c *testutil.Client, roomID, typ, key string) map[string]any {
	c.T.Helper()
	return c.MustDo("GET", roomTStatePath(roomID, typ, key), nil, http.StatusOK)
}

// roomTEvent fetches an event with GET /rooms/{roomId}/event/{eventId}.
func roomTEvent(c *testutil.Client, roomID, eventID string) map[string]any {
	c.T.Helper()
	return c.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, eventID), nil, http.StatusOK)
}

// roomTEventStatus is the status of GET /rooms/{roomId}/event/{eventId}; a
// 404 must carry M_NOT_FOUND.
func roomTEventStatus(c *testutil.Client, roomID, eventID string) int {
	c.T.Helper()
	r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, eventID), nil)
	if r.Status == http.StatusNotFound {
		if m := r.JSON(c.T); m["errcode"] != "M_NOT_FOUND" {
			c.T.Fatalf("GET event %s: 404 with errcode %v, want M_NOT_FOUND", eventID, m["errcode"])
		}
	} else if r.Status != http.StatusOK {
		c.T.Fatalf("GET event %s: status %d: %s", eventID, r.Status, r.Body)
	}
	return r.Status
}

func roomTEventID(t testing.TB, m map[string]any) string {
	t.Helper()
	id, _ := m["event_id"].(string)
	if !strings.HasPrefix(id, "$") {
		t.Fatalf("response without an event_id: %v", m)
	}
	return id
}

func roomTJoin(c *testutil.Client, roomID string) {
	c.T.Helper()
	c.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/join", roomID), map[string]any{}, http.StatusOK)
}

func roomTInvite(c *testutil.Client, roomID, userID string) {
	c.T.Helper()
	c.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", roomID), map[string]any{"user_id": userID}, http.StatusOK)
}

func roomTLeave(c *testutil.Client, roomID string) {
	c.T.Helper()
	c.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
}

func roomTKick(c *testutil.Client, roomID, userID string) {
	c.T.Helper()
	c.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/kick", roomID), map[string]any{"user_id": userID, "reason": "test"}, http.StatusOK)
}

// roomTFail sends a request and fails unless the status is status and the
// errcode one of codes (any errcode when codes is empty); the error body
// must carry an error string.
func roomTFail(c *testutil.Client, method, path string, body any, status int, codes ...string) map[string]any {
	c.T.Helper()
	r := c.Do(method, path, body)
	m := r.JSON(c.T)
	code, _ := m["errcode"].(string)
	if r.Status != status || code == "" || (len(codes) > 0 && !slices.Contains(codes, code)) {
		c.T.Fatalf("%s %s: got %d %v, want %d %v: %s", method, path, r.Status, m["errcode"], status, codes, r.Body)
	}
	if _, ok := m["error"].(string); !ok {
		c.T.Fatalf("%s %s: error response without an error string: %s", method, path, r.Body)
	}
	return m
}

// roomTNum reads a JSON number.
func roomTNum(t testing.TB, v any, what string) int {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%s = %v (%T), want a number", what, v, v)
	}
	return int(f)
}

func roomTMap(t testing.TB, v any, what string) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s = %v (%T), want an object", what, v, v)
	}
	return m
}

// roomTStrings reads a JSON array of strings.
func roomTStrings(t testing.TB, v any, what string) []string {
	t.Helper()
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("%s = %v (%T), want an array", what, v, v)
	}
	out := make([]string, len(arr))
	for i, x := range arr {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("%s[%d] = %v, want a string", what, i, x)
		}
		out[i] = s
	}
	return out
}

// roomTStateList returns GET /rooms/{roomId}/state.
func roomTStateList(c *testutil.Client, roomID string) []map[string]any {
	c.T.Helper()
	r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state", roomID), nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET state: status %d: %s", r.Status, r.Body)
	}
	var evs []map[string]any
	r.Decode(c.T, &evs)
	return evs
}

// roomTFind returns the event of a state list with the type and key.
func roomTFind(evs []map[string]any, typ, key string) map[string]any {
	for _, e := range evs {
		if e["type"] == typ && e["state_key"] == key {
			return e
		}
	}
	return nil
}

// roomTFederationKeys are fields of the federation format that client
// events never carry.
var roomTFederationKeys = []string{"auth_events", "prev_events", "hashes", "signatures", "depth"}

// roomTCheckClientEvent checks the fields of an event in client format.
func roomTCheckClientEvent(t testing.TB, e map[string]any, roomID string) {
	t.Helper()
	for _, k := range []string{"event_id", "sender", "type"} {
		if s, _ := e[k].(string); s == "" {
			t.Fatalf("client event without %s: %v", k, e)
		}
	}
	if _, ok := e["content"].(map[string]any); !ok {
		t.Fatalf("client event without a content object: %v", e)
	}
	if ts, ok := e["origin_server_ts"].(float64); !ok || ts <= 0 {
		t.Fatalf("client event without origin_server_ts: %v", e)
	}
	if e["room_id"] != roomID {
		t.Fatalf("client event room_id = %v, want %s", e["room_id"], roomID)
	}
	for _, k := range roomTFederationKeys {
		if _, ok := e[k]; ok {
			t.Fatalf("client event carries the federation field %s: %v", k, e)
		}
	}
}

// ---- POST /createRoom ----

var roomTV12RoomID = regexp.MustCompile(`^![A-Za-z0-9_-]{43}$`)

// The default room version is 11; explicit versions are used; unknown
// ones are refused. Room IDs of version 12 are the create event's hash.
func TestRoomCreateVersions(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")

	roomID := roomTCreate(alice, map[string]any{})
	create := roomTState(alice, roomID, "m.room.create", "")
	if create["room_version"] != "11" {
		t.Fatalf("default room version: create content %v, want room_version 11", create)
	}
	if _, ok := create["creator"]; ok {
		t.Fatalf("a v11 create event has a creator: %v", create)
	}

	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTBind(t, alice)
		roomID := roomTCreate(alice, map[string]any{"room_version": ver})
		create := roomTState(alice, roomID, "m.room.create", "")
		if create["room_version"] != ver {
			t.Fatalf("create content %v, want room_version %s", create, ver)
		}
		if roomTCreatorInCreate(ver) {
			if create["creator"] != alice.UserID {
				t.Fatalf("create content %v, want creator %s", create, alice.UserID)
			}
		} else if _, ok := create["creator"]; ok {
			t.Fatalf("create content of v%s has a creator: %v", ver, create)
		}
		ev := alice.MustDo("GET", roomTStatePath(roomID, "m.room.create", "")+"?format=event", nil, http.StatusOK)
		if ev["sender"] != alice.UserID || ev["room_id"] != roomID {
			t.Fatalf("create event %v", ev)
		}
		if roomTPrivileged(ver) {
			if !roomTV12RoomID.MatchString(roomID) {
				t.Fatalf("v12 room ID %q, want ! and 43 unpadded URL-safe base64 characters", roomID)
			}
			if ev["event_id"] != "$"+roomID[1:] {
				t.Fatalf("v12 create event ID %v, want $%s", ev["event_id"], roomID[1:])
			}
		} else if !strings.HasSuffix(roomID, ":"+srv.Config.ServerName) || !strings.HasPrefix(roomID, "!") {
			t.Fatalf("room ID %q, want !opaque:%s", roomID, srv.Config.ServerName)
		}
		// The server overwrites room_version and creator of creation_content.
		roomID = roomTCreate(alice, map[string]any{"room_version": ver, "creation_content": map[string]any{
			"room_version": "2", "creator": "@mallory:example.org", "m.federate": false, "org.example.key": "v",
		}})
		create = roomTState(alice, roomID, "m.room.create", "")
		if create["room_version"] != ver || create["m.federate"] != false || create["org.example.key"] != "v" {
			t.Fatalf("create content %v, want room_version %s with the creation_content merged", create, ver)
		}
		if roomTCreatorInCreate(ver) {
			if create["creator"] != alice.UserID {
				t.Fatalf("creation_content overrode creator: %v", create)
			}
		} else if _, ok := create["creator"]; ok {
			t.Fatalf("creation_content creator kept in v%s: %v", ver, create)
		}
	})

	for _, v := range []string{"999", "org.example.unknown"} {
		roomTFail(alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": v}, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	}
}

// roomTCheckPowerLevels checks the defaults of Synapse's power levels.
func roomTCheckPowerLevels(t *testing.T, ver string, pl map[string]any, invite int) {
	t.Helper()
	want := map[string]int{"users_default": 0, "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": invite}
	for k, v := range want {
		if got := roomTNum(t, pl[k], "power_levels."+k); got != v {
			t.Fatalf("power_levels.%s = %d, want %d: %v", k, got, v, pl)
		}
	}
	events := roomTMap(t, pl["events"], "power_levels.events")
	tombstone := 100
	if roomTPrivileged(ver) {
		tombstone = 150
	}
	for k, v := range map[string]int{"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.name": 50, "m.room.tombstone": tombstone} {
		if got := roomTNum(t, events[k], "power_levels.events."+k); got != v {
			t.Fatalf("power_levels.events[%s] = %d, want %d", k, got, v)
		}
	}
}

// The presets set the join rule, history visibility, guest access and
// power levels of Synapse's table; version 12 privileges creators.
func TestRoomCreatePresets(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		bob := roomTUser(t, srv, "bob")
		for _, tc := range []struct {
			preset, joinRule, guest string
			invite                  int
		}{
			{"private_chat", "invite", "can_join", 0},
			{"trusted_private_chat", "invite", "can_join", 0},
			{"public_chat", "public", "", 50},
		} {
			t.Run(tc.preset, func(t *testing.T) {
				alice := roomTBind(t, alice)
				bob := roomTBind(t, bob)
				roomID := roomTCreate(alice, map[string]any{"room_version": ver, "preset": tc.preset, "invite": []string{bob.UserID}})
				if jr := roomTState(alice, roomID, "m.room.join_rules", ""); jr["join_rule"] != tc.joinRule {
					t.Fatalf("join_rules %v, want %s", jr, tc.joinRule)
				}
				if hv := roomTState(alice, roomID, "m.room.history_visibility", ""); hv["history_visibility"] != "shared" {
					t.Fatalf("history_visibility %v, want shared", hv)
				}
				if tc.guest == "" {
					roomTFail(alice, "GET", roomTStatePath(roomID, "m.room.guest_access", ""), nil, http.StatusNotFound, "M_NOT_FOUND")
				} else if ga := roomTState(alice, roomID, "m.room.guest_access", ""); ga["guest_access"] != tc.guest {
					t.Fatalf("guest_access %v, want %s", ga, tc.guest)
				}
				pl := roomTState(alice, roomID, "m.room.power_levels", "")
				roomTCheckPowerLevels(t, ver, pl, tc.invite)
				users := roomTMap(t, pl["users"], "power_levels.users")
				trusted := tc.preset == "trusted_private_chat"
				create := roomTState(alice, roomID, "m.room.create", "")
				if roomTPrivileged(ver) {
					if _, ok := users[alice.UserID]; ok {
						t.Fatalf("v12: the creator is listed in power_levels.users: %v", users)
					}
					if _, ok := users[bob.UserID]; ok {
						t.Fatalf("v12: an invitee is listed in power_levels.users: %v", users)
					}
					extra, ok := create["additional_creators"]
					if trusted {
						if got := roomTStrings(t, extra, "additional_creators"); !slices.Equal(got, []string{bob.UserID}) {
							t.Fatalf("additional_creators = %v, want [%s]", got, bob.UserID)
						}
					} else if ok {
						t.Fatalf("%s: additional_creators = %v, want none", tc.preset, extra)
					}
				} else {
					if roomTNum(t, users[alice.UserID], "creator's power") != 100 {
						t.Fatalf("creator's power: %v", users)
					}
					if trusted {
						if roomTNum(t, users[bob.UserID], "invitee's power") != 100 {
							t.Fatalf("trusted invitee's power: %v", users)
						}
					} else if _, ok := users[bob.UserID]; ok {
						t.Fatalf("%s: invitee has a power level: %v", tc.preset, users)
					}
					if _, ok := create["additional_creators"]; ok {
						t.Fatalf("v%s create has additional_creators: %v", ver, create)
					}
				}
				// The invitee joins; a trusted invitee may then set the name
				// (as creator in v12, with power 100 before), others not.
				roomTJoin(bob, roomID)
				path := roomTStatePath(roomID, "m.room.name", "")
				if trusted {
					bob.MustDo("PUT", path, map[string]any{"name": "by bob"}, http.StatusOK)
				} else {
					bob.MustFail("PUT", path, map[string]any{"name": "by bob"}, http.StatusForbidden, "M_FORBIDDEN")
				}
			})
		}

		t.Run("creators are privileged", func(t *testing.T) {
			alice := roomTBind(t, alice)
			roomID := roomTCreate(alice, map[string]any{"room_version": ver})
			pl := roomTState(alice, roomID, "m.room.power_levels", "")
			events := roomTMap(t, pl["events"], "events")
			events["org.example.high"] = 1000
			path := roomTStatePath(roomID, "m.room.power_levels", "")
			if roomTPrivileged(ver) {
				// The creator's power is above every level.
				alice.MustDo("PUT", path, pl, http.StatusOK)
				roomTPutState(alice, roomID, "org.example.high", "", map[string]any{"x": 1})
				// The creator cannot be listed in users: a bad request, as
				// in Synapse.
				pl = roomTState(alice, roomID, "m.room.power_levels", "")
				roomTMap(t, pl["users"], "users")[alice.UserID] = 100
				alice.MustFail("PUT", path, pl, http.StatusBadRequest, "M_BAD_JSON")
			} else {
				// Power 100 cannot set a level above itself.
				alice.MustFail("PUT", path, pl, http.StatusForbidden, "M_FORBIDDEN")
			}
		})
	})
}

// In v12 trusted_private_chat merges creation_content's additional_creators
// with the invitees, without duplicates.
func TestRoomCreateAdditionalCreatorsDeduplicated(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	r := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{
		"room_version": "12", "preset": "trusted_private_chat", "invite": []string{bob.UserID, carol.UserID},
		"creation_content": map[string]any{"additional_creators": []string{bob.UserID}},
	})
	if r.Status != http.StatusOK {
		t.Fatalf("createRoom: status %d: %s", r.Status, r.Body)
	}
	roomID := r.JSON(t)["room_id"].(string)
	got := roomTStrings(t, roomTState(alice, roomID, "m.room.create", "")["additional_creators"], "additional_creators")
	slices.Sort(got)
	want := []string{bob.UserID, carol.UserID}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("additional_creators = %v, want %v (deduplicated)", got, want)
	}
}

// visibility without a preset chooses it: public -> public_chat, private or
// absent -> private_chat.
func TestRoomCreateVisibilityDefaultsPreset(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		for _, tc := range []struct{ visibility, joinRule string }{{"public", "public"}, {"private", "invite"}, {"", "invite"}} {
			body := map[string]any{"room_version": ver}
			if tc.visibility != "" {
				body["visibility"] = tc.visibility
			}
			roomID := roomTCreate(alice, body)
			if jr := roomTState(alice, roomID, "m.room.join_rules", ""); jr["join_rule"] != tc.joinRule {
				t.Fatalf("visibility %q: join_rules %v, want %s", tc.visibility, jr, tc.joinRule)
			}
			pl := roomTState(alice, roomID, "m.room.power_levels", "")
			if tc.joinRule == "public" {
				roomTCheckPowerLevels(t, ver, pl, 50)
				roomTFail(alice, "GET", roomTStatePath(roomID, "m.room.guest_access", ""), nil, http.StatusNotFound, "M_NOT_FOUND")
			} else {
				roomTCheckPowerLevels(t, ver, pl, 0)
				if ga := roomTState(alice, roomID, "m.room.guest_access", ""); ga["guest_access"] != "can_join" {
					t.Fatalf("guest_access %v", ga)
				}
			}
		}
	})
}

// name, topic, room_alias_name, invite, initial_state, creation_content and
// power_level_content_override.
func TestRoomCreateContent(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		bob := roomTUser(t, srv, "bob")
		carol := roomTUser(t, srv, "carol")
		aliasName := "lounge-v" + ver
		alias := "#" + aliasName + ":" + srv.Config.ServerName

		t.Run("name topic alias", func(t *testing.T) {
			alice := roomTBind(t, alice)
			roomID := roomTCreate(alice, map[string]any{"room_version": ver, "name": "The Lounge", "topic": "All about lounging", "room_alias_name": aliasName})
			if n := roomTState(alice, roomID, "m.room.name", ""); n["name"] != "The Lounge" {
				t.Fatalf("m.room.name %v", n)
			}
			topic := roomTState(alice, roomID, "m.room.topic", "")
			if topic["topic"] != "All about lounging" {
				t.Fatalf("m.room.topic %v", topic)
			}
			block := roomTMap(t, topic["m.topic"], "m.topic")
			texts, _ := block["m.text"].([]any)
			if len(texts) != 1 {
				t.Fatalf("m.topic %v, want one m.text representation", block)
			}
			text := roomTMap(t, texts[0], "m.text[0]")
			if text["body"] != "All about lounging" {
				t.Fatalf("m.text %v", text)
			}
			if mt, ok := text["mimetype"]; ok && mt != "text/plain" {
				t.Fatalf("m.text mimetype %v, want text/plain", mt)
			}
			if ca := roomTState(alice, roomID, "m.room.canonical_alias", ""); ca["alias"] != alias {
				t.Fatalf("m.room.canonical_alias %v, want %s", ca, alias)
			}
			m := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", alias), nil, http.StatusOK)
			if m["room_id"] != roomID {
				t.Fatalf("alias resolves to %v, want %s", m, roomID)
			}
			// The alias is taken now.
			roomTFail(alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": ver, "room_alias_name": aliasName},
				http.StatusBadRequest, "M_ROOM_IN_USE")
			// No room without a name was created on the way.
			m = alice.MustDo("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", alias), nil, http.StatusOK)
			if m["room_id"] != roomID {
				t.Fatalf("alias moved to %v", m)
			}
		})

		t.Run("invite", func(t *testing.T) {
			alice, bob, carol := roomTBind(t, alice), roomTBind(t, bob), roomTBind(t, carol)
			for _, direct := range []bool{false, true} {
				body := map[string]any{"room_version": ver, "invite": []string{bob.UserID, carol.UserID}}
				if direct {
					body["is_direct"] = true
				}
				roomID := roomTCreate(alice, body)
				m := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/members?membership=invite", roomID), nil, http.StatusOK)
				chunk, _ := m["chunk"].([]any)
				var invited []string
				for _, e := range chunk {
					ev := roomTMap(t, e, "member event")
					content := roomTMap(t, ev["content"], "content")
					if content["membership"] != "invite" || ev["sender"] != alice.UserID {
						t.Fatalf("invite event %v", ev)
					}
					if d, _ := content["is_direct"].(bool); d != direct {
						t.Fatalf("is_direct = %v, want %v: %v", content["is_direct"], direct, ev)
					}
					invited = append(invited, ev["state_key"].(string))
				}
				slices.Sort(invited)
				want := []string{bob.UserID, carol.UserID}
				slices.Sort(want)
				if !slices.Equal(invited, want) {
					t.Fatalf("invited %v, want %v", invited, want)
				}
				roomTJoin(bob, roomID)
			}
		})

		t.Run("initial_state", func(t *testing.T) {
			alice := roomTBind(t, alice)
			initial := []map[string]any{
				{"type": "org.example.custom", "state_key": "k", "content": map[string]any{"a": "b"}},
				{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "public"}},
				{"type": "m.room.name", "state_key": "", "content": map[string]any{"name": "initial name"}},
				{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "initial topic"}},
				{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
			}
			roomID := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "private_chat", "initial_state": initial})
			if c := roomTState(alice, roomID, "org.example.custom", "k"); c["a"] != "b" {
				t.Fatalf("initial state event %v", c)
			}
			// initial_state takes precedence over the preset.
			if jr := roomTState(alice, roomID, "m.room.join_rules", ""); jr["join_rule"] != "public" {
				t.Fatalf("join_rules %v, want initial_state's public", jr)
			}
			if hv := roomTState(alice, roomID, "m.room.history_visibility", ""); hv["history_visibility"] != "joined" {
				t.Fatalf("history_visibility %v, want initial_state's joined (state_key defaults to empty)", hv)
			}
			if n := roomTState(alice, roomID, "m.room.name", ""); n["name"] != "initial name" {
				t.Fatalf("m.room.name %v", n)
			}
			if n := roomTState(alice, roomID, "m.room.topic", ""); n["topic"] != "initial topic" {
				t.Fatalf("m.room.topic %v", n)
			}
			// name and topic take precedence over initial_state.
			roomID = roomTCreate(alice, map[string]any{"room_version": ver, "initial_state": initial, "name": "param name", "topic": "param topic"})
			if n := roomTState(alice, roomID, "m.room.name", ""); n["name"] != "param name" {
				t.Fatalf("m.room.name %v, want the name parameter", n)
			}
			if n := roomTState(alice, roomID, "m.room.topic", ""); n["topic"] != "param topic" {
				t.Fatalf("m.room.topic %v, want the topic parameter", n)
			}
		})

		t.Run("power_level_content_override", func(t *testing.T) {
			alice := roomTBind(t, alice)
			roomID := roomTCreate(alice, map[string]any{"room_version": ver, "power_level_content_override": map[string]any{
				"ban": 80, "events": map[string]any{"org.example.event": 10},
			}})
			pl := roomTState(alice, roomID, "m.room.power_levels", "")
			if roomTNum(t, pl["ban"], "ban") != 80 || roomTNum(t, pl["kick"], "kick") != 50 || roomTNum(t, pl["state_default"], "state_default") != 50 {
				t.Fatalf("power levels %v, want ban 80 and the other defaults", pl)
			}
			events := roomTMap(t, pl["events"], "events")
			if len(events) != 1 || roomTNum(t, events["org.example.event"], "events") != 10 {
				t.Fatalf("events %v, want the override's events only (top-level keys are replaced)", events)
			}
			users := roomTMap(t, pl["users"], "users")
			if roomTPrivileged(ver) {
				if len(users) != 0 {
					t.Fatalf("v12 users %v, want none", users)
				}
			} else if roomTNum(t, users[alice.UserID], "creator's power") != 100 {
				t.Fatalf("users %v", users)
			}
		})
	})
}

// Invalid requests are refused before anything is created.
func TestRoomCreateErrors(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	const path = "/_matrix/client/v3/createRoom"
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTBind(t, alice)
		for _, tc := range []struct {
			name  string
			body  map[string]any
			codes []string
		}{
			{"invite_3pid", map[string]any{"invite_3pid": []map[string]any{{"id_server": "id.example.org", "id_access_token": "x", "medium": "email", "address": "a@example.org"}}}, nil},
			{"preset", map[string]any{"preset": "party_chat"}, []string{"M_INVALID_PARAM", "M_BAD_JSON"}},
			{"visibility", map[string]any{"visibility": "secret"}, []string{"M_INVALID_PARAM", "M_BAD_JSON"}},
			{"invite user ID", map[string]any{"invite": []string{"not-a-user-id"}}, []string{"M_INVALID_PARAM", "M_BAD_JSON"}},
			{"room_alias_name", map[string]any{"room_alias_name": "bad alias"}, nil},
			{"invite not a list", map[string]any{"invite": "@bob:example.org"}, []string{"M_BAD_JSON"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				alice := roomTBind(t, alice)
				tc.body["room_version"] = ver
				before := alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)
				roomTFail(alice, "POST", path, tc.body, http.StatusBadRequest, tc.codes...)
				after := alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)
				if len(before["joined_rooms"].([]any)) != len(after["joined_rooms"].([]any)) {
					t.Fatalf("a refused createRoom created a room: %v -> %v", before, after)
				}
			})
		}
		anon := testutil.NewClient(t, srv.URL)
		anon.MustFail("POST", path, map[string]any{"room_version": ver}, http.StatusUnauthorized, "M_MISSING_TOKEN")
		alice.MustFail("POST", path, testutil.Raw(`{"room_version":`), http.StatusBadRequest, "M_NOT_JSON")
	})
}
