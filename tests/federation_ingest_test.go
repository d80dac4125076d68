package tests

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/testutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ingTRoom is a room of hs1 that the fake server fake.test takes part in:
// the fake builds events on what hs1 holds and sends them with /send, and
// serves the events it withheld when hs1 asks for them.
type ingTRoom struct {
	t       testing.TB
	hs      *testserver.Server
	rm      *testserver.Remote
	roomID  string
	version string
	mu      sync.Mutex
	// all is every event the fake knows (sent or withheld), by ID.
	all map[string]gomatrixserverlib.PDU
	// received collects the PDUs hs1 sent to the fake.
	received []gomatrixserverlib.PDU
	// edus collects the EDUs hs1 sent to the fake.
	edus  []gomatrixserverlib.EDU
	txns  int
	alice *testutil.Client
	// hidden events are left out of get_missing_events answers (served
	// by /event and /state_ids still).
	hidden map[string]bool
	// refused events get a 404 from /event.
	refused map[string]bool
	// asked records hs1's requests to the fake that fetch events: "gme",
	// "state_ids <event>", "event <event>", "event_auth <event>".
	asked []string
	// hostileMissing and hostileStateIDs, when set, rewrite the answers
	// to get_missing_events and /state_ids (called with mu held).
	hostileMissing   func(events []json.RawMessage) []json.RawMessage
	hostileStateIDs  func(res map[string]any)
	hostileEventAuth func(chain []json.RawMessage) []json.RawMessage
}

// ask records a request of hs1.
func (r *ingTRoom) ask(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, what)
}

// requests returns the recorded requests starting with prefix.
func (r *ingTRoom) requests(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.asked {
		if strings.HasPrefix(a, prefix) {
			out = append(out, a)
		}
	}
	return out
}

func ingTSetup(t testing.TB, version string) (*ingTRoom, *testserver.Network) {
	n := testserver.NewNetwork(t)
	hs := n.Start("hs1.test")
	rm := n.StartRemote("fake.test")
	alice := testutil.NewClient(t, hs.URL).Register("alice", "alice-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat", "room_version": version})
	r := &ingTRoom{t: t, hs: hs, rm: rm, roomID: roomID, version: version, all: map[string]gomatrixserverlib.PDU{}, alice: alice, hidden: map[string]bool{}, refused: map[string]bool{}}
	rm.Mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", r.serveSend)
	rm.Mux.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{roomId}", r.serveMissing)
	rm.Mux.HandleFunc("GET /_matrix/federation/v1/event/{eventId}", r.serveEvent)
	rm.Mux.HandleFunc("GET /_matrix/federation/v1/state_ids/{roomId}", r.serveStateIDs)
	rm.Mux.HandleFunc("GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}", r.serveEventAuth)
	// Everything hs1 has of the room is known to the fake.
	latest, _ := hs.Rooms.QueryLatestEvents(context.Background(), roomID)
	evs, _ := hs.Rooms.QueryBackfill(context.Background(), roomID, latest, 100)
	for _, e := range evs {
		r.all[e.EventID()] = e
	}
	return r, n
}

func ingTJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (r *ingTRoom) serveSend(w http.ResponseWriter, req *http.Request) {
	var txn struct {
		PDUs []json.RawMessage       `json:"pdus"`
		EDUs []gomatrixserverlib.EDU `json:"edus"`
	}
	_ = json.NewDecoder(req.Body).Decode(&txn)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(r.version))
	r.mu.Lock()
	r.txns++
	r.edus = append(r.edus, txn.EDUs...)
	for _, raw := range txn.PDUs {
		if pdu, err := verImpl.NewEventFromUntrustedJSON(raw); err == nil {
			r.received = append(r.received, pdu)
			r.all[pdu.EventID()] = pdu
		}
	}
	r.mu.Unlock()
	ingTJSON(w, map[string]any{"pdus": map[string]any{}})
}

func (r *ingTRoom) serveMissing(w http.ResponseWriter, req *http.Request) {
	var body fclient.MissingEvents
	_ = json.NewDecoder(req.Body).Decode(&body)
	r.ask("gme")
	r.mu.Lock()
	defer r.mu.Unlock()
	stop := map[string]bool{}
	for _, id := range body.EarliestEvents {
		stop[id] = true
	}
	var out []gomatrixserverlib.PDU
	frontier := []string{}
	for _, id := range body.LatestEvents {
		if e, ok := r.all[id]; ok {
			frontier = append(frontier, e.PrevEventIDs()...)
		}
	}
	for len(frontier) > 0 && len(out) < body.Limit {
		id := frontier[0]
		frontier = frontier[1:]
		e, ok := r.all[id]
		if !ok || stop[id] || r.hidden[id] {
			continue
		}
		stop[id] = true
		out = append(out, e)
		frontier = append(frontier, e.PrevEventIDs()...)
	}
	raws := []json.RawMessage{}
	for i := len(out) - 1; i >= 0; i-- {
		raws = append(raws, out[i].JSON())
	}
	if r.hostileMissing != nil {
		raws = r.hostileMissing(raws)
	}
	ingTJSON(w, map[string]any{"events": raws})
}

func (r *ingTRoom) serveEvent(w http.ResponseWriter, req *http.Request) {
	r.ask("event " + req.PathValue("eventId"))
	r.mu.Lock()
	e, ok := r.all[req.PathValue("eventId")]
	ok = ok && !r.refused[req.PathValue("eventId")]
	r.mu.Unlock()
	if !ok {
		w.WriteHeader(404)
		ingTJSON(w, map[string]string{"errcode": "M_NOT_FOUND"})
		return
	}
	ingTJSON(w, map[string]any{"origin": "fake.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{e.JSON()}})
}

// stateBefore computes the state before an event the fake knows, walking
// its ancestry (the fake's rooms have no forks).
func (r *ingTRoom) stateBefore(id string) (state map[[2]string]gomatrixserverlib.PDU) {
	state = map[[2]string]gomatrixserverlib.PDU{}
	var chain []gomatrixserverlib.PDU
	seen := map[string]bool{id: true}
	for e, ok := r.all[id]; ok && len(e.PrevEventIDs()) > 0 && !seen[e.PrevEventIDs()[0]]; {
		seen[e.PrevEventIDs()[0]] = true
		e, ok = r.all[e.PrevEventIDs()[0]]
		if ok {
			chain = append(chain, e)
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if sk := chain[i].StateKey(); sk != nil {
			state[[2]string{chain[i].Type(), *sk}] = chain[i]
		}
	}
	return state
}

func (r *ingTRoom) authChain(evs []gomatrixserverlib.PDU) []string {
	seen := map[string]bool{}
	var out []string
	var walk func(e gomatrixserverlib.PDU)
	walk = func(e gomatrixserverlib.PDU) {
		for _, a := range e.AuthEventIDs() {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
				if ae, ok := r.all[a]; ok {
					walk(ae)
				}
			}
		}
	}
	for _, e := range evs {
		walk(e)
	}
	return out
}

func (r *ingTRoom) serveStateIDs(w http.ResponseWriter, req *http.Request) {
	r.ask("state_ids " + req.URL.Query().Get("event_id"))
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stateBefore(req.URL.Query().Get("event_id"))
	var ids []string
	var evs []gomatrixserverlib.PDU
	for _, e := range st {
		ids = append(ids, e.EventID())
		evs = append(evs, e)
	}
	res := map[string]any{"pdu_ids": ids, "auth_chain_ids": r.authChain(evs)}
	if r.hostileStateIDs != nil {
		r.hostileStateIDs(res)
	}
	ingTJSON(w, res)
}

func (r *ingTRoom) serveEventAuth(w http.ResponseWriter, req *http.Request) {
	r.ask("event_auth " + req.PathValue("eventId"))
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.all[req.PathValue("eventId")]
	if !ok {
		w.WriteHeader(404)
		return
	}
	var raws []json.RawMessage
	for _, id := range r.authChain([]gomatrixserverlib.PDU{e}) {
		if ae, ok := r.all[id]; ok {
			raws = append(raws, ae.JSON())
		}
	}
	if r.hostileEventAuth != nil {
		raws = r.hostileEventAuth(raws)
	}
	ingTJSON(w, map[string]any{"auth_chain": raws})
}

// current returns hs1's current state event of a key.
func (r *ingTRoom) current(typ, key string) gomatrixserverlib.PDU {
	pdus, err := r.hs.Rooms.QueryCurrentState(context.Background(), r.roomID, rsapi.StateKeyTuple{EventType: typ, StateKey: key})
	if err != nil || len(pdus) == 0 {
		return nil
	}
	return pdus[0]
}

// latest returns hs1's forward extremities.
func (r *ingTRoom) latest() []gomatrixserverlib.PDU {
	ids, err := r.hs.Rooms.QueryLatestEvents(context.Background(), r.roomID)
	if err != nil {
		r.t.Fatal(err)
	}
	evs, _ := r.hs.Rooms.QueryEvents(context.Background(), ids)
	return evs
}

// build builds an event signed as the fake (key: nil uses the fake's key).
func (r *ingTRoom) build(key ed25519.PrivateKey, sender, typ string, stateKey *string, content any, prevs, auth []gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	r.t.Helper()
	return r.buildEdited(key, sender, typ, stateKey, content, prevs, auth, nil)
}

// buildEdited is build letting edit (nil: none) change the proto event
// before it is signed.
func (r *ingTRoom) buildEdited(key ed25519.PrivateKey, sender, typ string, stateKey *string, content any, prevs, auth []gomatrixserverlib.PDU, edit func(*gomatrixserverlib.ProtoEvent)) gomatrixserverlib.PDU {
	r.t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(r.version))
	c, _ := json.Marshal(content)
	depth := int64(0)
	prevIDs, authIDs := []string{}, []string{}
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.EventID())
		depth = max(depth, p.Depth())
	}
	for _, a := range auth {
		if a != nil && !(verImpl.DomainlessRoomIDs() && a.Type() == spec.MRoomCreate) {
			authIDs = append(authIDs, a.EventID())
		}
	}
	if key == nil {
		key = r.rm.Key
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: r.roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: prevIDs, AuthEvents: authIDs, Depth: depth + 1,
	}
	if edit != nil {
		edit(proto)
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), r.rm.Name, r.rm.KeyID, key)
	var verr gomatrixserverlib.EventValidationError
	if errors.As(err, &verr) && ev != nil {
		err = nil // sizes persistable in the room version (as Complement builds them), or too large: sent all the same
	}
	if err != nil {
		r.t.Fatalf("build %s: %v", typ, err)
	}
	r.mu.Lock()
	r.all[ev.EventID()] = ev
	r.mu.Unlock()
	return ev
}

// message builds a message from sender on prevs.
func (r *ingTRoom) message(sender string, prevs []gomatrixserverlib.PDU, body string) gomatrixserverlib.PDU {
	return r.build(nil, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, prevs,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomMember, sender)})
}

// kind returns how hs1 stores an event (0: not at all).
func (r *ingTRoom) kind(e gomatrixserverlib.PDU) rsapi.EventKind {
	r.t.Helper()
	kinds, err := r.hs.Rooms.QueryEventKinds(context.Background(), []string{e.EventID()})
	if err != nil {
		r.t.Fatal(err)
	}
	return kinds[e.EventID()]
}

// send sends PDUs from the fake and returns the per-event errors.
func (r *ingTRoom) send(pdus ...gomatrixserverlib.PDU) map[string]string {
	r.t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p.JSON()
	}
	res, err := r.rm.Send("hs1.test", fmt.Sprintf("t%d", time.Now().UnixNano()), raws, nil)
	if err != nil {
		r.t.Fatalf("send: %v", err)
	}
	out := map[string]string{}
	for id, pr := range res.PDUs {
		out[id] = pr.Error
	}
	return out
}

// join makes a fake user join hs1's room through /send.
func (r *ingTRoom) join(user string) gomatrixserverlib.PDU {
	r.t.Helper()
	ev := r.build(nil, user, spec.MRoomMember, &user, map[string]any{"membership": "join"}, r.latest(),
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomJoinRules, "")})
	if errs := r.send(ev); errs[ev.EventID()] != "" {
		r.t.Fatalf("join of %s: %s", user, errs[ev.EventID()])
	}
	return ev
}

// bodies lists the message bodies of the room's last events, oldest first.
func ingTBodies(c *testutil.Client, roomID string) []string {
	r := c.MustDo("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?dir=b&limit=100", nil, 200)
	var out []string
	chunk, _ := r["chunk"].([]any)
	for i := len(chunk) - 1; i >= 0; i-- {
		e, _ := chunk[i].(map[string]any)
		if c, ok := e["content"].(map[string]any); ok && e["type"] == "m.room.message" {
			if b, ok := c["body"].(string); ok {
				out = append(out, b)
			}
		}
	}
	return out
}

func TestFederationIngestJoinAndMessages(t *testing.T) {
	for _, v := range []string{"10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			r, _ := ingTSetup(t, v)
			fuser := "@fuser:fake.test"
			join := r.join(fuser)
			m1 := r.message(fuser, []gomatrixserverlib.PDU{join}, "one")
			m2 := r.message(fuser, []gomatrixserverlib.PDU{m1}, "two")
			if errs := r.send(m1, m2); errs[m1.EventID()] != "" || errs[m2.EventID()] != "" {
				t.Fatalf("messages: %v", errs)
			}
			if got := ingTBodies(r.alice, r.roomID); !slices.Equal(got, []string{"one", "two"}) {
				t.Fatalf("alice sees %v", got)
			}
			if latest := r.latest(); len(latest) != 1 || latest[0].EventID() != m2.EventID() {
				t.Fatalf("latest after the messages: %v", latest)
			}
			kinds, _ := r.hs.Rooms.QueryEventKinds(context.Background(), []string{join.EventID(), m1.EventID(), m2.EventID()})
			for id, k := range kinds {
				if k != rsapi.KindNormal {
					t.Fatalf("%s stored as %v", id, k)
				}
			}
		})
	}
}

// Hostile input: none of it is applied and the server stays healthy.
func TestFederationIngestHostile(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	prev := []gomatrixserverlib.PDU{join}

	// Signed with a key that is not the fake's.
	_, otherKey, _ := ed25519.GenerateKey(nil)
	badSig := r.build(otherKey, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "bad signature"}, prev,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	// Sent as a user of hs1, signed only by the fake.
	forged := r.message("@alice:hs1.test", prev, "forged sender")
	// From a fake user who never joined.
	stranger := r.message("@stranger:fake.test", prev, "let me in")
	errs := r.send(badSig, forged, stranger)
	for _, e := range []gomatrixserverlib.PDU{badSig, forged} {
		if errs[e.EventID()] == "" {
			t.Errorf("%s was accepted", gjson.GetBytes(e.Content(), "body").Str)
		}
	}
	// Handled, so no error (as Synapse), but stored as rejected.
	if errs[stranger.EventID()] != "" || r.kind(stranger) != rsapi.KindRejected {
		t.Errorf("a stranger's message: %q, kind %v", errs[stranger.EventID()], r.kind(stranger))
	}
	// A wrong content hash: the event is kept redacted.
	tampered := r.message(fuser, prev, "original")
	js := strings.Replace(string(tampered.JSON()), `"original"`, `"tampered"`, 1)
	tamperRes, err := r.rm.Send("hs1.test", "tamper", []json.RawMessage{json.RawMessage(js)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pr, ok := tamperRes.PDUs[tampered.EventID()]; !ok || pr.Error != "" {
		t.Fatalf("tampered event result %+v", tamperRes.PDUs)
	}
	if got := roomTEvent(r.alice, r.roomID, tampered.EventID()); len(roomTMap(t, got["content"], "content")) != 0 {
		t.Fatalf("an event with a wrong hash is served with content %v", got["content"])
	}
	// An unknown room.
	other := r.build(nil, fuser, "m.room.message", nil, map[string]any{"body": "x"}, prev, nil)
	otherJSON := strings.Replace(string(other.JSON()), r.roomID, "!nowhere:fake.test", 1)
	res, _ := r.rm.Send("hs1.test", "unknown-room", []json.RawMessage{json.RawMessage(otherJSON)}, nil)
	for id, pr := range res.PDUs {
		if pr.Error == "" {
			t.Fatalf("an event of an unknown room was accepted: %s", id)
		}
	}
	// Too many PDUs.
	many := make([]json.RawMessage, 1000)
	for i := range many {
		many[i] = stranger.JSON()
	}
	status, body, _ := r.rm.Do("PUT", "hs1.test", "/_matrix/federation/v1/send/many", map[string]any{"origin": "fake.test", "origin_server_ts": 1, "pdus": many})
	if status != 400 || !strings.Contains(string(body), "M_BAD_JSON") {
		t.Fatalf("1000 PDUs: %d %s", status, body)
	}
	// Not JSON.
	status, _, _ = r.rm.Do("PUT", "hs1.test", "/_matrix/federation/v1/send/notjson", "[1,2")
	if status != 400 {
		t.Fatalf("a transaction that is not an object: %d", status)
	}
	// Nothing got in, and the server still works.
	if got := ingTBodies(r.alice, r.roomID); slices.ContainsFunc(got, func(b string) bool { return b != "" && b != "original" }) {
		t.Fatalf("alice sees %v", got)
	}
	// Nor did it notify anyone: push rules saw none of the refused events.
	notifs := r.alice.MustDo("GET", "/_matrix/client/v3/notifications", nil, 200)["notifications"].([]any)
	if len(notifs) == 0 {
		t.Errorf("the accepted message (kept redacted) did not notify alice")
	}
	for _, n := range notifs {
		id, _ := n.(map[string]any)["event"].(map[string]any)["event_id"].(string)
		for _, e := range []gomatrixserverlib.PDU{badSig, forged, stranger} {
			if id == e.EventID() {
				t.Errorf("refused event %q notified alice", gjson.GetBytes(e.Content(), "body").Str)
			}
		}
	}
	roomTSend(r.alice, r.roomID, "still here")
	if got := ingTBodies(r.alice, r.roomID); got[len(got)-1] != "still here" {
		t.Fatalf("after hostile input alice sees %v", got)
	}
	// The same transaction ID again gets the same response.
	res2, err := r.rm.Send("hs1.test", "tamper", []json.RawMessage{json.RawMessage(js)}, nil)
	if err != nil || len(res2.PDUs) != len(tamperRes.PDUs) {
		t.Fatalf("repeated transaction: %+v %v", res2, err)
	}
}

// Gaps: missing prev events come from get_missing_events, and when that
// cannot close the gap, the state before its edge from /state_ids; missing
// auth events from /event_auth.
func TestFederationIngestGaps(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)

	// Two withheld events, then one sent: get_missing_events fills in.
	w1 := r.message(fuser, []gomatrixserverlib.PDU{join}, "withheld 1")
	w2 := r.message(fuser, []gomatrixserverlib.PDU{w1}, "withheld 2")
	e3 := r.message(fuser, []gomatrixserverlib.PDU{w2}, "sent 3")
	if errs := r.send(e3); errs[e3.EventID()] != "" {
		t.Fatalf("event after a small gap: %v", errs)
	}
	if got := ingTBodies(r.alice, r.roomID); !slices.Equal(got, []string{"withheld 1", "withheld 2", "sent 3"}) {
		t.Fatalf("after a small gap alice sees %v", got)
	}

	// A long gap with a state change in it: a display name change, 30
	// withheld events, then one sent. get_missing_events returns 20; the
	// state before the oldest of those comes from /state_ids and /event.
	rename := r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": "Gap"},
		[]gomatrixserverlib.PDU{e3}, []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	prev := []gomatrixserverlib.PDU{rename}
	for i := range 30 {
		prev = []gomatrixserverlib.PDU{r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("long gap ", i)},
			prev, []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), rename})}
	}
	last := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after the long gap"},
		prev, []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), rename})
	if errs := r.send(last); errs[last.EventID()] != "" {
		t.Fatalf("event after a long gap: %v", errs)
	}
	got := ingTBodies(r.alice, r.roomID)
	if got[len(got)-1] != "after the long gap" {
		t.Fatalf("after a long gap alice sees %v", got)
	}
	if m := r.current(spec.MRoomMember, fuser); m == nil || gjson.GetBytes(m.Content(), "displayname").Str != "Gap" {
		t.Fatal("the state change inside the gap did not reach the current state")
	}

	// A missing auth event that is not an ancestor: fuser's new display
	// name (withheld) authorises a message on the old head.
	head := r.latest()
	rename = r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": "F"}, head,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomMember, fuser)})
	msg := r.build(nil, fuser, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "auth from afar"}, head,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), rename})
	if errs := r.send(msg); errs[msg.EventID()] != "" {
		t.Fatalf("event with a missing auth event: %v", errs)
	}
	kinds, _ := r.hs.Rooms.QueryEventKinds(context.Background(), []string{rename.EventID()})
	if kinds[rename.EventID()] == 0 {
		t.Fatal("the missing auth event was not fetched")
	}
}

// Events of hs1's users reach the fake server, and what is queued while it
// is unreachable reaches it after hs1 restarts and the link heals.
func TestFederationOutboundQueue(t *testing.T) {
	r, n := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	r.join(fuser)
	id := roomTSend(r.alice, r.roomID, "to the fake")
	ingTWaitReceived(t, r, []string{id})

	n.Partition("fake.test")
	var queued []string
	for i := range 5 {
		queued = append(queued, roomTSend(r.alice, r.roomID, fmt.Sprint("queued ", i)))
	}
	time.Sleep(500 * time.Millisecond) // the first attempts fail
	r.hs.Restart()
	n.Heal()
	// A request from the fake tells hs1 it is back: the queue retries now.
	if _, err := r.rm.Send("hs1.test", "hello", nil, nil); err != nil {
		t.Fatal(err)
	}
	ingTWaitReceived(t, r, queued)
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]int{}
	for _, p := range r.received {
		seen[p.EventID()]++
	}
	for _, id := range queued {
		if seen[id] != 1 {
			t.Fatalf("%s delivered %d times", id, seen[id])
		}
	}
}

func ingTWaitReceived(t testing.TB, r *ingTRoom, ids []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		got := map[string]bool{}
		for _, p := range r.received {
			got[p.EventID()] = true
		}
		r.mu.Unlock()
		all := true
		for _, id := range ids {
			all = all && got[id]
		}
		if all {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the fake did not receive %v", ids)
}

// A gap that catching up over federation could not close (more withheld
// events than get_missing_events returns) is a gap in incremental syncs:
// the timeline starts after it, limited, without what came before (as
// Synapse; Complement TestSyncTimelineGap). The suite had only checked
// /messages after gaps, never what /sync made of them.
func TestFederationIngestGapLimitsSync(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	r.join(fuser)
	flt := syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}}})
	since := syncTInitial(r.alice, "filter", flt).NextBatch
	roomTSend(r.alice, r.roomID, "before the gap")

	prev := r.latest()
	for i := range 40 {
		prev = []gomatrixserverlib.PDU{r.message(fuser, prev, fmt.Sprint("withheld ", i))}
	}
	last := r.message(fuser, prev, "after the gap")
	if errs := r.send(last); errs[last.EventID()] != "" {
		t.Fatalf("event after a long gap: %v", errs)
	}
	tl := syncTJoin(t, syncTSince(r.alice, since, "filter", flt), r.roomID).Timeline
	bodies := syncTBodies(tl.Events)
	if !tl.Limited || len(bodies) == 0 || bodies[len(bodies)-1] != "after the gap" || slices.Contains(bodies, "before the gap") {
		t.Fatalf("incremental sync over the gap: limited %v, %v", tl.Limited, bodies)
	}
	// Without a gap in its range, a sync is not limited.
	next := syncTSince(r.alice, since, "filter", flt).NextBatch
	roomTSend(r.alice, r.roomID, "after")
	if tl := syncTJoin(t, syncTSince(r.alice, next, "filter", flt), r.roomID).Timeline; tl.Limited {
		t.Fatalf("sync after the gap is limited: %v", syncTBodies(tl.Events))
	}
}

// A state change on a fork of the DAG that arrives late, and a newer
// event the timeline filter leaves out: an initial sync's timeline ends
// with the events of greatest depth, and the fork's state change, in no
// timeline, is in the state (as Synapse; Complement
// TestSyncOmitsStateChangeOnFilteredEvents). The suite had only synced
// linear rooms, where stream order and depth agree.
func TestFederationIngestForkStateInSync(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	roomTSend(r.alice, r.roomID, "E1")
	e1 := r.latest()
	s2 := r.build(nil, fuser, spec.MRoomMember, &fuser, map[string]any{"membership": "join", "displayname": "Forked"}, e1,
		[]gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), join})
	roomTSend(r.alice, r.roomID, "E3")
	e4 := roomTSend(r.alice, r.roomID, "E4")
	if errs := r.send(s2); errs[s2.EventID()] != "" {
		t.Fatalf("S2: %v", errs)
	}
	r.alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/please_filter_me/%s", r.roomID, roomTTxn()), map[string]any{"body": "E5"}, http.StatusOK)
	flt := syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1, "not_types": []string{"please_filter_me"}}}})
	jr := syncTJoin(t, syncTInitial(r.alice, "filter", flt), r.roomID)
	if ids := syncTIDs(jr.Timeline.Events); len(ids) != 1 || ids[0] != e4 {
		t.Fatalf("timeline %v, want E4 %s", syncTIDs(jr.Timeline.Events), e4)
	}
	if syncTByID(jr.State.Events, s2.EventID()) == nil {
		t.Fatalf("S2 is not in the state: %s", syncTIDs(jr.State.Events))
	}
}
