package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Bounds of what another server's events may carry: depth, prev and auth
// events, size before redaction. The suite had sent only honest events.

// buildWith builds an event as the fake like ingTRoom.build (on prevs,
// with the usual auth events of sender), then lets edit change the proto
// event before it is signed.
func (r *ingTRoom) buildWith(sender, typ string, stateKey *string, content any, prevs []gomatrixserverlib.PDU, edit func(*gomatrixserverlib.ProtoEvent)) gomatrixserverlib.PDU {
	r.t.Helper()
	return r.buildEdited(nil, sender, typ, stateKey, content, prevs,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomMember, sender)}, edit)
}

// A remote event at the greatest depth canonical JSON carries is taken in,
// and the room stays writable: local messages, state and joins build on
// it at that same depth (today they got depth 2^53, refused as outside
// canonical JSON's range, so the room could no longer be written to).
func TestFederationMaxDepth(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	const maxDepth = 1<<53 - 1
	deep := r.buildWith(fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "deep"}, []gomatrixserverlib.PDU{join},
		func(p *gomatrixserverlib.ProtoEvent) { p.Depth = maxDepth })
	if errs := r.send(deep); errs[deep.EventID()] != "" {
		t.Fatalf("the deep event was refused: %s", errs[deep.EventID()])
	}
	if r.kind(deep) != rsapi.KindNormal {
		t.Fatalf("the deep event is stored as %v", r.kind(deep))
	}
	roomTSend(r.alice, r.roomID, "after the deep one")
	roomTPutState(r.alice, r.roomID, "m.room.topic", "", map[string]any{"topic": "still writable"})
	bob := roomTUser(t, r.hs, "bob")
	roomTJoin(bob, r.roomID)
	roomTSend(bob, r.roomID, "bob too")
	for _, e := range r.latest() {
		if e.Depth() != maxDepth {
			t.Errorf("latest event %s has depth %d", e.EventID(), e.Depth())
		}
	}
	// The fake goes on at that depth too.
	next := r.buildWith(fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "same depth"}, r.latest(),
		func(p *gomatrixserverlib.ProtoEvent) { p.Depth = maxDepth })
	if errs := r.send(next); errs[next.EventID()] != "" {
		t.Fatalf("an event at the greatest depth on local ones was refused: %s", errs[next.EventID()])
	}
	// A negative depth is refused.
	neg := r.buildWith(fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "negative"}, r.latest(),
		func(p *gomatrixserverlib.ProtoEvent) { p.Depth = -1 })
	if errs := r.send(neg); errs[neg.EventID()] == "" || r.kind(neg) != 0 {
		t.Fatalf("an event of depth -1: error %q, kind %v", errs[neg.EventID()], r.kind(neg))
	}
}

// jsonString marshals v.
func jsonString(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Events with more than 20 prev_events or 10 auth_events, or over 65,536
// bytes as sent (even with a content hash that does not match, which
// gomatrixserverlib answers by redacting the event to a small one), are
// refused, as Synapse does, and nothing of them is stored.
func TestFederationPDUBounds(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	prev := []gomatrixserverlib.PDU{join}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	fakeIDs := func(n int) []string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("$fake%dAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", i)
		}
		return ids
	}
	// 21 forks the server holds, then an event merging them.
	var forks []gomatrixserverlib.PDU
	for i := range 21 {
		forks = append(forks, r.message(fuser, prev, fmt.Sprintf("fork %d", i)))
	}
	errs := r.send(forks...)
	for _, f := range forks {
		if errs[f.EventID()] != "" {
			t.Fatalf("fork: %s", errs[f.EventID()])
		}
	}
	manyPrevs := r.buildWith(fuser, "m.room.message", nil, text("21 prev events"), forks, nil)
	manyAuth := r.buildWith(fuser, "m.room.message", nil, text("11 auth events"), prev, func(p *gomatrixserverlib.ProtoEvent) {
		p.AuthEvents = append(p.AuthEvents.([]string), fakeIDs(11-len(p.AuthEvents.([]string)))...)
	})
	big := r.buildWith(fuser, "m.room.message", nil, text(strings.Repeat("x", 70_000)), prev, nil)
	bigTampered := strings.Replace(string(big.JSON()), `"body":"x`, `"body":"y`, 1)
	// A wrong content hash on a large event: gomatrixserverlib redacts it
	// to a small event, which was taken in.
	res, err := r.rm.Send("hs1.test", "bounds", []json.RawMessage{manyPrevs.JSON(), manyAuth.JSON(), json.RawMessage(bigTampered)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for what, e := range map[string]gomatrixserverlib.PDU{"21 prev_events": manyPrevs, "11 auth_events": manyAuth, "70 KB, wrong hash": big} {
		if pr, ok := res.PDUs[e.EventID()]; !ok || pr.Error == "" {
			t.Errorf("an event with %s: result %+v", what, res.PDUs[e.EventID()])
		}
		if k := r.kind(e); k != 0 {
			t.Errorf("an event with %s is stored as %v", what, k)
		}
	}
	// Within the bounds all is well.
	ok := r.buildWith(fuser, "m.room.message", nil, text("ordinary"), prev, nil)
	if errs := r.send(ok); errs[ok.EventID()] != "" {
		t.Fatalf("an ordinary event after them: %s", errs[ok.EventID()])
	}
}

// Power levels in room versions 10 and later must be integers and their
// maps objects, as the auth rules say: null or a string is 400 M_BAD_JSON
// locally (on PUT /state and as createRoom's power_level_content_override)
// and rejected over federation. Today {"users":null} was accepted and
// stripped the creator's power (gomatrixserverlib lets null through). The
// suite had sent only well-formed power levels.
func TestPowerLevelsIntegerValidation(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	alice := r.alice
	plPath := roomTStatePath(r.roomID, spec.MRoomPowerLevels, "")
	before := roomTState(alice, r.roomID, spec.MRoomPowerLevels, "")
	for _, bad := range []map[string]any{
		{"users": nil},
		{"ban": nil},
		{"kick": "50"},
		{"events": nil},
		{"notifications": map[string]any{"room": nil}},
		{"users": map[string]any{alice.UserID: 100, "@bob:hs1.test": "50"}},
		{"events_default": 1.5},
	} {
		content := map[string]any{}
		for k, v := range before {
			content[k] = v
		}
		for k, v := range bad {
			content[k] = v
		}
		res := alice.Do("PUT", plPath, content)
		if res.Status != http.StatusBadRequest || res.JSON(t)["errcode"] != "M_BAD_JSON" {
			t.Errorf("power levels with %s: %d %s", jsonString(t, bad), res.Status, res.Body)
		}
	}
	if got := roomTState(alice, r.roomID, spec.MRoomPowerLevels, ""); jsonString(t, got) != jsonString(t, before) {
		t.Fatalf("the power levels changed to %v", got)
	}
	// A room version before 10 takes strings, as it always did.
	old := roomTCreate(alice, map[string]any{"room_version": "9"})
	oldPL := roomTState(alice, old, spec.MRoomPowerLevels, "")
	oldPL["kick"] = "60"
	oldPL["users"] = map[string]any{alice.UserID: "100"}
	alice.MustDo("PUT", roomTStatePath(old, spec.MRoomPowerLevels, ""), oldPL, http.StatusOK)
	// Upgraded to room version 10, the levels are copied as integers (as
	// Synapse does); copied as strings, the upgrade failed.
	upgraded := membUpgrade(alice, old, map[string]any{"new_version": "10"})
	newPL := roomTState(alice, upgraded, spec.MRoomPowerLevels, "")
	if newPL["kick"] != float64(60) || roomTMap(t, newPL["users"], "users")[alice.UserID] != float64(100) {
		t.Errorf("the upgraded room's power levels: %v", newPL)
	}

	// createRoom with such an override is refused whole.
	for _, v := range []string{"10", "11", "12"} {
		res := alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{
			"room_version": v, "power_level_content_override": map[string]any{"users": nil},
		})
		if res.Status != http.StatusBadRequest || res.JSON(t)["errcode"] != "M_BAD_JSON" {
			t.Errorf("v%s: createRoom with users null: %d %s", v, res.Status, res.Body)
		}
	}
	rooms := alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)
	if n := len(rooms["joined_rooms"].([]any)); n != 3 {
		t.Errorf("alice is in %d rooms after the refused createRooms, want 3", n)
	}

	// Over federation: a joined remote user the room gives power to sends
	// power levels with users null; they are rejected and the levels stay.
	fuser := "@fuser:fake.test"
	r.join(fuser)
	levels := map[string]any{}
	for k, v := range before {
		levels[k] = v
	}
	users := map[string]any{alice.UserID: 100, fuser: 100}
	levels["users"] = users
	alice.MustDo("PUT", plPath, levels, http.StatusOK)
	empty := ""
	for _, bad := range []map[string]any{{"users": nil}, {"state_default": "0"}, {"events": map[string]any{"m.room.name": nil}}} {
		content := map[string]any{}
		for k, v := range levels {
			content[k] = v
		}
		for k, v := range bad {
			content[k] = v
		}
		ev := r.buildWith(fuser, spec.MRoomPowerLevels, &empty, content, r.latest(), nil)
		if errs := r.send(ev); errs[ev.EventID()] != "" {
			t.Fatalf("power levels %s: %s", jsonString(t, bad), errs[ev.EventID()])
		}
		if k := r.kind(ev); k != rsapi.KindRejected {
			t.Errorf("remote power levels with %s stored as %v, want rejected", jsonString(t, bad), k)
		}
	}
	if got := roomTState(alice, r.roomID, spec.MRoomPowerLevels, ""); got["users"] == nil {
		t.Fatalf("the power levels lost their users: %v", got)
	}
	roomTSend(alice, r.roomID, "still in charge")
}

// A presence EDU listing 20,000 users (all of the sending server) is
// dropped whole, as are presence states past a transaction's bound; one
// within the bounds is applied. Today the 20,000 were all taken. The suite
// had sent only EDUs of one user.
func TestFederationEDUBounds(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	flood, fine := "@flood:fake.test", "@fine:fake.test"
	r.join(flood)
	r.join(fine)
	presence := func(users ...string) gomatrixserverlib.EDU {
		push := make([]map[string]any, len(users))
		for i, u := range users {
			push[i] = map[string]any{"user_id": u, "presence": "online", "currently_active": true, "last_active_ago": 1}
		}
		c, _ := json.Marshal(map[string]any{"push": push})
		return gomatrixserverlib.EDU{Type: "m.presence", Content: c}
	}
	many := []string{flood}
	for i := range 20_000 {
		many = append(many, fmt.Sprintf("@u%d:fake.test", i))
	}
	// Over a transaction: six EDUs of 100 pass the budget of 500 with the
	// sixth, which is dropped.
	var txn []gomatrixserverlib.EDU
	for range 5 {
		txn = append(txn, presence(many[1:101]...))
	}
	txn = append(txn, presence(append([]string{flood}, many[1:100]...)...))
	if _, err := r.rm.Send("hs1.test", "presence-txn", nil, txn); err != nil {
		t.Fatal(err)
	}
	if _, err := r.rm.Send("hs1.test", "presence-flood", nil, []gomatrixserverlib.EDU{presence(many...)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.rm.Send("hs1.test", "presence-fine", nil, []gomatrixserverlib.EDU{presence(fine)}); err != nil {
		t.Fatal(err)
	}
	status := func(user string) any {
		res := r.alice.Do("GET", fmt.Sprintf("/_matrix/client/v3/presence/%s/status", user), nil)
		if res.Status != http.StatusOK {
			return res.Status
		}
		return res.JSON(t)["presence"]
	}
	fedTEventually(t, "the fine presence applied", func() string {
		if p := status(fine); p != "online" {
			return fmt.Sprint(p)
		}
		return ""
	})
	// Inbound EDUs are applied in order: after the last, the others
	// would be there.
	if p := status(flood); p == "online" {
		t.Fatalf("a presence EDU past the bounds was applied: %v", p)
	}
}
