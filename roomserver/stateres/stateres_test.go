package stateres

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

const (
	alice   = "@alice:a.test"
	bob     = "@bob:a.test"
	charlie = "@charlie:a.test"
	zara    = "@zara:a.test"
	evelyn  = "@evelyn:a.test"
)

// dag builds named events with explicit auth events, as in Synapse's
// state resolution tests.
type dag struct {
	t       *testing.T
	version gomatrixserverlib.RoomVersion
	key     ed25519.PrivateKey
	roomID  string
	ts      time.Time
	byName  map[string]gomatrixserverlib.PDU
	byID    map[string]gomatrixserverlib.PDU
}

func sk(s string) *string { return &s }

func newDAG(t *testing.T, version string) *dag {
	_, key, _ := ed25519.GenerateKey(nil)
	g := &dag{t: t, version: gomatrixserverlib.RoomVersion(version), key: key, ts: time.Unix(1700000000, 0),
		byName: map[string]gomatrixserverlib.PDU{}, byID: map[string]gomatrixserverlib.PDU{}}
	verImpl := gomatrixserverlib.MustGetRoomVersion(g.version)
	create := map[string]any{"room_version": version}
	if verImpl.CreatorInCreateEvent() {
		create["creator"] = alice
	}
	if !verImpl.DomainlessRoomIDs() {
		g.roomID = "!room:a.test"
	}
	c := g.add("CREATE", alice, spec.MRoomCreate, sk(""), create)
	if verImpl.DomainlessRoomIDs() {
		g.roomID = "!" + c.EventID()[1:]
	}
	g.add("IMA", alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "join"}, "CREATE")
	g.add("IPOWER", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100})}, "CREATE", "IMA")
	g.add("IJR", alice, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": "public"}, "CREATE", "IMA", "IPOWER")
	for _, m := range []struct{ name, user string }{{"IMB", bob}, {"IMC", charlie}, {"IMZ", zara}} {
		g.add(m.name, m.user, spec.MRoomMember, sk(m.user), map[string]any{"membership": "join"}, "CREATE", "IJR", "IPOWER")
	}
	return g
}

// users drops the creator from a users map where creators are privileged.
func (g *dag) users(u map[string]int) map[string]int {
	if gomatrixserverlib.MustGetRoomVersion(g.version).PrivilegedCreators() {
		delete(u, alice)
	}
	return u
}

func (g *dag) add(name, sender, typ string, stateKey *string, content any, auth ...string) gomatrixserverlib.PDU {
	g.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(g.version)
	c, _ := json.Marshal(content)
	authIDs := []string{}
	for _, a := range auth {
		if verImpl.DomainlessRoomIDs() && a == "CREATE" {
			continue
		}
		authIDs = append(authIDs, g.byName[a].EventID())
	}
	g.ts = g.ts.Add(time.Second)
	b := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: g.roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: []string{}, AuthEvents: authIDs, Depth: 1,
	})
	ev, err := b.Build(g.ts, "a.test", "ed25519:1", g.key)
	if err != nil {
		g.t.Fatalf("build %s: %v", name, err)
	}
	g.byName[name] = ev
	g.byID[ev.EventID()] = ev
	return ev
}

// state is the initial state with the named events applied in order.
func (g *dag) state(names ...string) []gomatrixserverlib.PDU {
	m := map[tuple]gomatrixserverlib.PDU{}
	for _, n := range append([]string{"CREATE", "IMA", "IPOWER", "IJR", "IMB", "IMC", "IMZ"}, names...) {
		e := g.byName[n]
		m[keyOf(e)] = e
	}
	return values(m)
}

// resolve resolves the states and checks that every named event is in the
// result and that the rest of the expectation holds.
func (g *dag) resolve(sets [][]gomatrixserverlib.PDU, want []string, absent ...string) {
	g.t.Helper()
	got, err := Resolve(Input{Version: g.version, StateSets: sets, Events: g.byID})
	if err != nil {
		g.t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range got {
		ids[e.EventID()] = true
	}
	names := map[string]string{}
	for n, e := range g.byName {
		names[e.EventID()] = n
	}
	var gotNames []string
	for _, e := range got {
		gotNames = append(gotNames, names[e.EventID()])
	}
	for _, w := range want {
		if !ids[g.byName[w].EventID()] {
			g.t.Errorf("%s missing from the resolved state %v", w, gotNames)
		}
	}
	for _, a := range absent {
		if ids[g.byName[a].EventID()] {
			g.t.Errorf("%s is in the resolved state %v", a, gotNames)
		}
	}
}

func forVersions(t *testing.T, f func(t *testing.T, g *dag)) {
	for _, v := range []string{"2", "10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) { f(t, newDAG(t, v)) })
	}
}

func TestBanVsPowerLevels(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		g.add("PA", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "IPOWER", "IMA")
		g.add("MA", alice, spec.MRoomMember, sk(alice), map[string]any{"membership": "join"}, "CREATE", "PA", "IMA", "IJR")
		g.add("MB", alice, spec.MRoomMember, sk(bob), map[string]any{"membership": "ban"}, "CREATE", "PA", "MA", "IMB")
		g.add("PB", bob, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "PA", "IMB")
		g.resolve([][]gomatrixserverlib.PDU{g.state("PA", "MA", "MB"), g.state("PA", "PB")}, []string{"PA", "MA", "MB"}, "PB")
	})
}

func TestTopicBasic(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		g.add("T1", alice, "m.room.topic", sk(""), map[string]any{"topic": "1"}, "CREATE", "IPOWER", "IMA")
		g.add("PA1", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "IPOWER", "IMA")
		g.add("T2", alice, "m.room.topic", sk(""), map[string]any{"topic": "2"}, "CREATE", "PA1", "IMA")
		g.add("PA2", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 0})}, "CREATE", "PA1", "IMA")
		g.add("PB", bob, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "PA1", "IMB")
		g.add("T3", bob, "m.room.topic", sk(""), map[string]any{"topic": "3"}, "CREATE", "PB", "IMB")
		g.resolve([][]gomatrixserverlib.PDU{g.state("T1", "PA1", "T2", "PA2"), g.state("T1", "PA1", "PB", "T3")}, []string{"PA2", "T2"}, "T3", "PB")
	})
}

func TestTopicReset(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		g.add("T1", alice, "m.room.topic", sk(""), map[string]any{"topic": "1"}, "CREATE", "IPOWER", "IMA")
		g.add("PA", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "IPOWER", "IMA")
		g.add("T2", bob, "m.room.topic", sk(""), map[string]any{"topic": "2"}, "CREATE", "PA", "IMB")
		g.add("MB", alice, spec.MRoomMember, sk(bob), map[string]any{"membership": "ban"}, "CREATE", "PA", "IMA", "IMB")
		g.resolve([][]gomatrixserverlib.PDU{g.state("T1", "PA", "T2", "MB"), g.state("T1")}, []string{"T1", "MB", "PA"}, "T2")
	})
}

func TestJoinRuleEvasion(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		g.add("JR", alice, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": "invite"}, "CREATE", "IPOWER", "IMA")
		g.add("ME", evelyn, spec.MRoomMember, sk(evelyn), map[string]any{"membership": "join"}, "CREATE", "IJR", "IPOWER")
		g.resolve([][]gomatrixserverlib.PDU{g.state("JR"), g.state("ME")}, []string{"JR"}, "ME")
	})
}

func TestOfftopicPowerLevels(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		g.add("PA", alice, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50})}, "CREATE", "IPOWER", "IMA")
		g.add("PB", bob, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50, charlie: 50})}, "CREATE", "PA", "IMB")
		g.add("PC", charlie, spec.MRoomPowerLevels, sk(""), map[string]any{"users": g.users(map[string]int{alice: 100, bob: 50, charlie: 0})}, "CREATE", "PB", "IMC")
		g.resolve([][]gomatrixserverlib.PDU{g.state("PA", "PB", "PC"), g.state("PA")}, []string{"PC"}, "PA", "PB")
	})
}

// Unconflicted states resolve to themselves.
func TestNoConflict(t *testing.T) {
	forVersions(t, func(t *testing.T, g *dag) {
		s := g.state()
		got, err := Resolve(Input{Version: g.version, StateSets: [][]gomatrixserverlib.PDU{s, s}, Events: g.byID})
		if err != nil || len(got) != len(s) {
			t.Fatalf("got %d events, %v", len(got), err)
		}
	})
}
