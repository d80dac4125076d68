package tests

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// The routes other servers call to read from and join rooms of a Myelin
// server, driven by the fake remote fake.test against hs1.test. Helpers
// carry the fsT prefix.

const fsTFed = "/_matrix/federation"

// fsT is hs1.test with its user alice, and the fake remote fake.test.
type fsT struct {
	t     *testing.T
	hs    *testserver.Server
	rm    *testserver.Remote
	alice *testutil.Client
	keys  fsTKeys
	txn   atomic.Int64
}

func fsTStart(t *testing.T) *fsT {
	n := testserver.NewNetwork(t)
	hs := n.Start("hs1.test")
	rm := n.StartRemote("fake.test")
	// hs1 sends the fake what it sends the room's servers: accept it.
	rm.Mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	})
	w := &fsT{t: t, hs: hs, rm: rm, alice: testutil.NewClient(t, hs.URL).Register("alice", "alice-password")}
	w.keys = fsTKeys{rm.Name: {rm.KeyID: rm.Key.Public().(ed25519.PublicKey)}}
	status, body := w.do("GET", "/_matrix/key/v2/server", nil)
	if status != 200 {
		t.Fatalf("hs1's keys: %d %s", status, body)
	}
	hsKeys := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
	for id, k := range gjson.GetBytes(body, "verify_keys").Map() {
		b, err := base64.RawStdEncoding.DecodeString(k.Get("key").Str)
		if err != nil {
			t.Fatalf("hs1's key %s: %v", id, err)
		}
		hsKeys[gomatrixserverlib.KeyID(id)] = b
	}
	w.keys["hs1.test"] = hsKeys
	return w
}

// fsTKeys verifies signatures with known keys (the fake's and hs1's).
type fsTKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey

func (k fsTKeys) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		out[i].Error = fmt.Errorf("no valid signature of %s", r.ServerName)
		for id, pk := range k[r.ServerName] {
			if err := gomatrixserverlib.VerifyJSON(string(r.ServerName), id, pk, r.Message); err == nil {
				out[i].Error = nil
				break
			}
		}
	}
	return out, nil
}

func fsTUserIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// do sends a request signed by the fake to hs1.
func (w *fsT) do(method, path string, body any) (int, []byte) {
	w.t.Helper()
	status, b, err := w.rm.Do(method, "hs1.test", path, body)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, b
}

// want sends a request and checks its status and (for errors) errcode.
func (w *fsT) want(method, path string, body any, status int, errcode string) []byte {
	w.t.Helper()
	got, b := w.do(method, path, body)
	if got != status || (errcode != "" && gjson.GetBytes(b, "errcode").Str != errcode) {
		w.t.Fatalf("%s %s: %d %s, want %d %s", method, path, got, b, status, errcode)
	}
	if errcode != "" && gjson.GetBytes(b, "error").Type != gjson.String {
		w.t.Fatalf("%s %s: error without a message: %s", method, path, b)
	}
	return b
}

// wantRaw sends a body that is not JSON (so it cannot be signed: the
// request is refused for its body before its signature is checked).
func (w *fsT) wantRaw(method, path, body string, status int, errcode string) {
	w.t.Helper()
	got, b, err := w.rm.DoRaw(method, "hs1.test", path, []byte(body),
		`X-Matrix origin="fake.test",destination="hs1.test",key="ed25519:fake",sig="c2ln"`)
	if err != nil || got != status || gjson.GetBytes(b, "errcode").Str != errcode {
		w.t.Fatalf("%s %s: %d %s %v, want %d %s", method, path, got, b, err, status, errcode)
	}
}

func fsTPath(format string, args ...string) string { return fsTFed + testutil.Path(format, args...) }

// send sends a message as c and returns its event ID.
func (w *fsT) send(c *testutil.Client, roomID, body string) string {
	w.t.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint("fs", w.txn.Add(1))),
		map[string]any{"msgtype": "m.text", "body": body}, 200)
	return m["event_id"].(string)
}

func (w *fsT) setState(c *testutil.Client, roomID, typ, key string, content any) string {
	w.t.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/%s/%s", roomID, typ, key), content, 200)
	return m["event_id"].(string)
}

// makeJoin asks for a join template and builds the join from it, signed by
// the fake.
func (w *fsT) makeJoin(roomID, userID string) gomatrixserverlib.PDU {
	w.t.Helper()
	b := w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, userID)+"?"+fsTVers(), nil, 200, "")
	var res fclient.RespMakeJoin
	if err := json.Unmarshal(b, &res); err != nil {
		w.t.Fatalf("make_join answer %s: %v", b, err)
	}
	if res.JoinEvent.Type != spec.MRoomMember || res.JoinEvent.SenderID != userID || res.JoinEvent.StateKey == nil ||
		*res.JoinEvent.StateKey != userID || res.JoinEvent.RoomID != roomID || gjson.GetBytes(res.JoinEvent.Content, "membership").Str != "join" {
		w.t.Fatalf("make_join template %s", b)
	}
	for _, k := range []string{"origin", "origin_server_ts", "depth", "prev_events", "auth_events"} {
		if !gjson.GetBytes(b, "event."+k).Exists() {
			w.t.Fatalf("make_join template without %s: %s", k, b)
		}
	}
	return w.build(res.RoomVersion, &res.JoinEvent)
}

func (w *fsT) build(version gomatrixserverlib.RoomVersion, proto *gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	w.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), w.rm.Name, w.rm.KeyID, w.rm.Key)
	if err != nil {
		w.t.Fatalf("build: %v", err)
	}
	return ev
}

func fsTVers() string {
	q := url.Values{}
	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		q.Add("ver", v)
	}
	return q.Encode()
}

// sendJoin sends a join (v2) and checks the answer the way a joining
// server does: state and auth chain signed and authorising the join.
func (w *fsT) sendJoin(version gomatrixserverlib.RoomVersion, join gomatrixserverlib.PDU) (*fclient.RespSendJoin, gomatrixserverlib.PDU) {
	w.t.Helper()
	b := w.want("PUT", fsTPath("/v2/send_join/%s/%s", join.RoomID().String(), join.EventID()), json.RawMessage(join.JSON()), 200, "")
	var res fclient.RespSendJoin
	if err := json.Unmarshal(b, &res); err != nil {
		w.t.Fatalf("send_join answer: %v", err)
	}
	if res.Origin != "hs1.test" || res.MembersOmitted || !gjson.GetBytes(b, "members_omitted").Exists() {
		w.t.Fatalf("send_join answer: origin %q, members_omitted %v", res.Origin, res.MembersOmitted)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	signed, err := verImpl.NewEventFromUntrustedJSON(res.Event)
	if err != nil || signed.EventID() != join.EventID() {
		w.t.Fatalf("send_join's event: %v (%s)", err, res.Event)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), signed, w.keys, fsTUserIDForSender); err != nil {
		w.t.Fatalf("send_join's event signatures: %v", err)
	}
	if !gjson.GetBytes(res.Event, "signatures.hs1\\.test").Exists() {
		w.t.Fatalf("send_join's event is not signed by hs1: %s", res.Event)
	}
	noMissing := func(gomatrixserverlib.RoomVersion, []string) ([]gomatrixserverlib.PDU, error) {
		return nil, fmt.Errorf("the answer should hold every auth event")
	}
	checked, err := gomatrixserverlib.CheckSendJoinResponse(context.Background(), version, &res, w.keys, signed, noMissing, fsTUserIDForSender)
	if err != nil {
		w.t.Fatalf("send_join answer does not check: %v", err)
	}
	if len(checked.GetStateEvents()) != len(res.StateEvents) || len(checked.GetAuthEvents()) != len(res.AuthEvents) {
		w.t.Fatalf("send_join answer: events dropped by the checks")
	}
	return &res, signed
}

// fsTIDs lists the event IDs of events of a room version.
func fsTIDs(version gomatrixserverlib.RoomVersion, evs []json.RawMessage) []string {
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		pdu, err := verImpl.NewEventFromUntrustedJSON(e)
		if err != nil {
			panic(err)
		}
		out = append(out, pdu.EventID())
	}
	sort.Strings(out)
	return out
}

func fsTJSONs(evs gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = json.RawMessage(e)
	}
	return out
}

// checkChainClosed checks that the auth chain holds the auth events of
// every event of state and chain (the create event implied in v12).
func (w *fsT) checkChainClosed(version gomatrixserverlib.RoomVersion, state, chain []json.RawMessage) {
	w.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	have := map[string]bool{}
	var all []gomatrixserverlib.PDU
	for _, e := range append(slices.Clone(state), chain...) {
		pdu, err := verImpl.NewEventFromUntrustedJSON(e)
		if err != nil {
			w.t.Fatal(err)
		}
		have[pdu.EventID()] = true
		all = append(all, pdu)
	}
	for _, p := range all {
		for _, a := range p.AuthEventIDs() {
			if !have[a] {
				w.t.Fatalf("auth event %s of %s missing from the answer", a, p.EventID())
			}
		}
	}
}

// members returns the room's members as alice sees them (user -> membership).
func (w *fsT) members(roomID string) map[string]string {
	w.t.Helper()
	m := w.alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/members", roomID), nil, 200)
	out := map[string]string{}
	chunk, _ := m["chunk"].([]any)
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		sk, _ := ev["state_key"].(string)
		c, _ := ev["content"].(map[string]any)
		out[sk], _ = c["membership"].(string)
	}
	return out
}

func (w *fsT) waitMembership(roomID, userID, membership string) {
	w.t.Helper()
	testutil.Eventually(w.t, 10*time.Second, userID+" "+membership+" in "+roomID, func() bool {
		return w.members(roomID)[userID] == membership
	})
}

// syncHas waits until alice's sync shows the event in the room's timeline.
func (w *fsT) syncHas(roomID, eventID string) {
	w.t.Helper()
	testutil.Eventually(w.t, 10*time.Second, "event "+eventID+" in alice's sync", func() bool {
		r := w.alice.Do("GET", "/_matrix/client/v3/sync?timeout=0", nil)
		if r.Status != 200 {
			return false
		}
		for _, e := range gjson.GetBytes(r.Body, "rooms.join."+gjson.Escape(roomID)+".timeline.events").Array() {
			if e.Get("event_id").Str == eventID {
				return true
			}
		}
		return false
	})
}

// A remote user joins public rooms of hs1 (v10, v11, v12): the answer
// verifies and holds the state before the join (what hs1 holds) and its
// auth chain; local members see the join in /sync and /members. The v1
// route answers [200, {...}]; a version the joining server lacks, a user
// of another server and an invite-only room are refused.
func TestFederationServeJoin(t *testing.T) {
	w := fsTStart(t)
	for _, v := range []string{"1", "10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			w.t = t
			version := gomatrixserverlib.RoomVersion(v)
			roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": v, "name": "serve " + v})
			w.send(w.alice, roomID, "before")
			bob := "@bob:fake.test"
			join := w.makeJoin(roomID, bob)
			res, signed := w.sendJoin(version, join)
			want, err := w.hs.Rooms.QueryStateBefore(context.Background(), roomID, signed.EventID())
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(want)
			if got := fsTIDs(version, fsTJSONs(res.StateEvents)); !slices.Equal(got, want) {
				t.Fatalf("state %v, want %v", got, want)
			}
			w.checkChainClosed(version, fsTJSONs(res.StateEvents), fsTJSONs(res.AuthEvents))
			if !slices.Equal(res.ServersInRoom, []string{"hs1.test"}) {
				t.Fatalf("servers_in_room %v", res.ServersInRoom)
			}
			w.syncHas(roomID, signed.EventID())
			w.waitMembership(roomID, bob, "join")

			// Joining again (a retry) gives the same answer.
			res2, _ := w.sendJoin(version, join)
			if len(res2.StateEvents) != len(res.StateEvents) {
				t.Fatalf("second send_join: %d state events, first %d", len(res2.StateEvents), len(res.StateEvents))
			}
			// The v1 route wraps the answer.
			join2 := w.makeJoin(roomID, "@bob2:fake.test")
			b := w.want("PUT", fsTPath("/v1/send_join/%s/%s", roomID, join2.EventID()), json.RawMessage(join2.JSON()), 200, "")
			if r := gjson.ParseBytes(b); !r.IsArray() || r.Get("0").Int() != 200 || !r.Get("1.state").IsArray() || !r.Get("1.auth_chain").IsArray() {
				t.Fatalf("v1 send_join answer %.300s", b)
			}
			w.waitMembership(roomID, "@bob2:fake.test", "join")
		})
	}
	w.t = t
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	// The joining server must support the room's version (no ver: v1).
	b := w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, "@bob:fake.test")+"?ver=9&ver=11", nil, 400, "M_INCOMPATIBLE_ROOM_VERSION")
	if gjson.GetBytes(b, "room_version").Str != "10" {
		t.Fatalf("incompatible version error without room_version: %s", b)
	}
	w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, "@bob:fake.test"), nil, 400, "M_INCOMPATIBLE_ROOM_VERSION")
	// Only for the origin's users.
	w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, "@bob:other.test")+"?ver=10", nil, 403, "M_FORBIDDEN")
	// Unknown rooms.
	w.want("GET", fsTPath("/v1/make_join/%s/%s", "!nope:hs1.test", "@bob:fake.test")+"?ver=10", nil, 404, "M_NOT_FOUND")
	// An invite-only room refuses the join.
	private := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": "11"})
	w.want("GET", fsTPath("/v1/make_join/%s/%s", private, "@bob:fake.test")+"?ver=11", nil, 403, "M_FORBIDDEN")
}

// Restricted rooms: hs1 authorises the join of a user in an allowed room
// it is in (signing the join as one of its users able to invite), refuses
// a user in none (at make_join and at send_join), and cannot authorise
// through a room it is not in.
func TestFederationServeRestrictedJoin(t *testing.T) {
	w := fsTStart(t)
	for i, v := range []string{"10", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			w.t = t
			fsTRestricted(t, w, v, fmt.Sprintf("%d", i))
		})
	}
}

func fsTRestricted(t *testing.T, w *fsT, v, n string) {
	version := gomatrixserverlib.RoomVersion(v)
	space := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": v})
	restricted := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": v,
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
		}}}})
	bob, carol := "@bob"+n+":fake.test", "@carol"+n+":fake.test"
	// Not in the space yet: refused.
	w.want("GET", fsTPath("/v1/make_join/%s/%s", restricted, bob)+"?ver="+v, nil, 403, "M_FORBIDDEN")
	w.sendJoin(version, w.makeJoin(space, bob))
	join := w.makeJoin(restricted, bob)
	if via := gjson.GetBytes(join.Content(), "join_authorised_via_users_server").Str; via != w.alice.UserID {
		t.Fatalf("join_authorised_via_users_server %q, want %s", via, w.alice.UserID)
	}
	_, signed := w.sendJoin(version, join)
	w.syncHas(restricted, signed.EventID())
	w.waitMembership(restricted, bob, "join")

	// carol (not in the space) builds a join authorised by alice: send_join
	// refuses it. (With these auth events it would pass the auth rules once
	// hs1 signs it: only hs1's check of the allowed rooms stands in the way.)
	forged := w.forgeJoin(version, restricted, carol, w.alice.UserID)
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", restricted, forged.EventID()), json.RawMessage(forged.JSON()), 403, "M_FORBIDDEN")
	// Authorised by a user of another server: refused.
	forged = w.forgeJoin(version, restricted, carol, "@someone:fake.test")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", restricted, forged.EventID()), json.RawMessage(forged.JSON()), 400, "M_INVALID_PARAM")

	// A room restricted to a room hs1 is not in: hs1 cannot tell.
	elsewhere := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": v,
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": "!unknown:elsewhere.test"}},
		}}}})
	w.want("GET", fsTPath("/v1/make_join/%s/%s", elsewhere, bob)+"?ver="+v, nil, 400, "M_UNABLE_TO_AUTHORISE_JOIN")
	// No local user may invite: hs1 cannot grant the join.
	noInviter := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": v,
		"power_level_content_override": map[string]any{"invite": 200},
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
		}}}})
	if !gomatrixserverlib.MustGetRoomVersion(version).PrivilegedCreators() {
		w.want("GET", fsTPath("/v1/make_join/%s/%s", noInviter, bob)+"?ver="+v, nil, 400, "M_UNABLE_TO_GRANT_JOIN")
	} else {
		// The creator outranks every level.
		w.want("GET", fsTPath("/v1/make_join/%s/%s", noInviter, bob)+"?ver="+v, nil, 200, "")
	}
}

// forgeJoin builds, without make_join, a join of a user of the fake to a
// room of hs1 that names via as its authoriser (none when via is ""), on
// the room's current state and latest event: what a hostile server would
// send to send_join.
func (w *fsT) forgeJoin(version gomatrixserverlib.RoomVersion, roomID, userID, via string) gomatrixserverlib.PDU {
	w.t.Helper()
	ctx := context.Background()
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	var auth []string
	for _, tuple := range []gomatrixserverlib.StateKeyTuple{{EventType: "m.room.create"}, {EventType: "m.room.power_levels"},
		{EventType: "m.room.join_rules"}, {EventType: "m.room.member", StateKey: via}, {EventType: "m.room.member", StateKey: userID}} {
		if tuple.EventType == "m.room.member" && tuple.StateKey == "" {
			continue
		}
		evs, err := w.hs.Rooms.QueryCurrentState(ctx, roomID, tuple)
		if err != nil {
			w.t.Fatalf("state %v: %v", tuple, err)
		}
		if len(evs) == 1 && (tuple.EventType != "m.room.create" || !verImpl.DomainlessRoomIDs()) {
			auth = append(auth, evs[0].EventID())
		}
	}
	latest, _ := w.hs.Rooms.QueryLatestEvents(ctx, roomID)
	prevs, _ := w.hs.Rooms.QueryEvents(ctx, latest)
	content := map[string]any{"membership": "join"}
	if via != "" {
		content["join_authorised_via_users_server"] = via
	}
	c, _ := json.Marshal(content)
	return w.build(version, &gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: "m.room.member", StateKey: &userID,
		Content: c, PrevEvents: latest, AuthEvents: auth, Depth: prevs[0].Depth() + 1})
}

// leave makes a user of the fake leave a room through make_leave and
// send_leave.
func (w *fsT) leave(roomID, userID string) {
	w.t.Helper()
	b := w.want("GET", fsTPath("/v1/make_leave/%s/%s", roomID, userID), nil, 200, "")
	var res fclient.RespMakeLeave
	if err := json.Unmarshal(b, &res); err != nil {
		w.t.Fatalf("make_leave answer %s: %v", b, err)
	}
	leave := w.build(res.RoomVersion, &res.LeaveEvent)
	w.want("PUT", fsTPath("/v2/send_leave/%s/%s", roomID, leave.EventID()), json.RawMessage(leave.JSON()), 200, "")
	w.waitMembership(roomID, userID, "leave")
}

// Restricted joins are judged on the joining user's current membership of
// the allowed rooms: after bob left the allowed room, make_join and
// send_join refuse him (even with a join hs1 would have authorised while
// he was in it); join rules whose allow is malformed allow nobody; an
// invite still lets him in. (The repo suite had only tried users who had
// never been in the allowed room, so Complement's TestRestrictedRoomsRemoteJoin
// "left allowed room" and "mangled join rules" cases had nothing here.)
func TestFederationServeRestrictedJoinCurrentMembership(t *testing.T) {
	w := fsTStart(t)
	const v = "10"
	version := gomatrixserverlib.RoomVersion(v)
	space := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": v})
	restricted := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": v,
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}},
		}}}})
	bob := "@bob:fake.test"
	w.sendJoin(version, w.makeJoin(space, bob))
	w.sendJoin(version, w.makeJoin(restricted, bob))
	w.waitMembership(restricted, bob, "join")
	w.leave(restricted, bob)
	// Still in the space: bob may come back.
	authorised := w.makeJoin(restricted, bob)
	w.leave(space, bob)
	w.want("GET", fsTPath("/v1/make_join/%s/%s", restricted, bob)+"?ver="+v, nil, 403, "M_FORBIDDEN")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", restricted, authorised.EventID()), json.RawMessage(authorised.JSON()), 403, "M_FORBIDDEN")
	forged := w.forgeJoin(version, restricted, bob, w.alice.UserID)
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", restricted, forged.EventID()), json.RawMessage(forged.JSON()), 403, "M_FORBIDDEN")
	if got := w.members(restricted)[bob]; got != "leave" {
		t.Fatalf("bob's membership %q after the refused joins", got)
	}

	// Malformed allow lists: nobody gets in through them, not even a
	// member of the space.
	carol := "@carol:fake.test"
	w.sendJoin(version, w.makeJoin(space, carol))
	for _, allow := range []any{[]any{"invalid"}, "invalid", []any{map[string]any{"type": "m.room_membership", "room_id": 5}},
		[]any{map[string]any{"type": "m.room_membership", "room_id": "not a room"}}, []any{map[string]any{"room_id": space}}} {
		w.setState(w.alice, restricted, "m.room.join_rules", "", map[string]any{"join_rule": "restricted", "allow": allow})
		w.want("GET", fsTPath("/v1/make_join/%s/%s", restricted, carol)+"?ver="+v, nil, 403, "M_FORBIDDEN")
		forged := w.forgeJoin(version, restricted, carol, w.alice.UserID)
		w.want("PUT", fsTPath("/v2/send_join/%s/%s", restricted, forged.EventID()), json.RawMessage(forged.JSON()), 403, "M_FORBIDDEN")
	}
}

// A remote user leaves through make_leave and send_leave (v2 answers {},
// v1 [200, {}]).
func TestFederationServeLeave(t *testing.T) {
	w := fsTStart(t)
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": "11"})
	for i, route := range []string{"/v2/send_leave/%s/%s", "/v1/send_leave/%s/%s"} {
		bob := fmt.Sprintf("@bob%d:fake.test", i)
		w.sendJoin("11", w.makeJoin(roomID, bob))
		b := w.want("GET", fsTPath("/v1/make_leave/%s/%s", roomID, bob), nil, 200, "")
		var res fclient.RespMakeLeave
		if err := json.Unmarshal(b, &res); err != nil || res.RoomVersion != "11" || gjson.GetBytes(res.LeaveEvent.Content, "membership").Str != "leave" {
			t.Fatalf("make_leave answer %s (%v)", b, err)
		}
		leave := w.build(res.RoomVersion, &res.LeaveEvent)
		b = w.want("PUT", fsTPath(route, roomID, leave.EventID()), json.RawMessage(leave.JSON()), 200, "")
		if want := map[bool]string{true: `{}`, false: `[200,{}]`}[i == 0]; strings.ReplaceAll(string(b), " ", "") != want {
			t.Fatalf("send_leave answer %s, want %s", b, want)
		}
		w.syncHas(roomID, leave.EventID())
		w.waitMembership(roomID, bob, "leave")
	}
	// A join sent to send_leave is refused.
	join := w.makeJoin(roomID, "@bob9:fake.test")
	w.want("PUT", fsTPath("/v2/send_leave/%s/%s", roomID, join.EventID()), json.RawMessage(join.JSON()), 400, "M_INVALID_PARAM")
	w.want("GET", fsTPath("/v1/make_leave/%s/%s", roomID, "@bob:other.test"), nil, 403, "M_FORBIDDEN")
}

// A remote user knocks on a knock room (v7+): the answer carries the
// room's state as full events, the create event among them; rooms before
// v7 and servers without the room's version are refused.
func TestFederationServeKnock(t *testing.T) {
	w := fsTStart(t)
	for _, v := range []string{"10", "12"} {
		roomID := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": v, "name": "knock here",
			"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		bob := "@bob:fake.test"
		w.want("GET", fsTPath("/v1/make_knock/%s/%s", roomID, bob), nil, 400, "M_MISSING_PARAM")
		w.want("GET", fsTPath("/v1/make_knock/%s/%s", roomID, bob)+"?ver=9", nil, 400, "M_INCOMPATIBLE_ROOM_VERSION")
		b := w.want("GET", fsTPath("/v1/make_knock/%s/%s", roomID, bob)+"?ver=9&ver="+v, nil, 200, "")
		var res fclient.RespMakeKnock
		if err := json.Unmarshal(b, &res); err != nil || string(res.RoomVersion) != v || gjson.GetBytes(res.KnockEvent.Content, "membership").Str != "knock" {
			t.Fatalf("make_knock answer %s (%v)", b, err)
		}
		knock := w.build(res.RoomVersion, &res.KnockEvent)
		b = w.want("PUT", fsTPath("/v1/send_knock/%s/%s", roomID, knock.EventID()), json.RawMessage(knock.JSON()), 200, "")
		verImpl := gomatrixserverlib.MustGetRoomVersion(res.RoomVersion)
		var types []string
		for _, e := range gjson.GetBytes(b, "knock_room_state").Array() {
			pdu, err := verImpl.NewEventFromUntrustedJSON([]byte(e.Raw))
			if err != nil {
				t.Fatalf("knock_room_state entry is not a full event: %v: %s", err, e.Raw)
			}
			if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), pdu, w.keys, fsTUserIDForSender); err != nil {
				t.Fatalf("knock_room_state entry %s: %v", pdu.Type(), err)
			}
			types = append(types, pdu.Type())
		}
		if !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.name") || !slices.Contains(types, "m.room.join_rules") {
			t.Fatalf("knock_room_state types %v", types)
		}
		w.waitMembership(roomID, bob, "knock")
	}
	old := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": "6"})
	w.want("GET", fsTPath("/v1/make_knock/%s/%s", old, "@bob:fake.test")+"?ver=6", nil, 403, "M_FORBIDDEN")
	// A public room does not take knocks.
	public := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": "11"})
	w.want("GET", fsTPath("/v1/make_knock/%s/%s", public, "@bob:fake.test")+"?ver=11", nil, 403, "M_FORBIDDEN")
}

// fsTRoom is a room of the fake server (hs1 is not in it).
type fsTRoom struct {
	w       *fsT
	version gomatrixserverlib.RoomVersion
	roomID  string
	state   map[[2]string]gomatrixserverlib.PDU
	last    gomatrixserverlib.PDU
}

// fakeRoom creates a room on the fake: creator's create, join, power
// levels and invite-only join rules.
func (w *fsT) fakeRoom(version, creator string) *fsTRoom {
	r := &fsTRoom{w: w, version: gomatrixserverlib.RoomVersion(version), state: map[[2]string]gomatrixserverlib.PDU{}}
	verImpl := gomatrixserverlib.MustGetRoomVersion(r.version)
	create := map[string]any{"room_version": version}
	if verImpl.CreatorInCreateEvent() {
		create["creator"] = creator
	}
	if !verImpl.DomainlessRoomIDs() {
		r.roomID = fmt.Sprintf("!fake%d:fake.test", time.Now().UnixNano())
	}
	r.apply(r.build(creator, "m.room.create", "", create))
	r.roomID = r.last.RoomID().String()
	r.apply(r.build(creator, "m.room.member", creator, map[string]any{"membership": "join"}))
	users := map[string]any{}
	if !verImpl.PrivilegedCreators() {
		users[creator] = 100
	}
	r.apply(r.build(creator, "m.room.power_levels", "", map[string]any{"users": users}))
	r.apply(r.build(creator, "m.room.join_rules", "", map[string]any{"join_rule": "invite"}))
	return r
}

// build builds an event on the room's last event, signed with key (nil:
// the fake's).
func (r *fsTRoom) build(sender, typ, stateKey string, content any, key ...ed25519.PrivateKey) gomatrixserverlib.PDU {
	r.w.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(r.version)
	c, _ := json.Marshal(content)
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: r.roomID, Type: typ, StateKey: &stateKey, Content: c,
		PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1}
	if typ == "m.room.create" && verImpl.DomainlessRoomIDs() {
		proto.RoomID = ""
	}
	if r.last != nil {
		proto.PrevEvents = []string{r.last.EventID()}
		proto.Depth = r.last.Depth() + 1
	}
	eb := verImpl.NewEventBuilderFromProtoEvent(proto)
	if typ != "m.room.create" {
		var st []gomatrixserverlib.PDU
		for _, e := range r.state {
			st = append(st, e)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(st)
		if err != nil {
			r.w.t.Fatal(err)
		}
		if err := eb.AddAuthEvents(provider); err != nil {
			r.w.t.Fatal(err)
		}
	}
	k := r.w.rm.Key
	if len(key) > 0 {
		k = key[0]
	}
	ev, err := eb.Build(time.Now(), r.w.rm.Name, r.w.rm.KeyID, k)
	if err != nil {
		r.w.t.Fatalf("build %s: %v", typ, err)
	}
	return ev
}

func (r *fsTRoom) apply(ev gomatrixserverlib.PDU) {
	r.state[[2]string{ev.Type(), *ev.StateKey()}] = ev
	r.last = ev
}

func (r *fsTRoom) stateJSON(types ...string) []json.RawMessage {
	var out []json.RawMessage
	for k, e := range r.state {
		if slices.Contains(types, k[0]) {
			out = append(out, e.JSON())
		}
	}
	return out
}

// invitePath is the v2 invite route of an event.
func (r *fsTRoom) invitePath(ev gomatrixserverlib.PDU) string {
	return fsTPath("/v2/invite/%s/%s", r.roomID, ev.EventID())
}

// The fake invites alice to a room of its own (v11, v12): hs1 signs the
// invite, answers with it, and alice sees the invite with the room's
// stripped state in /sync. Invites that fail the spec's checks are
// refused.
func TestFederationServeInvite(t *testing.T) {
	w := fsTStart(t)
	fred := "@fred:fake.test"
	for _, v := range []string{"11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			w.t = t
			room := w.fakeRoom(v, fred)
			room.apply(room.build(fred, "m.room.name", "", map[string]any{"name": "fake room " + v}))
			inv := room.build(fred, "m.room.member", w.alice.UserID, map[string]any{"membership": "invite"})
			body := map[string]any{"room_version": v, "event": json.RawMessage(inv.JSON()),
				"invite_room_state": room.stateJSON("m.room.create", "m.room.join_rules", "m.room.name", "m.room.member")}
			b := w.want("PUT", room.invitePath(inv), body, 200, "")
			verImpl := gomatrixserverlib.MustGetRoomVersion(room.version)
			signed, err := verImpl.NewEventFromUntrustedJSON([]byte(gjson.GetBytes(b, "event").Raw))
			if err != nil || signed.EventID() != inv.EventID() {
				t.Fatalf("invite answer %s (%v)", b, err)
			}
			if err := gomatrixserverlib.VerifyEventSignatures(context.Background(), signed, w.keys, fsTUserIDForSender); err != nil {
				t.Fatalf("signed invite: %v", err)
			}
			testutil.Eventually(t, 10*time.Second, "the invite in alice's sync", func() bool {
				r := w.alice.Do("GET", "/_matrix/client/v3/sync?timeout=0", nil)
				var types []string
				for _, e := range gjson.GetBytes(r.Body, "rooms.invite."+gjson.Escape(room.roomID)+".invite_state.events").Array() {
					types = append(types, e.Get("type").Str)
					if e.Get("type").Str == "m.room.member" && e.Get("state_key").Str == w.alice.UserID && e.Get("content.membership").Str != "invite" {
						return false
					}
				}
				return slices.Contains(types, "m.room.create") && slices.Contains(types, "m.room.name") && slices.Contains(types, "m.room.member")
			})

			// Refusals.
			nobody := room.build(fred, "m.room.member", "@nobody:hs1.test", map[string]any{"membership": "invite"})
			w.want("PUT", room.invitePath(nobody), map[string]any{"room_version": v, "event": json.RawMessage(nobody.JSON()),
				"invite_room_state": room.stateJSON("m.room.create")}, 404, "M_NOT_FOUND")
			remote := room.build(fred, "m.room.member", "@zed:elsewhere.test", map[string]any{"membership": "invite"})
			w.want("PUT", room.invitePath(remote), map[string]any{"room_version": v, "event": json.RawMessage(remote.JSON())}, 400, "M_INVALID_PARAM")
			other := room.build("@fred:other.test", "m.room.member", w.alice.UserID, map[string]any{"membership": "invite"})
			w.want("PUT", room.invitePath(other), map[string]any{"room_version": v, "event": json.RawMessage(other.JSON())}, 400, "M_INVALID_PARAM")
			_, wrongKey, _ := ed25519.GenerateKey(nil)
			forged := room.build(fred, "m.room.member", w.alice.UserID, map[string]any{"membership": "invite", "x": 1}, wrongKey)
			w.want("PUT", room.invitePath(forged), map[string]any{"room_version": v, "event": json.RawMessage(forged.JSON()),
				"invite_room_state": room.stateJSON("m.room.create")}, 400, "M_INVALID_PARAM")
			notInvite := room.build(fred, "m.room.member", w.alice.UserID, map[string]any{"membership": "join"})
			w.want("PUT", room.invitePath(notInvite), map[string]any{"room_version": v, "event": json.RawMessage(notInvite.JSON())}, 400, "M_INVALID_PARAM")
			w.want("PUT", room.invitePath(inv), map[string]any{"event": json.RawMessage(inv.JSON())}, 400, "M_MISSING_PARAM")
			for _, unsupported := range []string{"org.matrix.msc4014", "org.matrix.msc4242.12", "13"} {
				w.want("PUT", room.invitePath(inv), map[string]any{"room_version": unsupported, "event": json.RawMessage(inv.JSON())}, 400, "M_INCOMPATIBLE_ROOM_VERSION")
			}
			w.want("PUT", fsTPath("/v2/invite/%s/%s", room.roomID, "$other"), map[string]any{"room_version": v, "event": json.RawMessage(inv.JSON())}, 400, "M_BAD_JSON")
			// Without the create event: refused in v12, accepted (and logged)
			// before.
			bob := membRegister(t, w.hs, "bob"+v)
			noCreate := room.build(fred, "m.room.member", bob.UserID, map[string]any{"membership": "invite"})
			status := map[string]int{"11": 200, "12": 400}[v]
			w.want("PUT", room.invitePath(noCreate), map[string]any{"room_version": v, "event": json.RawMessage(noCreate.JSON()),
				"invite_room_state": room.stateJSON("m.room.name")}, status, map[int]string{200: "", 400: "M_INVALID_PARAM"}[status])
		})
	}
	// v1: the body is the event, the answer [200, {"event": ...}].
	w.t = t
	room := w.fakeRoom("1", fred)
	inv := room.build(fred, "m.room.member", w.alice.UserID, map[string]any{"membership": "invite"})
	b := w.want("PUT", fsTPath("/v1/invite/%s/%s", room.roomID, inv.EventID()), json.RawMessage(inv.JSON()), 200, "")
	if r := gjson.ParseBytes(b); r.Get("0").Int() != 200 || !r.Get("1.event.signatures.hs1\\.test").Exists() {
		t.Fatalf("v1 invite answer %s", b)
	}
}

// A server in a room reads it: state, state IDs, events, auth chains,
// backfill and missing events, the event at a timestamp. In a room with
// "joined" history, what was sent before it joined comes redacted. A
// server not in the room gets 403, as does one the room's server ACL
// denies, on every protected route.
func TestFederationServeReads(t *testing.T) {
	w := fsTStart(t)
	ctx := context.Background()
	const version = "11"
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": version})
	w.setState(w.alice, roomID, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
	m1 := w.send(w.alice, roomID, "secret 1")
	m2 := w.send(w.alice, roomID, "secret 2")
	// Not in the room yet.
	w.want("GET", fsTPath("/v1/state_ids/%s", roomID)+"?event_id="+url.QueryEscape(m2), nil, 403, "M_FORBIDDEN")
	w.want("GET", fsTPath("/v1/event/%s", m2), nil, 403, "M_FORBIDDEN")

	bob := "@bob:fake.test"
	_, join := w.sendJoin(version, w.makeJoin(roomID, bob))
	m3 := w.send(w.alice, roomID, "visible 3")
	m4 := w.send(w.alice, roomID, "visible 4")

	// /state_ids and /state at m4: what hs1 holds.
	b := w.want("GET", fsTPath("/v1/state_ids/%s", roomID)+"?event_id="+url.QueryEscape(m4), nil, 200, "")
	var ids fclient.RespStateIDs
	_ = json.Unmarshal(b, &ids)
	want, _ := w.hs.Rooms.QueryStateBefore(ctx, roomID, m4)
	sort.Strings(want)
	sort.Strings(ids.StateEventIDs)
	if !slices.Equal(ids.StateEventIDs, want) || len(ids.AuthEventIDs) == 0 || !slices.Contains(ids.StateEventIDs, join.EventID()) {
		t.Fatalf("state_ids %v (auth %v), want %v", ids.StateEventIDs, ids.AuthEventIDs, want)
	}
	b = w.want("GET", fsTPath("/v1/state/%s", roomID)+"?event_id="+url.QueryEscape(m4), nil, 200, "")
	var st fclient.RespState
	_ = json.Unmarshal(b, &st)
	if got := fsTIDs(version, fsTJSONs(st.StateEvents)); !slices.Equal(got, want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	if _, _, err := gomatrixserverlib.CheckStateResponse(ctx, &st, version, w.keys, nil, fsTUserIDForSender); err != nil {
		t.Fatalf("state does not check: %v", err)
	}
	w.checkChainClosed(version, fsTJSONs(st.StateEvents), fsTJSONs(st.AuthEvents))

	// /event: after the join whole, before it redacted.
	body := func(b []byte) string { return gjson.GetBytes(b, "pdus.0.content.body").Str }
	if b := w.want("GET", fsTPath("/v1/event/%s", m3), nil, 200, ""); body(b) != "visible 3" || gjson.GetBytes(b, "origin").Str != "hs1.test" {
		t.Fatalf("event m3: %s", b)
	}
	b = w.want("GET", fsTPath("/v1/event/%s", m1), nil, 200, "")
	if body(b) != "" || gjson.GetBytes(b, "pdus.0.type").Str != "m.room.message" {
		t.Fatalf("event m1 before the join should come redacted: %s", b)
	}
	w.want("GET", fsTPath("/v1/event/%s", "$unknown"), nil, 404, "M_NOT_FOUND")

	// /event_auth: the auth chain of m3.
	b = w.want("GET", fsTPath("/v1/event_auth/%s/%s", roomID, m3), nil, 200, "")
	var types []string
	for _, e := range gjson.GetBytes(b, "auth_chain").Array() {
		types = append(types, e.Get("type").Str)
	}
	if !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.power_levels") || !slices.Contains(types, "m.room.member") {
		t.Fatalf("event_auth types %v", types)
	}
	w.want("GET", fsTPath("/v1/event_auth/%s/%s", roomID, "$unknown"), nil, 404, "M_NOT_FOUND")

	// /backfill from m4: newest first, the messages before the join redacted.
	b = w.want("GET", fsTPath("/v1/backfill/%s", roomID)+"?limit=50&v="+url.QueryEscape(m4), nil, 200, "")
	bodies := map[string]string{}
	for _, e := range gjson.GetBytes(b, "pdus").Array() {
		bodies[fsTIDs(version, []json.RawMessage{json.RawMessage(e.Raw)})[0]] = e.Get("content.body").Str
	}
	if bodies[m4] != "visible 4" || bodies[m3] != "visible 3" || bodies[m1] != "" || bodies[m2] != "" {
		t.Fatalf("backfill bodies %v", bodies)
	}
	if _, ok := bodies[m1]; !ok {
		t.Fatalf("backfill left out m1 instead of redacting it")
	}
	if n := len(gjson.GetBytes(w.want("GET", fsTPath("/v1/backfill/%s", roomID)+"?limit=2&v="+url.QueryEscape(m4), nil, 200, ""), "pdus").Array()); n != 2 {
		t.Fatalf("backfill with limit 2: %d events", n)
	}
	w.want("GET", fsTPath("/v1/backfill/%s", roomID)+"?v="+url.QueryEscape(m4), nil, 400, "M_MISSING_PARAM")
	w.want("GET", fsTPath("/v1/backfill/%s", roomID)+"?limit=x&v="+url.QueryEscape(m4), nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTPath("/v1/backfill/%s", roomID)+"?limit=10", nil, 400, "M_MISSING_PARAM")

	// /get_missing_events between m1 and m4: m2 (redacted) ... m3.
	b = w.want("POST", fsTPath("/v1/get_missing_events/%s", roomID), map[string]any{
		"earliest_events": []string{m1}, "latest_events": []string{m4}, "limit": 10}, 200, "")
	got := map[string]string{}
	var order []string
	for _, e := range gjson.GetBytes(b, "events").Array() {
		id := fsTIDs(version, []json.RawMessage{json.RawMessage(e.Raw)})[0]
		got[id] = e.Get("content.body").Str
		order = append(order, id)
	}
	if _, ok := got[m2]; !ok || got[m2] != "" || got[m3] != "visible 3" || !slices.Contains(order, join.EventID()) || order[len(order)-1] != m3 {
		t.Fatalf("get_missing_events %v (order %v)", got, order)
	}
	w.wantRaw("POST", fsTPath("/v1/get_missing_events/%s", roomID), "{not json", 400, "M_NOT_JSON")
	w.want("POST", fsTPath("/v1/get_missing_events/%s", roomID), map[string]any{"latest_events": "x"}, 400, "M_BAD_JSON")

	// /timestamp_to_event.
	ts := func(id string) int64 {
		evs, err := w.hs.Rooms.QueryEvents(ctx, []string{id})
		if err != nil || len(evs) != 1 {
			t.Fatalf("event %s: %v", id, err)
		}
		return int64(evs[0].OriginServerTS())
	}
	b = w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+fmt.Sprintf("?dir=b&ts=%d", ts(m4)), nil, 200, "")
	if gjson.GetBytes(b, "event_id").Str != m4 || gjson.GetBytes(b, "origin_server_ts").Int() != ts(m4) {
		t.Fatalf("timestamp_to_event at m4: %s", b)
	}
	b = w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+"?dir=f&ts=0", nil, 200, "")
	if gjson.GetBytes(b, "event_id").Str == "" {
		t.Fatalf("timestamp_to_event from 0: %s", b)
	}
	w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+fmt.Sprintf("?dir=f&ts=%d", ts(m4)+3600_000), nil, 404, "M_NOT_FOUND")
	w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+"?dir=x&ts=1", nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+"?dir=f", nil, 400, "M_MISSING_PARAM")
	w.want("GET", fsTPath("/v1/timestamp_to_event/%s", roomID)+"?dir=f&ts=soon", nil, 400, "M_INVALID_PARAM")

	// Malformed and unknown.
	w.want("GET", fsTPath("/v1/state_ids/%s", roomID), nil, 400, "M_MISSING_PARAM")
	w.want("GET", fsTPath("/v1/state_ids/%s", roomID)+"?event_id=$unknown", nil, 404, "M_NOT_FOUND")
	w.want("GET", fsTPath("/v1/state_ids/%s", "!unknown:hs1.test")+"?event_id=$unknown", nil, 404, "M_NOT_FOUND")
	w.want("GET", fsTPath("/v1/state_ids/%s", "not-a-room")+"?event_id=$unknown", nil, 400, "M_INVALID_PARAM")

	// A room the fake is not in: 403 everywhere.
	other := roomTCreate(w.alice, map[string]any{"preset": "private_chat", "room_version": version})
	o := w.send(w.alice, other, "private")
	for _, c := range []struct{ method, path string }{
		{"GET", fsTPath("/v1/state/%s", other) + "?event_id=" + url.QueryEscape(o)},
		{"GET", fsTPath("/v1/state_ids/%s", other) + "?event_id=" + url.QueryEscape(o)},
		{"GET", fsTPath("/v1/event/%s", o)},
		{"GET", fsTPath("/v1/event_auth/%s/%s", other, o)},
		{"GET", fsTPath("/v1/backfill/%s", other) + "?limit=10&v=" + url.QueryEscape(o)},
		{"POST", fsTPath("/v1/get_missing_events/%s", other)},
	} {
		var body any
		if c.method == "POST" {
			body = map[string]any{"earliest_events": []string{}, "latest_events": []string{o}}
		}
		w.want(c.method, c.path, body, 403, "M_FORBIDDEN")
	}

	// The room's ACL denies the fake: 403 on every protected route.
	w.setState(w.alice, roomID, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}, "deny": []string{"fake.test"}})
	w.want("GET", fsTPath("/v1/make_leave/%s/%s", roomID, "@carl:fake.test"), nil, 403, "M_FORBIDDEN")
	anyEvent := json.RawMessage(join.JSON())
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", fsTPath("/v1/make_join/%s/%s", roomID, "@carl:fake.test") + "?ver=11", nil},
		{"PUT", fsTPath("/v1/send_join/%s/%s", roomID, join.EventID()), anyEvent},
		{"PUT", fsTPath("/v2/send_join/%s/%s", roomID, join.EventID()), anyEvent},
		{"GET", fsTPath("/v1/make_leave/%s/%s", roomID, bob), nil},
		{"PUT", fsTPath("/v1/send_leave/%s/%s", roomID, join.EventID()), anyEvent},
		{"PUT", fsTPath("/v2/send_leave/%s/%s", roomID, join.EventID()), anyEvent},
		{"GET", fsTPath("/v1/make_knock/%s/%s", roomID, bob) + "?ver=11", nil},
		{"PUT", fsTPath("/v1/send_knock/%s/%s", roomID, join.EventID()), anyEvent},
		{"PUT", fsTPath("/v2/invite/%s/%s", roomID, join.EventID()), map[string]any{"room_version": version, "event": anyEvent}},
		{"GET", fsTPath("/v1/state/%s", roomID) + "?event_id=" + url.QueryEscape(m4), nil},
		{"GET", fsTPath("/v1/state_ids/%s", roomID) + "?event_id=" + url.QueryEscape(m4), nil},
		{"GET", fsTPath("/v1/backfill/%s", roomID) + "?limit=10&v=" + url.QueryEscape(m4), nil},
		{"GET", fsTPath("/v1/event_auth/%s/%s", roomID, m4), nil},
		{"POST", fsTPath("/v1/get_missing_events/%s", roomID), map[string]any{"earliest_events": []string{m1}, "latest_events": []string{m4}}},
		{"GET", fsTPath("/v1/event/%s", m4), nil},
		{"GET", fsTPath("/v1/timestamp_to_event/%s", roomID) + "?dir=b&ts=" + fmt.Sprint(ts(m4)), nil},
	} {
		w.want(c.method, c.path, c.body, 403, "M_FORBIDDEN")
	}
}

// Malformed membership requests get 400s (never 500s).
func TestFederationServeMalformed(t *testing.T) {
	w := fsTStart(t)
	const version = "10"
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": version})
	bob := "@bob:fake.test"
	join := w.makeJoin(roomID, bob)
	put := func(ev gomatrixserverlib.PDU, status int, errcode string) {
		t.Helper()
		w.want("PUT", fsTPath("/v2/send_join/%s/%s", roomID, ev.EventID()), json.RawMessage(ev.JSON()), status, errcode)
	}
	tmpl := func(mut func(p *gomatrixserverlib.ProtoEvent)) gomatrixserverlib.PDU {
		b := w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, bob)+"?ver="+version, nil, 200, "")
		var res fclient.RespMakeJoin
		_ = json.Unmarshal(b, &res)
		mut(&res.JoinEvent)
		return w.build(res.RoomVersion, &res.JoinEvent)
	}
	w.wantRaw("PUT", fsTPath("/v2/send_join/%s/%s", roomID, join.EventID()), "{nope", 400, "M_NOT_JSON")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", roomID, join.EventID()), []int{1}, 400, "M_BAD_JSON")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", roomID, join.EventID()), map[string]any{"type": "m.room.member"}, 400, "M_BAD_JSON")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", roomID, "$other"), json.RawMessage(join.JSON()), 400, "M_BAD_JSON")
	w.want("PUT", fsTPath("/v2/send_join/%s/%s", "!other:hs1.test", join.EventID()), json.RawMessage(join.JSON()), 404, "M_NOT_FOUND")
	put(tmpl(func(p *gomatrixserverlib.ProtoEvent) { p.Type = "m.room.message"; p.StateKey = nil }), 400, "M_INVALID_PARAM")
	put(tmpl(func(p *gomatrixserverlib.ProtoEvent) { p.Content = []byte(`{"membership":"leave"}`) }), 400, "M_INVALID_PARAM")
	put(tmpl(func(p *gomatrixserverlib.ProtoEvent) { s := "@other:fake.test"; p.StateKey = &s }), 400, "M_INVALID_PARAM")
	put(tmpl(func(p *gomatrixserverlib.ProtoEvent) {
		s := "@bob:other.test"
		p.StateKey, p.SenderID = &s, s
	}), 400, "M_INVALID_PARAM")
	// Signed with a key that is not the fake's.
	b := w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, bob)+"?ver="+version, nil, 200, "")
	var res fclient.RespMakeJoin
	_ = json.Unmarshal(b, &res)
	_, wrongKey, _ := ed25519.GenerateKey(nil)
	forged, err := gomatrixserverlib.MustGetRoomVersion(res.RoomVersion).NewEventBuilderFromProtoEvent(&res.JoinEvent).
		Build(time.Now(), w.rm.Name, w.rm.KeyID, wrongKey)
	if err != nil {
		t.Fatal(err)
	}
	put(forged, 400, "M_INVALID_PARAM")
	// Prev events hs1 does not have.
	put(tmpl(func(p *gomatrixserverlib.ProtoEvent) {
		p.PrevEvents = []string{"$unknownAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	}), 400, "M_NOT_FOUND")
	// Malformed paths and parameters.
	w.want("GET", fsTPath("/v1/make_join/%s/%s", roomID, "bob")+"?ver="+version, nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTPath("/v1/make_join/%s/%s", "room", bob)+"?ver="+version, nil, 400, "M_INVALID_PARAM")
	w.wantRaw("PUT", fsTPath("/v2/invite/%s/%s", roomID, join.EventID()), "{", 400, "M_NOT_JSON")
	w.want("PUT", fsTPath("/v2/invite/%s/%s", roomID, join.EventID()), map[string]any{"room_version": "10", "event": map[string]any{"type": 1}}, 400, "M_BAD_JSON")
	// The join still works after all that.
	w.sendJoin(version, join)
}

// query/directory, query/profile and publicRooms.
func TestFederationServeQueries(t *testing.T) {
	w := fsTStart(t)
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": "11", "name": "Serve Directory",
		"room_alias_name": "serve", "visibility": "public"})
	roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": "11", "name": "Another", "visibility": "public"})

	b := w.want("GET", fsTFed+"/v1/query/directory?room_alias="+url.QueryEscape("#serve:hs1.test"), nil, 200, "")
	if gjson.GetBytes(b, "room_id").Str != roomID || gjson.GetBytes(b, "servers").Raw != `["hs1.test"]` {
		t.Fatalf("directory %s", b)
	}
	w.sendJoin("11", w.makeJoin(roomID, "@bob:fake.test"))
	testutil.Eventually(t, 10*time.Second, "fake.test among the servers", func() bool {
		_, b := w.do("GET", fsTFed+"/v1/query/directory?room_alias="+url.QueryEscape("#serve:hs1.test"), nil)
		return gjson.GetBytes(b, "servers").Raw == `["hs1.test","fake.test"]`
	})
	w.want("GET", fsTFed+"/v1/query/directory?room_alias="+url.QueryEscape("#nope:hs1.test"), nil, 404, "M_NOT_FOUND")
	w.want("GET", fsTFed+"/v1/query/directory?room_alias="+url.QueryEscape("#serve:other.test"), nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTFed+"/v1/query/directory?room_alias=serve", nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTFed+"/v1/query/directory", nil, 400, "M_MISSING_PARAM")

	w.alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", w.alice.UserID), map[string]any{"displayname": "Alice A."}, 200)
	b = w.want("GET", fsTFed+"/v1/query/profile?user_id="+url.QueryEscape(w.alice.UserID), nil, 200, "")
	if gjson.GetBytes(b, "displayname").Str != "Alice A." {
		t.Fatalf("profile %s", b)
	}
	b = w.want("GET", fsTFed+"/v1/query/profile?field=displayname&user_id="+url.QueryEscape(w.alice.UserID), nil, 200, "")
	if string(b) != `{"displayname":"Alice A."}` {
		t.Fatalf("profile displayname %s", b)
	}
	if b = w.want("GET", fsTFed+"/v1/query/profile?field=avatar_url&user_id="+url.QueryEscape(w.alice.UserID), nil, 200, ""); string(b) != `{}` {
		t.Fatalf("profile avatar_url (not set) %s", b)
	}
	w.want("GET", fsTFed+"/v1/query/profile?user_id="+url.QueryEscape("@nobody:hs1.test"), nil, 404, "M_NOT_FOUND")
	w.want("GET", fsTFed+"/v1/query/profile?user_id="+url.QueryEscape("@bob:fake.test"), nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTFed+"/v1/query/profile?user_id=nobody", nil, 400, "M_INVALID_PARAM")
	w.want("GET", fsTFed+"/v1/query/profile", nil, 400, "M_MISSING_PARAM")

	b = w.want("GET", fsTFed+"/v1/publicRooms", nil, 200, "")
	if n := len(gjson.GetBytes(b, "chunk").Array()); n != 2 || gjson.GetBytes(b, "total_room_count_estimate").Int() != 2 {
		t.Fatalf("publicRooms %s", b)
	}
	b = w.want("GET", fsTFed+"/v1/publicRooms?limit=1", nil, 200, "")
	next := gjson.GetBytes(b, "next_batch").Str
	if len(gjson.GetBytes(b, "chunk").Array()) != 1 || next == "" {
		t.Fatalf("publicRooms limit 1: %s", b)
	}
	b = w.want("GET", fsTFed+"/v1/publicRooms?limit=1&since="+next, nil, 200, "")
	if len(gjson.GetBytes(b, "chunk").Array()) != 1 || gjson.GetBytes(b, "next_batch").Exists() || gjson.GetBytes(b, "prev_batch").Str == "" {
		t.Fatalf("publicRooms page 2: %s", b)
	}
	b = w.want("POST", fsTFed+"/v1/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "directory"}}, 200, "")
	if chunk := gjson.GetBytes(b, "chunk").Array(); len(chunk) != 1 || chunk[0].Get("room_id").Str != roomID ||
		chunk[0].Get("canonical_alias").Str != "#serve:hs1.test" || chunk[0].Get("num_joined_members").Int() != 2 {
		t.Fatalf("publicRooms search %s", b)
	}
	w.want("GET", fsTFed+"/v1/publicRooms?limit=-1", nil, 400, "M_INVALID_PARAM")
	w.want("POST", fsTFed+"/v1/publicRooms", map[string]any{"limit": "x"}, 400, "M_BAD_JSON")
	w.want("GET", fsTFed+"/v1/publicRooms?since=zz", nil, 400, "M_INVALID_PARAM")
	// The directories of application services' networks (there are none
	// here): every directory is the server's, one network lists nothing.
	b = w.want("GET", fsTFed+"/v1/publicRooms?include_all_networks=true", nil, 200, "")
	if n := len(gjson.GetBytes(b, "chunk").Array()); n != 2 {
		t.Fatalf("publicRooms of all networks %s", b)
	}
	b = w.want("POST", fsTFed+"/v1/publicRooms", map[string]any{"third_party_instance_id": "irc|libera"}, 200, "")
	if n := len(gjson.GetBytes(b, "chunk").Array()); n != 0 {
		t.Fatalf("publicRooms of a network %s", b)
	}
	w.want("GET", fsTFed+"/v1/publicRooms?third_party_instance_id=nopipe", nil, 400, "M_INVALID_PARAM")
	w.want("POST", fsTFed+"/v1/publicRooms", map[string]any{"third_party_instance_id": "irc|libera", "include_all_networks": true}, 400, "M_INVALID_PARAM")
}

// A room with 2,000 members (MYELIN_TEST_LARGE_ROOM members when set)
// answers send_join with all of them.
func TestFederationServeSendJoinLargeRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	members := 2000
	if n, err := strconv.Atoi(os.Getenv("MYELIN_TEST_LARGE_ROOM")); err == nil && n > 0 {
		members = n
	}
	w := fsTStart(t)
	ctx := context.Background()
	const version = "11"
	roomID := roomTCreate(w.alice, map[string]any{"preset": "public_chat", "room_version": version})
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)
	cur := func(typ string) gomatrixserverlib.PDU {
		evs, err := w.hs.Rooms.QueryCurrentState(ctx, roomID, gomatrixserverlib.StateKeyTuple{EventType: typ})
		if err != nil || len(evs) != 1 {
			t.Fatalf("current %s: %v", typ, err)
		}
		return evs[0]
	}
	auth := []string{cur("m.room.create").EventID(), cur("m.room.power_levels").EventID(), cur("m.room.join_rules").EventID()}
	latest, _ := w.hs.Rooms.QueryLatestEvents(ctx, roomID)
	prevEvs, _ := w.hs.Rooms.QueryEvents(ctx, latest)
	prev, depth := latest, int64(0)
	for _, p := range prevEvs {
		depth = max(depth, p.Depth())
	}
	start := time.Now()
	var batch []json.RawMessage
	for i := range members {
		user := fmt.Sprintf("@m%04d:fake.test", i)
		c, _ := json.Marshal(map[string]any{"membership": "join"})
		depth++
		ev, err := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
			SenderID: user, RoomID: roomID, Type: "m.room.member", StateKey: &user, Content: c,
			PrevEvents: prev, AuthEvents: auth, Depth: depth,
		}).Build(time.Now(), w.rm.Name, w.rm.KeyID, w.rm.Key)
		if err != nil {
			t.Fatal(err)
		}
		prev = []string{ev.EventID()}
		batch = append(batch, ev.JSON())
		if len(batch) == 50 || i == members-1 {
			res, err := w.rm.Send("hs1.test", fmt.Sprintf("big%d", i), batch, nil)
			if err != nil {
				t.Fatal(err)
			}
			for id, r := range res.PDUs {
				if r.Error != "" {
					t.Fatalf("join %s: %s", id, r.Error)
				}
			}
			batch = nil
		}
	}
	t.Logf("%d remote joins taken in over /send in %v", members, time.Since(start))

	start = time.Now()
	join := w.makeJoin(roomID, "@newcomer:fake.test")
	b := w.want("PUT", fsTPath("/v2/send_join/%s/%s", roomID, join.EventID()), json.RawMessage(join.JSON()), 200, "")
	elapsed := time.Since(start)
	var res fclient.RespSendJoin
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range res.StateEvents {
		if gjson.GetBytes(e, "type").Str == "m.room.member" && gjson.GetBytes(e, "content.membership").Str == "join" {
			n++
		}
	}
	if n != members+1 {
		t.Fatalf("send_join state has %d joined members, want %d", n, members+1)
	}
	t.Logf("make_join + send_join in a room of %d members: %v (%d state events, %d auth chain events, %d KiB)",
		members+1, elapsed, len(res.StateEvents), len(res.AuthEvents), len(b)/1024)
	// The whole answer checks like a joining server checks it.
	start = time.Now()
	w.sendJoin(version, join)
	t.Logf("send_join again (checked by the fake): %v", time.Since(start))
}
