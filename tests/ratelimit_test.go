package tests

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// rateTServer starts a server with rate limiting on, every class generous
// but those configure sets.
func rateTServer(t *testing.T, configure func(rl *config.RateLimiting)) *testserver.Server {
	return testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		generous := config.Rate{PerSecond: 100, Burst: 1000}
		rl := &c.RateLimiting
		rl.Enabled = true
		rl.Login, rl.FailedLogin, rl.Registration, rl.RegistrationTokenValidity = generous, generous, generous, generous
		rl.Message, rl.RoomCreation = generous, generous
		rl.Joins = config.JoinRates{Local: generous, Remote: generous}
		rl.Invites = config.InviteRates{PerRoom: generous, PerUser: generous, PerIssuer: generous}
		configure(rl)
	}})
}

// slow is a bucket of burst n that takes minutes to refill.
func slow(n int) config.Rate { return config.Rate{PerSecond: 0.001, Burst: n} }

// rateTRegister registers localpart the way clients do: an availability
// check, the UIA challenge, then the dummy stage.
func rateTRegister(c *testutil.Client, localpart string) *testutil.Response {
	c.T.Helper()
	c.Do("GET", "/_matrix/client/v3/register/available?username="+localpart, nil)
	body := map[string]any{"username": localpart, "password": "pw"}
	r := c.Do("POST", uiaRegisterPath, body)
	if r.Status != http.StatusUnauthorized {
		return r
	}
	_, _, session := uiaChallenge(c.T, r)
	body["auth"] = uiaDummyAuth(session)
	return c.Do("POST", uiaRegisterPath, body)
}

// Registration counts completed registrations per address, not the rounds
// of UIA before one (before, a second user registering with a burst of 3
// got 429 from the first's four requests); the 429 carries retry_after_ms
// and Retry-After.
func TestRateLimitRegistrationCountsCompleted(t *testing.T) {
	srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Registration = slow(2) })
	c := srv.Client()
	for i := range 2 {
		if r := rateTRegister(c, fmt.Sprintf("user%d", i)); r.Status != http.StatusOK {
			t.Fatalf("registration %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	acctCheckLimited(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "third", "password": "pw"}))
	acctCheckLimited(t, c.Do("POST", uiaRegisterPath+"?kind=guest", map[string]any{}))
}

// Rooms created per user are limited (Synapse's rc_room_creation); a
// refused createRoom does not count.
func TestRateLimitRoomCreation(t *testing.T) {
	srv := rateTServer(t, func(rl *config.RateLimiting) { rl.RoomCreation = slow(2) })
	alice := roomTUser(t, srv, "alice")
	alice.MustFail("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "nope"}, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	roomTCreate(alice, map[string]any{})
	roomTCreate(alice, map[string]any{})
	acctCheckLimited(t, alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{}))
	// Per user: another user still creates rooms.
	roomTCreate(roomTUser(t, srv, "bob"), map[string]any{})
}

// Joins per user are limited (rc_joins.local); joining a room one is
// already in changes nothing and is not limited.
func TestRateLimitJoins(t *testing.T) {
	srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Joins.Local, rl.Joins.Remote = slow(2), slow(1) })
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	var rooms []string
	for range 3 {
		rooms = append(rooms, roomTCreate(alice, map[string]any{"preset": "public_chat"}))
	}
	roomTJoin(bob, rooms[0])
	roomTJoin(bob, rooms[1])
	acctCheckLimited(t, bob.Do("POST", testutil.Path("/_matrix/client/v3/rooms/%s/join", rooms[2]), map[string]any{}))
	acctCheckLimited(t, bob.Do("POST", testutil.Path("/_matrix/client/v3/join/%s", rooms[2]), map[string]any{}))
	roomTJoin(bob, rooms[0])

	// A join through another server (rc_joins.remote) counts whether or
	// not that server answers; the next is refused before trying.
	remote := testutil.Path("/_matrix/client/v3/join/%s", "!nowhere:unreachable.invalid")
	if r := alice.Do("POST", remote, map[string]any{}); r.Status == http.StatusTooManyRequests || r.Status == http.StatusOK {
		t.Fatalf("first remote join: %d %s", r.Status, r.Body)
	}
	acctCheckLimited(t, alice.Do("POST", remote, map[string]any{}))
}

// Invites are limited per room, per invitee and per inviter (rc_invites).
func TestRateLimitInvites(t *testing.T) {
	invite := func(c *testutil.Client, room, user string) *testutil.Response {
		return c.Do("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", room), map[string]any{"user_id": user})
	}
	ok := func(t *testing.T, r *testutil.Response) {
		t.Helper()
		if r.Status != http.StatusOK {
			t.Fatalf("invite: %d %s", r.Status, r.Body)
		}
	}
	t.Run("per room", func(t *testing.T) {
		srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Invites.PerRoom = slow(2) })
		alice, bob := roomTUser(t, srv, "alice"), roomTUser(t, srv, "bob")
		room := roomTCreate(alice, map[string]any{})
		roomTInvite(alice, room, bob.UserID)
		roomTJoin(bob, room)
		ok(t, invite(alice, room, roomTUser(t, srv, "carol").UserID))
		acctCheckLimited(t, invite(bob, room, roomTUser(t, srv, "dan").UserID))
		ok(t, invite(alice, roomTCreate(alice, map[string]any{}), roomTUser(t, srv, "erin").UserID))
	})
	t.Run("per invitee", func(t *testing.T) {
		srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Invites.PerUser = slow(1) })
		alice, bob, carol := roomTUser(t, srv, "alice"), roomTUser(t, srv, "bob"), roomTUser(t, srv, "carol")
		ok(t, invite(alice, roomTCreate(alice, map[string]any{}), carol.UserID))
		acctCheckLimited(t, invite(bob, roomTCreate(bob, map[string]any{}), carol.UserID))
	})
	t.Run("per inviter", func(t *testing.T) {
		srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Invites.PerIssuer = slow(1) })
		alice := roomTUser(t, srv, "alice")
		room := roomTCreate(alice, map[string]any{})
		ok(t, invite(alice, room, roomTUser(t, srv, "bob").UserID))
		acctCheckLimited(t, invite(alice, roomTCreate(alice, map[string]any{}), roomTUser(t, srv, "carol").UserID))
	})
	// createRoom's invite list counts too, checked before the room is made
	// (failed before: a room created with invitees invited past every
	// limit).
	t.Run("createRoom invite list", func(t *testing.T) {
		srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Invites.PerIssuer = slow(2) })
		alice, bob, carol := roomTUser(t, srv, "alice"), roomTUser(t, srv, "bob"), roomTUser(t, srv, "carol")
		create := func(invite ...string) *testutil.Response {
			return alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": invite})
		}
		acctCheckLimited(t, create(bob.UserID, carol.UserID, roomTUser(t, srv, "dan").UserID))
		ok(t, create(bob.UserID, carol.UserID))
		acctCheckLimited(t, create(bob.UserID))
		// The refused requests created nothing.
		rooms := alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)["joined_rooms"].([]any)
		if len(rooms) != 1 {
			t.Fatalf("alice is in %d rooms, want 1", len(rooms))
		}
	})
}

// Logging out is never limited, even once the user's limits are spent.
func TestRateLimitLogoutNeverLimited(t *testing.T) {
	srv := rateTServer(t, func(rl *config.RateLimiting) { rl.Login, rl.Message = slow(4), slow(1) })
	alice := roomTUser(t, srv, "alice")
	var devices []*testutil.Client
	for range 4 {
		devices = append(devices, alice.Login(alice.UserID, "pw"))
	}
	acctCheckLimited(t, srv.Client().Do("POST", acctLogin, acctLoginBody(alice.UserID, "pw")))
	room := roomTCreate(alice, map[string]any{})
	acctCheckLimited(t, alice.Do("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/t1", room), map[string]any{"body": "x"}))
	for i, d := range []*testutil.Client{devices[0], devices[1], devices[2], alice} {
		if r := d.Do("POST", "/_matrix/client/v3/logout", map[string]any{}); r.Status != http.StatusOK {
			t.Fatalf("logout %d: %d %s", i, r.Status, r.Body)
		}
	}
	if r := devices[3].Do("POST", "/_matrix/client/v3/logout/all", map[string]any{}); r.Status != http.StatusOK {
		t.Fatalf("logout/all: %d %s", r.Status, r.Body)
	}
}
