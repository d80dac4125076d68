package tests

import (
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// An initial sync shows, without include_leave, the rooms the user was
// kicked or banned from (as Synapse), not those the user left. The repo
// suite had only syncs with include_leave or incremental ones; Complement
// TestUnbanViaInvite caught it when the ban arrived before its first sync.
func TestSyncInitialShowsKicksAndBans(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	kicked := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	banned := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	left := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	for _, r := range []string{kicked, banned, left} {
		roomTJoin(bob, r)
	}
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/kick", kicked), map[string]any{"user_id": bob.UserID}, 200)
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/ban", banned), map[string]any{"user_id": bob.UserID}, 200)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", left), map[string]any{}, 200)

	s := syncTInitial(bob, "timeout", "0")
	for r, want := range map[string]string{kicked: "leave", banned: "ban"} {
		l := syncTLeave(t, s, r)
		if m := syncTMember(append(syncTList(l.State), l.Timeline.Events...), bob.UserID); m == nil || syncTMembership(m) != want {
			t.Fatalf("room %s in leave without bob's %s: %s", r, want, syncTShort(s.Body))
		}
	}
	syncTNotIn(t, s, left, "join", "leave", "invite")
}
