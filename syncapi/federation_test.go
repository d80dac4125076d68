package syncapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Component tests of the sync API's federation inputs and outputs: a real
// embedded bus and a real database; the roomserver's output and the
// federation API's EDUs are published by the test (prefix ft).

const (
	ftLocal  = "local.test"
	ftRemote = "remote.test"
)

var (
	ftAlice = "@alice:" + ftLocal
	ftCarol = "@carol:" + ftLocal
	ftDave  = "@dave:" + ftLocal
	ftBob   = "@bob:" + ftRemote
	ftEve   = "@eve:" + ftRemote
)

// ftRooms is the roomserver's query API as the sync API uses it: the
// events it holds, and how often they were asked for.
type ftRooms struct {
	rsapi.QueryAPI
	mu     sync.Mutex
	events map[string]gomatrixserverlib.PDU
	calls  int
}

func (f *ftRooms) add(pdus ...gomatrixserverlib.PDU) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range pdus {
		f.events[p.EventID()] = p
	}
}

func (f *ftRooms) QueryEvents(_ context.Context, ids []string) ([]gomatrixserverlib.PDU, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var out []gomatrixserverlib.PDU
	for _, id := range ids {
		if p, ok := f.events[id]; ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *ftRooms) QueryRoomInfo(_ context.Context, roomID string) (*rsapi.RoomInfo, error) {
	return &rsapi.RoomInfo{RoomID: roomID, Version: gomatrixserverlib.RoomVersionV10, HasState: true}, nil
}

// ftBackfiller records Backfill calls and runs fn.
type ftBackfiller struct {
	mu    sync.Mutex
	calls [][]string
	fn    func(ctx context.Context, roomID string, from []string, limit int) (int, error)
	// atTS answers EventAtTimestamp (nil: no server knows an event).
	atTS func(ctx context.Context, roomID string, ts int64, forward bool) (fedapi.RemoteEventAt, bool, error)
}

func (b *ftBackfiller) Backfill(ctx context.Context, roomID string, from []string, limit int) (int, error) {
	b.mu.Lock()
	b.calls = append(b.calls, slices.Clone(from))
	fn := b.fn
	b.mu.Unlock()
	if fn == nil {
		return 0, nil
	}
	return fn(ctx, roomID, from, limit)
}

func (b *ftBackfiller) EventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (fedapi.RemoteEventAt, bool, error) {
	b.mu.Lock()
	fn := b.atTS
	b.mu.Unlock()
	if fn == nil {
		return fedapi.RemoteEventAt{}, false, nil
	}
	return fn(ctx, roomID, ts, forward)
}

func (b *ftBackfiller) callList() [][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// ftAuth takes "user|device" for an access token.
type ftAuth struct{}

func (ftAuth) Authenticate(_ context.Context, token string, _ httputil.ClientInfo) (*httputil.Device, error) {
	u, d, _ := strings.Cut(token, "|")
	return &httputil.Device{UserID: u, DeviceID: d}, nil
}

type ftHarness struct {
	t     *testing.T
	ctx   context.Context
	s     *SyncAPI
	b     *bus.Bus
	db    *sqlutil.DB
	srv   *httputil.Server
	rooms *ftRooms
	bf    *ftBackfiller
	key   ed25519.PrivateKey
}

func newFTHarness(t *testing.T, db *sqlutil.DB, presence bool) *ftHarness {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx, append(append(rsapi.Streams(), userapi.Streams()...), fedapi.Streams()...)...); err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &ftHarness{t: t, ctx: ctx, b: b, db: db, rooms: &ftRooms{events: map[string]gomatrixserverlib.PDU{}}, bf: &ftBackfiller{}, key: key}
	h.s, err = New(ctx, Config{ServerName: ftLocal, PresenceEnabled: presence, Backfiller: h.bf}, db, b, h.rooms, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.s.Close)
	h.srv = httputil.NewServer(httputil.ServerOptions{Logger: log, Registry: prometheus.NewRegistry(), Authenticator: ftAuth{}})
	h.s.Register(h.srv)
	return h
}

// do runs a client request as user and returns the decoded body; it fails
// the test unless the status is 200.
func (h *ftHarness) do(user, method, path string, body any) map[string]any {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+user+"|DEV")
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		h.t.Fatalf("%s %s as %s: %d %s", method, path, user, rec.Code, rec.Body.String())
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *ftHarness) sync(user, since string, timeoutMS int, extra ...string) map[string]any {
	h.t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeoutMS)}}
	if since != "" {
		q.Set("since", since)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return h.do(user, "GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
}

// syncAsync starts a long-poll and returns its result channel once the
// sync waits (it holds the user's wake-up channel).
func (h *ftHarness) syncAsync(user, since string) <-chan map[string]any {
	h.t.Helper()
	out := make(chan map[string]any, 1)
	go func() {
		q := url.Values{"timeout": {"20000"}, "since": {since}, "set_presence": {"offline"}}
		req := httptest.NewRequest("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+user+"|DEV")
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, req)
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		out <- m
	}()
	ftPoll(h.t, "the long-poll to wait", func() bool {
		h.s.notifier.mu.Lock()
		defer h.s.notifier.mu.Unlock()
		_, waiting := h.s.notifier.signals[user]
		return waiting
	})
	return out
}

// woken waits for a long-poll started by syncAsync to return (sooner
// than its timeout: something woke it).
func (h *ftHarness) woken(ch <-chan map[string]any) map[string]any {
	h.t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		h.t.Fatal("the long-poll was not woken")
		return nil
	}
}

func (h *ftHarness) messages(user, roomID string, kv ...string) map[string]any {
	h.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return h.do(user, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), nil)
}

// publish sends a RoomOutput message and waits for the sync API to apply it.
func (h *ftHarness) publish(roomID string, msg *rsapi.OutputMessage) {
	h.t.Helper()
	seq := h.publishOnly(roomID, msg)
	ftPoll(h.t, "room output applied", func() bool { return h.s.applied.roomOutput.Load() >= seq })
}

func (h *ftHarness) publishOnly(roomID string, msg *rsapi.OutputMessage) uint64 {
	h.t.Helper()
	msg.V = 1
	seq, err := h.b.Publish(h.ctx, rsapi.OutputSubject(roomID), msg, "", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	// As the roomserver does: reads of the room wait for it.
	h.s.cfg.Marks.Wrote(rsapi.RoomOutputStream.Name, seq, roomID)
	return seq
}

// newEvent publishes events as new events of their room, each adding
// itself (a state event) or nothing to the state.
func (h *ftHarness) newEvent(pdus ...gomatrixserverlib.PDU) {
	h.t.Helper()
	for _, p := range pdus {
		out := &rsapi.OutputNewEvent{RoomID: p.RoomID().String(), RoomVersion: "10", Event: p.JSON(), LatestEvents: []string{p.EventID()}}
		if p.StateKey() != nil {
			out.AddsState = []string{p.EventID()}
		}
		h.publish(out.RoomID, &rsapi.OutputMessage{NewEvent: out})
	}
}

// inbound publishes an EDU on FederationIn and waits for it to be applied.
func (h *ftHarness) inbound(origin, typ string, content any) {
	h.t.Helper()
	raw, _ := json.Marshal(content)
	seq, err := h.b.Publish(h.ctx, fedapi.InSubject(typ), &fedapi.InboundEDU{V: 1, Origin: origin, Type: typ, Content: raw}, "", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	ftPoll(h.t, "inbound EDU applied", func() bool { return h.s.applied.federationIn.Load() >= seq })
}

// outbound returns the EDUs published on FederationOut once there are at
// least n.
func (h *ftHarness) outbound(n int) []fedapi.OutboundEDU {
	h.t.Helper()
	st, err := h.b.JS.Stream(h.ctx, h.b.Name(fedapi.FederationOutStream.Name))
	if err != nil {
		h.t.Fatal(err)
	}
	var last uint64
	ftPoll(h.t, fmt.Sprintf("%d outbound EDUs", n), func() bool {
		info, err := st.Info(h.ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		last = info.State.LastSeq
		return info.State.Msgs >= uint64(n)
	})
	var out []fedapi.OutboundEDU
	for seq := uint64(1); seq <= last; seq++ {
		raw, err := st.GetMsg(h.ctx, seq)
		if err != nil {
			h.t.Fatal(err)
		}
		if want := h.b.Name(fedapi.OutSubject("x")); !strings.HasPrefix(raw.Subject, strings.TrimSuffix(want, "x")) {
			h.t.Errorf("outbound EDU on subject %s", raw.Subject)
		}
		var edu fedapi.OutboundEDU
		if err := json.Unmarshal(raw.Data, &edu); err != nil {
			h.t.Fatal(err)
		}
		if raw.Subject != h.b.Name(fedapi.OutSubject(edu.Type)) || edu.V != 1 {
			h.t.Errorf("EDU %s (v%d) on subject %s", edu.Type, edu.V, raw.Subject)
		}
		out = append(out, edu)
	}
	return out
}

func ftPoll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ftRoom builds the events of a room (version 10), each following the
// previous one.
type ftRoom struct {
	id       string
	key      ed25519.PrivateKey
	prev     string
	depth    int64
	createID string
}

func (h *ftHarness) room(id string) *ftRoom { return &ftRoom{id: id, key: h.key} }

func (r *ftRoom) ev(t *testing.T, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	prev, auth := []string{}, []string{}
	if r.prev != "" {
		prev, auth = []string{r.prev}, []string{r.createID}
	}
	_, domain, _ := gomatrixserverlib.SplitID('@', sender)
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: r.id, Type: typ, StateKey: stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: auth, Depth: r.depth + 1}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), domain, "ed25519:t", r.key)
	if err != nil {
		t.Fatal(err)
	}
	if typ == spec.MRoomCreate {
		r.createID = ev.EventID()
	}
	r.prev, r.depth = ev.EventID(), r.depth+1
	return ev
}

func (r *ftRoom) create(t *testing.T, creator string) gomatrixserverlib.PDU {
	return r.ev(t, creator, spec.MRoomCreate, ftStr(""), map[string]any{"room_version": "10", "creator": creator})
}

func (r *ftRoom) member(t *testing.T, sender, target, membership string) gomatrixserverlib.PDU {
	return r.ev(t, sender, spec.MRoomMember, &target, map[string]any{"membership": membership})
}

func (r *ftRoom) msg(t *testing.T, sender, body string) gomatrixserverlib.PDU {
	return r.ev(t, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body})
}

func ftStr(s string) *string { return &s }

func ftStripped(t *testing.T, p gomatrixserverlib.PDU) json.RawMessage {
	t.Helper()
	return json.RawMessage(p.JSON()) // a full event: the sync API strips it
}

// ftGet walks a decoded JSON value by keys.
func ftGet(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func ftList(v any) []map[string]any {
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func ftIDs(evs []map[string]any) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e["event_id"].(string)
	}
	return out
}

func ftIDsOf(pdus ...gomatrixserverlib.PDU) []string {
	out := make([]string, len(pdus))
	for i, p := range pdus {
		out[i] = p.EventID()
	}
	return out
}

// ---- out-of-band memberships ----

func TestOutOfBandInviteRejectAndKnock(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newFTHarness(t, db, false)
		tok := h.sync(ftAlice, "", 0)["next_batch"].(string)

		// A room of another server, which this server is not in.
		r := h.room("!remote:" + ftRemote)
		create := r.create(t, ftBob)
		r.member(t, ftBob, ftBob, "join")
		name := r.ev(t, ftBob, spec.MRoomName, ftStr(""), map[string]any{"name": "Remote room"})
		invite := r.member(t, ftBob, ftAlice, "invite")
		staleMember := r.member(t, ftBob, ftAlice, "leave") // a stale copy of her member event, which the invite replaces
		oob := &rsapi.OutputMessage{Membership: &rsapi.OutputMembership{RoomID: r.id, RoomVersion: "10", Event: invite.JSON(),
			StrippedState: []json.RawMessage{ftStripped(t, create), ftStripped(t, name), ftStripped(t, staleMember)}}}

		wait := h.syncAsync(ftAlice, tok)
		h.publishOnly(r.id, oob)
		resp := h.woken(wait)
		inv := ftGet(resp, "rooms", "invite", r.id)
		if inv == nil {
			t.Fatalf("the invite is not in the woken sync: %v", resp)
		}
		state := ftList(ftGet(inv, "invite_state", "events"))
		var types []string
		for _, e := range state {
			types = append(types, e["type"].(string))
			for k := range e {
				if !slices.Contains([]string{"type", "state_key", "sender", "content"}, k) {
					t.Errorf("invite_state event with %q: not stripped: %v", k, e)
				}
			}
		}
		if !slices.Equal(types, []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomMember}) {
			t.Errorf("invite_state types = %v", types)
		}
		if m := state[len(state)-1]; m["state_key"] != ftAlice || ftGet(m, "content", "membership") != "invite" || m["sender"] != ftBob {
			t.Errorf("the invite event in invite_state: %v", m)
		}
		tok = resp["next_batch"].(string)
		if ftGet(h.sync(ftAlice, "", 0), "rooms", "invite", r.id) == nil {
			t.Error("an initial sync lacks the invite")
		}

		// A redelivery (or a second announcement) changes nothing.
		pos := h.s.pos.pdu.Load()
		h.publish(r.id, oob)
		if got := h.s.pos.pdu.Load(); got != pos {
			t.Errorf("a repeated out-of-band invite moved the position from %d to %d", pos, got)
		}
		if resp := h.sync(ftAlice, tok, 0); resp["rooms"] != nil {
			t.Errorf("a repeated invite shows again: %v", resp["rooms"])
		}

		// Alice rejects it: the room goes to rooms.leave with her leave
		// event as its timeline.
		leave := r.member(t, ftAlice, ftAlice, "leave")
		wait = h.syncAsync(ftAlice, tok)
		h.publishOnly(r.id, &rsapi.OutputMessage{Membership: &rsapi.OutputMembership{RoomID: r.id, RoomVersion: "10", Event: leave.JSON()}})
		resp = h.woken(wait)
		left := ftGet(resp, "rooms", "leave", r.id)
		if left == nil || ftGet(resp, "rooms", "invite", r.id) != nil {
			t.Fatalf("after the rejection, rooms = %v", resp["rooms"])
		}
		if got := ftIDs(ftList(ftGet(left, "timeline", "events"))); !slices.Equal(got, ftIDsOf(leave)) {
			t.Errorf("timeline of the rejected invite = %v, want the leave event %s", got, leave.EventID())
		}
		initial := h.sync(ftAlice, "", 0)
		if ftGet(initial, "rooms", "invite", r.id) != nil || ftGet(initial, "rooms", "leave", r.id) != nil {
			t.Errorf("an initial sync after the rejection shows the room: %v", initial["rooms"])
		}
		withLeave := h.sync(ftAlice, "", 0, "filter", `{"room":{"include_leave":true}}`)
		if got := ftIDs(ftList(ftGet(withLeave, "rooms", "leave", r.id, "timeline", "events"))); !slices.Equal(got, ftIDsOf(leave)) {
			t.Errorf("include_leave timeline = %v, want the leave", got)
		}

		// A knock on a room of another server.
		k := h.room("!knock:" + ftRemote)
		kcreate := k.create(t, ftBob)
		rules := k.ev(t, ftBob, spec.MRoomJoinRules, ftStr(""), map[string]any{"join_rule": "knock"})
		knock := k.ev(t, ftAlice, spec.MRoomMember, &ftAlice, map[string]any{"membership": "knock", "reason": "let me in"})
		tok = resp["next_batch"].(string)
		wait = h.syncAsync(ftAlice, tok)
		h.publishOnly(k.id, &rsapi.OutputMessage{Membership: &rsapi.OutputMembership{RoomID: k.id, RoomVersion: "10", Event: knock.JSON(),
			StrippedState: []json.RawMessage{ftStripped(t, kcreate), ftStripped(t, rules)}}})
		resp = h.woken(wait)
		ks := ftList(ftGet(resp, "rooms", "knock", k.id, "knock_state", "events"))
		if len(ks) != 3 || ks[2]["type"] != spec.MRoomMember || ftGet(ks[2], "content", "membership") != "knock" || ks[1]["type"] != spec.MRoomJoinRules {
			t.Errorf("knock_state = %v", ks)
		}
	})
}

// An invite over federation to a room this server is in: other local
// members see it at once, and its later arrival in the room's DAG
// duplicates nothing.
func TestOutOfBandInviteThenRoomEvent(t *testing.T) {
	h := newFTHarness(t, sqltest.Open(t, sqlutil.SQLite), false)
	r := h.room("!shared:" + ftLocal)
	create := r.create(t, ftCarol)
	cjoin := r.member(t, ftCarol, ftCarol, "join")
	bjoin := r.member(t, ftBob, ftBob, "join")
	h.newEvent(create, cjoin, bjoin)
	carolTok := h.sync(ftCarol, "", 0)["next_batch"].(string)
	aliceTok := h.sync(ftAlice, "", 0)["next_batch"].(string)

	invite := r.member(t, ftBob, ftAlice, "invite")
	h.publish(r.id, &rsapi.OutputMessage{Membership: &rsapi.OutputMembership{RoomID: r.id, RoomVersion: "10", Event: invite.JSON()}})
	resp := h.sync(ftAlice, aliceTok, 0)
	state := ftList(ftGet(resp, "rooms", "invite", r.id, "invite_state", "events"))
	if len(state) != 2 || state[0]["type"] != spec.MRoomCreate || state[1]["state_key"] != ftAlice {
		t.Errorf("invite_state from the read model = %v", state)
	}
	aliceTok = resp["next_batch"].(string)
	if got := ftIDs(ftList(ftGet(h.sync(ftCarol, carolTok, 0), "rooms", "join", r.id, "timeline", "events"))); !slices.Equal(got, ftIDsOf(invite)) {
		t.Errorf("carol's timeline = %v, want the invite", got)
	}

	pos := h.s.pos.pdu.Load()
	h.newEvent(invite) // the invite reaches the room's DAG
	if got := h.s.pos.pdu.Load(); got != pos {
		t.Errorf("the invite arriving in the room moved the position from %d to %d", pos, got)
	}
	if got := ftIDs(ftList(h.messages(ftCarol, r.id, "dir", "b")["chunk"])); !slices.Equal(got, ftIDsOf(invite, bjoin, cjoin, create)) {
		t.Errorf("/messages = %v", got)
	}
	if resp := h.sync(ftAlice, aliceTok, 0); resp["rooms"] != nil {
		t.Errorf("alice's sync after the invite reached the room: %v", resp["rooms"])
	}

	// She joins.
	ajoin := r.member(t, ftAlice, ftAlice, "join")
	h.newEvent(ajoin)
	join := ftGet(h.sync(ftAlice, aliceTok, 0), "rooms", "join", r.id)
	if join == nil {
		t.Fatal("alice's join is not synced")
	}
	if n := ftGet(join, "summary", "m.joined_member_count"); n != float64(3) {
		t.Errorf("joined members = %v, want 3", n)
	}
}

// ---- joins over federation ----

// A join over federation brings the room's whole state in one new event:
// it is applied in batches, with one query of the roomserver, and the
// joiner's first sync has that state before the join.
func TestJoinOverFederationAddsLargeState(t *testing.T) {
	h := newFTHarness(t, sqltest.Open(t, sqlutil.SQLite), false)
	const members = 10000
	r := h.room("!big:" + ftRemote)
	create := r.create(t, ftBob)
	bjoin := r.member(t, ftBob, ftBob, "join")
	state := []gomatrixserverlib.PDU{create, bjoin}
	for i := range members - 1 {
		u := fmt.Sprintf("@u%d:%s", i, ftRemote)
		state = append(state, r.member(t, u, u, "join"))
	}
	h.rooms.add(state...)
	ajoin := r.member(t, ftAlice, ftAlice, "join")
	adds := append(ftIDsOf(state...), ajoin.EventID())

	before := h.db.Queries()
	start := time.Now()
	h.publish(r.id, &rsapi.OutputMessage{NewEvent: &rsapi.OutputNewEvent{RoomID: r.id, RoomVersion: "10", Event: ajoin.JSON(),
		AddsState: adds, LatestEvents: []string{ajoin.EventID()}}})
	queries := h.db.Queries() - before
	t.Logf("join with %d state events applied in %v with %d statements", len(adds), time.Since(start), queries)
	if h.rooms.calls != 1 {
		t.Errorf("%d roomserver queries for the added state, want 1", h.rooms.calls)
	}
	if queries > 300 {
		t.Errorf("%d statements to apply the join: not batched", queries)
	}
	resp := h.sync(ftAlice, "", 0, "filter", `{"room":{"state":{"lazy_load_members":true}}}`)
	join := ftGet(resp, "rooms", "join", r.id)
	if n := ftGet(join, "summary", "m.joined_member_count"); n != float64(members+1) {
		t.Errorf("joined members = %v, want %d", n, members+1)
	}
	if got := ftIDs(ftList(ftGet(join, "timeline", "events"))); !slices.Equal(got, ftIDsOf(ajoin)) {
		t.Errorf("timeline = %v, want the join", got)
	}
	var stateIDs []string
	for _, e := range ftList(ftGet(join, "state", "events")) {
		stateIDs = append(stateIDs, e["event_id"].(string))
	}
	if !slices.Contains(stateIDs, create.EventID()) || slices.Contains(stateIDs, ajoin.EventID()) {
		t.Errorf("the state before the join (lazy) = %v: want the create event and not the join", stateIDs)
	}
	full := ftList(ftGet(h.sync(ftAlice, "", 0), "rooms", "join", r.id, "state", "events"))
	if len(full) != len(state) {
		t.Errorf("the full state before the join has %d events, want %d", len(full), len(state))
	}
	// Presence sharing reaches the remote members.
	if sh := h.s.notifier.sharers(ftAlice); len(sh) != members+1 || !sh[ftBob] {
		t.Errorf("alice shares presence with %d users, want %d", len(sh), members+1)
	}
}

// ---- backfill ----

// ftHistory is a room joined over federation: its history before the join
// (oldest first, with the visibility of each), the join and a message.
type ftHistory struct {
	r                                  *ftRoom
	history                            []rsapi.BackfilledEvent
	pdus                               []gomatrixserverlib.PDU
	create, bjoin, pl, jr, hv1, m1, m2 gomatrixserverlib.PDU
	hv2, m3, m4, m5, join, live        gomatrixserverlib.PDU
}

func (h *ftHarness) historyRoom(t *testing.T, id, joiner string) *ftHistory {
	x := &ftHistory{r: h.room(id)}
	r := x.r
	x.create = r.create(t, ftBob)
	x.bjoin = r.member(t, ftBob, ftBob, "join")
	x.pl = r.ev(t, ftBob, spec.MRoomPowerLevels, ftStr(""), map[string]any{"users": map[string]int{ftBob: 100}})
	x.jr = r.ev(t, ftBob, spec.MRoomJoinRules, ftStr(""), map[string]any{"join_rule": "public"})
	x.hv1 = r.ev(t, ftBob, spec.MRoomHistoryVisibility, ftStr(""), map[string]any{"history_visibility": "joined"})
	x.m1 = r.msg(t, ftBob, "m1")
	x.m2 = r.msg(t, ftBob, "m2")
	x.hv2 = r.ev(t, ftBob, spec.MRoomHistoryVisibility, ftStr(""), map[string]any{"history_visibility": "shared"})
	x.m3 = r.msg(t, ftBob, "m3")
	x.m4 = r.msg(t, ftBob, "m4")
	x.m5 = r.msg(t, ftBob, "m5")
	x.pdus = []gomatrixserverlib.PDU{x.create, x.bjoin, x.pl, x.jr, x.hv1, x.m1, x.m2, x.hv2, x.m3, x.m4, x.m5}
	for _, p := range x.pdus {
		vis := "shared"
		if p == x.m1 || p == x.m2 {
			vis = "joined"
		}
		x.history = append(x.history, rsapi.BackfilledEvent{Event: p.JSON(), HistoryVisibility: vis})
	}
	h.rooms.add(x.pdus...)
	x.join = r.member(t, joiner, joiner, "join")
	x.live = r.msg(t, ftBob, "live")
	h.publish(id, &rsapi.OutputMessage{NewEvent: &rsapi.OutputNewEvent{RoomID: id, RoomVersion: "10", Event: x.join.JSON(),
		AddsState: append(ftIDsOf(x.create, x.bjoin, x.pl, x.jr, x.hv2), x.join.EventID()), LatestEvents: []string{x.join.EventID()}}})
	h.newEvent(x.live)
	return x
}

func TestBackfilledHistory(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newFTHarness(t, db, false)
		x := h.historyRoom(t, "!history:"+ftRemote, ftAlice)
		id := x.r.id

		// The federation API fetches history in two pieces, newest first,
		// each oldest first; the sync API sees them through RoomOutput.
		pieces := [][]rsapi.BackfilledEvent{x.history[5:], x.history[:5]}
		h.bf.fn = func(ctx context.Context, roomID string, from []string, limit int) (int, error) {
			if roomID != id || len(pieces) == 0 {
				return 0, nil
			}
			p := pieces[0]
			pieces = pieces[1:]
			h.publishOnly(roomID, &rsapi.OutputMessage{Backfilled: &rsapi.OutputBackfilled{RoomID: roomID, RoomVersion: "10", Events: p}})
			return len(p), nil
		}
		tok := h.sync(ftAlice, "", 0)["next_batch"].(string)
		wait := h.syncAsync(ftAlice, tok)

		page := h.messages(ftAlice, id, "dir", "b", "limit", "50")
		want := ftIDsOf(x.live, x.join, x.m5, x.m4, x.m3, x.hv2, x.hv1, x.jr, x.pl, x.bjoin, x.create) // m1 and m2: "joined" before she joined
		if got := ftIDs(ftList(page["chunk"])); !slices.Equal(got, want) {
			t.Errorf("/messages after backfill:\n got  %v\n want %v", got, want)
		}
		if _, ok := page["end"]; ok {
			t.Errorf("/messages reached the create event but has an end token: %v", page["end"])
		}
		calls := h.bf.callList()
		if len(calls) != 2 || !slices.Equal(calls[0], ftIDsOf(x.join)) || !slices.Equal(calls[1], ftIDsOf(x.m1)) {
			t.Errorf("backfill calls = %v, want from the join, then from m1", calls)
		}
		// Backfill woke no sync.
		select {
		case resp := <-wait:
			t.Errorf("backfill woke a sync: %v", resp)
		case <-time.After(100 * time.Millisecond):
		}

		// Nothing more to fetch: the oldest event held is the create event.
		again := h.messages(ftAlice, id, "dir", "b", "limit", "50")
		if got := ftIDs(ftList(again["chunk"])); !slices.Equal(got, want) || len(h.bf.callList()) != 2 {
			t.Errorf("second /messages: %v, %d backfill calls", got, len(h.bf.callList()))
		}
		// Redelivered history changes nothing.
		lowest, _ := storage.MinEventPos(h.ctx, h.s.store.DB())
		h.publish(id, &rsapi.OutputMessage{Backfilled: &rsapi.OutputBackfilled{RoomID: id, RoomVersion: "10", Events: x.history}})
		if l, _ := storage.MinEventPos(h.ctx, h.s.store.DB()); l != lowest {
			t.Errorf("redelivered history moved the lowest position from %d to %d", lowest, l)
		}
		if got := ftIDs(ftList(h.messages(ftAlice, id, "dir", "b", "limit", "50")["chunk"])); !slices.Equal(got, want) {
			t.Errorf("/messages after a redelivery: %v", got)
		}
		// Paging forwards from the start, and in small pages backwards.
		fwd := ftIDs(ftList(h.messages(ftAlice, id, "dir", "f", "limit", "50")["chunk"]))
		slices.Reverse(fwd)
		if !slices.Equal(fwd, want) {
			t.Errorf("forwards: %v", fwd)
		}
		var paged []string
		for from := ""; ; {
			kv := []string{"dir", "b", "limit", "3"}
			if from != "" {
				kv = append(kv, "from", from)
			}
			p := h.messages(ftAlice, id, kv...)
			paged = append(paged, ftIDs(ftList(p["chunk"]))...)
			end, ok := p["end"].(string)
			if !ok {
				break
			}
			from = end
		}
		if !slices.Equal(paged, want) {
			t.Errorf("paged backwards by 3: %v", paged)
		}

		// Members of the senders of backfilled events, lazily loaded: the
		// earliest state known.
		evs, _ := storage.EventsByID(h.ctx, h.s.store.DB(), ftIDsOf(x.join))
		old := h.messages(ftAlice, id, "dir", "b", "limit", "3", "from", formatBoundary(evs[x.join.EventID()].Pos),
			"filter", `{"lazy_load_members":true}`)
		if got := ftIDs(ftList(old["chunk"])); !slices.Equal(got, ftIDsOf(x.m5, x.m4, x.m3)) {
			t.Errorf("page before the join = %v", got)
		}
		if st := ftList(old["state"]); len(st) != 1 || st[0]["state_key"] != ftBob {
			t.Errorf("lazy members of backfilled events = %v, want bob's", st)
		}

		// /sync leaves the history to /messages: its timeline starts at
		// the join, with the room's state before it.
		join := ftGet(h.sync(ftAlice, "", 0), "rooms", "join", id)
		if got := ftIDs(ftList(ftGet(join, "timeline", "events"))); !slices.Equal(got, ftIDsOf(x.join, x.live)) {
			t.Errorf("initial sync timeline = %v", got)
		}
		stateIDs := ftIDs(ftList(ftGet(join, "state", "events")))
		slices.Sort(stateIDs)
		wantState := ftIDsOf(x.create, x.bjoin, x.pl, x.jr, x.hv2)
		slices.Sort(wantState)
		if !slices.Equal(stateIDs, wantState) {
			t.Errorf("initial sync state = %v, want %v", stateIDs, wantState)
		}
		// /context of a backfilled event.
		ctxResp := h.do(ftAlice, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(id)+"/context/"+url.PathEscape(x.m4.EventID())+"?limit=2", nil)
		if ftIDs(ftList(ctxResp["events_before"]))[0] != x.m3.EventID() || ftIDs(ftList(ctxResp["events_after"]))[0] != x.m5.EventID() {
			t.Errorf("context of m4: %v / %v", ctxResp["events_before"], ctxResp["events_after"])
		}
	})
}

// Backfill errors, and users who may not see the history.
func TestBackfillFailureAndAccess(t *testing.T) {
	h := newFTHarness(t, sqltest.Open(t, sqlutil.SQLite), false)
	x := h.historyRoom(t, "!fail:"+ftRemote, ftCarol)
	id := x.r.id
	h.bf.fn = func(context.Context, string, []string, int) (int, error) { return 0, errors.New("no server answered") }

	// Dave is only invited: no backfill for him.
	h.newEvent(x.r.member(t, ftCarol, ftDave, "invite"))
	h.messages(ftDave, id, "dir", "b", "limit", "50")
	if n := len(h.bf.callList()); n != 0 {
		t.Fatalf("%d backfill calls for an invited user", n)
	}
	// Carol, joined: the failure is logged and the page has what is held,
	// with an end token to try again.
	page := h.messages(ftCarol, id, "dir", "b", "limit", "50")
	if got := ftIDs(ftList(page["chunk"])); len(got) != 3 || got[2] != x.join.EventID() {
		t.Errorf("chunk after a failed backfill = %v", got)
	}
	if _, ok := page["end"]; !ok || len(h.bf.callList()) != 1 {
		t.Errorf("after a failed backfill: end %v, %d calls", page["end"], len(h.bf.callList()))
	}
	// No more history: a call that stores nothing ends the page.
	h.bf.fn = nil
	page = h.messages(ftCarol, id, "dir", "b", "limit", "50")
	if _, ok := page["end"]; ok || len(h.bf.callList()) != 2 {
		t.Errorf("with no history to fetch: end %v, %d calls", page["end"], len(h.bf.callList()))
	}
}

// ---- EDUs ----

func TestInboundEDUs(t *testing.T) {
	h := newFTHarness(t, sqltest.Open(t, sqlutil.SQLite), true)
	r := h.room("!edu:" + ftLocal)
	create := r.create(t, ftAlice)
	ajoin := r.member(t, ftAlice, ftAlice, "join")
	bjoin := r.member(t, ftBob, ftBob, "join")
	m1 := r.msg(t, ftBob, "one")
	m2 := r.msg(t, ftBob, "two")
	h.newEvent(create, ajoin, bjoin, m1, m2)
	tok := h.sync(ftAlice, "", 0, "set_presence", "offline")["next_batch"].(string)

	// Typing: from a joined remote user it shows and wakes; from others,
	// or a server speaking for another's users, it does not.
	wait := h.syncAsync(ftAlice, tok)
	h.inbound(ftRemote, fedapi.EDUTyping, map[string]any{"room_id": r.id, "user_id": ftEve, "typing": true})
	h.inbound("other.test", fedapi.EDUTyping, map[string]any{"room_id": r.id, "user_id": ftBob, "typing": true})
	h.inbound(ftRemote, fedapi.EDUTyping, map[string]any{"room_id": r.id, "user_id": ftBob, "typing": true})
	resp := h.woken(wait)
	typing := ftGet(ftList(ftGet(resp, "rooms", "join", r.id, "ephemeral", "events"))[0], "content", "user_ids")
	if fmt.Sprint(typing) != fmt.Sprint([]any{ftBob}) {
		t.Errorf("typing = %v, want bob", typing)
	}
	tok = resp["next_batch"].(string)
	h.inbound(ftRemote, fedapi.EDUTyping, map[string]any{"room_id": r.id, "user_id": ftBob, "typing": false})
	if users := h.s.typing.since([]string{r.id}, 0, true); len(users[r.id]) != 0 {
		t.Errorf("typing after bob stopped: %v", users)
	}
	tok = h.sync(ftAlice, tok, 0, "set_presence", "offline")["next_batch"].(string)

	// Receipts.
	receipt := func(user, eventID string, ts int64) map[string]any {
		return map[string]any{r.id: map[string]any{"m.read": map[string]any{user: map[string]any{"event_ids": []string{eventID}, "data": map[string]any{"ts": ts}}}}}
	}
	wait = h.syncAsync(ftAlice, tok)
	h.inbound(ftRemote, fedapi.EDUReceipt, receipt(ftBob, m2.EventID(), 1000))
	resp = h.woken(wait)
	var rc map[string]any
	for _, e := range ftList(ftGet(resp, "rooms", "join", r.id, "ephemeral", "events")) {
		if e["type"] == "m.receipt" {
			rc = e
		}
	}
	if ftGet(rc, "content", m2.EventID(), "m.read", ftBob, "ts") != float64(1000) {
		t.Errorf("receipt = %v", rc)
	}
	tok = resp["next_batch"].(string)
	h.inbound(ftRemote, fedapi.EDUReceipt, receipt(ftBob, m1.EventID(), 2000)) // older: ignored
	if rows, _ := storage.ReceiptsSince(h.ctx, h.s.store.DB(), []string{r.id}, -1, 1<<40); len(rows) != 1 || rows[0].EventID != m2.EventID() {
		t.Errorf("receipts after an older one = %+v", rows)
	}
	h.inbound(ftRemote, fedapi.EDUReceipt, receipt(ftBob, "$unknown:remote.test", 3000)) // unknown event: stored
	h.inbound(ftRemote, fedapi.EDUReceipt, receipt(ftEve, m1.EventID(), 3000))           // eve's receipt of m1: stored
	h.inbound(ftRemote, fedapi.EDUReceipt, map[string]any{r.id: map[string]any{"m.read.private": map[string]any{ftBob: map[string]any{
		"event_ids": []string{m1.EventID()}, "data": map[string]any{"ts": 1}}}}})
	h.inbound(ftRemote, fedapi.EDUReceipt, receipt(ftAlice, m1.EventID(), 1)) // not a user of remote.test
	rows, _ := storage.ReceiptsSince(h.ctx, h.s.store.DB(), []string{r.id}, -1, 1<<40)
	got := map[string]string{}
	for _, row := range rows {
		got[row.Type+" "+row.UserID] = row.EventID
	}
	if len(got) != 2 || got["m.read "+ftBob] != "$unknown:remote.test" || got["m.read "+ftEve] != m1.EventID() {
		t.Errorf("receipts = %v", got)
	}
	other := "!elsewhere:" + ftRemote
	h.inbound(ftRemote, fedapi.EDUReceipt, map[string]any{other: receipt(ftBob, m1.EventID(), 1)[r.id]})
	if rows, _ := storage.ReceiptsSince(h.ctx, h.s.store.DB(), []string{other}, -1, 1<<40); len(rows) != 0 {
		t.Errorf("a receipt for a room this server is not in was stored: %+v", rows)
	}

	// Presence of a remote user sharing a room.
	tok = h.sync(ftAlice, tok, 0, "set_presence", "offline")["next_batch"].(string)
	wait = h.syncAsync(ftAlice, tok)
	h.inbound(ftRemote, fedapi.EDUPresence, map[string]any{"push": []any{
		map[string]any{"user_id": ftBob, "presence": "online", "status_msg": "busy", "last_active_ago": 5000, "currently_active": true},
		map[string]any{"user_id": ftEve, "presence": "online", "last_active_ago": 1},
	}})
	resp = h.woken(wait)
	pres := ftList(ftGet(resp, "presence", "events"))
	if len(pres) != 1 || pres[0]["sender"] != ftBob || ftGet(pres[0], "content", "status_msg") != "busy" ||
		ftGet(pres[0], "content", "presence") != "online" {
		t.Errorf("presence = %v, want bob's only (eve shares no room)", pres)
	}
	if ago, _ := ftGet(pres[0], "content", "last_active_ago").(float64); ago < 5000 || ago > 60000 {
		t.Errorf("last_active_ago = %v", ago)
	}
	// The same presence again is no news.
	tok = resp["next_batch"].(string)
	h.inbound(ftRemote, fedapi.EDUPresence, map[string]any{"push": []any{
		map[string]any{"user_id": ftBob, "presence": "online", "status_msg": "busy", "last_active_ago": 4000, "currently_active": true}}})
	if resp := h.sync(ftAlice, tok, 0, "set_presence", "offline"); resp["presence"] != nil {
		t.Errorf("unchanged presence sent again: %v", resp["presence"])
	}
	// Not heard of for too long, bob goes offline.
	h.s.presence.mu.Lock()
	h.s.presence.fedTimeout = 0
	h.s.presence.mu.Unlock()
	tok = h.sync(ftAlice, tok, 0, "set_presence", "offline")["next_batch"].(string)
	h.s.presence.expire(h.ctx)
	pres = ftList(ftGet(h.sync(ftAlice, tok, 0, "set_presence", "offline"), "presence", "events"))
	if len(pres) != 1 || pres[0]["sender"] != ftBob || ftGet(pres[0], "content", "presence") != "offline" {
		t.Errorf("presence after the federation timeout = %v, want bob offline", pres)
	}
	// Bob leaves: his presence no longer reaches alice.
	h.newEvent(r.member(t, ftBob, ftBob, "leave"))
	if sh := h.s.notifier.sharers(ftAlice); sh[ftBob] {
		t.Error("bob still shares presence after leaving")
	}
}

func TestOutboundEDUs(t *testing.T) {
	h := newFTHarness(t, sqltest.Open(t, sqlutil.SQLite), true)
	r := h.room("!out:" + ftLocal)
	create := r.create(t, ftAlice)
	ajoin := r.member(t, ftAlice, ftAlice, "join")
	bjoin := r.member(t, ftBob, ftBob, "join")
	m1 := r.msg(t, ftBob, "one")
	h.newEvent(create, ajoin, bjoin, m1)
	// A room with local users only: its EDUs go nowhere.
	q := h.room("!local:" + ftLocal)
	h.newEvent(q.create(t, ftAlice), q.member(t, ftAlice, ftAlice, "join"))
	qmsg := q.msg(t, ftAlice, "hi")
	h.newEvent(qmsg)

	base := "/_matrix/client/v3/rooms/"
	h.do(ftAlice, "PUT", base+url.PathEscape(q.id)+"/typing/"+url.PathEscape(ftAlice), map[string]any{"typing": true, "timeout": 30000})
	h.do(ftAlice, "PUT", base+url.PathEscape(r.id)+"/typing/"+url.PathEscape(ftAlice), map[string]any{"typing": true, "timeout": 30000})
	h.do(ftAlice, "PUT", base+url.PathEscape(r.id)+"/typing/"+url.PathEscape(ftAlice), map[string]any{"typing": true, "timeout": 30000}) // renewal: no news
	h.do(ftAlice, "PUT", base+url.PathEscape(r.id)+"/typing/"+url.PathEscape(ftAlice), map[string]any{"typing": false})
	h.do(ftAlice, "POST", base+url.PathEscape(r.id)+"/receipt/m.read.private/"+url.PathEscape(m1.EventID()), map[string]any{})
	h.do(ftAlice, "POST", base+url.PathEscape(q.id)+"/receipt/m.read/"+url.PathEscape(qmsg.EventID()), map[string]any{})
	h.do(ftAlice, "POST", base+url.PathEscape(r.id)+"/receipt/m.read/"+url.PathEscape(m1.EventID()), map[string]any{"thread_id": "main"})
	h.do(ftAlice, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(ftAlice)+"/status", map[string]any{"presence": "online", "status_msg": "here"})

	edus := h.outbound(4)
	if len(edus) != 4 {
		t.Fatalf("%d EDUs published, want 4: %+v", len(edus), edus)
	}
	content := func(e fedapi.OutboundEDU) map[string]any {
		var m map[string]any
		_ = json.Unmarshal(e.Content, &m)
		return m
	}
	// Typing and presence are queued off the request path, receipts
	// published with their commit: the order within each type is kept,
	// not across types.
	byType := map[string][]fedapi.OutboundEDU{}
	for _, e := range edus {
		byType[e.Type] = append(byType[e.Type], e)
	}
	if len(byType[fedapi.EDUTyping]) != 2 || len(byType[fedapi.EDUReceipt]) != 1 || len(byType[fedapi.EDUPresence]) != 1 {
		t.Fatalf("EDUs published: %+v", edus)
	}
	for i, want := range []bool{true, false} {
		e := byType[fedapi.EDUTyping][i]
		c := content(e)
		if e.RoomID != r.id || c["room_id"] != r.id || c["user_id"] != ftAlice || c["typing"] != want {
			t.Errorf("EDU %d = %s %s %v, want typing %v", i, e.Type, e.RoomID, c, want)
		}
	}
	rc := byType[fedapi.EDUReceipt][0]
	entry := ftGet(content(rc), r.id, "m.read", ftAlice)
	if rc.Type != fedapi.EDUReceipt || rc.RoomID != r.id || fmt.Sprint(ftGet(entry, "event_ids")) != fmt.Sprint([]any{m1.EventID()}) ||
		ftGet(entry, "data", "thread_id") != "main" || ftGet(entry, "data", "ts") == nil {
		t.Errorf("receipt EDU = %s %s %s", rc.Type, rc.RoomID, rc.Content)
	}
	pr := byType[fedapi.EDUPresence][0]
	push := ftList(content(pr)["push"])
	if pr.Type != fedapi.EDUPresence || pr.UserID != ftAlice || len(push) != 1 || push[0]["user_id"] != ftAlice ||
		push[0]["presence"] != "online" || push[0]["status_msg"] != "here" || push[0]["currently_active"] != true ||
		push[0]["last_active_ago"] == nil {
		t.Errorf("presence EDU = %s %s %s", pr.Type, pr.UserID, pr.Content)
	}
	// Other servers are told again while she stays online.
	h.s.presence.mu.Lock()
	h.s.presence.fedPing = 0
	h.s.presence.mu.Unlock()
	h.s.presence.expire(h.ctx)
	edus = h.outbound(5)
	if len(edus) != 5 || edus[4].Type != fedapi.EDUPresence || ftList(content(edus[4])["push"])[0]["presence"] != "online" {
		t.Errorf("no presence renewal: %+v", edus[4:])
	}
}

// A local user's typing is renewed on other servers while it lasts and
// withdrawn when it times out; a remote user's simply ends.
func TestTypingFederationTimers(t *testing.T) {
	var mu sync.Mutex
	var local []string
	var changes atomic.Int32
	ts := newTypingStore(func(string) { changes.Add(1) }, func(room, user string, typing bool) {
		mu.Lock()
		local = append(local, fmt.Sprintf("%s %v", user, typing))
		mu.Unlock()
	})
	defer ts.stop()
	ts.ping = 40 * time.Millisecond
	ts.set("!r:x", "@local:x", true, 150*time.Millisecond, true)
	ts.set("!r:x", "@remote:y", true, 50*time.Millisecond, false)
	ftPoll(t, "the typing to end", func() bool { return len(ts.since([]string{"!r:x"}, 0, true)["!r:x"]) == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(local) < 3 || local[0] != "@local:x true" || local[1] != "@local:x true" || local[len(local)-1] != "@local:x false" {
		t.Errorf("local typing told to other servers: %v; want start, renewals, stop", local)
	}
	if n := changes.Load(); n < 3 || n > 4 { // both ends may come in one pass of the timer
		t.Errorf("%d typing changes, want 4 (two starts, two ends)", n)
	}
}
