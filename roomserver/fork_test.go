package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
)

// remote builds events as another server would.
type remote struct {
	t       testing.TB
	name    spec.ServerName
	key     ed25519.PrivateKey
	version gomatrixserverlib.RoomVersion
	roomID  string
	ts      time.Time
}

func newRemote(t testing.TB, version, roomID string) *remote {
	_, key, _ := ed25519.GenerateKey(nil)
	return &remote{t: t, name: "remote.test", key: key, version: gomatrixserverlib.RoomVersion(version), roomID: roomID, ts: time.Now()}
}

// event builds an event with explicit prev and auth events.
func (rm *remote) event(sender, typ string, stateKey *string, content any, prevs, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	rm.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(rm.version)
	c, _ := json.Marshal(content)
	depth := int64(0)
	prevIDs := []string{}
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.EventID())
		depth = max(depth, p.Depth())
	}
	authIDs := []string{}
	for _, a := range auth {
		if verImpl.DomainlessRoomIDs() && a.Type() == spec.MRoomCreate {
			continue
		}
		authIDs = append(authIDs, a.EventID())
	}
	rm.ts = rm.ts.Add(time.Millisecond)
	b := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: rm.roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: prevIDs, AuthEvents: authIDs, Depth: depth + 1,
	})
	ev, err := b.Build(rm.ts, rm.name, "ed25519:r", rm.key)
	if err != nil {
		rm.t.Fatalf("build %s: %v", typ, err)
	}
	return ev
}

func (h *harness) inputEvents(roomID string, evs ...gomatrixserverlib.PDU) {
	h.t.Helper()
	raws := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		raws[i] = e.JSON()
	}
	if _, err := h.in.Input(context.Background(), &api.InputMessage{RoomID: roomID, Events: raws}); err != nil {
		h.t.Fatalf("input events: %v", err)
	}
}

func (h *harness) state(roomID string, typ, key string) gomatrixserverlib.PDU {
	h.t.Helper()
	pdus, err := h.rs.QueryCurrentState(context.Background(), roomID, api.StateKeyTuple{EventType: typ, StateKey: key})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(pdus) == 0 {
		return nil
	}
	return pdus[0]
}

func (h *harness) events(ids ...string) []gomatrixserverlib.PDU {
	h.t.Helper()
	evs, err := h.rs.QueryEvents(context.Background(), ids)
	if err != nil || len(evs) != len(ids) {
		h.t.Fatalf("events %v: %v", ids, err)
	}
	return evs
}

// forkedRoom creates a room (alice local, carol remote and joined) and
// returns it with the events carol's server needs to build on.
func forkedRoom(t testing.TB, h *harness, version string) (roomID string, rm *remote, base gomatrixserverlib.PDU, auth []gomatrixserverlib.PDU, carol string) {
	alice := "@alice:" + testServer
	carol = "@carol:remote.test"
	roomID = h.createRoom(version, alice, "public")
	rm = newRemote(t, version, roomID)
	create, pl, jr := h.state(roomID, spec.MRoomCreate, ""), h.state(roomID, spec.MRoomPowerLevels, ""), h.state(roomID, spec.MRoomJoinRules, "")
	latest, _ := h.rs.QueryLatestEvents(context.Background(), roomID)
	join := rm.event(carol, spec.MRoomMember, sk(carol), map[string]any{"membership": "join"}, h.events(latest...), []gomatrixserverlib.PDU{create, pl, jr})
	h.inputEvents(roomID, join)
	// carol may send state (power 50).
	users := map[string]int{carol: 50}
	if !gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)).PrivilegedCreators() {
		users[alice] = 100
	}
	plID := h.mustSend(roomID, proto(alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": users, "state_default": 50, "redact": 50, "ban": 50, "kick": 50}))
	pl = h.events(plID)[0]
	return roomID, rm, pl, []gomatrixserverlib.PDU{create, pl, join}, carol
}

func TestForksAreResolved(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		for _, v := range []string{"1", "6", "10", "11", "12"} {
			t.Run("v"+v, func(t *testing.T) {
				roomID, rm, base, auth, carol := forkedRoom(t, h, v)
				// Two branches from the same parent, each setting state.
				a := rm.event(carol, "m.fork", sk("a"), map[string]any{"v": 1}, []gomatrixserverlib.PDU{base}, auth)
				b := rm.event(carol, "m.fork", sk("b"), map[string]any{"v": 2}, []gomatrixserverlib.PDU{base}, auth)
				// A conflict: the later topic wins (same power, mainline).
				t1 := rm.event(carol, "m.room.topic", sk(""), map[string]any{"topic": "one"}, []gomatrixserverlib.PDU{a}, auth)
				t2 := rm.event(carol, "m.room.topic", sk(""), map[string]any{"topic": "two"}, []gomatrixserverlib.PDU{b}, auth)
				h.inputEvents(roomID, a, b, t1, t2)
				latest, _ := h.rs.QueryLatestEvents(context.Background(), roomID)
				if len(latest) != 2 {
					t.Fatalf("latest = %v, want both branches", latest)
				}
				if h.state(roomID, "m.fork", "a") == nil || h.state(roomID, "m.fork", "b") == nil {
					t.Fatal("state of one branch lost")
				}
				got := h.state(roomID, "m.room.topic", "")
				switch {
				case got == nil:
					t.Fatal("no topic after resolution")
				case v == "1" && got.EventID() != t1.EventID() && got.EventID() != t2.EventID():
					t.Fatalf("topic %s is neither branch's", got.EventID())
				case v != "1" && got.EventID() != t2.EventID():
					// v2: same power, so mainline order, then the later timestamp
					t.Fatalf("topic = %s, want the later one %s", got.EventID(), t2.EventID())
				}
				// A local event merges the branches.
				merge := h.mustSend(roomID, proto("@alice:"+testServer, "m.room.message", nil, map[string]any{"body": "merge"}))
				evs := h.events(merge)
				if len(evs[0].PrevEventIDs()) != 2 {
					t.Fatalf("merge prevs %v", evs[0].PrevEventIDs())
				}
				if latest, _ := h.rs.QueryLatestEvents(context.Background(), roomID); len(latest) != 1 || latest[0] != merge {
					t.Fatalf("latest after merge = %v", latest)
				}
			})
		}
	})
}

// A ban on one branch beats the banned user's state on the other: power
// events are resolved first.
func TestBanBeatsConcurrentState(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		for _, v := range []string{"10", "12"} {
			t.Run("v"+v, func(t *testing.T) {
				roomID, rm, base, auth, carol := forkedRoom(t, h, v)
				// carol's branch: she sets a topic.
				topic := rm.event(carol, "m.room.topic", sk(""), map[string]any{"topic": "mine"}, []gomatrixserverlib.PDU{base}, auth)
				h.inputEvents(roomID, topic)
				// Meanwhile, alice bans carol from the common parent.
				alice := "@alice:" + testServer
				ban := rm.event(alice, spec.MRoomMember, sk(carol), map[string]any{"membership": "ban"}, []gomatrixserverlib.PDU{base},
					[]gomatrixserverlib.PDU{auth[0], auth[1], auth[2], h.state(roomID, spec.MRoomMember, alice)})
				h.inputEvents(roomID, ban)
				if got := h.state(roomID, spec.MRoomMember, carol); got == nil || got.EventID() != ban.EventID() {
					t.Fatalf("carol's membership = %v, want the ban", got)
				}
				if got := h.state(roomID, "m.room.topic", ""); got != nil {
					t.Fatalf("the banned user's topic %s survived resolution", got.EventID())
				}
				m, _ := h.rs.QueryMembership(context.Background(), roomID, carol)
				if m.Membership != "ban" {
					t.Fatalf("membership table says %q", m.Membership)
				}
			})
		}
	})
}

// Events failing auth are stored as rejected and change nothing.
func TestRejectedEvents(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		roomID, rm, base, auth, carol := forkedRoom(t, h, "10")
		// carol (power 0) may not change the power levels.
		pl := rm.event(carol, spec.MRoomPowerLevels, sk(""), map[string]any{"users": map[string]int{carol: 100}}, []gomatrixserverlib.PDU{base}, auth)
		h.inputEvents(roomID, pl)
		if got := h.state(roomID, spec.MRoomPowerLevels, ""); got.EventID() == pl.EventID() {
			t.Fatal("an unauthorised power levels event entered the state")
		}
		if evs, _ := h.rs.QueryEvents(context.Background(), []string{pl.EventID()}); len(evs) != 0 {
			t.Fatal("a rejected event is served")
		}
		latest, _ := h.rs.QueryLatestEvents(context.Background(), roomID)
		if len(latest) != 1 || latest[0] != base.EventID() {
			t.Fatalf("latest = %v: a rejected event became an extremity", latest)
		}
	})
}
