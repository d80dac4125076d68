package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers of sync_test.go and sync_filter_test.go (prefix syncT) ----

// syncTEvents is an event batch ({"events": [...]}).
type syncTEvents struct {
	Events []map[string]any `json:"events"`
}

type syncTTimeline struct {
	Events    []map[string]any `json:"events"`
	Limited   bool             `json:"limited"`
	PrevBatch string           `json:"prev_batch"`
}

type syncTJoined struct {
	Summary     map[string]any `json:"summary"`
	State       *syncTEvents   `json:"state"`
	StateAfter  *syncTEvents   `json:"state_after"`
	Timeline    *syncTTimeline `json:"timeline"`
	Ephemeral   *syncTEvents   `json:"ephemeral"`
	AccountData *syncTEvents   `json:"account_data"`
}

type syncTLeft struct {
	State       *syncTEvents   `json:"state"`
	StateAfter  *syncTEvents   `json:"state_after"`
	Timeline    *syncTTimeline `json:"timeline"`
	AccountData *syncTEvents   `json:"account_data"`
}

type syncTInvited struct {
	InviteState *syncTEvents `json:"invite_state"`
}

type syncTKnocked struct {
	KnockState *syncTEvents `json:"knock_state"`
}

type syncTResponse struct {
	NextBatch   string       `json:"next_batch"`
	AccountData *syncTEvents `json:"account_data"`
	Presence    *syncTEvents `json:"presence"`
	Rooms       struct {
		Join   map[string]*syncTJoined  `json:"join"`
		Invite map[string]*syncTInvited `json:"invite"`
		Knock  map[string]*syncTKnocked `json:"knock"`
		Leave  map[string]*syncTLeft    `json:"leave"`
	} `json:"rooms"`
	Body []byte `json:"-"`
}

// syncTStart starts a server with presence off, so that nothing but what
// a test does wakes a long-poll or shows in an incremental sync.
func syncTStart(t *testing.T) *testserver.Server {
	t.Helper()
	return testserver.Start(t, testserver.Options{Configure: func(c *configT) { c.Presence.Enabled = false }})
}

// syncTQuery builds a query string from key/value pairs (values escaped).
func syncTQuery(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	return v.Encode()
}

// syncTDo sends GET /sync with the query and decodes a 200 response.
func syncTDo(c *testutil.Client, query string) *syncTResponse {
	c.T.Helper()
	r := c.Do("GET", "/_matrix/client/v3/sync?"+query, nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET /sync?%s: status %d: %s", query, r.Status, syncTShort(r.Body))
	}
	return syncTDecode(c.T, r)
}

func syncTDecode(t testing.TB, r *testutil.Response) *syncTResponse {
	t.Helper()
	var s syncTResponse
	r.Decode(t, &s)
	s.Body = r.Body
	if s.NextBatch == "" {
		t.Fatalf("sync response without next_batch: %s", syncTShort(r.Body))
	}
	return &s
}

// syncTInitial is an initial sync (no since) with extra key/value pairs.
func syncTInitial(c *testutil.Client, kv ...string) *syncTResponse {
	c.T.Helper()
	return syncTDo(c, syncTQuery(kv...))
}

// syncTSince is an incremental sync that does not wait (timeout=0).
func syncTSince(c *testutil.Client, since string, kv ...string) *syncTResponse {
	c.T.Helper()
	return syncTDo(c, syncTQuery(append([]string{"since", since, "timeout", "0"}, kv...)...))
}

// syncTFilter encodes a filter for the filter query parameter.
func syncTFilter(f any) string {
	b, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// syncTJoin returns the join section of a room, failing if absent.
func syncTJoin(t testing.TB, s *syncTResponse, roomID string) *syncTJoined {
	t.Helper()
	j := s.Rooms.Join[roomID]
	if j == nil {
		t.Fatalf("room %s not in rooms.join: %s", roomID, syncTShort(s.Body))
	}
	if j.Timeline == nil {
		t.Fatalf("room %s without a timeline: %s", roomID, syncTShort(s.Body))
	}
	return j
}

// syncTLeave returns the leave section of a room, failing if absent.
func syncTLeave(t testing.TB, s *syncTResponse, roomID string) *syncTLeft {
	t.Helper()
	l := s.Rooms.Leave[roomID]
	if l == nil {
		t.Fatalf("room %s not in rooms.leave: %s", roomID, syncTShort(s.Body))
	}
	if l.Timeline == nil {
		t.Fatalf("left room %s without a timeline: %s", roomID, syncTShort(s.Body))
	}
	return l
}

// syncTNotIn fails if the room is in any of the given sections.
func syncTNotIn(t testing.TB, s *syncTResponse, roomID string, sections ...string) {
	t.Helper()
	for _, sec := range sections {
		var in bool
		switch sec {
		case "join":
			_, in = s.Rooms.Join[roomID]
		case "invite":
			_, in = s.Rooms.Invite[roomID]
		case "knock":
			_, in = s.Rooms.Knock[roomID]
		case "leave":
			_, in = s.Rooms.Leave[roomID]
		default:
			t.Fatalf("unknown section %s", sec)
		}
		if in {
			t.Fatalf("room %s unexpectedly in rooms.%s: %s", roomID, sec, syncTShort(s.Body))
		}
	}
}

// syncTShort shortens a response body for failure messages.
func syncTShort(b []byte) string {
	if len(b) > 1500 {
		return string(b[:1500]) + "..."
	}
	return string(b)
}

func syncTIDs(evs []map[string]any) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e["event_id"].(string)
	}
	return out
}

func syncTList(b *syncTEvents) []map[string]any {
	if b == nil {
		return nil
	}
	return b.Events
}

// syncTFind returns the last event of evs with the type and state key
// (nil if none).
func syncTFind(evs []map[string]any, typ, key string) map[string]any {
	for i := len(evs) - 1; i >= 0; i-- {
		if e := evs[i]; e["type"] == typ && e["state_key"] == key {
			return e
		}
	}
	return nil
}

// syncTByID returns the event with the ID (nil if none).
func syncTByID(evs []map[string]any, id string) map[string]any {
	for _, e := range evs {
		if e["event_id"] == id {
			return e
		}
	}
	return nil
}

func syncTContent(t testing.TB, e map[string]any) map[string]any {
	t.Helper()
	return roomTMap(t, e["content"], "content of "+fmt.Sprint(e["event_id"]))
}

// syncTBodies returns content.body of the m.room.message events.
func syncTBodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		if e["type"] == "m.room.message" {
			c, _ := e["content"].(map[string]any)
			b, _ := c["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// syncTCheckEvent checks an event of /sync: client format without
// room_id (ClientEventWithoutRoomID).
func syncTCheckEvent(t testing.TB, e map[string]any) {
	t.Helper()
	for _, k := range []string{"event_id", "sender", "type"} {
		if s, _ := e[k].(string); s == "" {
			t.Fatalf("sync event without %s: %v", k, e)
		}
	}
	if _, ok := e["content"].(map[string]any); !ok {
		t.Fatalf("sync event without a content object: %v", e)
	}
	if ts, ok := e["origin_server_ts"].(float64); !ok || ts <= 0 {
		t.Fatalf("sync event without origin_server_ts: %v", e)
	}
	if _, ok := e["room_id"]; ok {
		t.Fatalf("sync event carries room_id: %v", e)
	}
	for _, k := range roomTFederationKeys {
		if _, ok := e[k]; ok {
			t.Fatalf("sync event carries the federation field %s: %v", k, e)
		}
	}
}

// syncTCheckStripped checks a stripped state event: only sender, type,
// state_key and content.
// syncTCheckStrippedState checks the stripped state of an invite or
// knock: every event stripped, but in a room whose ID is the hash of its
// create event (room version 12) the create event, which is whole (MSC4311,
// as Synapse), with the hash of the room ID. (The suite's invite and knock
// tests had used room versions before 12 alone.)
func syncTCheckStrippedState(t testing.TB, evs []map[string]any, roomID string) {
	t.Helper()
	for _, e := range evs {
		if e["type"] != "m.room.create" || strings.Contains(roomID, ":") {
			syncTCheckStripped(t, e)
			continue
		}
		if _, ok := e["origin_server_ts"].(float64); !ok || e["hashes"] == nil || e["signatures"] == nil || e["auth_events"] == nil {
			t.Fatalf("the create event of a room version 12 room is not whole in stripped state: %v", e)
		}
		if _, ok := e["unsigned"]; ok {
			t.Fatalf("the whole create event in stripped state has unsigned: %v", e)
		}
		js, _ := json.Marshal(e)
		verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12)
		pdu, err := verImpl.NewEventFromTrustedJSON(js, false)
		if err != nil || pdu.EventID() != "$"+roomID[1:] {
			t.Fatalf("the create event in stripped state is not the one of room %s (%v): %v", roomID, err, e)
		}
	}
}

func syncTCheckStripped(t testing.TB, e map[string]any) {
	t.Helper()
	for k := range e {
		if k != "sender" && k != "type" && k != "state_key" && k != "content" {
			t.Fatalf("stripped state event with the field %s: %v", k, e)
		}
	}
	for _, k := range []string{"sender", "type"} {
		if s, _ := e[k].(string); s == "" {
			t.Fatalf("stripped state event without %s: %v", k, e)
		}
	}
	if _, ok := e["state_key"].(string); !ok {
		t.Fatalf("stripped state event without state_key: %v", e)
	}
	if _, ok := e["content"].(map[string]any); !ok {
		t.Fatalf("stripped state event without content: %v", e)
	}
}

// syncTStateMap maps (type, state_key) to event IDs for the state events of
// the lists, later lists overriding earlier ones.
func syncTStateMap(lists ...[]map[string]any) map[[2]string]string {
	out := map[[2]string]string{}
	for _, l := range lists {
		for _, e := range l {
			key, ok := e["state_key"].(string)
			if !ok {
				continue
			}
			out[[2]string{e["type"].(string), key}] = e["event_id"].(string)
		}
	}
	return out
}

// syncTCurrentState is the room's current state by GET /state.
func syncTCurrentState(c *testutil.Client, roomID string) map[[2]string]string {
	c.T.Helper()
	return syncTStateMap(roomTStateList(c, roomID))
}

// syncTSendN sends n messages "prefix-i" and returns their IDs.
func syncTSendN(c *testutil.Client, roomID string, n int, prefix string) []string {
	c.T.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = roomTSend(c, roomID, fmt.Sprintf("%s-%d", prefix, i))
	}
	return ids
}

// syncTMessages returns the chunk of GET /rooms/{roomId}/messages.
func syncTMessages(c *testutil.Client, roomID string, kv ...string) []map[string]any {
	c.T.Helper()
	r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID)+"?"+syncTQuery(kv...), nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET messages: status %d: %s", r.Status, syncTShort(r.Body))
	}
	var m struct {
		Chunk []map[string]any `json:"chunk"`
	}
	r.Decode(c.T, &m)
	return m.Chunk
}

func syncTReversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// syncTMember returns the m.room.member event of a user in evs.
func syncTMember(evs []map[string]any, userID string) map[string]any {
	return syncTFind(evs, "m.room.member", userID)
}

// syncTMembership is content.membership of a member event.
func syncTMembership(e map[string]any) string {
	c, _ := e["content"].(map[string]any)
	s, _ := c["membership"].(string)
	return s
}

// syncTAsync runs a sync in the background; the returned function waits
// for it and returns the response and how long it took. Failures are
// reported by the waiting goroutine.
func syncTAsync(c *testutil.Client, query string) func() (*testutil.Response, time.Duration) {
	type result struct {
		r   *testutil.Response
		d   time.Duration
		err error
	}
	ch := make(chan result, 1)
	start := time.Now()
	go func() {
		req, err := http.NewRequest("GET", c.BaseURL+"/_matrix/client/v3/sync?"+query, nil)
		if err != nil {
			ch <- result{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{r: &testutil.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, d: time.Since(start)}
	}()
	return func() (*testutil.Response, time.Duration) {
		c.T.Helper()
		res := <-ch
		if res.err != nil {
			c.T.Fatalf("background sync: %v", res.err)
		}
		if res.r.Status != http.StatusOK {
			c.T.Fatalf("background sync: status %d: %s", res.r.Status, syncTShort(res.r.Body))
		}
		return res.r, res.d
	}
}

// ---- initial sync ----

func TestSyncInitial(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")

	// A fresh room's whole state fits in the timeline: nothing is limited
	// and the state before the timeline is empty.
	t.Run("small room", func(t *testing.T) {
		alice := roomTBind(t, alice)
		room := roomTCreate(alice, map[string]any{"preset": "private_chat"})
		s := syncTInitial(alice)
		j := syncTJoin(t, s, room)
		if j.Timeline.Limited {
			t.Fatalf("timeline of a fresh room is limited: %s", syncTShort(s.Body))
		}
		if len(j.Timeline.Events) == 0 || j.Timeline.Events[0]["type"] != "m.room.create" {
			t.Fatalf("timeline of a fresh room does not start with m.room.create: %v", j.Timeline.Events)
		}
		if j.State == nil || len(j.State.Events) != 0 {
			t.Fatalf("state of a room whose state fits in the timeline = %v, want an empty list", j.State)
		}
		if j.Timeline.PrevBatch == "" {
			t.Fatalf("timeline without prev_batch: %s", syncTShort(s.Body))
		}
		for _, e := range j.Timeline.Events {
			syncTCheckEvent(t, e)
		}
		if got, want := syncTStateMap(j.Timeline.Events), syncTCurrentState(alice, room); !maps2Equal(got, want) {
			t.Fatalf("state events of the timeline %v, want the room state %v", got, want)
		}
		if j.Summary == nil || roomTNum(t, j.Summary["m.joined_member_count"], "m.joined_member_count") != 1 {
			t.Fatalf("summary %v, want m.joined_member_count 1", j.Summary)
		}
		if heroes, ok := j.Summary["m.heroes"]; ok && len(roomTStrings(t, heroes, "m.heroes")) != 0 {
			t.Fatalf("heroes of a room with only the syncing user: %v", heroes)
		}
	})

	t.Run("busy room", func(t *testing.T) {
		alice, bob, carol := roomTBind(t, alice), roomTBind(t, bob), roomTBind(t, carol)
		room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
		roomTJoin(bob, room)
		roomTInvite(alice, room, carol.UserID)
		sent := syncTSendN(alice, room, 12, "busy")

		s := syncTInitial(alice)
		j := syncTJoin(t, s, room)
		tl := j.Timeline
		if !tl.Limited {
			t.Fatalf("timeline of 10 events in a room with more is not limited: %s", syncTShort(s.Body))
		}
		if !slices.Equal(syncTIDs(tl.Events), sent[2:]) {
			t.Fatalf("timeline %v, want the 10 latest events %v", syncTIDs(tl.Events), sent[2:])
		}
		for i, e := range tl.Events {
			syncTCheckEvent(t, e)
			if e["sender"] != alice.UserID || syncTContent(t, e)["body"] != fmt.Sprintf("busy-%d", i+2) {
				t.Fatalf("timeline event %d = %v", i, e)
			}
		}
		if tl.PrevBatch == "" {
			t.Fatalf("limited timeline without prev_batch")
		}
		// The state at the start of the timeline: the whole room state,
		// none of it repeated from the timeline.
		if j.State == nil {
			t.Fatalf("no state: %s", syncTShort(s.Body))
		}
		for _, e := range j.State.Events {
			syncTCheckEvent(t, e)
			if _, ok := e["state_key"].(string); !ok {
				t.Fatalf("state event without state_key: %v", e)
			}
			if syncTByID(tl.Events, e["event_id"].(string)) != nil {
				t.Fatalf("state event %v also in the timeline", e["event_id"])
			}
		}
		if got, want := syncTStateMap(j.State.Events), syncTCurrentState(alice, room); !maps2Equal(got, want) {
			t.Fatalf("state %v, want the room state %v", got, want)
		}
		for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.join_rules", ""},
			{"m.room.history_visibility", ""}, {"m.room.member", alice.UserID}, {"m.room.member", bob.UserID}} {
			if syncTFind(j.State.Events, k[0], k[1]) == nil {
				t.Fatalf("state lacks %v: %v", k, syncTIDs(j.State.Events))
			}
		}
		if m := syncTMember(j.State.Events, carol.UserID); m == nil || syncTMembership(m) != "invite" {
			t.Fatalf("state lacks carol's invite: %v", m)
		}
		// prev_batch pages back from the timeline start.
		if back := syncTIDs(syncTMessages(alice, room, "dir", "b", "from", tl.PrevBatch, "limit", "2")); !slices.Equal(back, []string{sent[1], sent[0]}) {
			t.Fatalf("/messages from prev_batch = %v, want %v", back, []string{sent[1], sent[0]})
		}

		// Summary: the others, and the member counts.
		if j.Summary == nil {
			t.Fatalf("initial sync without a room summary: %s", syncTShort(s.Body))
		}
		heroes := roomTStrings(t, j.Summary["m.heroes"], "m.heroes")
		if !slices.Equal(heroes, []string{bob.UserID, carol.UserID}) {
			t.Fatalf("m.heroes = %v, want [%s %s]", heroes, bob.UserID, carol.UserID)
		}
		if n := roomTNum(t, j.Summary["m.joined_member_count"], "m.joined_member_count"); n != 2 {
			t.Fatalf("m.joined_member_count = %d, want 2", n)
		}
		if n := roomTNum(t, j.Summary["m.invited_member_count"], "m.invited_member_count"); n != 1 {
			t.Fatalf("m.invited_member_count = %d, want 1", n)
		}
		if j.Ephemeral == nil || j.Ephemeral.Events == nil {
			t.Fatalf("joined room without ephemeral events list: %s", syncTShort(s.Body))
		}
		if j.AccountData == nil || j.AccountData.Events == nil {
			t.Fatalf("joined room without account_data events list: %s", syncTShort(s.Body))
		}

		// Bob's view: the heroes exclude him.
		s = syncTInitial(bob)
		j = syncTJoin(t, s, room)
		heroes = roomTStrings(t, j.Summary["m.heroes"], "m.heroes")
		if !slices.Equal(heroes, []string{alice.UserID, carol.UserID}) {
			t.Fatalf("bob's m.heroes = %v, want [%s %s]", heroes, alice.UserID, carol.UserID)
		}
		// Carol is only invited.
		s = syncTInitial(carol)
		syncTNotIn(t, s, room, "join", "leave")
		if s.Rooms.Invite[room] == nil {
			t.Fatalf("carol's initial sync lacks the invite: %s", syncTShort(s.Body))
		}
	})
}

func maps2Equal(a, b map[[2]string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The room summary's heroes: the first 5 joined or invited members by
// stream ordering, never the syncing user; with nobody else joined or
// invited, the users who left.
func TestSyncSummaryHeroes(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")

	t.Run("stream order", func(t *testing.T) {
		alice := roomTBind(t, alice)
		room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
		// Joined in an order that is not alphabetical.
		var joined []string
		for _, name := range []string{"zed", "yan", "xia", "wes", "val", "uma", "tom"} {
			u := roomTUser(t, srv, name)
			roomTJoin(u, room)
			joined = append(joined, u.UserID)
		}
		j := syncTJoin(t, syncTInitial(alice), room)
		heroes := roomTStrings(t, j.Summary["m.heroes"], "m.heroes")
		// The spec orders them by stream ordering; Synapse sorts the
		// same five by user ID. Either way: the first five to join.
		if got, want := roomTSorted(heroes...), roomTSorted(joined[:5]...); !slices.Equal(got, want) {
			t.Fatalf("m.heroes = %v, want the first 5 members to join %v", heroes, joined[:5])
		}
		if n := roomTNum(t, j.Summary["m.joined_member_count"], "m.joined_member_count"); n != 8 {
			t.Fatalf("m.joined_member_count = %d, want 8", n)
		}
	})

	t.Run("only left users", func(t *testing.T) {
		alice := roomTBind(t, alice)
		room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
		bob := roomTUser(t, srv, "bob")
		roomTJoin(bob, room)
		roomTLeave(bob, room)
		j := syncTJoin(t, syncTInitial(alice), room)
		heroes := roomTStrings(t, j.Summary["m.heroes"], "m.heroes")
		if !slices.Equal(heroes, []string{bob.UserID}) {
			t.Fatalf("m.heroes of a room whose other member left = %v, want [%s]", heroes, bob.UserID)
		}
		if n := roomTNum(t, j.Summary["m.joined_member_count"], "m.joined_member_count"); n != 1 {
			t.Fatalf("m.joined_member_count = %d, want 1", n)
		}
		if n := roomTNum(t, j.Summary["m.invited_member_count"], "m.invited_member_count"); n != 0 {
			t.Fatalf("m.invited_member_count = %d, want 0", n)
		}
	})
}

// Malformed parameters are refused with 400 M_INVALID_PARAM; no token is
// 401.
func TestSyncInvalidParams(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	for _, q := range []string{
		"since=garbage", "since=s1_x", "since=t5", "since=" + url.QueryEscape("s1_2_3_4_5_6_7_8_9"),
		"timeout=soon", "timeout=-5", "full_state=maybe", "set_presence=busy",
	} {
		alice.MustFail("GET", "/_matrix/client/v3/sync?"+q, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	testutil.NewClient(t, srv.URL).MustFail("GET", "/_matrix/client/v3/sync", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// A valid token still works.
	s := syncTInitial(alice)
	syncTSince(alice, s.NextBatch)
}

// ---- incremental sync ----

func TestSyncIncremental(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	before := roomTSend(alice, room, "before")
	first := syncTInitial(alice)

	roomTJoin(bob, room)
	m1 := roomTSend(bob, room, "one")
	m2 := roomTSend(alice, room, "two")
	s := syncTSince(alice, first.NextBatch)
	if s.NextBatch == first.NextBatch {
		t.Fatalf("next_batch did not move after new events: %s", s.NextBatch)
	}
	j := syncTJoin(t, s, room)
	evs := j.Timeline.Events
	if len(evs) != 3 || evs[0]["type"] != "m.room.member" || evs[0]["state_key"] != bob.UserID || evs[1]["event_id"] != m1 || evs[2]["event_id"] != m2 {
		t.Fatalf("incremental timeline %v, want bob's join, %s, %s", syncTIDs(evs), m1, m2)
	}
	for _, e := range evs {
		syncTCheckEvent(t, e)
	}
	if j.Timeline.Limited {
		t.Fatalf("incremental timeline with 3 events is limited")
	}
	if len(syncTList(j.State)) != 0 {
		t.Fatalf("state of a non-limited incremental sync = %v, want none", syncTIDs(j.State.Events))
	}
	// prev_batch joins the timeline to what came before it.
	if back := syncTIDs(syncTMessages(alice, room, "dir", "b", "from", j.Timeline.PrevBatch, "limit", "1")); !slices.Equal(back, []string{before}) {
		t.Fatalf("/messages from prev_batch = %v, want [%s]", back, before)
	}
	// The summary changed (a member joined).
	if j.Summary != nil {
		if n, ok := j.Summary["m.joined_member_count"]; ok && roomTNum(t, n, "m.joined_member_count") != 2 {
			t.Fatalf("summary %v, want m.joined_member_count 2", j.Summary)
		}
	}

	// Nothing new: the room is not listed.
	again := syncTSince(alice, s.NextBatch)
	syncTNotIn(t, again, room, "join", "leave", "invite")
	// Only what is new since each token.
	m3 := roomTSend(bob, room, "three")
	s2 := syncTSince(alice, again.NextBatch)
	if ids := syncTIDs(syncTJoin(t, s2, room).Timeline.Events); !slices.Equal(ids, []string{m3}) {
		t.Fatalf("timeline %v, want only [%s]", ids, m3)
	}
	// Bob's first incremental sync after his initial one.
	bs := syncTInitial(bob)
	m4 := roomTSend(alice, room, "four")
	if ids := syncTIDs(syncTJoin(t, syncTSince(bob, bs.NextBatch), room).Timeline.Events); !slices.Equal(ids, []string{m4}) {
		t.Fatalf("bob's timeline %v, want only [%s]", ids, m4)
	}
}

// A gappy incremental sync: limited, the latest events, a prev_batch that
// /messages pages back from without gaps or duplicates, and the state
// changes of the gap.
func TestSyncGappy(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)
	old := syncTSendN(alice, room, 3, "old")
	flt := syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 3}}})
	first := syncTInitial(alice, "filter", flt)
	if ids := syncTIDs(syncTJoin(t, first, room).Timeline.Events); !slices.Equal(ids, old) {
		t.Fatalf("initial timeline with limit 3 = %v, want %v", ids, old)
	}

	var sent []string
	sent = append(sent, syncTSendN(bob, room, 3, "gap")...)
	topic := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "in the gap"})
	sent = append(sent, topic)
	sent = append(sent, syncTSendN(bob, room, 6, "late")...)

	s := syncTSince(alice, first.NextBatch, "filter", flt)
	j := syncTJoin(t, s, room)
	if !j.Timeline.Limited {
		t.Fatalf("timeline of 3 of 10 new events is not limited: %s", syncTShort(s.Body))
	}
	if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, sent[7:]) {
		t.Fatalf("gappy timeline %v, want the latest %v", ids, sent[7:])
	}
	// The topic changed in the gap: it is in the state delta; what did
	// not change is not.
	if e := syncTFind(syncTList(j.State), "m.room.topic", ""); e == nil || e["event_id"] != topic {
		t.Fatalf("state of the gappy sync lacks the topic %s: %v", topic, syncTIDs(syncTList(j.State)))
	}
	for _, e := range syncTList(j.State) {
		syncTCheckEvent(t, e)
		if e["type"] == "m.room.create" || e["type"] == "m.room.power_levels" {
			t.Fatalf("unchanged state %s in the delta of an incremental sync", e["type"])
		}
	}

	// /messages back from prev_batch: the gap, newest first, then the
	// history before the sync token.
	back := syncTIDs(syncTMessages(alice, room, "dir", "b", "from", j.Timeline.PrevBatch, "limit", "10"))
	want := append(syncTReversed(sent[:7]), syncTReversed(old)...)
	if !slices.Equal(back, want) {
		t.Fatalf("/messages back from prev_batch = %v, want %v", back, want)
	}
	// Up to the since token: exactly the gap.
	back = syncTIDs(syncTMessages(alice, room, "dir", "b", "from", j.Timeline.PrevBatch, "to", first.NextBatch, "limit", "50"))
	if !slices.Equal(back, syncTReversed(sent[:7])) {
		t.Fatalf("/messages from prev_batch to since = %v, want the gap %v", back, syncTReversed(sent[:7]))
	}
	// Forwards from the since token to prev_batch, as the spec suggests.
	fwd := syncTIDs(syncTMessages(alice, room, "dir", "f", "from", first.NextBatch, "to", j.Timeline.PrevBatch, "limit", "50"))
	if !slices.Equal(fwd, sent[:7]) {
		t.Fatalf("/messages forwards from since to prev_batch = %v, want the gap %v", fwd, sent[:7])
	}
}

// full_state=true sends the whole state again, at once even with a
// timeout, with the timeline still bounded by since.
func TestSyncFullState(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat", "name": "Full"})
	syncTSendN(alice, room, 11, "m")
	first := syncTInitial(alice)

	start := time.Now()
	s := syncTDo(alice, syncTQuery("since", first.NextBatch, "full_state", "true", "timeout", "5000"))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("full_state sync took %v: it must ignore the timeout", d)
	}
	j := syncTJoin(t, s, room)
	if len(j.Timeline.Events) != 0 {
		t.Fatalf("full_state timeline with nothing new since = %v, want empty", syncTIDs(j.Timeline.Events))
	}
	if got, want := syncTStateMap(syncTList(j.State)), syncTCurrentState(alice, room); !maps2Equal(got, want) {
		t.Fatalf("full_state state = %v, want the whole state %v", got, want)
	}

	m := roomTSend(alice, room, "new")
	s = syncTDo(alice, syncTQuery("since", s.NextBatch, "full_state", "true"))
	j = syncTJoin(t, s, room)
	if ids := syncTIDs(j.Timeline.Events); !slices.Equal(ids, []string{m}) {
		t.Fatalf("full_state timeline = %v, want only the new [%s]", ids, m)
	}
	if got, want := syncTStateMap(syncTList(j.State)), syncTCurrentState(alice, room); !maps2Equal(got, want) {
		t.Fatalf("full_state state = %v, want the whole state %v", got, want)
	}
	for _, e := range j.State.Events {
		syncTCheckEvent(t, e)
	}
}

// ---- long-polling ----

func TestSyncLongPoll(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	shared := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, shared)
	unrelated := roomTCreate(carol, map[string]any{"preset": "public_chat"})

	t.Run("wakes on a shared room event", func(t *testing.T) {
		alice, bob := roomTBind(t, alice), roomTBind(t, bob)
		since := syncTInitial(alice).NextBatch
		wait := syncTAsync(alice, syncTQuery("since", since, "timeout", "10000"))
		time.Sleep(300 * time.Millisecond) // let the sync start waiting
		sentAt := time.Now()
		id := roomTSend(bob, shared, "wake up")
		r, _ := wait()
		if d := time.Since(sentAt); d > 2*time.Second {
			t.Fatalf("long-poll returned %v after the event: want promptly", d)
		}
		s := syncTDecode(t, r)
		if ids := syncTIDs(syncTJoin(t, s, shared).Timeline.Events); !slices.Equal(ids, []string{id}) {
			t.Fatalf("woken sync timeline %v, want [%s]", ids, id)
		}
	})

	t.Run("does not wake for other rooms", func(t *testing.T) {
		alice, carol := roomTBind(t, alice), roomTBind(t, carol)
		since := syncTInitial(alice).NextBatch
		wait := syncTAsync(alice, syncTQuery("since", since, "timeout", "1500"))
		time.Sleep(200 * time.Millisecond)
		roomTSend(carol, unrelated, "not for alice")
		r, d := wait()
		if d < 1400*time.Millisecond {
			t.Fatalf("long-poll returned after %v for an event in a room alice is not in: %s", d, syncTShort(r.Body))
		}
		s := syncTDecode(t, r)
		syncTNotIn(t, s, unrelated, "join", "invite", "leave")
		syncTNotIn(t, s, shared, "join")
	})

	t.Run("times out", func(t *testing.T) {
		alice, bob := roomTBind(t, alice), roomTBind(t, bob)
		first := syncTInitial(alice)
		start := time.Now()
		s := syncTDo(alice, syncTQuery("since", first.NextBatch, "timeout", "1000"))
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Fatalf("sync with nothing new returned after %v, want the 1 s timeout", d)
		}
		syncTNotIn(t, s, shared, "join")
		// The token after a timeout is the same or later: nothing is
		// repeated and what follows arrives.
		id := roomTSend(bob, shared, "after timeout")
		if ids := syncTIDs(syncTJoin(t, syncTSince(alice, s.NextBatch), shared).Timeline.Events); !slices.Equal(ids, []string{id}) {
			t.Fatalf("timeline after the timed-out sync = %v, want [%s]", ids, id)
		}
	})

	t.Run("wakes on an invite", func(t *testing.T) {
		alice, carol := roomTBind(t, alice), roomTBind(t, carol)
		room := roomTCreate(alice, map[string]any{})
		since := syncTInitial(carol).NextBatch
		wait := syncTAsync(carol, syncTQuery("since", since, "timeout", "10000"))
		time.Sleep(300 * time.Millisecond)
		sentAt := time.Now()
		roomTInvite(alice, room, carol.UserID)
		r, _ := wait()
		if d := time.Since(sentAt); d > 2*time.Second {
			t.Fatalf("long-poll returned %v after the invite", d)
		}
		if s := syncTDecode(t, r); s.Rooms.Invite[room] == nil {
			t.Fatalf("woken sync lacks the invite: %s", syncTShort(s.Body))
		}
	})

	t.Run("wakes on being kicked", func(t *testing.T) {
		alice := roomTBind(t, alice)
		dave := roomTUser(t, srv, "dave")
		room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
		roomTJoin(dave, room)
		since := syncTInitial(dave).NextBatch
		wait := syncTAsync(dave, syncTQuery("since", since, "timeout", "10000"))
		time.Sleep(300 * time.Millisecond)
		sentAt := time.Now()
		roomTKick(alice, room, dave.UserID)
		r, _ := wait()
		if d := time.Since(sentAt); d > 2*time.Second {
			t.Fatalf("long-poll returned %v after the kick", d)
		}
		syncTLeave(t, syncTDecode(t, r), room)
	})

	t.Run("wakes on account data", func(t *testing.T) {
		alice := roomTBind(t, alice)
		since := syncTInitial(alice).NextBatch
		wait := syncTAsync(alice, syncTQuery("since", since, "timeout", "10000"))
		time.Sleep(300 * time.Millisecond)
		sentAt := time.Now()
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/account_data/%s", alice.UserID, "org.example.poll"), map[string]any{"v": 1}, http.StatusOK)
		r, _ := wait()
		if d := time.Since(sentAt); d > 2*time.Second {
			t.Fatalf("long-poll returned %v after the account data change", d)
		}
		s := syncTDecode(t, r)
		if !syncTHasType(syncTList(s.AccountData), "org.example.poll") {
			t.Fatalf("woken sync lacks the account data: %s", syncTShort(s.Body))
		}
	})
}

func syncTHasType(evs []map[string]any, typ string) bool {
	return syncTOfType(evs, typ) != nil
}

func syncTOfType(evs []map[string]any, typ string) map[string]any {
	for _, e := range evs {
		if e["type"] == typ {
			return e
		}
	}
	return nil
}

// ---- transaction IDs ----

// unsigned.transaction_id is only for the device that sent the event.
func TestSyncTransactionID(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	alice2 := alice.Login(alice.UserID, "pw")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, room)

	send := func(txn string) string {
		t.Helper()
		m := alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, txn),
			map[string]any{"msgtype": "m.text", "body": txn}, http.StatusOK)
		return roomTEventID(t, m)
	}
	txnOf := func(s *syncTResponse, id string) (string, bool) {
		t.Helper()
		e := syncTByID(syncTJoin(t, s, room).Timeline.Events, id)
		if e == nil {
			t.Fatalf("event %s not in the timeline: %s", id, syncTShort(s.Body))
		}
		u, _ := e["unsigned"].(map[string]any)
		v, ok := u["transaction_id"]
		s2, _ := v.(string)
		return s2, ok
	}

	clients := map[string]*testutil.Client{"sender": alice, "other device": alice2, "other user": bob}
	tokens := map[string]string{}
	for name, c := range clients {
		tokens[name] = syncTInitial(c).NextBatch
	}
	id := send("sync-txn-1")
	check := func(id, txn string, sync func(name string, c *testutil.Client) *syncTResponse) {
		t.Helper()
		for name, c := range clients {
			got, ok := txnOf(sync(name, c), id)
			if name == "sender" && got != txn {
				t.Fatalf("sender's device: unsigned.transaction_id = %q, want %q", got, txn)
			}
			if name != "sender" && ok {
				t.Fatalf("%s sees unsigned.transaction_id %q", name, got)
			}
		}
	}
	// Incremental syncs.
	check(id, "sync-txn-1", func(name string, c *testutil.Client) *syncTResponse {
		s := syncTSince(c, tokens[name])
		tokens[name] = s.NextBatch
		return s
	})
	// Initial syncs.
	check(id, "sync-txn-1", func(_ string, c *testutil.Client) *syncTResponse { return syncTInitial(c) })
	// A second event, after the others.
	id2 := send("sync-txn-2")
	check(id2, "sync-txn-2", func(name string, c *testutil.Client) *syncTResponse { return syncTSince(c, tokens[name]) })
}

// ---- redactions ----

func TestSyncRedaction(t *testing.T) {
	srv := syncTStart(t)
	for _, ver := range []string{"10", "11"} {
		t.Run("v"+ver, func(t *testing.T) {
			alice := roomTUser(t, srv, "alice")
			room := roomTCreate(alice, map[string]any{"room_version": ver})
			before := syncTInitial(alice).NextBatch
			msg := roomTSend(alice, room, "regrettable")
			mid := syncTInitial(alice).NextBatch
			red := roomTEventID(t, alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", room, msg, roomTTxn()),
				map[string]any{"reason": "oops"}, http.StatusOK))

			checkRedaction := func(e map[string]any) {
				t.Helper()
				syncTCheckEvent(t, e)
				if e["type"] != "m.room.redaction" {
					t.Fatalf("redaction event %v", e)
				}
				top, _ := e["redacts"].(string)
				inContent, _ := syncTContent(t, e)["redacts"].(string)
				if top != msg && inContent != msg {
					t.Fatalf("redaction event %v does not name %s in redacts", e, msg)
				}
				if ver == "11" && inContent != msg {
					t.Fatalf("v11 redaction without content.redacts: %v", e)
				}
				if ver == "10" && top != msg {
					t.Fatalf("v10 redaction without a top-level redacts: %v", e)
				}
			}
			checkRedacted := func(e map[string]any) {
				t.Helper()
				if e == nil {
					t.Fatalf("redacted event %s missing", msg)
				}
				if c := syncTContent(t, e); len(c) != 0 {
					t.Fatalf("redacted message content = %v, want {}", c)
				}
				u := roomTMap(t, e["unsigned"], "unsigned of the redacted event")
				because := roomTMap(t, u["redacted_because"], "unsigned.redacted_because")
				if because["event_id"] != red || because["type"] != "m.room.redaction" {
					t.Fatalf("redacted_because = %v, want the redaction %s", because, red)
				}
			}

			// Incremental sync after the message was seen: the redaction.
			s := syncTSince(alice, mid)
			evs := syncTJoin(t, s, room).Timeline.Events
			if ids := syncTIDs(evs); !slices.Equal(ids, []string{red}) {
				t.Fatalf("timeline after the redaction = %v, want [%s]", ids, red)
			}
			checkRedaction(evs[0])
			// From before the message: the message redacted, then the
			// redaction.
			evs = syncTJoin(t, syncTSince(alice, before), room).Timeline.Events
			if ids := syncTIDs(evs); !slices.Equal(ids, []string{msg, red}) {
				t.Fatalf("timeline = %v, want [%s %s]", ids, msg, red)
			}
			checkRedacted(evs[0])
			checkRedaction(evs[1])
			// An initial sync serves the message redacted.
			evs = syncTJoin(t, syncTInitial(alice), room).Timeline.Events
			checkRedacted(syncTByID(evs, msg))
			checkRedaction(syncTByID(evs, red))

			// A redacted state event is redacted in the state section too.
			topic := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "regrettable topic"})
			alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", room, topic, roomTTxn()), map[string]any{}, http.StatusOK)
			syncTSendN(alice, room, 11, "push out")
			j := syncTJoin(t, syncTInitial(alice), room)
			e := syncTFind(syncTList(j.State), "m.room.topic", "")
			if e == nil || e["event_id"] != topic {
				t.Fatalf("state lacks the redacted topic %s: %v", topic, syncTIDs(syncTList(j.State)))
			}
			if c := syncTContent(t, e); len(c) != 0 {
				t.Fatalf("redacted topic in the state: content %v, want {}", c)
			}
		})
	}
}

// ---- invites, knocks, leaves ----

func TestSyncInvite(t *testing.T) {
	srv := syncTStart(t)
	for _, ver := range []string{"10", "12"} {
		t.Run("v"+ver, func(t *testing.T) {
			alice := roomTUser(t, srv, "alice")
			bob := roomTUser(t, srv, "bob")
			room := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "public_chat", "name": "Invite room", "topic": "a topic"})
			roomTSend(alice, room, "secret history")
			first := syncTInitial(bob)
			roomTInvite(alice, room, bob.UserID)

			checkInvite := func(s *syncTResponse) {
				t.Helper()
				inv := s.Rooms.Invite[room]
				if inv == nil || inv.InviteState == nil {
					t.Fatalf("room %s not in rooms.invite: %s", room, syncTShort(s.Body))
				}
				syncTNotIn(t, s, room, "join", "leave", "knock")
				evs := inv.InviteState.Events
				syncTCheckStrippedState(t, evs, room)
				if c := syncTFind(evs, "m.room.create", ""); c == nil || syncTContent(t, c)["room_version"] == nil {
					t.Fatalf("invite_state lacks m.room.create: %v", evs)
				}
				m := syncTMember(evs, bob.UserID)
				if m == nil || syncTMembership(m) != "invite" || m["sender"] != alice.UserID {
					t.Fatalf("invite_state lacks the invite of bob by alice: %v", evs)
				}
				if n := syncTFind(evs, "m.room.name", ""); n == nil || syncTContent(t, n)["name"] != "Invite room" {
					t.Fatalf("invite_state lacks the room name: %v", evs)
				}
				if jr := syncTFind(evs, "m.room.join_rules", ""); jr == nil || syncTContent(t, jr)["join_rule"] != "public" {
					t.Fatalf("invite_state lacks the join rules: %v", evs)
				}
				for _, e := range evs {
					if e["type"] == "m.room.message" {
						t.Fatalf("invite_state holds a message: %v", e)
					}
				}
			}
			s := syncTSince(bob, first.NextBatch)
			checkInvite(s)
			checkInvite(syncTInitial(bob))

			roomTJoin(bob, room)
			s2 := syncTSince(bob, s.NextBatch)
			syncTNotIn(t, s2, room, "invite", "leave")
			j := syncTJoin(t, s2, room)
			if m := syncTMember(append(syncTList(j.State), j.Timeline.Events...), bob.UserID); m == nil || syncTMembership(m) != "join" {
				t.Fatalf("joined room lacks bob's join: %s", syncTShort(s2.Body))
			}
			// The join says what it replaced: the invite, and who sent it (as
			// Synapse; Complement TestFederationRoomsInvite is_direct subtest).
			if m := syncTMember(j.Timeline.Events, bob.UserID); m != nil {
				u, _ := m["unsigned"].(map[string]any)
				pc, _ := u["prev_content"].(map[string]any)
				if pc["membership"] != "invite" || u["prev_sender"] != alice.UserID {
					t.Fatalf("bob's join unsigned %v, want prev_content of the invite and prev_sender %s", u, alice.UserID)
				}
			} else {
				t.Fatalf("bob's join not in the timeline: %s", syncTShort(s2.Body))
			}
			// Newly joined: the whole state.
			if got, want := syncTStateMap(syncTList(j.State), j.Timeline.Events), syncTCurrentState(bob, room); !maps2Equal(got, want) {
				t.Fatalf("state + timeline of the newly joined room %v, want the room state %v", got, want)
			}
			// Nothing more about the invite later.
			s3 := syncTSince(bob, s2.NextBatch)
			syncTNotIn(t, s3, room, "invite", "join", "leave")
		})
	}
}

func TestSyncKnock(t *testing.T) {
	srv := syncTStart(t)
	for _, ver := range []string{"7", "11", "12"} {
		t.Run("v"+ver, func(t *testing.T) {
			alice := roomTUser(t, srv, "alice")
			bob := roomTUser(t, srv, "bob")
			room := roomTCreate(alice, map[string]any{"room_version": ver, "name": "Knock room", "initial_state": []any{
				map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}},
			}})
			first := syncTInitial(bob)
			bob.MustDo("POST", testutil.Path("/_matrix/client/v3/knock/%s", room), map[string]any{"reason": "hi"}, http.StatusOK)

			checkKnock := func(s *syncTResponse) {
				t.Helper()
				k := s.Rooms.Knock[room]
				if k == nil || k.KnockState == nil {
					t.Fatalf("room %s not in rooms.knock: %s", room, syncTShort(s.Body))
				}
				syncTNotIn(t, s, room, "join", "invite", "leave")
				evs := k.KnockState.Events
				syncTCheckStrippedState(t, evs, room)
				if syncTFind(evs, "m.room.create", "") == nil {
					t.Fatalf("knock_state lacks m.room.create: %v", evs)
				}
				if jr := syncTFind(evs, "m.room.join_rules", ""); jr == nil || syncTContent(t, jr)["join_rule"] != "knock" {
					t.Fatalf("knock_state lacks the join rules: %v", evs)
				}
				if n := syncTFind(evs, "m.room.name", ""); n == nil || syncTContent(t, n)["name"] != "Knock room" {
					t.Fatalf("knock_state lacks the name: %v", evs)
				}
				if m := syncTMember(evs, bob.UserID); m == nil || syncTMembership(m) != "knock" || m["sender"] != bob.UserID {
					t.Fatalf("knock_state lacks bob's knock: %v", evs)
				}
			}
			s := syncTSince(bob, first.NextBatch)
			checkKnock(s)
			checkKnock(syncTInitial(bob))

			// Accepted: the room moves to invite.
			roomTInvite(alice, room, bob.UserID)
			s2 := syncTSince(bob, s.NextBatch)
			syncTNotIn(t, s2, room, "knock", "join")
			if s2.Rooms.Invite[room] == nil {
				t.Fatalf("accepted knock not in rooms.invite: %s", syncTShort(s2.Body))
			}
		})
	}
}

func TestSyncLeave(t *testing.T) {
	srv := syncTStart(t)
	for _, how := range []string{"leave", "kick", "ban"} {
		t.Run(how, func(t *testing.T) {
			alice := roomTUser(t, srv, "alice")
			bob := roomTUser(t, srv, "bob")
			room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
			roomTJoin(bob, room)
			seen := roomTSend(alice, room, "seen by bob")
			first := syncTInitial(bob)
			switch how {
			case "leave":
				roomTLeave(bob, room)
			case "kick":
				roomTKick(alice, room, bob.UserID)
			case "ban":
				alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/ban", room), map[string]any{"user_id": bob.UserID}, http.StatusOK)
			}
			after := roomTSend(alice, room, "after bob left")

			wantMembership, wantSender := "leave", bob.UserID
			if how == "ban" {
				wantMembership = "ban"
			}
			if how != "leave" {
				wantSender = alice.UserID
			}
			checkLeft := func(l *syncTLeft, s *syncTResponse) {
				t.Helper()
				evs := l.Timeline.Events
				if len(evs) == 0 {
					t.Fatalf("left room with an empty timeline: %s", syncTShort(s.Body))
				}
				last := evs[len(evs)-1]
				syncTCheckEvent(t, last)
				if last["type"] != "m.room.member" || last["state_key"] != bob.UserID || syncTMembership(last) != wantMembership || last["sender"] != wantSender {
					t.Fatalf("last event of the left room = %v, want bob's %s by %s", last, wantMembership, wantSender)
				}
				if syncTByID(evs, after) != nil {
					t.Fatalf("left room's timeline holds an event after the %s", how)
				}
			}
			s := syncTSince(bob, first.NextBatch)
			syncTNotIn(t, s, room, "join", "invite")
			l := syncTLeave(t, s, room)
			checkLeft(l, s)
			if syncTByID(l.Timeline.Events, seen) != nil {
				t.Fatalf("incremental leave timeline repeats an event from before the since token")
			}
			// The leave is reported once.
			roomTSend(alice, room, "later")
			s2 := syncTSince(bob, s.NextBatch)
			syncTNotIn(t, s2, room, "join", "leave", "invite")

			// Initial syncs: a room left by oneself only with include_leave.
			if how == "leave" {
				syncTNotIn(t, syncTInitial(bob), room, "join", "leave", "invite")
			}
			s3 := syncTInitial(bob, "filter", syncTFilter(map[string]any{"room": map[string]any{"include_leave": true}}))
			syncTNotIn(t, s3, room, "join", "invite")
			l = syncTLeave(t, s3, room)
			checkLeft(l, s3)
			if syncTByID(l.Timeline.Events, seen) == nil {
				t.Fatalf("include_leave timeline lacks the history before the %s: %v", how, syncTIDs(l.Timeline.Events))
			}
		})
	}
}

// A rejected invite shows in rooms.leave with the rejection, and nothing
// of the history the invitee could not see.
func TestSyncRejectedInvite(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	roomTSend(alice, room, "private history")
	roomTInvite(alice, room, bob.UserID)
	s := syncTInitial(bob)
	if s.Rooms.Invite[room] == nil {
		t.Fatalf("invite missing: %s", syncTShort(s.Body))
	}
	roomTLeave(bob, room)
	s2 := syncTSince(bob, s.NextBatch)
	syncTNotIn(t, s2, room, "invite", "join")
	l := syncTLeave(t, s2, room)
	evs := l.Timeline.Events
	if len(evs) == 0 {
		t.Fatalf("rejected invite: empty timeline in rooms.leave: %s", syncTShort(s2.Body))
	}
	last := evs[len(evs)-1]
	if last["type"] != "m.room.member" || last["state_key"] != bob.UserID || syncTMembership(last) != "leave" || last["sender"] != bob.UserID {
		t.Fatalf("rejected invite: last event %v, want bob's leave", last)
	}
	for _, e := range evs {
		if e["type"] == "m.room.message" {
			t.Fatalf("rejected invite leaks a message of the room: %v", e)
		}
	}
	syncTNotIn(t, syncTSince(bob, s2.NextBatch), room, "invite", "join", "leave")
}

// Leaving and rejoining: the leave, then the room as newly joined with its
// whole state.
func TestSyncRejoin(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat", "name": "Rejoin"})
	roomTJoin(bob, room)
	s0 := syncTInitial(bob)
	roomTLeave(bob, room)
	s1 := syncTSince(bob, s0.NextBatch)
	syncTLeave(t, s1, room)
	syncTNotIn(t, s1, room, "join")

	topic := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "while away"})
	away := syncTSendN(alice, room, 12, "away")
	roomTJoin(bob, room)
	s2 := syncTSince(bob, s1.NextBatch)
	syncTNotIn(t, s2, room, "leave", "invite")
	j := syncTJoin(t, s2, room)
	evs := j.Timeline.Events
	if len(evs) == 0 {
		t.Fatalf("rejoined room with an empty timeline")
	}
	last := evs[len(evs)-1]
	if last["type"] != "m.room.member" || last["state_key"] != bob.UserID || syncTMembership(last) != "join" {
		t.Fatalf("last event after rejoining = %v, want bob's join", last)
	}
	if got, want := syncTStateMap(syncTList(j.State), evs), syncTCurrentState(bob, room); !maps2Equal(got, want) {
		t.Fatalf("state + timeline after rejoining = %v, want the whole state %v", got, want)
	}
	for _, k := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} {
		if syncTFind(syncTList(j.State), k, "") == nil {
			t.Fatalf("state after rejoining lacks %s: %v", k, syncTIDs(syncTList(j.State)))
		}
	}
	if e := syncTFind(syncTList(j.State), "m.room.topic", ""); e == nil || e["event_id"] != topic {
		t.Fatalf("state after rejoining lacks the topic set while away")
	}
	if syncTByID(evs, away[len(away)-1]) == nil {
		t.Fatalf("timeline after rejoining lacks the latest message")
	}
	syncTNotIn(t, syncTSince(bob, s2.NextBatch), room, "join", "leave")
}

// History the user may not see stays out of the timeline of a newly
// joined room (history_visibility joined).
func TestSyncHistoryVisibility(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}},
	}})
	hidden := roomTSend(alice, room, "before bob")
	s0 := syncTInitial(bob)
	roomTJoin(bob, room)
	visible := roomTSend(alice, room, "after bob")
	for name, s := range map[string]*syncTResponse{"incremental": syncTSince(bob, s0.NextBatch), "initial": syncTInitial(bob)} {
		j := syncTJoin(t, s, room)
		ids := syncTIDs(j.Timeline.Events)
		if slices.Contains(ids, hidden) {
			t.Fatalf("%s sync: timeline holds a message from before bob joined a joined-only room", name)
		}
		if !slices.Contains(ids, visible) {
			t.Fatalf("%s sync: timeline %v lacks the message after bob joined", name, ids)
		}
		if m := syncTMember(j.Timeline.Events, bob.UserID); m == nil || syncTMembership(m) != "join" {
			t.Fatalf("%s sync: timeline lacks bob's join", name)
		}
		// The state is still complete.
		if got, want := syncTStateMap(syncTList(j.State), j.Timeline.Events), syncTCurrentState(bob, room); !maps2Equal(got, want) {
			t.Fatalf("%s sync: state + timeline %v, want the room state %v", name, got, want)
		}
	}
}

// ---- account data ----

func TestSyncAccountData(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	other := roomTCreate(alice, map[string]any{})
	global := func(typ string, content any) {
		t.Helper()
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/account_data/%s", alice.UserID, typ), content, http.StatusOK)
	}
	perRoom := func(roomID, typ string, content any) {
		t.Helper()
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/account_data/%s", alice.UserID, roomID, typ), content, http.StatusOK)
	}
	types := func(evs []map[string]any) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e["type"].(string))
		}
		sort.Strings(out)
		return out
	}

	s0 := syncTInitial(alice)
	global("org.example.one", map[string]any{"n": 1})
	// Read-your-writes: the very next sync has it.
	s1 := syncTSince(alice, s0.NextBatch)
	e := syncTOfType(syncTList(s1.AccountData), "org.example.one")
	if e == nil || syncTContent(t, e)["n"] != 1.0 {
		t.Fatalf("account data after PUT: %s", s1.Body)
	}
	if e := syncTOfType(syncTList(syncTInitial(alice).AccountData), "org.example.one"); e == nil || syncTContent(t, e)["n"] != 1.0 {
		t.Fatalf("initial sync lacks the account data")
	}

	// Only what changed.
	global("org.example.two", map[string]any{"n": 2})
	s2 := syncTSince(alice, s1.NextBatch)
	if got := types(syncTList(s2.AccountData)); !slices.Equal(got, []string{"org.example.two"}) {
		t.Fatalf("incremental account data types %v, want only org.example.two", got)
	}
	global("org.example.one", map[string]any{"n": 3})
	s3 := syncTSince(alice, s2.NextBatch)
	if got := syncTList(s3.AccountData); len(got) != 1 || got[0]["type"] != "org.example.one" || syncTContent(t, got[0])["n"] != 3.0 {
		t.Fatalf("incremental account data after an update = %v, want org.example.one n=3", got)
	}

	// Per room.
	perRoom(room, "org.example.tag", map[string]any{"r": "a"})
	s4 := syncTSince(alice, s3.NextBatch)
	j := syncTJoin(t, s4, room)
	if e := syncTOfType(syncTList(j.AccountData), "org.example.tag"); e == nil || syncTContent(t, e)["r"] != "a" {
		t.Fatalf("room account data missing: %s", syncTShort(s4.Body))
	}
	if syncTHasType(syncTList(s4.AccountData), "org.example.tag") {
		t.Fatalf("room account data in the global account data")
	}
	if len(syncTList(s4.AccountData)) != 0 {
		t.Fatalf("unchanged global account data repeated: %v", syncTList(s4.AccountData))
	}
	if _, ok := s4.Rooms.Join[other]; ok && len(syncTList(s4.Rooms.Join[other].AccountData)) != 0 {
		t.Fatalf("room account data in another room")
	}
	s5 := syncTInitial(alice)
	if e := syncTOfType(syncTList(syncTJoin(t, s5, room).AccountData), "org.example.tag"); e == nil {
		t.Fatalf("initial sync lacks the room account data")
	}
	if syncTHasType(syncTList(syncTJoin(t, s5, other).AccountData), "org.example.tag") {
		t.Fatalf("room account data of one room in another")
	}

	perRoom(room, "org.example.other", map[string]any{"r": "b"})
	s6 := syncTSince(alice, s4.NextBatch)
	if got := types(syncTList(syncTJoin(t, s6, room).AccountData)); !slices.Equal(got, []string{"org.example.other"}) {
		t.Fatalf("incremental room account data %v, want only org.example.other", got)
	}
}

// ---- state_after ----

func TestSyncStateAfter(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat", "name": "After"})
	syncTSendN(alice, room, 10, "pad")
	topic := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "last"})

	s := syncTInitial(alice, "use_state_after", "true")
	j := syncTJoin(t, s, room)
	if j.State != nil {
		t.Fatalf("use_state_after: state present: %s", syncTShort(s.Body))
	}
	if j.StateAfter == nil {
		t.Fatalf("use_state_after: no state_after: %s", syncTShort(s.Body))
	}
	if syncTByID(j.Timeline.Events, topic) == nil {
		t.Fatalf("timeline lacks the topic")
	}
	if got, want := syncTStateMap(j.StateAfter.Events), syncTCurrentState(alice, room); !maps2Equal(got, want) {
		t.Fatalf("initial state_after = %v, want the state at the end of the timeline %v", got, want)
	}
	for _, e := range j.StateAfter.Events {
		syncTCheckEvent(t, e)
	}
	// Without the parameter: state, no state_after.
	plain := syncTJoin(t, syncTInitial(alice), room)
	if plain.StateAfter != nil || plain.State == nil {
		t.Fatalf("without use_state_after: state %v, state_after %v", plain.State, plain.StateAfter)
	}
	if syncTFind(plain.State.Events, "m.room.topic", "") != nil {
		t.Fatalf("state (at the timeline start) holds the topic set in the timeline")
	}

	// Incremental, not limited: the state changed in the timeline.
	topic2 := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "newer"})
	roomTSend(alice, room, "after topic")
	s2 := syncTSince(alice, s.NextBatch, "use_state_after", "true")
	j = syncTJoin(t, s2, room)
	if j.State != nil || j.StateAfter == nil {
		t.Fatalf("incremental use_state_after: state %v, state_after %v", j.State, j.StateAfter)
	}
	if e := syncTFind(j.StateAfter.Events, "m.room.topic", ""); e == nil || e["event_id"] != topic2 {
		t.Fatalf("incremental state_after lacks the new topic %s: %v", topic2, syncTIDs(j.StateAfter.Events))
	}
	if syncTFind(j.StateAfter.Events, "m.room.create", "") != nil {
		t.Fatalf("incremental state_after repeats unchanged state")
	}
	// Nothing changed: an empty state_after, still present.
	roomTSend(alice, room, "no state change")
	j = syncTJoin(t, syncTSince(alice, s2.NextBatch, "use_state_after", "true"), room)
	if j.StateAfter == nil || len(j.StateAfter.Events) != 0 || j.State != nil {
		t.Fatalf("state_after without state changes: state %v, state_after %v", j.State, j.StateAfter)
	}

	// Limited: the change is in state_after though not in the timeline.
	s3 := syncTSince(alice, s2.NextBatch)
	topic3 := roomTPutState(alice, room, "m.room.topic", "", map[string]any{"topic": "gap"})
	syncTSendN(alice, room, 3, "more")
	j = syncTJoin(t, syncTSince(alice, s3.NextBatch, "use_state_after", "true",
		"filter", syncTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}})), room)
	if !j.Timeline.Limited || j.StateAfter == nil {
		t.Fatalf("limited use_state_after sync: %+v", j)
	}
	if e := syncTFind(j.StateAfter.Events, "m.room.topic", ""); e == nil || e["event_id"] != topic3 {
		t.Fatalf("state_after of a gappy sync lacks the topic set in the gap")
	}
}

// ---- restarts ----

// Sync tokens survive a restart.
func TestSyncTokenAcrossRestart(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	room := roomTCreate(alice, map[string]any{})
	roomTSend(alice, room, "old")
	t1 := syncTInitial(alice).NextBatch
	m1 := roomTSend(alice, room, "before restart")
	t2 := syncTInitial(alice).NextBatch

	srv.Restart()
	// The sender's device still gets its transaction ID.
	if e := syncTByID(syncTJoin(t, syncTSince(alice, t1), room).Timeline.Events, m1); e == nil ||
		roomTMap(t, e["unsigned"], "unsigned")["transaction_id"] == nil {
		t.Fatalf("after a restart the sender's event lacks unsigned.transaction_id: %v", e)
	}
	m2 := roomTSend(alice, room, "after restart")
	if ids := syncTIDs(syncTJoin(t, syncTSince(alice, t1), room).Timeline.Events); !slices.Equal(ids, []string{m1, m2}) {
		t.Fatalf("sync since a token from before the restart = %v, want [%s %s]", ids, m1, m2)
	}
	s := syncTSince(alice, t2)
	if ids := syncTIDs(syncTJoin(t, s, room).Timeline.Events); !slices.Equal(ids, []string{m2}) {
		t.Fatalf("sync since a token from before the restart = %v, want [%s]", ids, m2)
	}
	syncTNotIn(t, syncTSince(alice, s.NextBatch), room, "join")
}

// A server that shuts down answers its waiting long-polls at once (with
// nothing new and a usable token) instead of holding the shutdown up.
func TestSyncLongPollEndsAtShutdown(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	roomTCreate(alice, map[string]any{})
	since := syncTInitial(alice).NextBatch
	wait := syncTAsync(alice, syncTQuery("since", since, "timeout", "30000"))
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	srv.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown with a long-poll waiting took %v", d)
	}
	r, d := wait()
	if r.Status != http.StatusOK {
		t.Fatalf("long-poll at shutdown: %d %s", r.Status, r.Body)
	}
	if d > 5*time.Second {
		t.Fatalf("long-poll returned after %v", d)
	}
	if s := syncTDecode(t, r); s.NextBatch == "" {
		t.Fatalf("long-poll at shutdown has no next_batch: %s", r.Body)
	}
}

// unsigned.membership (MSC4115): the requesting user's membership at each
// event, counting the event's own change, "leave" before they joined, in
// /sync (initial, incremental, after leaving), /messages and /context.
// (The suite had no check of it.)
func TestSyncMembershipOnEvents(t *testing.T) {
	srv := syncTStart(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	room := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	pre := roomTSend(alice, room, "prejoin")
	roomTJoin(bob, room)
	post := roomTSend(alice, room, "postjoin")
	membershipOf := func(evs []map[string]any) map[string]string {
		out := map[string]string{}
		for _, e := range evs {
			u, _ := e["unsigned"].(map[string]any)
			m, _ := u["membership"].(string)
			out[e["event_id"].(string)] = m
		}
		return out
	}
	check := func(where string, evs []map[string]any, want map[string]string) {
		t.Helper()
		got := membershipOf(evs)
		for id, w := range want {
			if got[id] != w {
				t.Fatalf("%s: unsigned.membership of %s = %q, want %q (all: %v)", where, id, got[id], w, got)
			}
		}
	}
	s := syncTInitial(bob)
	tl := syncTJoin(t, s, room).Timeline.Events
	join := syncTMember(tl, bob.UserID)["event_id"].(string)
	creation := membershipOf(tl)
	for _, e := range tl {
		id := e["event_id"].(string)
		if id != join && id != post && creation[id] != "leave" {
			t.Fatalf("initial sync: event %v before bob's join has membership %q, want leave", e["type"], creation[id])
		}
	}
	check("initial sync", tl, map[string]string{pre: "leave", join: "join", post: "join"})
	// Alice's own view: joined since the room began.
	check("alice's initial sync", syncTJoin(t, syncTInitial(alice), room).Timeline.Events, map[string]string{pre: "join", post: "join"})

	later := roomTSend(alice, room, "later")
	s2 := syncTSince(bob, s.NextBatch)
	check("incremental sync", syncTJoin(t, s2, room).Timeline.Events, map[string]string{later: "join"})

	check("/messages", syncTMessages(bob, room, "dir", "b", "limit", "50"), map[string]string{pre: "leave", join: "join", post: "join", later: "join"})
	ctx := bob.MustDo("GET", msgTContextPath(room, post, "limit", "10"), nil, http.StatusOK)
	check("/context", append(msgTObjects(t, ctx["events_before"], "events_before"), roomTMap(t, ctx["event"], "event")),
		map[string]string{pre: "leave", join: "join", post: "join"})

	for id, w := range map[string]string{pre: "leave", join: "join", post: "join"} {
		check("/event", []map[string]any{roomTEvent(bob, room, id)}, map[string]string{id: w})
	}

	roomTLeave(bob, room)
	s3 := syncTSince(bob, s2.NextBatch)
	lt := syncTLeave(t, s3, room).Timeline.Events
	leave := syncTMember(lt, bob.UserID)["event_id"].(string)
	check("sync after leaving", lt, map[string]string{leave: "leave"})
}
