package tests

import (
	"context"
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// These follow the flow of the spec and Synapse for events pushed with
// /send (Complement TestOutboundFederationIgnoresMissingEventWithBadJSON,
// TestOutboundFederationEventSizeGetMissingEvents, TestCorruptedAuthChain,
// TestInboundFederationRejectsEventsWithRejectedAuthEvents). The repo suite
// had missed them: TestFederationIngestGaps checked only that the events
// got in, not which requests hs1 made nor what it did when a server
// withheld part of a gap.

// A pushed event whose prev events get_missing_events does not give is
// refused, without asking for the state (/state_ids) the pushing server
// would then decide.
func TestFederationGapPushedEventNeedsItsPrevEvents(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)

	withheld := r.message(fuser, []gomatrixserverlib.PDU{join}, "withheld")
	r.hidden[withheld.EventID()] = true
	// And one that get_missing_events gives with a bad signature.
	_, otherKey, _ := ed25519.GenerateKey(nil)
	forged := r.build(otherKey, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "forged"},
		[]gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	for _, prev := range []gomatrixserverlib.PDU{withheld, forged} {
		sent := r.message(fuser, []gomatrixserverlib.PDU{prev}, "sent on "+gjson.GetBytes(prev.Content(), "body").Str)
		if errs := r.send(sent); errs[sent.EventID()] == "" {
			t.Fatalf("an event on a %s prev event was accepted", gjson.GetBytes(prev.Content(), "body").Str)
		}
	}
	if len(r.requests("gme")) != 2 {
		t.Fatalf("hs1 asked %v", r.asked)
	}
	if got := r.requests("state_ids"); len(got) != 0 {
		t.Fatalf("hs1 asked for the state: %v", got)
	}
	if got := ingTBodies(r.alice, r.roomID); len(got) != 0 {
		t.Fatalf("alice sees %v", got)
	}
}

// A fetched event whose prev event is still missing gets the state after
// that prev event: /state_ids at it, and the event itself (a state event
// here, which must end up in the state).
func TestFederationGapStateAfterMissingPrev(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)

	rename := r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": "Far"},
		[]gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	r.hidden[rename.EventID()] = true
	auth := []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), rename}
	m1 := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "one"}, []gomatrixserverlib.PDU{rename}, auth)
	m2 := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "two"}, []gomatrixserverlib.PDU{m1}, auth)
	if errs := r.send(m2); errs[m2.EventID()] != "" {
		t.Fatalf("event after a gap: %v", errs)
	}
	if got := r.requests("state_ids"); !slices.Equal(got, []string{"state_ids " + rename.EventID()}) {
		t.Fatalf("hs1 asked for the state %v, want at the missing prev event", got)
	}
	if got := ingTBodies(r.alice, r.roomID); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("alice sees %v", got)
	}
	if m := r.current(spec.MRoomMember, fuser); m == nil || m.EventID() != rename.EventID() {
		t.Fatal("the missing prev event is not in the state after it")
	}
}

// Events on a rejected event need no fetching (it is in the DAG, with the
// state before it), and events whose auth events are rejected are
// rejected, outliers too.
func TestFederationRejectedAuthAndPrevEvents(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	create, pl, jr := r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomJoinRules, "")

	// fuser has no power to change the power levels: rejected.
	badPL := r.build(nil, fuser, spec.MRoomPowerLevels, new(string), map[string]any{"users": map[string]any{fuser: 100}},
		[]gomatrixserverlib.PDU{join}, []gomatrixserverlib.PDU{create, pl, join})
	// Rejected events are handled: no error in the response (as Synapse).
	if errs := r.send(badPL); errs[badPL.EventID()] != "" || r.kind(badPL) != rsapi.KindRejected {
		t.Fatalf("a power levels event without power: %v, kind %v", errs, r.kind(badPL))
	}
	// An outlier authorised by the rejected event, withheld from /send.
	outlier := r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": "O"},
		[]gomatrixserverlib.PDU{badPL}, []gomatrixserverlib.PDU{create, jr, badPL, join})
	r.hidden[outlier.EventID()] = true
	withOutlier := []gomatrixserverlib.PDU{create, pl, join, outlier}
	x := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}, []gomatrixserverlib.PDU{badPL}, withOutlier)
	y := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "y"}, []gomatrixserverlib.PDU{x}, withOutlier)
	sentinel := r.message(fuser, []gomatrixserverlib.PDU{y}, "sentinel")
	errs := r.send(x, y, sentinel)
	if errs[x.EventID()] != "" || errs[y.EventID()] != "" || errs[sentinel.EventID()] != "" {
		t.Fatalf("results %v", errs)
	}
	if got := r.requests("gme"); len(got) != 0 {
		t.Fatalf("hs1 asked for missing events %v: none were missing", r.asked)
	}
	kinds, _ := r.hs.Rooms.QueryEventKinds(context.Background(), []string{outlier.EventID(), x.EventID(), y.EventID(), sentinel.EventID()})
	if kinds[outlier.EventID()] != rsapi.KindRejectedOutlier || kinds[x.EventID()] != rsapi.KindRejected ||
		kinds[y.EventID()] != rsapi.KindRejected || kinds[sentinel.EventID()] != rsapi.KindNormal {
		t.Fatalf("kinds %v", kinds)
	}
	if got := ingTBodies(r.alice, r.roomID); !slices.Equal(got, []string{"sentinel"}) {
		t.Fatalf("alice sees %v", got)
	}
	if st := roomTEventStatus(r.alice, r.roomID, outlier.EventID()); st != 404 {
		t.Fatalf("the rejected outlier is served: %d", st)
	}
}

// State events the server does not give are left out, and the events
// whose auth chain they break are rejected, not stored as valid: a member
// event chain A <- B <- C with B unavailable leaves C rejected.
func TestFederationGapUnfetchableAuthChain(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	create, pl := r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, "")

	last := join
	var chain []gomatrixserverlib.PDU
	for _, name := range []string{"A", "B", "C"} {
		last = r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": name},
			[]gomatrixserverlib.PDU{last}, []gomatrixserverlib.PDU{create, pl, last})
		chain = append(chain, last)
		r.hidden[last.EventID()] = true
	}
	r.refused[chain[1].EventID()] = true
	auth := []gomatrixserverlib.PDU{create, pl, last}
	stateAt := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "for state_ids"}, []gomatrixserverlib.PDU{last}, auth)
	r.hidden[stateAt.EventID()] = true
	gme := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "for gme"}, []gomatrixserverlib.PDU{stateAt}, auth)
	sent := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "for send"}, []gomatrixserverlib.PDU{gme}, auth)
	if errs := r.send(sent); errs[sent.EventID()] != "" || r.kind(sent) != rsapi.KindRejected {
		t.Fatalf("an event authorised by a broken auth chain: %v, kind %v", errs, r.kind(sent))
	}
	if got := r.requests("state_ids"); !slices.Equal(got, []string{"state_ids " + stateAt.EventID()}) {
		t.Fatalf("hs1 asked for the state %v", got)
	}
	kinds, _ := r.hs.Rooms.QueryEventKinds(context.Background(), []string{chain[0].EventID(), chain[1].EventID(), chain[2].EventID()})
	if kinds[chain[0].EventID()] != rsapi.KindOutlier || kinds[chain[1].EventID()] != 0 || kinds[chain[2].EventID()] != rsapi.KindRejectedOutlier {
		t.Fatalf("kinds of A, B, C: %v", kinds)
	}
	if m := r.current(spec.MRoomMember, fuser); m == nil || m.EventID() != join.EventID() {
		t.Fatal("fuser's member event changed")
	}
	// The room goes on from what hs1 has.
	after := r.message(fuser, r.latest(), "after")
	if errs := r.send(after); errs[after.EventID()] != "" {
		t.Fatalf("sentinel: %v", errs)
	}
}

// Sizes are bounded as the room version has it: before version 11, in
// codepoints, so a state key of 70 four-byte characters (280 bytes) is
// valid, and an event on one that get_missing_events gives gets in.
func TestFederationGapEventSizeInCodepoints(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	key := strings.Repeat("💥", 70)
	big := r.build(nil, fuser, "my.room.breaker", &key, map[string]any{}, []gomatrixserverlib.PDU{join},
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	sent := r.message(fuser, []gomatrixserverlib.PDU{big}, "after the big key")
	if errs := r.send(sent); errs[sent.EventID()] != "" {
		t.Fatalf("event on a state key of 280 bytes: %v", errs)
	}
	if got := r.requests("state_ids"); len(got) != 0 {
		t.Fatalf("hs1 asked for the state: %v", got)
	}
	if got := ingTBodies(r.alice, r.roomID); !slices.Equal(got, []string{"after the big key"}) {
		t.Fatalf("alice sees %v", got)
	}
}
