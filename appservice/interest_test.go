package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// fakeRooms serves current state from a map and counts full-state loads.
type fakeRooms struct {
	state   map[string][]gomatrixserverlib.PDU
	aliases map[string][]string
	loads   int
}

func (f *fakeRooms) QueryCurrentState(_ context.Context, roomID string, tuples ...rsapi.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	st, ok := f.state[roomID]
	if !ok {
		return nil, rsapi.ErrRoomNotFound
	}
	if len(tuples) == 0 {
		f.loads++
		return st, nil
	}
	var out []gomatrixserverlib.PDU
	for _, ev := range st {
		for _, t := range tuples {
			if ev.Type() == t.EventType && ev.StateKey() != nil && *ev.StateKey() == t.StateKey {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

func (f *fakeRooms) QueryEvents(context.Context, []string) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}
func (f *fakeRooms) QueryAliasesForRoom(_ context.Context, roomID string) ([]string, error) {
	return f.aliases[roomID], nil
}
func (f *fakeRooms) QueryRoomsForUser(context.Context, string, ...string) ([]rsapi.MemberInfo, error) {
	return nil, nil
}

var seq int

func pdu(t *testing.T, roomID, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	seq++
	c, _ := json.Marshal(content)
	ev := map[string]any{"room_id": roomID, "sender": sender, "type": typ, "content": json.RawMessage(c), "depth": seq,
		"origin_server_ts": 1000 + seq, "prev_events": []string{}, "auth_events": []string{}, "hashes": map[string]string{"sha256": fmt.Sprint(seq)}}
	if stateKey != nil {
		ev["state_key"] = *stateKey
	}
	js, _ := json.Marshal(ev)
	p, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromTrustedJSON(js, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func str(s string) *string { return &s }

func TestInterest(t *testing.T) {
	ns := func(re string) []asapi.Namespace {
		n, err := asapi.NewNamespace(re, true)
		if err != nil {
			t.Fatal(err)
		}
		return []asapi.Namespace{n}
	}
	svc := &asapi.Service{ID: "b", SenderID: "@bot:hs", Users: ns(`@ghost_.*:hs`), Aliases: ns(`#bridged_.*:hs`), Rooms: ns(`!bridged`)}
	const joined, aliased, plain = "!joined:hs", "!aliased:hs", "!plain:hs"
	rooms := &fakeRooms{state: map[string][]gomatrixserverlib.PDU{
		joined:  {pdu(t, joined, "@ghost_a:hs", "m.room.member", str("@ghost_a:hs"), map[string]string{"membership": "join"})},
		aliased: {pdu(t, aliased, "@u:hs", "m.room.canonical_alias", str(""), map[string]any{"alt_aliases": []string{"#other:hs", "#bridged_x:hs"}})},
		plain:   {},
	}, aliases: map[string][]string{}}
	in := newInterest([]*asapi.Service{svc}, "hs", rooms)
	ctx := context.Background()
	wants := func(roomID string, ev gomatrixserverlib.PDU) bool {
		t.Helper()
		got, err := in.servicesFor(ctx, roomID, ev, true)
		if err != nil {
			t.Fatal(err)
		}
		return len(got) == 1
	}
	msg := func(roomID, sender string) gomatrixserverlib.PDU {
		return pdu(t, roomID, sender, "m.room.message", nil, map[string]string{"body": "x"})
	}
	for _, c := range []struct {
		name   string
		roomID string
		ev     gomatrixserverlib.PDU
		want   bool
	}{
		{"a room where a ghost is joined", joined, msg(joined, "@u:hs"), true},
		{"a room with an alt alias in the namespace", aliased, msg(aliased, "@u:hs"), true},
		{"a room of no interest", plain, msg(plain, "@u:hs"), false},
		{"the bot's message", plain, msg(plain, "@bot:hs"), true},
		{"a ghost's message", plain, msg(plain, "@ghost_b:hs"), true},
		{"an invite of a ghost", plain, pdu(t, plain, "@u:hs", "m.room.member", str("@ghost_c:hs"), map[string]string{"membership": "invite"}), true},
		{"a room ID in the namespace", "!bridged:hs", msg("!bridged:hs", "@u:hs"), true},
		{"a non-member event whose state key looks like a ghost", plain, pdu(t, plain, "@u:hs", "m.custom", str("@ghost_d:hs"), map[string]string{}), false},
	} {
		if got := wants(c.roomID, c.ev); got != c.want {
			t.Errorf("%s: interested %v, want %v", c.name, got, c.want)
		}
	}

	// The ghost leaving updates the cached members without a reload.
	loads := rooms.loads
	leave := pdu(t, joined, "@ghost_a:hs", "m.room.member", str("@ghost_a:hs"), map[string]string{"membership": "leave"})
	in.observe(joined, leave, []string{leave.EventID()})
	if wants(joined, msg(joined, "@u:hs")) {
		t.Error("interested in a room the ghost left")
	}
	join := pdu(t, joined, "@ghost_e:hs", "m.room.member", str("@ghost_e:hs"), map[string]string{"membership": "join"})
	in.observe(joined, join, []string{join.EventID()})
	if !wants(joined, msg(joined, "@u:hs")) {
		t.Error("not interested in a room another ghost joined")
	}
	if rooms.loads != loads {
		t.Errorf("%d reloads of the members, want none", rooms.loads-loads)
	}
	// A state change beyond the event's own (a state resolution) reloads.
	other := pdu(t, joined, "@u:hs", "m.room.topic", str(""), map[string]string{"topic": "t"})
	in.observe(joined, other, []string{other.EventID(), "$reset"})
	rooms.state[joined] = nil
	if wants(joined, msg(joined, "@u:hs")) || rooms.loads != loads+1 {
		t.Errorf("after a state reset: members not reloaded (%d loads)", rooms.loads-loads)
	}
	// A room the roomserver does not know has no members.
	if wants("!unknown:hs", msg("!unknown:hs", "@u:hs")) {
		t.Error("interested in an unknown room")
	}
}
