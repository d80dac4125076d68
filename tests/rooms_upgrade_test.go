package tests

import (
	"net/http"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

func membUpgradePath(roomID string) string {
	return testutil.Path(membCS+"/rooms/%s/upgrade", roomID)
}

// membUpgrade upgrades a room and returns the replacement room's ID.
func membUpgrade(c *testutil.Client, roomID string, body map[string]any) string {
	c.T.Helper()
	m := c.MustDo("POST", membUpgradePath(roomID), body, http.StatusOK)
	id, _ := m["replacement_room"].(string)
	if id == "" || id == roomID {
		c.T.Fatalf("upgrade response %v", m)
	}
	return id
}

func membNum(v any) float64 {
	f, _ := v.(float64)
	return f
}

// membAliasesOf lists a room's local aliases.
func membAliasesOf(c *testutil.Client, roomID string) []any {
	c.T.Helper()
	l, _ := c.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", roomID), nil, http.StatusOK)["aliases"].([]any)
	return l
}

// Upgrading a room: the tombstone, the new room's create event and copied
// state, the move of aliases, bans and directory listing, and the
// restriction of the old room.
func TestRoomUpgrade(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	for _, tc := range []struct{ from, to string }{{"10", "11"}, {"11", "12"}, {"6", "10"}} {
		t.Run("v"+tc.from+"-v"+tc.to, func(t *testing.T) {
			n := func(s string) string { return s + ".u" + tc.from + "x" + tc.to }
			alice := membRegister(t, srv, n("alice"))
			bob := membRegister(t, srv, n("bob"))
			carol := membRegister(t, srv, n("carol"))
			dave := membRegister(t, srv, n("dave"))
			eve := membRegister(t, srv, n("eve"))
			aliasName := "upg" + tc.from + "x" + tc.to
			alias := "#" + aliasName + ":" + server
			room := membCreate(alice, map[string]any{
				"preset": "public_chat", "visibility": "public", "room_version": tc.from,
				"name": "Upgrade me " + tc.from, "topic": "Old topic", "room_alias_name": aliasName,
				"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}},
			})
			membJoin(bob, room)
			membJoin(carol, room)
			membJoin(dave, room)
			membSetPower(alice, room, bob.UserID, 50)
			membPost(alice, room, "ban", map[string]any{"user_id": carol.UserID, "reason": "spam"}, http.StatusOK)
			oldPL := membContent(alice, room, "m.room.power_levels", "")

			// Refusals.
			dave.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
			bob.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
			eve.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
			alice.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": "999"}, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
			alice.MustFail("POST", membUpgradePath(room), map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
			if r := alice.Do("GET", membStatePath(room, "m.room.tombstone", ""), nil); r.Status != http.StatusNotFound {
				t.Fatalf("refused upgrades left a tombstone: %d %s", r.Status, r.Body)
			}

			newRoom := membUpgrade(alice, room, map[string]any{"new_version": tc.to})

			// The old room points to the new one.
			ts := membEvent(alice, room, "m.room.tombstone", "")
			tsc := ts["content"].(map[string]any)
			if tsc["replacement_room"] != newRoom || ts["sender"] != alice.UserID {
				t.Fatalf("tombstone = %v", ts)
			}
			if _, ok := tsc["body"].(string); !ok {
				t.Fatalf("tombstone content lacks the required body: %v", tsc)
			}
			// The new room points back.
			create := membEvent(alice, newRoom, "m.room.create", "")
			cc := create["content"].(map[string]any)
			pred, _ := cc["predecessor"].(map[string]any)
			if pred["room_id"] != room || cc["room_version"] != tc.to || create["sender"] != alice.UserID {
				t.Fatalf("new create event = %v", create)
			}
			// predecessor.event_id is deprecated but SHOULD be set where
			// practical; when set, it is an event of the old room.
			if id, ok := pred["event_id"].(string); ok {
				alice.MustDo("GET", testutil.Path(membCS+"/rooms/%s/event/%s", room, id), nil, http.StatusOK)
			} else if tc.to != "12" {
				t.Fatalf("predecessor lacks event_id: %v", pred)
			}
			if tc.to == "10" && cc["creator"] != alice.UserID {
				t.Fatalf("v10 create event lacks the creator: %v", cc)
			}
			if tc.to != "10" && cc["creator"] != nil {
				t.Fatalf("v%s create event has a creator field: %v", tc.to, cc)
			}
			membWantMembership(alice, newRoom, alice.UserID, "join")

			// Copied state.
			for typ, key := range map[string]string{"m.room.name": "name", "m.room.topic": "topic", "m.room.join_rules": "join_rule", "m.room.history_visibility": "history_visibility"} {
				o := membContent(alice, room, typ, "")
				nw := membContent(alice, newRoom, typ, "")
				if o[key] == nil || o[key] != nw[key] {
					t.Fatalf("%s not copied: old %v, new %v", typ, o, nw)
				}
			}
			newPL := membContent(alice, newRoom, "m.room.power_levels", "")
			for _, k := range []string{"ban", "kick", "invite", "redact", "state_default", "events_default", "users_default"} {
				if membNum(newPL[k]) != membNum(oldPL[k]) {
					t.Fatalf("power level %s = %v, want %v (old %v, new %v)", k, newPL[k], oldPL[k], oldPL, newPL)
				}
			}
			if !sameJSON(t, newPL["events"], oldPL["events"]) {
				t.Fatalf("power levels events = %v, want %v", newPL["events"], oldPL["events"])
			}
			users := newPL["users"].(map[string]any)
			if membNum(users[bob.UserID]) != 50 {
				t.Fatalf("bob's level not copied: %v", users)
			}
			if tc.to == "12" {
				// The upgrader is a creator of the v12 room: not listed.
				if _, ok := users[alice.UserID]; ok {
					t.Fatalf("v12 power levels list the creator: %v", users)
				}
				if _, ok := cc["additional_creators"]; ok {
					t.Fatalf("unexpected additional_creators: %v", cc)
				}
			} else if membNum(users[alice.UserID]) != 100 {
				t.Fatalf("alice's level not copied: %v", users)
			}
			// The upgrader administers the new room.
			alice.MustDo("PUT", membStatePath(newRoom, "m.room.name", ""), map[string]any{"name": "Renamed"}, http.StatusOK)

			// Aliases moved, with the canonical alias.
			if m := srv.Client().MustDo("GET", membAliasPath(alias), nil, http.StatusOK); m["room_id"] != newRoom {
				t.Fatalf("alias resolves to %v after the upgrade, want %s", m["room_id"], newRoom)
			}
			if ca := membContent(alice, newRoom, "m.room.canonical_alias", ""); ca["alias"] != alias {
				t.Fatalf("new canonical alias = %v", ca)
			}
			if r := alice.Do("GET", membStatePath(room, "m.room.canonical_alias", ""), nil); r.Status == http.StatusOK {
				if a, ok := r.JSON(t)["alias"]; ok {
					t.Fatalf("old room keeps canonical alias %v", a)
				}
			}
			if l := membAliasesOf(alice, newRoom); !slices.Equal(l, []any{alias}) {
				t.Fatalf("aliases of the new room = %v", l)
			}
			if l := membAliasesOf(alice, room); len(l) != 0 {
				t.Fatalf("aliases of the old room = %v", l)
			}

			// Bans carried over.
			membWantMembership(alice, newRoom, carol.UserID, "ban")
			carol.MustFail("POST", testutil.Path(membCS+"/join/%s", newRoom), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

			// The old room is muted for ordinary members.
			restricted := membContent(alice, room, "m.room.power_levels", "")
			if membNum(restricted["events_default"]) < 50 || membNum(restricted["invite"]) < 50 {
				t.Fatalf("old power levels not restricted: %v", restricted)
			}
			dave.MustFail("PUT", testutil.Path(membCS+"/rooms/%s/send/m.room.message/%s", room, "t1"), map[string]any{"msgtype": "m.text", "body": "hi"}, http.StatusForbidden, "M_FORBIDDEN")

			// The directory lists the new room instead of the old one.
			if m := srv.Client().MustDo("GET", membVisibilityPath(room), nil, http.StatusOK); m["visibility"] != "private" {
				t.Fatalf("old room visibility = %v", m)
			}
			if m := srv.Client().MustDo("GET", membVisibilityPath(newRoom), nil, http.StatusOK); m["visibility"] != "public" {
				t.Fatalf("new room visibility = %v", m)
			}
			ids := membChunkIDs(t, membPublicRooms(srv.Client(), nil, nil))
			if slices.Contains(ids, room) || !slices.Contains(ids, newRoom) {
				t.Fatalf("public rooms %v: want %s listed and %s not", ids, newRoom, room)
			}

			// Members follow, by room ID or by the moved alias.
			membJoin(bob, newRoom)
			if m := dave.MustDo("POST", testutil.Path(membCS+"/join/%s", alias), map[string]any{}, http.StatusOK); m["room_id"] != newRoom {
				t.Fatalf("joining by alias after the upgrade: %v", m)
			}
			membWantMembership(alice, newRoom, dave.UserID, "join")
			membWantMembership(alice, newRoom, bob.UserID, "join")
			// bob still lacks the power to upgrade the old room.
			bob.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}

// Upgrades to v12 by an admin who did not create the room: the upgrader
// becomes the creator of the new room (with any additional creators), and
// the old creator keeps their level.
func TestRoomUpgradeToV12ByAdmin(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	carol := membRegister(t, srv, "carol")
	room := membPublicRoom(alice, "11")
	membJoin(bob, room)
	membJoin(carol, room)
	membSetPower(alice, room, bob.UserID, 100)

	bob.MustFail("POST", membUpgradePath(room), map[string]any{"new_version": "12", "additional_creators": []string{"not-a-user"}}, http.StatusBadRequest, "M_INVALID_PARAM")
	newRoom := membUpgrade(bob, room, map[string]any{"new_version": "12", "additional_creators": []string{carol.UserID}})
	create := membEvent(bob, newRoom, "m.room.create", "")
	cc := create["content"].(map[string]any)
	if create["sender"] != bob.UserID || cc["room_version"] != "12" {
		t.Fatalf("create event = %v", create)
	}
	if extra, _ := cc["additional_creators"].([]any); !slices.Equal(extra, []any{carol.UserID}) {
		t.Fatalf("additional_creators = %v, want [%s]", cc["additional_creators"], carol.UserID)
	}
	users := membContent(bob, newRoom, "m.room.power_levels", "")["users"].(map[string]any)
	if _, ok := users[bob.UserID]; ok {
		t.Fatalf("the upgrader is listed in the v12 power levels: %v", users)
	}
	if _, ok := users[carol.UserID]; ok {
		t.Fatalf("an additional creator is listed in the v12 power levels: %v", users)
	}
	if membNum(users[alice.UserID]) != 100 {
		t.Fatalf("the old creator lost their level: %v", users)
	}
	// Everyone can join the new (public) room; carol, a creator, can then
	// act as one.
	membJoin(alice, newRoom)
	membJoin(carol, newRoom)
	carol.MustDo("PUT", membStatePath(newRoom, "m.room.name", ""), map[string]any{"name": "By carol"}, http.StatusOK)
	carol.MustDo("POST", membUpgradePath(newRoom), map[string]any{"new_version": "12"}, http.StatusOK)
	// Unknown rooms.
	alice.MustFail("POST", membUpgradePath("!nosuchroom:"+server), map[string]any{"new_version": "11"}, http.StatusNotFound, "M_NOT_FOUND")
}

// Upgrading a private room keeps it invite-only: members must be invited
// to the new room, except that they can follow with the upgrader's invite.
func TestRoomUpgradePrivate(t *testing.T) {
	srv := testserver.Start(t)
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	room := membPrivateRoom(alice, "11")
	membPost(alice, room, "invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
	membJoin(bob, room)
	newRoom := membUpgrade(alice, room, map[string]any{"new_version": "12"})
	if jr := membContent(alice, newRoom, "m.room.join_rules", ""); jr["join_rule"] != "invite" {
		t.Fatalf("join rule of the new room = %v", jr)
	}
	bob.MustFail("POST", testutil.Path(membCS+"/join/%s", newRoom), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	membPost(alice, newRoom, "invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
	membJoin(bob, newRoom)
	// Not published before, not published after.
	if m := srv.Client().MustDo("GET", membVisibilityPath(newRoom), nil, http.StatusOK); m["visibility"] != "private" {
		t.Fatalf("new room visibility = %v", m)
	}
}

// The type of the room (a space here) is copied to the replacement room.
func TestRoomUpgradeKeepsRoomType(t *testing.T) {
	srv := testserver.Start(t)
	alice := membRegister(t, srv, "alice")
	space := membCreate(alice, map[string]any{"preset": "public_chat", "room_version": "10", "creation_content": map[string]any{"type": "m.space"}})
	plain := membPublicRoom(alice, "10")
	newSpace := membUpgrade(alice, space, map[string]any{"new_version": "11"})
	if cc := membContent(alice, newSpace, "m.room.create", ""); cc["type"] != "m.space" || cc["room_version"] != "11" {
		t.Fatalf("create content of the upgraded space = %v", cc)
	}
	newPlain := membUpgrade(alice, plain, map[string]any{"new_version": "11"})
	if cc := membContent(alice, newPlain, "m.room.create", ""); cc["type"] != nil {
		t.Fatalf("create content of the upgraded room = %v, want no type", cc)
	}
}
