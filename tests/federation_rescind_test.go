package tests

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// The fake invites a local user, then withdraws the invite: the inviter's
// leave comes by /send to hs1, which is not in the room, and /sync shows
// the room left (as Synapse; Complement TestFederationRoomsInvite
// "Inviter user can rescind invite over federation"). A leave from anyone
// else is refused, since hs1 has no state to authorise it against. The
// repo suite had only rejections by the invitee, never a rescission.
func TestFederationRescindInvite(t *testing.T) {
	f, hs, _ := pfTStart(t)
	alice := testutil.NewClient(t, hs.URL).Register("alice", "alice-password")
	r := f.newRoom("10", "invite")
	f.mu.Lock()
	inv := r.send(pfTCreator, spec.MRoomMember, pfTKey(alice.UserID), map[string]any{"membership": "invite"})
	create := r.state[[2]string{spec.MRoomCreate, ""}]
	// A moderator of the fake's, who did not send the invite.
	mod := "@mod:fake.test"
	r.send(pfTCreator, spec.MRoomMember, pfTKey(mod), map[string]any{"membership": "join"})
	f.mu.Unlock()
	since := syncTInitial(alice, "timeout", "0").NextBatch
	status, body, err := f.rm.Do("PUT", "hs1.test", "/_matrix/federation/v2/invite/"+r.id+"/"+inv.EventID(),
		map[string]any{"room_version": "10", "event": inv, "invite_room_state": []json.RawMessage{create.JSON()}})
	if err != nil || status != 200 {
		t.Fatalf("invite to hs1: %d %s %v", status, body, err)
	}
	testutil.Eventually(t, 10*time.Second, "the invite in /sync", func() bool {
		return syncTSince(alice, since).Rooms.Invite[r.id] != nil
	})
	send := func(sender string) string {
		t.Helper()
		f.mu.Lock()
		ev := r.send(sender, spec.MRoomMember, pfTKey(alice.UserID), map[string]any{"membership": "leave"})
		r.state[[2]string{spec.MRoomMember, alice.UserID}] = inv // each leave withdraws the invite
		f.mu.Unlock()
		res, err := f.rm.Send("hs1.test", fmt.Sprintf("rescind%d", time.Now().UnixNano()), []json.RawMessage{ev.JSON()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.PDUs[ev.EventID()].Error
	}
	if e := send(mod); e == "" {
		t.Fatal("a leave by someone other than the inviter was taken")
	}
	if s := syncTInitial(alice, "timeout", "0"); s.Rooms.Invite[r.id] == nil || s.Rooms.Leave[r.id] != nil {
		t.Fatalf("after the moderator's leave alice's sync: %s", syncTShort(s.Body))
	}
	if e := send(pfTCreator); e != "" {
		t.Fatalf("the inviter's leave: %s", e)
	}
	filter := syncTFilter(map[string]any{"room": map[string]any{"include_leave": true}})
	testutil.Eventually(t, 10*time.Second, "the room left in /sync", func() bool {
		s := syncTSince(alice, since, "filter", filter)
		return s.Rooms.Leave[r.id] != nil && s.Rooms.Invite[r.id] == nil
	})
	if s := syncTInitial(alice, "timeout", "0"); s.Rooms.Invite[r.id] != nil {
		t.Fatalf("alice is still invited: %s", syncTShort(s.Body))
	}
}
