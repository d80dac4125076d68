package tests

import (
	"net/http"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Helpers shared by the membership, directory and upgrade tests. They all
// carry the memb prefix.

const membCS = "/_matrix/client/v3"

// membVersions are the room versions the membership tests run on.
var membVersions = []string{"1", "6", "10", "11", "12"}

// membKnockVersions support knocking (v7+) and restricted joins (v8+),
// and knock_restricted (v10+).
var membKnockVersions = []string{"10", "11", "12"}

// membRegister registers a user bound to t.
func membRegister(t *testing.T, srv *testserver.Server, localpart string) *testutil.Client {
	t.Helper()
	return testutil.NewClient(t, srv.URL).Register(localpart, "pw")
}

// membCreate creates a room and returns its ID.
func membCreate(c *testutil.Client, body map[string]any) string {
	c.T.Helper()
	m := c.MustDo("POST", membCS+"/createRoom", body, http.StatusOK)
	id, _ := m["room_id"].(string)
	if id == "" {
		c.T.Fatalf("createRoom response without room_id: %v", m)
	}
	return id
}

// membPublicRoom creates a public_chat room of the given version.
func membPublicRoom(c *testutil.Client, version string) string {
	c.T.Helper()
	return membCreate(c, map[string]any{"preset": "public_chat", "room_version": version})
}

// membPrivateRoom creates a private_chat (invite-only) room.
func membPrivateRoom(c *testutil.Client, version string) string {
	c.T.Helper()
	return membCreate(c, map[string]any{"preset": "private_chat", "room_version": version})
}

// membJoin joins a room by ID and checks the response.
func membJoin(c *testutil.Client, roomID string) {
	c.T.Helper()
	m := c.MustDo("POST", testutil.Path(membCS+"/join/%s", roomID), map[string]any{}, http.StatusOK)
	if m["room_id"] != roomID {
		c.T.Fatalf("join response %v, want room_id %s", m, roomID)
	}
}

func membStatePath(roomID, typ, key string) string {
	return testutil.Path(membCS+"/rooms/%s/state/%s/%s", roomID, typ, key)
}

// membEvent returns a current state event (in client format).
func membEvent(c *testutil.Client, roomID, typ, key string) map[string]any {
	c.T.Helper()
	return c.MustDo("GET", membStatePath(roomID, typ, key)+"?format=event", nil, http.StatusOK)
}

// membContent returns the content of a current state event.
func membContent(c *testutil.Client, roomID, typ, key string) map[string]any {
	c.T.Helper()
	return c.MustDo("GET", membStatePath(roomID, typ, key), nil, http.StatusOK)
}

// membMemberEvent is the current m.room.member event of userID, as seen by c.
func membMemberEvent(c *testutil.Client, roomID, userID string) map[string]any {
	c.T.Helper()
	return membEvent(c, roomID, "m.room.member", userID)
}

// membMembership is userID's current membership as seen by c ("" when the
// room has no member event for them).
func membMembership(c *testutil.Client, roomID, userID string) string {
	c.T.Helper()
	r := c.Do("GET", membStatePath(roomID, "m.room.member", userID), nil)
	if r.Status == http.StatusNotFound {
		return ""
	}
	if r.Status != http.StatusOK {
		c.T.Fatalf("get member event of %s: %d %s", userID, r.Status, r.Body)
	}
	m, _ := r.JSON(c.T)["membership"].(string)
	return m
}

// membWantMembership fails unless userID's membership is want.
func membWantMembership(c *testutil.Client, roomID, userID, want string) {
	c.T.Helper()
	if got := membMembership(c, roomID, userID); got != want {
		c.T.Fatalf("membership of %s in %s = %q, want %q", userID, roomID, got, want)
	}
}

// membSetPower sets one user's power level (as c, who must be allowed to).
func membSetPower(c *testutil.Client, roomID, userID string, level int) {
	c.T.Helper()
	pl := membContent(c, roomID, "m.room.power_levels", "")
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[userID] = level
	pl["users"] = users
	c.MustDo("PUT", membStatePath(roomID, "m.room.power_levels", ""), pl, http.StatusOK)
}

// membSetJoinRule sets a room's join rules content.
func membSetJoinRule(c *testutil.Client, roomID string, content map[string]any) {
	c.T.Helper()
	c.MustDo("PUT", membStatePath(roomID, "m.room.join_rules", ""), content, http.StatusOK)
}

func membPost(c *testutil.Client, roomID, action string, body any, want int) map[string]any {
	c.T.Helper()
	return c.MustDo("POST", testutil.Path(membCS+"/rooms/%s/"+action, roomID), body, want)
}

func membFail(c *testutil.Client, roomID, action string, body any, status int, errcode string) {
	c.T.Helper()
	c.MustFail("POST", testutil.Path(membCS+"/rooms/%s/"+action, roomID), body, status, errcode)
}

// membName makes a localpart unique per room version.
func membName(name, version string) string { return name + ".v" + version }

// Joins by room ID (both endpoints) and by alias; the errors for unknown
// rooms and aliases and invite-only rooms; idempotent joins; the member
// event carries the profile and the reason.
func TestMembershipJoin(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	for _, v := range membVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			aliasName := membName("joinme", v)
			alias := "#" + aliasName + ":" + server
			room := membCreate(alice, map[string]any{"preset": "public_chat", "room_version": v, "room_alias_name": aliasName})

			// bob has a display name and an avatar, which the join carries.
			bob.MustDo("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Bob " + v}, http.StatusOK)
			bob.MustDo("PUT", profilePath(bob.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://" + server + "/bobface"}, http.StatusOK)

			// By alias through /join/{roomIdOrAlias}.
			// Custom content stays in the member event (as Synapse; the
			// suite had sent only reasons), but the membership is the join.
			m := bob.MustDo("POST", testutil.Path(membCS+"/join/%s", alias),
				map[string]any{"reason": "hello there", "foo": "bar", "membership": "leave"}, http.StatusOK)
			if m["room_id"] != room {
				t.Fatalf("join by alias returned %v, want room_id %s", m, room)
			}
			ev := membMemberEvent(alice, room, bob.UserID)
			content := ev["content"].(map[string]any)
			if content["membership"] != "join" || content["displayname"] != "Bob "+v || content["avatar_url"] != "mxc://"+server+"/bobface" {
				t.Fatalf("bob's join content = %v", content)
			}
			if content["reason"] != "hello there" || content["foo"] != "bar" {
				t.Fatalf("join reason or custom content not stored: %v", content)
			}
			if ev["sender"] != bob.UserID {
				t.Fatalf("join sender = %v", ev["sender"])
			}

			// By ID through /rooms/{roomId}/join (without a body reason, so
			// a new event).
			m = carol.MustDo("POST", testutil.Path(membCS+"/rooms/%s/join", room), map[string]any{}, http.StatusOK)
			if m["room_id"] != room {
				t.Fatalf("/rooms/{roomId}/join returned %v", m)
			}
			first := membMemberEvent(alice, room, carol.UserID)
			if c := first["content"].(map[string]any); c["membership"] != "join" || c["displayname"] != membName("carol", v) {
				t.Fatalf("carol's join content = %v (want the default display name)", c)
			}
			if _, ok := first["content"].(map[string]any)["avatar_url"]; ok {
				t.Fatalf("carol has no avatar but her join carries one: %v", first["content"])
			}
			// Joining again succeeds and sends nothing new.
			membJoin(carol, room)
			carol.MustDo("POST", testutil.Path(membCS+"/rooms/%s/join", room), map[string]any{}, http.StatusOK)
			if again := membMemberEvent(alice, room, carol.UserID); again["event_id"] != first["event_id"] {
				t.Fatalf("joining twice sent a new member event: %v then %v", first["event_id"], again["event_id"])
			}
			joined := alice.MustDo("GET", testutil.Path(membCS+"/rooms/%s/joined_members", room), nil, http.StatusOK)["joined"].(map[string]any)
			if len(joined) != 3 {
				t.Fatalf("joined members = %v, want alice, bob and carol", joined)
			}

			// Unknown alias and unknown room.
			dave := membRegister(t, srv, membName("dave", v))
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", "#nosuchalias"+v+":"+server), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", "!nosuchroom"+v+":"+server), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
			dave.MustFail("POST", testutil.Path(membCS+"/rooms/%s/join", "!nosuchroom"+v+":"+server), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")

			// An invite-only room refuses uninvited users, by ID and alias.
			privAlias := membName("private", v)
			priv := membCreate(alice, map[string]any{"preset": "private_chat", "room_version": v, "room_alias_name": privAlias})
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", priv), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", "#"+privAlias+":"+server), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			dave.MustFail("POST", testutil.Path(membCS+"/rooms/%s/join", priv), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, priv, dave.UserID); got != "" {
				t.Fatalf("refused join left a %q membership", got)
			}
			// Once invited, the join works.
			membPost(alice, priv, "invite", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			membJoin(dave, priv)
			membWantMembership(alice, priv, dave.UserID, "join")
		})
	}
}

// Invites: request validation, the target rules, the invite power level,
// accepting and rejecting.
func TestMembershipInvite(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	for _, v := range membVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			dave := membRegister(t, srv, membName("dave", v))
			room := membPublicRoom(alice, v)
			membJoin(bob, room)

			membFail(alice, room, "invite", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
			membFail(alice, room, "invite", map[string]any{"reason": "no target"}, http.StatusBadRequest, "M_MISSING_PARAM")
			membFail(alice, room, "invite", map[string]any{"user_id": "not-a-user-id"}, http.StatusBadRequest, "M_INVALID_PARAM")
			membFail(alice, room, "invite", map[string]any{"user_id": "@nobody" + v + ":" + server}, http.StatusNotFound, "M_NOT_FOUND")
			membFail(alice, room, "invite", map[string]any{"user_id": bob.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			// A user of a server that cannot be reached: 502, as Synapse's
			// "Can't connect to server" (without federation: 403, see
			// TestFederationPerformDisabled).
			membFail(alice, room, "invite", map[string]any{"user_id": "@x:other.example"}, http.StatusBadGateway, "M_UNKNOWN")
			// public_chat needs power 50 to invite: bob has 0.
			membFail(bob, room, "invite", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, carol.UserID); got != "" {
				t.Fatalf("refused invite left membership %q", got)
			}
			// A non-member cannot invite either.
			membFail(dave, room, "invite", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			// Unknown room.
			alice.MustFail("POST", testutil.Path(membCS+"/rooms/%s/invite", "!nosuchroom:"+server), map[string]any{"user_id": carol.UserID}, http.StatusNotFound, "M_NOT_FOUND")

			// An invite with a reason; the invitee accepts.
			membPost(alice, room, "invite", map[string]any{"user_id": carol.UserID, "reason": "come along"}, http.StatusOK)
			ev := membMemberEvent(alice, room, carol.UserID)
			content := ev["content"].(map[string]any)
			if content["membership"] != "invite" || content["reason"] != "come along" || ev["sender"] != alice.UserID {
				t.Fatalf("invite event = %v", ev)
			}
			// Like Synapse, the invite carries the invitee's profile.
			if content["displayname"] != membName("carol", v) {
				t.Fatalf("invite content lacks the invitee's display name: %v", content)
			}
			membJoin(carol, room)
			membWantMembership(alice, room, carol.UserID, "join")

			// With the power to invite, bob may invite; in a private room the
			// invitee rejects with /leave.
			priv := membPrivateRoom(alice, v)
			membPost(alice, priv, "invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
			membJoin(bob, priv)
			membSetPower(alice, priv, bob.UserID, 0)
			plContent := membContent(alice, priv, "m.room.power_levels", "")
			plContent["invite"] = 50
			alice.MustDo("PUT", membStatePath(priv, "m.room.power_levels", ""), plContent, http.StatusOK)
			membFail(bob, priv, "invite", map[string]any{"user_id": dave.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			membSetPower(alice, priv, bob.UserID, 50)
			membPost(bob, priv, "invite", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			membWantMembership(alice, priv, dave.UserID, "invite")
			membPost(dave, priv, "leave", map[string]any{"reason": "not for me"}, http.StatusOK)
			ev = membMemberEvent(alice, priv, dave.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "leave" || c["reason"] != "not for me" || ev["sender"] != dave.UserID {
				t.Fatalf("rejection event = %v", ev)
			}
			// After rejecting, the room is invite-only again for dave.
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", priv), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}

// Leaving and forgetting.
func TestMembershipLeaveForget(t *testing.T) {
	srv := testserver.Start(t)
	for _, v := range membVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			room := membPublicRoom(alice, v)
			membJoin(bob, room)

			// Forgetting a room one is joined to is refused.
			membFail(bob, room, "forget", map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")

			membPost(bob, room, "leave", map[string]any{"reason": "bye"}, http.StatusOK)
			ev := membMemberEvent(alice, room, bob.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "leave" || c["reason"] != "bye" || ev["sender"] != bob.UserID {
				t.Fatalf("leave event = %v", ev)
			}
			joined := alice.MustDo("GET", membCS+"/joined_rooms", nil, http.StatusOK)["joined_rooms"].([]any)
			if !slices.Contains(joined, any(room)) {
				t.Fatalf("alice's joined rooms %v lack %s", joined, room)
			}
			bobRooms := bob.MustDo("GET", membCS+"/joined_rooms", nil, http.StatusOK)["joined_rooms"].([]any)
			if slices.Contains(bobRooms, any(room)) {
				t.Fatalf("bob still lists %s as joined after leaving", room)
			}
			membPost(bob, room, "forget", map[string]any{}, http.StatusOK)
			// After forgetting, bob can come back to the public room.
			membJoin(bob, room)
			membWantMembership(alice, room, bob.UserID, "join")
			membFail(bob, room, "forget", map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")

			// Invites and bans: an invited user cannot forget the room
			// (they have not left it), a banned one can.
			priv := membPrivateRoom(alice, v)
			membPost(alice, priv, "invite", map[string]any{"user_id": carol.UserID}, http.StatusOK)
			membFail(carol, priv, "forget", map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")
			membPost(alice, priv, "ban", map[string]any{"user_id": carol.UserID}, http.StatusOK)
			membPost(carol, priv, "forget", map[string]any{}, http.StatusOK)
			membWantMembership(alice, priv, carol.UserID, "ban")

			// Leaving a room one is not in is refused (the auth rules allow
			// a leave only from invite, join or knock) and sends nothing.
			membFail(carol, room, "leave", map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, carol.UserID); got != "" {
				t.Fatalf("refused leave created membership %q", got)
			}
			membPost(bob, room, "leave", map[string]any{}, http.StatusOK)
			before := membMemberEvent(alice, room, bob.UserID)
			membFail(bob, room, "leave", map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if after := membMemberEvent(alice, room, bob.UserID); after["event_id"] != before["event_id"] {
				t.Fatalf("leaving twice sent a second leave event")
			}
		})
	}
}

// Kicks need the kick power level and a target in the room; a kicked user
// can rejoin a public room.
func TestMembershipKick(t *testing.T) {
	srv := testserver.Start(t)
	for _, v := range membVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			dave := membRegister(t, srv, membName("dave", v))
			room := membPublicRoom(alice, v)
			membJoin(bob, room)
			membJoin(carol, room)

			membFail(alice, room, "kick", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
			membFail(alice, room, "kick", map[string]any{"user_id": "carol"}, http.StatusBadRequest, "M_INVALID_PARAM")
			// bob (power 0) may not kick.
			membFail(bob, room, "kick", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			membWantMembership(alice, room, carol.UserID, "join")
			// dave is not in the room.
			membFail(alice, room, "kick", map[string]any{"user_id": dave.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, dave.UserID); got != "" {
				t.Fatalf("kicking a non-member created membership %q", got)
			}
			// A power-0 member cannot kick a higher one either.
			membFail(carol, room, "kick", map[string]any{"user_id": alice.UserID}, http.StatusForbidden, "M_FORBIDDEN")

			membPost(alice, room, "kick", map[string]any{"user_id": carol.UserID, "reason": "too loud"}, http.StatusOK)
			ev := membMemberEvent(alice, room, carol.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "leave" || c["reason"] != "too loud" || ev["sender"] != alice.UserID {
				t.Fatalf("kick event = %v", ev)
			}
			// Kicking again: carol is no longer in the room.
			membFail(alice, room, "kick", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			// A kick is not a ban: carol can rejoin the public room.
			membJoin(carol, room)
			membWantMembership(alice, room, carol.UserID, "join")

			// Kicking an invited user withdraws the invite.
			membPost(alice, room, "invite", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			membPost(alice, room, "kick", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			membWantMembership(alice, room, dave.UserID, "leave")

			// Unknown rooms.
			unknown := "!nosuchroom:" + srv.Config.ServerName
			membFail(alice, unknown, "kick", map[string]any{"user_id": carol.UserID}, http.StatusNotFound, "M_NOT_FOUND")
			membFail(alice, unknown, "ban", map[string]any{"user_id": carol.UserID}, http.StatusNotFound, "M_NOT_FOUND")
			membFail(alice, unknown, "unban", map[string]any{"user_id": carol.UserID}, http.StatusNotFound, "M_NOT_FOUND")

			// With the kick power, bob may kick carol.
			membSetPower(alice, room, bob.UserID, 50)
			membPost(bob, room, "kick", map[string]any{"user_id": carol.UserID}, http.StatusOK)
			membWantMembership(alice, room, carol.UserID, "leave")
		})
	}
}

// Bans and unbans.
func TestMembershipBan(t *testing.T) {
	srv := testserver.Start(t)
	for _, v := range membVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			dave := membRegister(t, srv, membName("dave", v))
			room := membPublicRoom(alice, v)
			membJoin(bob, room)
			membJoin(carol, room)

			membFail(alice, room, "ban", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
			membFail(alice, room, "ban", map[string]any{"user_id": "@"}, http.StatusBadRequest, "M_INVALID_PARAM")
			// bob (power 0) may not ban.
			membFail(bob, room, "ban", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			membWantMembership(alice, room, carol.UserID, "join")

			membPost(alice, room, "ban", map[string]any{"user_id": carol.UserID, "reason": "spam"}, http.StatusOK)
			ev := membMemberEvent(alice, room, carol.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "ban" || c["reason"] != "spam" || ev["sender"] != alice.UserID {
				t.Fatalf("ban event = %v", ev)
			}
			carol.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			membWantMembership(alice, room, carol.UserID, "ban")
			// A banned user cannot be invited.
			membFail(alice, room, "invite", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")

			// Users who never were in the room can be banned too.
			membPost(alice, room, "ban", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			dave.MustFail("POST", testutil.Path(membCS+"/rooms/%s/join", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

			// Unbanning needs the ban power, and a banned target.
			membFail(bob, room, "unban", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_FORBIDDEN")
			membWantMembership(alice, room, carol.UserID, "ban")
			membFail(alice, room, "unban", map[string]any{"user_id": bob.UserID}, http.StatusForbidden, "M_BAD_STATE")
			membWantMembership(alice, room, bob.UserID, "join")
			membFail(alice, room, "unban", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")

			membPost(alice, room, "unban", map[string]any{"user_id": carol.UserID, "reason": "forgiven"}, http.StatusOK)
			ev = membMemberEvent(alice, room, carol.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "leave" || c["reason"] != "forgiven" || ev["sender"] != alice.UserID {
				t.Fatalf("unban event = %v", ev)
			}
			membFail(alice, room, "unban", map[string]any{"user_id": carol.UserID}, http.StatusForbidden, "M_BAD_STATE")
			membJoin(carol, room)
			membWantMembership(alice, room, carol.UserID, "join")

			// With the ban power, bob may ban.
			membSetPower(alice, room, bob.UserID, 50)
			membPost(bob, room, "ban", map[string]any{"user_id": carol.UserID}, http.StatusOK)
			membWantMembership(alice, room, carol.UserID, "ban")
		})
	}
}

// Knocking (room versions 7 and later).
func TestMembershipKnock(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	for _, v := range membKnockVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			aliasName := membName("knockroom", v)
			room := membCreate(alice, map[string]any{
				"preset": "private_chat", "room_version": v, "room_alias_name": aliasName,
				"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}},
			})
			if jr := membContent(alice, room, "m.room.join_rules", ""); jr["join_rule"] != "knock" {
				t.Fatalf("join rules = %v", jr)
			}
			// A knock room cannot be joined directly.
			bob.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

			m := bob.MustDo("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{"reason": "let me in"}, http.StatusOK)
			if m["room_id"] != room {
				t.Fatalf("knock response %v, want room_id %s", m, room)
			}
			ev := membMemberEvent(alice, room, bob.UserID)
			if c := ev["content"].(map[string]any); c["membership"] != "knock" || c["reason"] != "let me in" || ev["sender"] != bob.UserID || c["displayname"] != membName("bob", v) {
				t.Fatalf("knock event = %v", ev)
			}
			// Knocking by alias works too.
			m = carol.MustDo("POST", testutil.Path(membCS+"/knock/%s", "#"+aliasName+":"+server), map[string]any{}, http.StatusOK)
			if m["room_id"] != room {
				t.Fatalf("knock by alias: %v", m)
			}
			membWantMembership(alice, room, carol.UserID, "knock")
			// A knocker still cannot join on their own.
			bob.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

			// The admin accepts the knock with an invite.
			membPost(alice, room, "invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
			membWantMembership(alice, room, bob.UserID, "invite")
			membJoin(bob, room)
			membWantMembership(alice, room, bob.UserID, "join")
			// Knocking when already joined is refused.
			bob.MustFail("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			// A knocker may rescind the knock by leaving.
			membPost(carol, room, "leave", map[string]any{}, http.StatusOK)
			membWantMembership(alice, room, carol.UserID, "leave")
			// A denied knock (kick) leaves the user out.
			carol.MustDo("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusOK)
			membPost(alice, room, "kick", map[string]any{"user_id": carol.UserID}, http.StatusOK)
			membWantMembership(alice, room, carol.UserID, "leave")

			// Public and invite-only rooms do not take knocks.
			dave := membRegister(t, srv, membName("dave", v))
			pub := membPublicRoom(alice, v)
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", pub), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			priv := membPrivateRoom(alice, v)
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", priv), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, priv, dave.UserID); got != "" {
				t.Fatalf("refused knock left membership %q", got)
			}
			// Unknown rooms and aliases.
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", "!nosuchroom:"+server), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", "#nosuchalias:"+server), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
			// Invited users cannot knock (they can join).
			membPost(alice, room, "invite", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			membWantMembership(alice, room, dave.UserID, "invite")
			// Banned users cannot knock.
			membPost(alice, room, "ban", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
	// Room versions before 7 have no knocking, even with a knock join rule.
	for _, v := range []string{"1", "6"} {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			room := membPrivateRoom(alice, v)
			membSetJoinRule(alice, room, map[string]any{"join_rule": "knock"})
			bob.MustFail("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, bob.UserID); got != "" {
				t.Fatalf("knock on v%s left membership %q", v, got)
			}
		})
	}
}

// Restricted joins (v8+) and knock_restricted (v10+).
func TestMembershipRestricted(t *testing.T) {
	srv := testserver.Start(t)
	for _, v := range membKnockVersions {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			carol := membRegister(t, srv, membName("carol", v))
			dave := membRegister(t, srv, membName("dave", v))
			erin := membRegister(t, srv, membName("erin", v))

			space := membCreate(alice, map[string]any{"preset": "public_chat", "room_version": v, "creation_content": map[string]any{"type": "m.space"}})
			membJoin(bob, space)
			membJoin(carol, space)
			allow := []any{map[string]any{"type": "m.room_membership", "room_id": space}}
			// public_chat: inviting needs power 50, so only alice can
			// authorise joins.
			room := membCreate(alice, map[string]any{
				"preset": "public_chat", "room_version": v,
				"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted", "allow": allow}}},
			})
			for _, u := range []*testutil.Client{bob, carol} {
				membJoin(u, room)
				ev := membMemberEvent(alice, room, u.UserID)
				c := ev["content"].(map[string]any)
				if c["membership"] != "join" || c["join_authorised_via_users_server"] != alice.UserID {
					t.Fatalf("restricted join of %s = %v, want join_authorised_via_users_server %s", u.UserID, c, alice.UserID)
				}
			}
			// A member event a client sends (as when it changes a display
			// name) loses any join_authorised_via_users_server of its own,
			// as with Synapse: the servers of the room would refuse the
			// event for want of the named server's signature. (Nothing here
			// sent one before; Complement's TestRestrictedRoomsRemoteJoin did,
			// and the refused event cost hs1 bob's later leave.)
			bob.MustDo("PUT", testutil.Path(membCS+"/rooms/%s/state/m.room.member/%s", room, bob.UserID),
				map[string]any{"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused"}, http.StatusOK)
			if c := membMemberEvent(alice, room, bob.UserID)["content"].(map[string]any); c["displayname"] != "Bobby" || c["join_authorised_via_users_server"] != nil {
				t.Fatalf("display name change = %v, want Bobby without join_authorised_via_users_server", c)
			}
			// dave is not in the space, and cannot name an authoriser himself.
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{"join_authorised_via_users_server": alice.UserID},
				http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, dave.UserID); got != "" {
				t.Fatalf("refused restricted join left membership %q", got)
			}
			// A restricted room does not take knocks.
			dave.MustFail("POST", testutil.Path(membCS+"/knock/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			// An invited user joins without being in the space.
			membPost(alice, room, "invite", map[string]any{"user_id": erin.UserID}, http.StatusOK)
			erin.MustDo("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{"join_authorised_via_users_server": alice.UserID}, http.StatusOK)
			if c := membMemberEvent(alice, room, erin.UserID)["content"].(map[string]any); c["membership"] != "join" || c["join_authorised_via_users_server"] != nil {
				t.Fatalf("invited join to a restricted room = %v, want a join without join_authorised_via_users_server", c)
			}
			// Leaving the space takes the right away.
			membPost(carol, space, "leave", map[string]any{}, http.StatusOK)
			membPost(carol, room, "leave", map[string]any{}, http.StatusOK)
			carol.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			// Malformed allow lists let no one in, members of the space
			// neither.
			frank := membRegister(t, srv, membName("frank", v))
			membJoin(frank, space)
			for _, bad := range []any{[]any{"invalid"}, "invalid"} {
				membSetJoinRule(alice, room, map[string]any{"join_rule": "restricted", "allow": bad})
				frank.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			}

			// knock_restricted: members of the space join, others knock.
			krRoom := membCreate(alice, map[string]any{
				"preset": "public_chat", "room_version": v,
				"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock_restricted", "allow": allow}}},
			})
			membJoin(bob, krRoom)
			if c := membMemberEvent(alice, krRoom, bob.UserID)["content"].(map[string]any); c["join_authorised_via_users_server"] != alice.UserID {
				t.Fatalf("knock_restricted join = %v", c)
			}
			dave.MustFail("POST", testutil.Path(membCS+"/join/%s", krRoom), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			dave.MustDo("POST", testutil.Path(membCS+"/knock/%s", krRoom), map[string]any{}, http.StatusOK)
			membWantMembership(alice, krRoom, dave.UserID, "knock")
			membPost(alice, krRoom, "invite", map[string]any{"user_id": dave.UserID}, http.StatusOK)
			membJoin(dave, krRoom)
			membWantMembership(alice, krRoom, dave.UserID, "join")
		})
	}
}

// Room versions before 8 do not know the restricted join rule: a room that
// sets it cannot be joined, even by members of the allowed room.
func TestMembershipRestrictedUnsupported(t *testing.T) {
	srv := testserver.Start(t)
	for _, v := range []string{"1", "6"} {
		t.Run("v"+v, func(t *testing.T) {
			alice := membRegister(t, srv, membName("alice", v))
			bob := membRegister(t, srv, membName("bob", v))
			space := membPublicRoom(alice, v)
			membJoin(bob, space)
			room := membPublicRoom(alice, v)
			membSetJoinRule(alice, room, map[string]any{"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}})
			bob.MustFail("POST", testutil.Path(membCS+"/join/%s", room), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
			if got := membMembership(alice, room, bob.UserID); got != "" {
				t.Fatalf("refused join left membership %q", got)
			}
		})
	}
}

// A change of display name or avatar updates the user's member event in
// every room they are joined to, and in no other.
func TestMembershipProfilePropagation(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	var joined []string
	for _, v := range membVersions {
		room := membPublicRoom(alice, v)
		membJoin(bob, room)
		joined = append(joined, room)
	}
	left := membPublicRoom(alice, "11")
	membJoin(bob, left)
	membPost(bob, left, "leave", map[string]any{}, http.StatusOK)
	leftBefore := membMemberEvent(alice, left, bob.UserID)
	invited := membPrivateRoom(alice, "11")
	membPost(alice, invited, "invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
	invitedBefore := membMemberEvent(alice, invited, bob.UserID)

	bob.MustDo("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Robert"}, http.StatusOK)
	for _, room := range joined {
		c := membContent(alice, room, "m.room.member", bob.UserID)
		if c["membership"] != "join" || c["displayname"] != "Robert" {
			t.Fatalf("member event in %s after the name change = %v", room, c)
		}
	}
	avatar := "mxc://" + server + "/robert"
	bob.MustDo("PUT", profilePath(bob.UserID, "avatar_url"), map[string]any{"avatar_url": avatar}, http.StatusOK)
	for _, room := range joined {
		c := membContent(alice, room, "m.room.member", bob.UserID)
		if c["membership"] != "join" || c["displayname"] != "Robert" || c["avatar_url"] != avatar {
			t.Fatalf("member event in %s after the avatar change = %v", room, c)
		}
		names := alice.MustDo("GET", testutil.Path(membCS+"/rooms/%s/joined_members", room), nil, http.StatusOK)["joined"].(map[string]any)
		if b, _ := names[bob.UserID].(map[string]any); b["display_name"] != "Robert" || b["avatar_url"] != avatar {
			t.Fatalf("joined_members of %s: %v", room, names)
		}
	}
	// The room bob left and the one he is only invited to are untouched.
	if after := membMemberEvent(alice, left, bob.UserID); after["event_id"] != leftBefore["event_id"] {
		t.Fatalf("member event in a left room changed: %v -> %v", leftBefore, after)
	}
	if after := membMemberEvent(alice, invited, bob.UserID); after["event_id"] != invitedBefore["event_id"] {
		t.Fatalf("invite event changed on a profile change: %v -> %v", invitedBefore, after)
	}
	// Setting the same name again sends nothing new.
	before := membMemberEvent(alice, joined[0], bob.UserID)
	bob.MustDo("PUT", profilePath(bob.UserID, "displayname"), map[string]any{"displayname": "Robert"}, http.StatusOK)
	if after := membMemberEvent(alice, joined[0], bob.UserID); after["event_id"] != before["event_id"] {
		t.Fatalf("an unchanged display name sent a new member event")
	}
	// Removing the avatar removes it from the member events.
	bob.MustDo("DELETE", profilePath(bob.UserID, "avatar_url"), nil, http.StatusOK)
	for _, room := range joined {
		c := membContent(alice, room, "m.room.member", bob.UserID)
		if _, ok := c["avatar_url"]; ok || c["displayname"] != "Robert" {
			t.Fatalf("member event in %s after removing the avatar = %v", room, c)
		}
	}
	// Joining the left room again picks up the new profile.
	membJoin(bob, left)
	if c := membContent(alice, left, "m.room.member", bob.UserID); c["displayname"] != "Robert" {
		t.Fatalf("rejoin content = %v", c)
	}
}
