package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
)

// remoteRoom is a room created and run by another server (remote.test):
// the test plays that server and feeds its events to the roomserver as
// federation would.
type remoteRoom struct {
	t      testing.TB
	rm     *remote
	state  map[[2]string]gomatrixserverlib.PDU
	latest []gomatrixserverlib.PDU
	all    []gomatrixserverlib.PDU
}

const remoteCreator = "@creator:remote.test"

var remoteRooms int

// newRemoteRoom creates a room on remote.test with members more remote
// members and the given join rule and history visibility.
func newRemoteRoom(t testing.TB, version, joinRule, visibility string, members int) *remoteRoom {
	rm := newRemote(t, version, "")
	rr := &remoteRoom{t: t, rm: rm, state: map[[2]string]gomatrixserverlib.PDU{}}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version))
	create := map[string]any{"room_version": version}
	if verImpl.CreatorInCreateEvent() {
		create["creator"] = remoteCreator
	}
	if !verImpl.DomainlessRoomIDs() {
		remoteRooms++
		rm.roomID = fmt.Sprintf("!remote%d:remote.test", remoteRooms)
	}
	c := rr.send(remoteCreator, spec.MRoomCreate, sk(""), create)
	if verImpl.DomainlessRoomIDs() {
		rm.roomID = "!" + c.EventID()[1:]
	}
	rr.send(remoteCreator, spec.MRoomMember, sk(remoteCreator), map[string]any{"membership": "join"})
	pl := map[string]any{"state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0, "events_default": 0}
	if !verImpl.PrivilegedCreators() {
		pl["users"] = map[string]int{remoteCreator: 100}
	}
	rr.send(remoteCreator, spec.MRoomPowerLevels, sk(""), pl)
	rr.send(remoteCreator, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": "public"})
	rr.send(remoteCreator, spec.MRoomHistoryVisibility, sk(""), map[string]any{"history_visibility": visibility})
	for i := range members {
		u := fmt.Sprintf("@m%d:remote.test", i)
		rr.send(u, spec.MRoomMember, sk(u), map[string]any{"membership": "join"})
	}
	if joinRule != "public" {
		rr.send(remoteCreator, spec.MRoomJoinRules, sk(""), map[string]any{"join_rule": joinRule})
	}
	return rr
}

func (rr *remoteRoom) id() string { return rr.rm.roomID }

// authFor picks an event's auth events from the room's state.
func (rr *remoteRoom) authFor(sender, typ string, stateKey *string, content any) []gomatrixserverlib.PDU {
	keys := [][2]string{{spec.MRoomCreate, ""}, {spec.MRoomPowerLevels, ""}, {spec.MRoomMember, sender}}
	if typ == spec.MRoomMember && stateKey != nil {
		keys = append(keys, [2]string{spec.MRoomMember, *stateKey}, [2]string{spec.MRoomJoinRules, ""})
	}
	var out []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, k := range keys {
		if e, ok := rr.state[k]; ok && !seen[e.EventID()] {
			seen[e.EventID()] = true
			out = append(out, e)
		}
	}
	return out
}

// event builds an event on the room's forward extremities without
// applying it (for events the test wants to withhold or fork).
func (rr *remoteRoom) event(sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	return rr.rm.event(sender, typ, stateKey, content, rr.latest, rr.authFor(sender, typ, stateKey, content))
}

// send builds an event and applies it to the remote room.
func (rr *remoteRoom) send(sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	ev := rr.event(sender, typ, stateKey, content)
	rr.apply(ev)
	return ev
}

func (rr *remoteRoom) apply(ev gomatrixserverlib.PDU) {
	if sk := ev.StateKey(); sk != nil {
		rr.state[[2]string{ev.Type(), *sk}] = ev
	}
	rr.latest = []gomatrixserverlib.PDU{ev}
	rr.all = append(rr.all, ev)
}

// stateAndChain returns the room's current state and its auth chain, as a
// send_join response carries them.
func (rr *remoteRoom) stateAndChain() (state, chain []gomatrixserverlib.PDU) {
	byID := map[string]gomatrixserverlib.PDU{}
	for _, e := range rr.all {
		byID[e.EventID()] = e
	}
	seen := map[string]bool{}
	var walk func(e gomatrixserverlib.PDU)
	walk = func(e gomatrixserverlib.PDU) {
		for _, a := range e.AuthEventIDs() {
			if !seen[a] {
				seen[a] = true
				chain = append(chain, byID[a])
				walk(byID[a])
			}
		}
	}
	for _, e := range rr.state {
		state = append(state, e)
		walk(e)
	}
	return state, chain
}

func raws(pdus []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		out[i] = p.JSON()
	}
	return out
}

func ids(pdus []gomatrixserverlib.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// joinRemote joins bob (local) to the remote room the way a send_join does.
func (h *harness) joinRemote(rr *remoteRoom, user string) (gomatrixserverlib.PDU, *api.InputResult) {
	h.t.Helper()
	state, chain := rr.stateAndChain()
	join := rr.event(user, spec.MRoomMember, sk(user), map[string]any{"membership": "join"})
	res, err := h.in.Input(context.Background(), &api.InputMessage{
		RoomID:       rr.id(),
		Outliers:     raws(append(chain, state...)),
		Events:       []json.RawMessage{join.JSON()},
		StatesBefore: map[string][]string{join.EventID(): ids(state)},
		SendAsServer: testServer,
	})
	if err != nil {
		h.t.Fatalf("join input: %v", err)
	}
	rr.apply(join)
	return join, res
}

// outputs collects RoomOutput messages.
func (h *harness) outputs() (<-chan *api.OutputMessage, func()) {
	h.t.Helper()
	got := make(chan *api.OutputMessage, 1000)
	stop, err := h.b.Consume(context.Background(), bus.ConsumerSpec{Stream: "RoomOutput", Durable: fmt.Sprintf("t%d", time.Now().UnixNano())},
		func(_ context.Context, m *bus.Msg) error {
			var om api.OutputMessage
			if err := json.Unmarshal(m.Data, &om); err != nil {
				return err
			}
			got <- &om
			return nil
		})
	if err != nil {
		h.t.Fatal(err)
	}
	return got, stop
}

// waitOutput returns the first output message matching ok.
func waitOutput(t testing.TB, got <-chan *api.OutputMessage, ok func(*api.OutputMessage) bool) *api.OutputMessage {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			if ok(m) {
				return m
			}
		case <-deadline:
			t.Fatal("no matching output message")
			return nil
		}
	}
}

func eventIDOf(raw json.RawMessage, version string) string {
	pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)).NewEventFromTrustedJSON(raw, false)
	if err != nil {
		return ""
	}
	return pdu.EventID()
}

func TestJoinRemoteRoom(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		for _, v := range []string{"6", "10", "12"} {
			t.Run("v"+v, func(t *testing.T) {
				out, stop := h.outputs()
				defer stop()
				rr := newRemoteRoom(t, v, "public", "shared", 30)
				bob := "@bob:" + testServer
				join, res := h.joinRemote(rr, bob)
				if res.RoomID != rr.id() || len(res.Events) != 1 || res.Events[0].Rejected != "" || res.Events[0].SoftFailed {
					t.Fatalf("join result %+v", res)
				}
				info, err := h.rs.QueryRoomInfo(ctx, rr.id())
				if err != nil || !info.HasState || string(info.Version) != v {
					t.Fatalf("room info %+v %v", info, err)
				}
				m, err := h.rs.QueryMembership(ctx, rr.id(), bob)
				if err != nil || m.Membership != spec.Join || m.EventID != join.EventID() {
					t.Fatalf("membership %+v %v", m, err)
				}
				cur, err := h.rs.QueryCurrentStateIDs(ctx, rr.id())
				if err != nil || len(cur) != len(rr.state) {
					t.Fatalf("current state has %d events, want %d (%v)", len(cur), len(rr.state), err)
				}
				latest, _ := h.rs.QueryLatestEvents(ctx, rr.id())
				if !slices.Equal(latest, []string{join.EventID()}) {
					t.Fatalf("latest %v", latest)
				}
				joined, _ := h.rs.QueryJoinedServers(ctx, rr.id())
				if !slices.Equal(joined, []string{"remote.test", testServer}) {
					t.Fatalf("joined servers %v", joined)
				}
				o := waitOutput(t, out, func(m *api.OutputMessage) bool {
					return m.NewEvent != nil && m.NewEvent.RoomID == rr.id()
				})
				if id := eventIDOf(o.NewEvent.Event, v); id != join.EventID() || len(o.NewEvent.AddsState) != len(rr.state) || o.NewEvent.SendAsServer != testServer {
					t.Fatalf("join output: event %s, %d state added (want %d), send as %q", id, len(o.NewEvent.AddsState), len(rr.state), o.NewEvent.SendAsServer)
				}

				// The remote server's next message builds on the join.
				msg := rr.send("@m1:remote.test", "m.room.message", nil, map[string]any{"body": "hi"})
				res, err = h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{msg})})
				if err != nil || res.Events[0].Rejected != "" || res.Events[0].SoftFailed {
					t.Fatalf("message: %+v %v", res, err)
				}
				o = waitOutput(t, out, func(m *api.OutputMessage) bool {
					return m.NewEvent != nil && eventIDOf(m.NewEvent.Event, v) == msg.EventID()
				})
				if o.NewEvent.SendAsServer != "" {
					t.Fatalf("a remote event is sent on as %q", o.NewEvent.SendAsServer)
				}
				// Sent again: reported as existing.
				res, _ = h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{msg})})
				if !res.Events[0].Existed {
					t.Fatalf("second input %+v", res.Events[0])
				}

				// Local users can now send into it.
				if _, err := h.send(rr.id(), proto(bob, "m.room.message", nil, map[string]any{"body": "from bob"})); err != nil {
					t.Fatalf("local send: %v", err)
				}
			})
		}
	})
}

func TestRemoteEventsWithGaps(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		rr := newRemoteRoom(t, "10", "public", "shared", 3)
		bob := "@bob:" + testServer
		h.joinRemote(rr, bob)

		// Two events we never get, then one on top of them.
		rr.send("@m0:remote.test", "m.room.message", nil, map[string]any{"body": "lost 1"})
		topic := rr.send(remoteCreator, "m.room.topic", sk(""), map[string]any{"topic": "changed while we weren't looking"})
		_ = topic
		after := rr.send("@m1:remote.test", "m.room.message", nil, map[string]any{"body": "after the gap"})
		_, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{after})})
		wantCode(t, err, mxerr.CodeNotFound)

		// With the state before it (as /state_ids gives it), it goes in,
		// and the state change in the gap reaches the current state. The
		// topic event is fetched as an outlier.
		state, _ := rr.stateAndChain()
		res, err := h.in.Input(ctx, &api.InputMessage{
			RoomID:       rr.id(),
			Outliers:     raws([]gomatrixserverlib.PDU{topic}),
			Events:       raws([]gomatrixserverlib.PDU{after}),
			StatesBefore: map[string][]string{after.EventID(): ids(state)},
		})
		if err != nil || res.Events[0].Rejected != "" {
			t.Fatalf("gap input %+v %v", res, err)
		}
		if got := h.state(rr.id(), "m.room.topic", ""); got == nil || got.EventID() != topic.EventID() {
			t.Fatalf("topic after the gap: %v", got)
		}
		kinds, _ := h.rs.QueryEventKinds(ctx, []string{topic.EventID(), after.EventID(), "$unknown"})
		if kinds[topic.EventID()] != api.KindOutlier || kinds[after.EventID()] != api.KindNormal || len(kinds) != 2 {
			t.Fatalf("kinds %v", kinds)
		}
		// The outlier arriving in the DAG later moves into it.
		res, err = h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws(rr.all[len(rr.all)-3 : len(rr.all)-1]),
			StatesBefore: map[string][]string{rr.all[len(rr.all)-3].EventID(): ids(state)}})
		if err != nil || len(res.Events) != 2 || res.Events[1].Existed {
			t.Fatalf("late events %+v %v", res, err)
		}
		kinds, _ = h.rs.QueryEventKinds(ctx, []string{topic.EventID()})
		if kinds[topic.EventID()] != api.KindNormal {
			t.Fatalf("topic kind after it arrived in the DAG: %v", kinds)
		}
		latest, _ := h.rs.QueryLatestEvents(ctx, rr.id())
		if !slices.Equal(latest, []string{after.EventID()}) {
			t.Fatalf("latest after late events %v, want only %s", latest, after.EventID())
		}
	})
}

func TestRemoteAuthFailures(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		rr := newRemoteRoom(t, "10", "invite", "shared", 2)
		bob := "@bob:" + testServer
		// bob is invited by the creator, then joins.
		rr.send(remoteCreator, spec.MRoomMember, sk(bob), map[string]any{"membership": "invite"})
		h.joinRemote(rr, bob)

		// A stranger's message fails auth: rejected, never applied.
		bad := rr.event("@stranger:remote.test", "m.room.message", nil, map[string]any{"body": "let me in"})
		res, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{bad})})
		if err != nil || res.Events[0].Rejected == "" {
			t.Fatalf("stranger's message %+v %v", res, err)
		}
		if latest, _ := h.rs.QueryLatestEvents(ctx, rr.id()); slices.Contains(latest, bad.EventID()) {
			t.Fatal("a rejected event became a forward extremity")
		}
		// A join without an invite, as an outlier: stored as rejected.
		crasher := "@crasher:remote.test"
		badJoin := rr.event(crasher, spec.MRoomMember, sk(crasher), map[string]any{"membership": "join"})
		if _, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Outliers: raws([]gomatrixserverlib.PDU{badJoin})}); err != nil {
			t.Fatal(err)
		}
		// Each is reported as what it is: a rejected event of the DAG has a
		// state (the one before it), a rejected outlier has none.
		if kinds, _ := h.rs.QueryEventKinds(ctx, []string{badJoin.EventID(), bad.EventID()}); kinds[badJoin.EventID()] != api.KindRejectedOutlier ||
			kinds[bad.EventID()] != api.KindRejected {
			t.Fatalf("rejected outlier and DAG event: %v", kinds)
		}

		// Soft-fail: m1 is banned; a message m1 sends on an older fork
		// passes at its place in the DAG but not against current state.
		fork := rr.latest
		ban := rr.send(remoteCreator, spec.MRoomMember, sk("@m1:remote.test"), map[string]any{"membership": "ban"})
		if res, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{ban})}); err != nil || res.Events[0].Rejected != "" {
			t.Fatalf("ban %+v %v", res, err)
		}
		rr.latest = fork
		rr.state[[2]string{spec.MRoomMember, "@m1:remote.test"}] = rr.all[6] // m1's join (create, creator, PL, JR, HV, m0, m1)
		sneaky := rr.event("@m1:remote.test", "m.room.message", nil, map[string]any{"body": "before the ban, honest"})
		res, err = h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws([]gomatrixserverlib.PDU{sneaky})})
		if err != nil || res.Events[0].Rejected != "" || !res.Events[0].SoftFailed {
			t.Fatalf("soft-failed message %+v %v", res, err)
		}
		if latest, _ := h.rs.QueryLatestEvents(ctx, rr.id()); slices.Contains(latest, sneaky.EventID()) {
			t.Fatal("a soft-failed event became a forward extremity")
		}
	})
}

func TestBackfillStoresHistory(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		out, stop := h.outputs()
		defer stop()
		rr := newRemoteRoom(t, "10", "public", "joined", 1)
		var history []gomatrixserverlib.PDU
		for i := range 5 {
			history = append(history, rr.send(remoteCreator, "m.room.message", nil, map[string]any{"body": fmt.Sprint("old ", i)}))
		}
		bob := "@bob:" + testServer
		join, _ := h.joinRemote(rr, bob)
		stateBefore, _ := h.rs.QueryCurrentStateIDs(ctx, rr.id())

		// The oldest backfilled event's prev is unknown: the state before it
		// comes with it (as /state_ids gives it).
		state, _ := rr.stateAndChain()
		var st []string
		for _, e := range state {
			if e.EventID() != join.EventID() {
				st = append(st, e.EventID())
			}
		}
		res, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), Events: raws(history), Backfilled: true,
			StatesBefore: map[string][]string{history[0].EventID(): st}})
		if err != nil || len(res.Events) != 5 {
			t.Fatalf("backfill %+v %v", res, err)
		}
		latest, _ := h.rs.QueryLatestEvents(ctx, rr.id())
		if !slices.Equal(latest, []string{join.EventID()}) {
			t.Fatalf("backfill moved the extremities: %v", latest)
		}
		if after, _ := h.rs.QueryCurrentStateIDs(ctx, rr.id()); !slices.Equal(after, stateBefore) {
			t.Fatal("backfill changed the current state")
		}
		o := waitOutput(t, out, func(m *api.OutputMessage) bool { return m.Backfilled != nil })
		if len(o.Backfilled.Events) != 5 || o.Backfilled.Events[0].HistoryVisibility != "joined" ||
			eventIDOf(o.Backfilled.Events[0].Event, "10") != history[0].EventID() {
			t.Fatalf("backfill output %+v", o.Backfilled)
		}
		// Served on: the history is in the DAG.
		pdus, err := h.rs.QueryBackfill(ctx, rr.id(), []string{join.EventID()}, 3)
		if err != nil || len(pdus) != 3 || pdus[0].EventID() != join.EventID() || pdus[1].EventID() != history[4].EventID() {
			t.Fatalf("QueryBackfill %v %v", ids(pdus), err)
		}
		// The local server may not read history sent before it joined in
		// a "joined" room; the remote may.
		if ok, err := h.rs.QueryServerMayRead(ctx, testServer, history[0].EventID()); err != nil || ok {
			t.Fatalf("local server reads joined-only history before its join: %v %v", ok, err)
		}
		if ok, err := h.rs.QueryServerMayRead(ctx, "remote.test", history[0].EventID()); err != nil || !ok {
			t.Fatalf("remote server may not read: %v %v", ok, err)
		}
	})
}

func TestOutOfBandInvite(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		out, stop := h.outputs()
		defer stop()
		rr := newRemoteRoom(t, "11", "invite", "shared", 0)
		bob := "@bob:" + testServer
		invite := rr.send(remoteCreator, spec.MRoomMember, sk(bob), map[string]any{"membership": "invite"})
		stripped := []json.RawMessage{json.RawMessage(`{"type":"m.room.name","state_key":"","sender":"` + remoteCreator + `","content":{"name":"R"}}`)}
		res, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), OutOfBand: &api.OutOfBandInput{
			RoomVersion: "11", Event: invite.JSON(), StrippedState: stripped}})
		if err != nil || res.RoomID != rr.id() {
			t.Fatalf("invite input %+v %v", res, err)
		}
		info, err := h.rs.QueryRoomInfo(ctx, rr.id())
		if err != nil || info.HasState {
			t.Fatalf("room info of an invite-only room %+v %v", info, err)
		}
		if m, err := h.rs.QueryMembership(ctx, rr.id(), bob); err != nil || m.Membership != spec.Invite {
			t.Fatalf("membership %+v %v", m, err)
		}
		if rooms, _ := h.rs.QueryRoomsForUser(ctx, bob, spec.Invite); len(rooms) != 1 || rooms[0].RoomID != rr.id() {
			t.Fatalf("invited rooms %+v", rooms)
		}
		o := waitOutput(t, out, func(m *api.OutputMessage) bool { return m.Membership != nil })
		if o.Membership.RoomID != rr.id() || len(o.Membership.StrippedState) != 1 || eventIDOf(o.Membership.Event, "11") != invite.EventID() {
			t.Fatalf("membership output %+v", o.Membership)
		}
		// Local users cannot send into a room the server is not in.
		_, err = h.send(rr.id(), proto(bob, "m.room.message", nil, map[string]any{"body": "x"}))
		wantCode(t, err, mxerr.CodeNotFound)
		// Not a local user's membership: refused.
		other := rr.event(remoteCreator, spec.MRoomMember, sk("@x:remote.test"), map[string]any{"membership": "invite"})
		_, err = h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), OutOfBand: &api.OutOfBandInput{RoomVersion: "11", Event: other.JSON()}})
		wantCode(t, err, mxerr.CodeBadJSON)

		// Joining later fills the room in.
		h.joinRemote(rr, bob)
		if info, _ := h.rs.QueryRoomInfo(ctx, rr.id()); !info.HasState {
			t.Fatal("no state after the join")
		}
		if m, _ := h.rs.QueryMembership(ctx, rr.id(), bob); m.Membership != spec.Join {
			t.Fatalf("membership after join %+v", m)
		}
		// bob leaves: the server keeps the room's (now stale) state, and a
		// new invite over federation is bob's membership again.
		leaveID, err := h.send(rr.id(), proto(bob, spec.MRoomMember, sk(bob), map[string]any{"membership": "leave"}))
		if err != nil {
			t.Fatal(err)
		}
		rr.apply(h.events(leaveID)[0])
		again := rr.send(remoteCreator, spec.MRoomMember, sk(bob), map[string]any{"membership": "invite"})
		if _, err := h.in.Input(ctx, &api.InputMessage{RoomID: rr.id(), OutOfBand: &api.OutOfBandInput{RoomVersion: "11", Event: again.JSON()}}); err != nil {
			t.Fatal(err)
		}
		if m, _ := h.rs.QueryMembership(ctx, rr.id(), bob); m.Membership != spec.Invite || m.EventID != again.EventID() {
			t.Fatalf("membership after a re-invite into stale state %+v", m)
		}
	})
}

func TestFederationQueries(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		alice := "@alice:" + testServer
		roomID := h.createRoom("10", alice, "public")
		var sent []string
		for i := range 6 {
			sent = append(sent, h.mustSend(roomID, proto(alice, "m.room.message", nil, map[string]any{"body": fmt.Sprint(i)})))
		}
		// State before the 3rd message: create, alice, PL, JR, HV... as set by createRoom.
		before, err := h.rs.QueryStateBefore(ctx, roomID, sent[2])
		cur, _ := h.rs.QueryCurrentStateIDs(ctx, roomID)
		sort.Strings(before)
		sort.Strings(cur)
		if err != nil || !slices.Equal(before, cur) {
			t.Fatalf("state before %v, current %v (%v)", before, cur, err)
		}
		if _, err := h.rs.QueryStateBefore(ctx, roomID, "$nope"); !errors.Is(err, api.ErrEventNotFound) {
			t.Fatalf("state before an unknown event: %v", err)
		}
		chain, err := h.rs.QueryAuthChain(ctx, []string{sent[0]})
		if err != nil || len(chain) < 3 {
			t.Fatalf("auth chain %v %v", chain, err)
		}
		missing, err := h.rs.QueryMissingEvents(ctx, roomID, []string{sent[1]}, []string{sent[5]}, 10, 0)
		if err != nil || !slices.Equal(ids(missing), sent[2:5]) {
			t.Fatalf("missing events %v, want %v (%v)", ids(missing), sent[2:5], err)
		}
		if missing, _ := h.rs.QueryMissingEvents(ctx, roomID, []string{sent[1]}, []string{sent[5]}, 2, 0); !slices.Equal(ids(missing), sent[3:5]) {
			t.Fatalf("missing events with limit 2: %v, want %v", ids(missing), sent[3:5])
		}
		back, err := h.rs.QueryBackfill(ctx, roomID, []string{sent[5]}, 3)
		if err != nil || !slices.Equal(ids(back), []string{sent[5], sent[4], sent[3]}) {
			t.Fatalf("backfill %v %v", ids(back), err)
		}
		// A join template for a remote user in a public room.
		carol := "@carol:remote.test"
		tmpl, version, err := h.rs.QueryEventTemplate(ctx, roomID, proto(carol, spec.MRoomMember, sk(carol), map[string]any{"membership": "join"}))
		if err != nil || version != "10" || tmpl.Depth == 0 || len(tmpl.PrevEvents.([]string)) != 1 || tmpl.PrevEvents.([]string)[0] != sent[5] {
			t.Fatalf("template %+v %v %v", tmpl, version, err)
		}
		// Not allowed: a message from a non-member.
		if _, _, err := h.rs.QueryEventTemplate(ctx, roomID, proto(carol, "m.room.message", nil, map[string]any{"body": "x"})); !errors.Is(err, api.ErrNotAllowed) {
			t.Fatalf("template for a non-member's message: %v", err)
		}
		if _, _, err := h.rs.QueryEventTemplate(ctx, "!nope:x", proto(carol, spec.MRoomMember, sk(carol), map[string]any{"membership": "join"})); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("template in an unknown room: %v", err)
		}
		if ok, err := h.rs.QueryServerMayRead(ctx, "remote.test", sent[0]); err != nil || !ok {
			t.Fatalf("shared history for another server: %v %v", ok, err)
		}
	})
}
