package tests

import (
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Users of a server already in a room accept (or reject) an invite as soon
// as it shows in their sync: the server's own state of the room, on which
// it builds the join or leave, has the invite by then (Complement's
// TestFederationRoomsInvite "... when homeserver is already participating
// in the room").
func TestFederationInviteWhenServerParticipates(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	invite := func(c *testutil.Client) {
		t.Helper()
		roomTInvite(alice, roomID, c.UserID)
		fjTSyncUntil(t, c, "", c.UserID+"'s invite", func(s *syncTResponse) bool { return s.Rooms.Invite[roomID] != nil })
	}
	invite(bob)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", roomID), map[string]any{}, http.StatusOK)
	fedTWaitMembers(t, alice, roomID, alice.UserID, bob.UserID)
	members := []string{alice.UserID, bob.UserID}
	for i := range 3 {
		joiner := testutil.NewClient(t, hs2.URL).Register("joiner"+string(rune('a'+i)), "password")
		invite(joiner)
		joiner.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", roomID), map[string]any{}, http.StatusOK)
		members = append(members, joiner.UserID)
		rejecter := testutil.NewClient(t, hs2.URL).Register("rejecter"+string(rune('a'+i)), "password")
		invite(rejecter)
		rejecter.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
	}
	fedTWaitMembers(t, alice, roomID, members...)
}
