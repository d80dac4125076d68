package tests

import (
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const (
	invitePermissionType         = "m.invite_permission_config"
	invitePermissionUnstableType = "org.matrix.msc4155.invite_permission_config"
)

// setAccountData puts global account data and waits until /sync has it.
func setAccountData(t *testing.T, c *testutil.Client, typ string, content map[string]any) {
	t.Helper()
	since := syncTInitial(c).NextBatch
	c.MustDo("PUT", accountDataPath(c.UserID, typ), content, http.StatusOK)
	for {
		e, next := accountDataIn(t, c, since, "", typ)
		if e == nil {
			t.Fatalf("sync never showed %s", typ)
		}
		if sameJSON(t, e["content"].(map[string]any), content) {
			return
		}
		since = next
	}
}

// inviteTo invites invitee to a new private room of inviter and returns
// the room and the invite's status.
func inviteTo(t *testing.T, inviter *testutil.Client, invitee string) (string, *testutil.Response) {
	t.Helper()
	room := inviter.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}, http.StatusOK)["room_id"].(string)
	return room, inviter.Do("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", room), map[string]any{"user_id": invitee})
}

// Invite permission (invite_permission.md, v1.18): default_action block
// refuses every invite with 403 M_INVITE_BLOCKED (POST /invite, a member
// state event, createRoom's list leaving the invitee out), an invite made
// before the block is hidden from /sync, and removing default_action lets
// invites through again.
func TestInvitePermissionBlockAll(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	earlier, r := inviteTo(t, bob, alice.UserID)
	if r.Status != http.StatusOK {
		t.Fatalf("invite before the block: %d %s", r.Status, r.Body)
	}
	setAccountData(t, alice, invitePermissionType, map[string]any{"default_action": "block"})

	room, r := inviteTo(t, bob, alice.UserID)
	if r.Status != http.StatusForbidden || r.JSON(t)["errcode"] != "M_INVITE_BLOCKED" {
		t.Fatalf("blocked invite: %d %s", r.Status, r.Body)
	}
	bob.MustFail("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", room, alice.UserID),
		map[string]any{"membership": "invite"}, http.StatusForbidden, "M_INVITE_BLOCKED")
	created := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{alice.UserID}}, http.StatusOK)["room_id"].(string)
	if m := fedTMembership(bob, created, alice.UserID); m != "404" {
		t.Fatalf("createRoom invited alice though she blocks invites: membership %q", m)
	}
	if s := syncTInitial(alice); len(s.Rooms.Invite) != 0 {
		t.Fatalf("alice's sync shows invites (the one of %s came before the block): %s", earlier, syncTShort(s.Body))
	}
	// Other state of the room is unaffected: the earlier invite is there.
	if m := fedTMembership(bob, earlier, alice.UserID); m != "invite" {
		t.Fatalf("the earlier invite's membership is %q", m)
	}

	setAccountData(t, alice, invitePermissionType, map[string]any{})
	if _, r := inviteTo(t, bob, alice.UserID); r.Status != http.StatusOK {
		t.Fatalf("invite after unblocking: %d %s", r.Status, r.Body)
	}
	if s := syncTInitial(alice); s.Rooms.Invite[earlier] == nil || len(s.Rooms.Invite) != 2 {
		t.Fatalf("after unblocking, alice's invites: %s", syncTShort(s.Body))
	}
}

// MSC4155's lists, across two servers: a blocked user or server is
// refused on the invitee's server, which the inviter's server passes on
// as 403 M_INVITE_BLOCKED; an ignored one's invite is made but not shown;
// an allowed user beats a blocked server.
func TestInvitePermissionLists(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "pw")
	carol := testutil.NewClient(t, hs1.URL).Register("carol", "pw")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "pw")
	evil := testutil.NewClient(t, hs2.URL).Register("evil", "pw")
	setAccountData(t, alice, invitePermissionUnstableType, map[string]any{
		"allowed_users": []string{bob.UserID}, "blocked_servers": []string{"hs2.*"}, "ignored_users": []string{"@car?l:*"},
	})

	for _, tc := range []struct {
		name    string
		inviter *testutil.Client
		status  int
		shown   bool
	}{
		{"allowed user of a blocked server", bob, http.StatusOK, true},
		{"blocked server", evil, http.StatusForbidden, false},
		{"ignored local user", carol, http.StatusOK, false},
	} {
		room, r := inviteTo(t, tc.inviter, alice.UserID)
		if r.Status != tc.status {
			t.Fatalf("%s: invite %d %s, want %d", tc.name, r.Status, r.Body, tc.status)
		}
		if tc.status == http.StatusForbidden && r.JSON(t)["errcode"] != "M_INVITE_BLOCKED" {
			t.Fatalf("%s: %s, want M_INVITE_BLOCKED", tc.name, r.Body)
		}
		if tc.shown {
			fedTEventually(t, tc.name+": the invite in alice's sync", func() string {
				if syncTInitial(alice).Rooms.Invite[room] == nil {
					return "not there yet"
				}
				return ""
			})
		} else if s := syncTInitial(alice); s.Rooms.Invite[room] != nil {
			t.Fatalf("%s: alice's sync shows the invite", tc.name)
		}
	}
}
