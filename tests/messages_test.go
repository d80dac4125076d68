package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers of messages_test.go, ephemeral_test.go and presence_test.go
// (prefix msgT) ----

// msgTQuery builds query values from key, value pairs.
func msgTQuery(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// msgTSync runs GET /sync with the query (key, value pairs) and returns the
// body.
func msgTSync(c *testutil.Client, kv ...string) map[string]any {
	c.T.Helper()
	q := msgTQuery(kv...)
	path := "/_matrix/client/v3/sync"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	m := c.MustDo("GET", path, nil, http.StatusOK)
	if s, _ := m["next_batch"].(string); s == "" {
		c.T.Fatalf("sync without next_batch: %v", m)
	}
	return m
}

// msgTNext is a sync response's next_batch.
func msgTNext(m map[string]any) string {
	s, _ := m["next_batch"].(string)
	return s
}

// msgTJoinedRoom returns rooms.join[roomID] of a sync response, or nil.
func msgTJoinedRoom(m map[string]any, roomID string) map[string]any {
	rooms, _ := m["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	r, _ := join[roomID].(map[string]any)
	return r
}

// msgTEvents reads section.events (section is e.g. a room's "ephemeral").
func msgTEvents(t testing.TB, parent map[string]any, section string) []map[string]any {
	t.Helper()
	sec, _ := parent[section].(map[string]any)
	if sec == nil {
		return nil
	}
	return msgTObjects(t, sec["events"], section+".events")
}

// msgTObjects reads a JSON array of objects.
func msgTObjects(t testing.TB, v any, what string) []map[string]any {
	t.Helper()
	if v == nil {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("%s = %v (%T), want an array", what, v, v)
	}
	out := make([]map[string]any, len(arr))
	for i, x := range arr {
		out[i] = roomTMap(t, x, fmt.Sprintf("%s[%d]", what, i))
	}
	return out
}

// msgTPage is a response of /messages.
type msgTPage struct {
	chunk      []map[string]any
	start, end string
	hasEnd     bool
	state      []map[string]any
}

func msgTPath(roomID string, kv ...string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID) + "?" + msgTQuery(kv...).Encode()
}

// msgTGet runs GET /rooms/{roomId}/messages with the query (key, value
// pairs) and checks the shape of the response: a start token and a chunk
// of client events with room_id.
func msgTGet(c *testutil.Client, roomID string, kv ...string) msgTPage {
	c.T.Helper()
	m := c.MustDo("GET", msgTPath(roomID, kv...), nil, http.StatusOK)
	var p msgTPage
	p.start, _ = m["start"].(string)
	if p.start == "" {
		c.T.Fatalf("/messages without a start token: %v", m)
	}
	if _, ok := m["chunk"].([]any); !ok {
		c.T.Fatalf("/messages without a chunk array: %v", m)
	}
	p.chunk = msgTObjects(c.T, m["chunk"], "chunk")
	for _, e := range p.chunk {
		roomTCheckClientEvent(c.T, e, roomID)
	}
	if v, ok := m["end"]; ok {
		p.end, _ = v.(string)
		if p.end == "" {
			c.T.Fatalf("/messages end = %v, want a token", v)
		}
		p.hasEnd = true
	}
	p.state = msgTObjects(c.T, m["state"], "state")
	return p
}

// msgTIDs returns the event IDs of events.
func msgTIDs(evs []map[string]any) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e["event_id"].(string)
	}
	return out
}

// msgTBodies returns content.body of the events that have one.
func msgTBodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		c, _ := e["content"].(map[string]any)
		if b, ok := c["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

// msgTSendN sends n text messages with bodies prefix0 ... prefix(n-1) and
// returns their IDs.
func msgTSendN(c *testutil.Client, roomID, prefix string, n int) []string {
	c.T.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = roomTSend(c, roomID, fmt.Sprintf("%s%d", prefix, i))
	}
	return ids
}

// msgTReversed returns a reversed copy.
func msgTReversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// msgTPageAll pages through /messages in one direction, following end,
// and returns every event. kv are extra query parameters.
func msgTPageAll(c *testutil.Client, roomID, dir string, limit int, kv ...string) []map[string]any {
	c.T.Helper()
	var all []map[string]any
	from := ""
	for page := 0; ; page++ {
		if page > 200 {
			c.T.Fatalf("/messages dir=%s: still an end token after %d pages", dir, page)
		}
		q := append([]string{"dir", dir, "limit", strconv.Itoa(limit)}, kv...)
		if from != "" {
			q = append(q, "from", from)
		}
		p := msgTGet(c, roomID, q...)
		if from != "" && p.start != from {
			c.T.Fatalf("/messages from=%s: start = %s, want the from token", from, p.start)
		}
		if len(p.chunk) > limit {
			c.T.Fatalf("/messages limit=%d returned %d events", limit, len(p.chunk))
		}
		all = append(all, p.chunk...)
		if !p.hasEnd {
			return all
		}
		from = p.end
	}
}

// msgTCheckUnique fails if an event appears twice.
func msgTCheckUnique(t testing.TB, ids []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("event %s returned twice", id)
		}
		seen[id] = true
	}
}

// msgTFilter encodes a filter as a query value.
func msgTFilter(f map[string]any) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// ---- GET /rooms/{roomId}/messages ----

// Paging through a room of 500 messages, 50 at a time, in both directions
// returns every event exactly once, in order, and ends without an end
// token.
func TestMessagesPaginateLargeRoom(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	sent := msgTSendN(alice, roomID, "m", 500)

	back := msgTPageAll(alice, roomID, "b", 50)
	backIDs := msgTIDs(back)
	msgTCheckUnique(t, backIDs)
	if len(backIDs) == 0 || backIDs[0] != sent[499] {
		t.Fatalf("dir=b without from starts with %v, want the newest event %s", backIDs[:min(len(backIDs), 1)], sent[499])
	}
	isSent := map[string]bool{}
	for _, id := range sent {
		isSent[id] = true
	}
	var msgs []string
	for _, id := range backIDs {
		if isSent[id] {
			msgs = append(msgs, id)
		}
	}
	if !slices.Equal(msgs, msgTReversed(sent)) {
		t.Fatalf("dir=b returned %d of the 500 messages (or out of order)", len(msgs))
	}
	if last := back[len(back)-1]; last["type"] != "m.room.create" {
		t.Fatalf("the oldest event paging back is %v, want m.room.create", last["type"])
	}
	// Besides the messages: the room's creation events, each once.
	if extra := len(backIDs) - 500; extra < 4 || extra > 10 {
		t.Fatalf("dir=b returned %d events besides the messages, want the creation events", extra)
	}

	fwd := msgTPageAll(alice, roomID, "f", 50)
	fwdIDs := msgTIDs(fwd)
	msgTCheckUnique(t, fwdIDs)
	if !slices.Equal(fwdIDs, msgTReversed(backIDs)) {
		t.Fatalf("dir=f returned %d events, not those of dir=b in chronological order (%d)", len(fwdIDs), len(backIDs))
	}
	if fwd[0]["type"] != "m.room.create" {
		t.Fatalf("dir=f without from starts with %v, want m.room.create", fwd[0]["type"])
	}

	// Pages in between are full.
	p := msgTGet(alice, roomID, "dir", "b", "limit", "50")
	for i := 0; i < 5; i++ {
		if len(p.chunk) != 50 || !p.hasEnd {
			t.Fatalf("page %d: %d events, end %v; want 50 and an end token", i, len(p.chunk), p.hasEnd)
		}
		if got, want := msgTIDs(p.chunk), backIDs[i*50:(i+1)*50]; !slices.Equal(got, want) {
			t.Fatalf("page %d differs from the same page before", i)
		}
		p = msgTGet(alice, roomID, "dir", "b", "limit", "50", "from", p.end)
	}
}

// Tokens: end continues, start is the from token, a backward end token
// read forwards returns the events after that point, to bounds a range,
// and /sync tokens are accepted.
func TestMessagesTokens(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	m := msgTSendN(alice, roomID, "m", 30)

	p1 := msgTGet(alice, roomID, "dir", "b", "limit", "10")
	if got := msgTIDs(p1.chunk); !slices.Equal(got, msgTReversed(m[20:30])) {
		t.Fatalf("first page %v, want m29..m20", msgTBodies(p1.chunk))
	}
	if !p1.hasEnd {
		t.Fatal("first page of 10 of a longer history without end")
	}
	e1 := p1.end
	p2 := msgTGet(alice, roomID, "dir", "b", "limit", "10", "from", e1)
	if got := msgTIDs(p2.chunk); !slices.Equal(got, msgTReversed(m[10:20])) {
		t.Fatalf("second page %v, want m19..m10", msgTBodies(p2.chunk))
	}
	if p2.start != e1 {
		t.Fatalf("start = %s, want the from token %s", p2.start, e1)
	}
	e2 := p2.end

	t.Run("forward from a backward end token", func(t *testing.T) {
		a := roomTBind(t, alice)
		f := msgTGet(a, roomID, "dir", "f", "limit", "10", "from", e1)
		if got := msgTIDs(f.chunk); !slices.Equal(got, m[20:30]) {
			t.Fatalf("dir=f from the first page's end: %v, want m20..m29", msgTBodies(f.chunk))
		}
		f = msgTGet(a, roomID, "dir", "f", "limit", "5", "from", e2)
		if got := msgTIDs(f.chunk); !slices.Equal(got, m[10:15]) {
			t.Fatalf("dir=f from the second page's end: %v, want m10..m14", msgTBodies(f.chunk))
		}
		if !f.hasEnd {
			t.Fatal("dir=f page of 5 with more events after it has no end")
		}
		// Backward from a forward end token: the forward page's events.
		b := msgTGet(a, roomID, "dir", "b", "limit", "3", "from", f.end)
		if got := msgTIDs(b.chunk); !slices.Equal(got, []string{m[14], m[13], m[12]}) {
			t.Fatalf("dir=b from a dir=f end: %v, want m14 m13 m12", msgTBodies(b.chunk))
		}
		// Forward on from a forward end token.
		f2 := msgTGet(a, roomID, "dir", "f", "limit", "5", "from", f.end)
		if got := msgTIDs(f2.chunk); !slices.Equal(got, m[15:20]) {
			t.Fatalf("dir=f from a dir=f end: %v, want m15..m19", msgTBodies(f2.chunk))
		}
	})

	t.Run("to bounds the range", func(t *testing.T) {
		a := roomTBind(t, alice)
		b := msgTGet(a, roomID, "dir", "b", "limit", "50", "to", e1)
		if got := msgTIDs(b.chunk); !slices.Equal(got, msgTReversed(m[20:30])) {
			t.Fatalf("dir=b to=first end: %v, want m29..m20", msgTBodies(b.chunk))
		}
		b = msgTGet(a, roomID, "dir", "b", "limit", "50", "from", e1, "to", e2)
		if got := msgTIDs(b.chunk); !slices.Equal(got, msgTReversed(m[10:20])) {
			t.Fatalf("dir=b from e1 to e2: %v, want m19..m10", msgTBodies(b.chunk))
		}
		f := msgTGet(a, roomID, "dir", "f", "limit", "50", "from", e2, "to", e1)
		if got := msgTIDs(f.chunk); !slices.Equal(got, m[10:20]) {
			t.Fatalf("dir=f from e2 to e1: %v, want m10..m19", msgTBodies(f.chunk))
		}
		// A range bound that is reached within the limit ends paging.
		if f.hasEnd {
			if more := msgTGet(a, roomID, "dir", "f", "limit", "50", "from", f.end, "to", e1); len(more.chunk) != 0 {
				t.Fatalf("paging on past to: %v", msgTBodies(more.chunk))
			}
		}
	})

	t.Run("limit", func(t *testing.T) {
		a := roomTBind(t, alice)
		if p := msgTGet(a, roomID, "dir", "b", "limit", "3"); !slices.Equal(msgTIDs(p.chunk), []string{m[29], m[28], m[27]}) {
			t.Fatalf("limit=3: %v", msgTBodies(p.chunk))
		}
		if p := msgTGet(a, roomID, "dir", "b"); len(p.chunk) != 10 {
			t.Fatalf("default limit: %d events, want 10", len(p.chunk))
		}
		if p := msgTGet(a, roomID, "dir", "f", "limit", "1"); len(p.chunk) != 1 || p.chunk[0]["type"] != "m.room.create" {
			t.Fatalf("dir=f limit=1: %v, want the create event", p.chunk)
		}
	})

	t.Run("sync tokens", func(t *testing.T) {
		a := roomTBind(t, alice)
		flt := msgTFilter(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})
		s := msgTSync(a, "filter", flt)
		room := msgTJoinedRoom(s, roomID)
		if room == nil {
			t.Fatalf("initial sync without the room: %v", s)
		}
		tl := roomTMap(t, room["timeline"], "timeline")
		if got := msgTIDs(msgTObjects(t, tl["events"], "timeline.events")); !slices.Equal(got, m[25:30]) {
			t.Fatalf("sync timeline %v, want m25..m29", got)
		}
		prev, _ := tl["prev_batch"].(string)
		if prev == "" {
			t.Fatalf("limited timeline without prev_batch: %v", tl)
		}
		b := msgTGet(a, roomID, "dir", "b", "limit", "5", "from", prev)
		if got := msgTIDs(b.chunk); !slices.Equal(got, msgTReversed(m[20:25])) {
			t.Fatalf("dir=b from prev_batch: %v, want m24..m20", msgTBodies(b.chunk))
		}
		f := msgTGet(a, roomID, "dir", "f", "limit", "5", "from", prev)
		if got := msgTIDs(f.chunk); !slices.Equal(got, m[25:30]) {
			t.Fatalf("dir=f from prev_batch: %v, want the timeline m25..m29", msgTBodies(f.chunk))
		}
		// next_batch: dir=b from it starts at the newest event then, not at
		// events sent later; dir=f from it returns the later ones.
		next := msgTNext(s)
		later := roomTSend(a, roomID, "later")
		b = msgTGet(a, roomID, "dir", "b", "limit", "2", "from", next)
		if got := msgTIDs(b.chunk); !slices.Equal(got, []string{m[29], m[28]}) {
			t.Fatalf("dir=b from next_batch: %v, want m29 m28", msgTBodies(b.chunk))
		}
		f = msgTGet(a, roomID, "dir", "f", "limit", "5", "from", next)
		if got := msgTIDs(f.chunk); !slices.Equal(got, []string{later}) {
			t.Fatalf("dir=f from next_batch: %v, want only the later event", msgTBodies(f.chunk))
		}
	})
}

func TestMessagesErrors(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	eve := roomTUser(t, srv, "eve")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	roomTSend(alice, roomID, "hello")
	path := func(kv ...string) string { return msgTPath(roomID, kv...) }

	alice.MustFail("GET", path(), nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", path("limit", "5"), nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", path("dir", "x"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "backwards"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "b", "from", "garbage"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "f", "from", "tnotanumber"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "b", "to", "garbage"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "b", "limit", "ten"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("dir", "b", "limit", "-1"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	// A room the server does not know is not readable either.
	alice.MustFail("GET", msgTPath("!unknown:"+srv.Config.ServerName, "dir", "b"), nil, http.StatusForbidden, "M_FORBIDDEN")
	// Not a member of a private room.
	eve.MustFail("GET", path("dir", "b"), nil, http.StatusForbidden, "M_FORBIDDEN")
	eve.MustFail("GET", path("dir", "f", "limit", "1"), nil, http.StatusForbidden, "M_FORBIDDEN")
	// No access token.
	testutil.NewClient(t, srv.URL).MustFail("GET", path("dir", "b"), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestMessagesFilter(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, roomID)
	roomTJoin(carol, roomID)
	roomTSend(carol, roomID, "carol's only message")

	custom := func(c *testutil.Client, n int) string {
		c.T.Helper()
		r := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/%s/%s", roomID, "org.example.custom", roomTTxn()),
			map[string]any{"n": n}, http.StatusOK)
		return roomTEventID(c.T, r)
	}
	send := func(c *testutil.Client, content map[string]any) string {
		c.T.Helper()
		r := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, roomTTxn()), content, http.StatusOK)
		return roomTEventID(c.T, r)
	}
	c1 := custom(alice, 1)
	a1 := roomTSend(alice, roomID, "a1")
	img := send(bob, map[string]any{"msgtype": "m.image", "body": "pic", "url": "mxc://example.org/abcdef"})
	notURL := send(bob, map[string]any{"msgtype": "m.text", "body": "not a url", "url": 5})
	c2 := custom(bob, 2)
	b1 := roomTSend(bob, roomID, "b1")
	a2 := roomTSend(alice, roomID, "a2")
	b2 := roomTSend(bob, roomID, "b2")
	get := func(t *testing.T, f map[string]any, kv ...string) msgTPage {
		t.Helper()
		return msgTGet(roomTBind(t, alice), roomID, append([]string{"filter", msgTFilter(f)}, kv...)...)
	}

	t.Run("types", func(t *testing.T) {
		p := get(t, map[string]any{"types": []string{"org.example.custom"}}, "dir", "b", "limit", "10")
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{c2, c1}) {
			t.Fatalf("types: %v, want the two custom events", got)
		}
		// The limit counts matching events.
		p = get(t, map[string]any{"types": []string{"org.example.*"}}, "dir", "b", "limit", "1")
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{c2}) {
			t.Fatalf("types wildcard limit 1: %v, want %s", got, c2)
		}
		p = get(t, map[string]any{"types": []string{"org.example.custom"}}, "dir", "b", "limit", "1", "from", p.end)
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{c1}) {
			t.Fatalf("types, second page: %v, want %s", got, c1)
		}
	})
	t.Run("not_types", func(t *testing.T) {
		all := msgTPageAll(roomTBind(t, alice), roomID, "f", 100, "filter", msgTFilter(map[string]any{"not_types": []string{"m.room.message", "m.room.member"}}))
		if len(all) == 0 {
			t.Fatal("not_types removed everything")
		}
		for _, e := range all {
			if e["type"] == "m.room.message" || e["type"] == "m.room.member" {
				t.Fatalf("not_types let through %v", e)
			}
		}
		if !slices.Contains(msgTIDs(all), c1) || !slices.Contains(msgTIDs(all), c2) || all[0]["type"] != "m.room.create" {
			t.Fatalf("not_types lost other events: %v", msgTIDs(all))
		}
	})
	t.Run("senders", func(t *testing.T) {
		p := get(t, map[string]any{"senders": []string{bob.UserID}}, "dir", "b", "limit", "50")
		var msgs []string
		for _, e := range p.chunk {
			if e["sender"] != bob.UserID {
				t.Fatalf("senders=[bob] returned %v", e)
			}
			if e["type"] != "m.room.member" {
				msgs = append(msgs, e["event_id"].(string))
			}
		}
		if !slices.Equal(msgs, []string{b2, b1, c2, notURL, img}) {
			t.Fatalf("senders=[bob]: %v", msgTBodies(p.chunk))
		}
		p = get(t, map[string]any{"not_senders": []string{bob.UserID, carol.UserID}, "types": []string{"m.room.message"}}, "dir", "b", "limit", "50")
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{a2, a1}) {
			t.Fatalf("not_senders: %v", msgTBodies(p.chunk))
		}
	})
	t.Run("contains_url", func(t *testing.T) {
		p := get(t, map[string]any{"contains_url": true}, "dir", "b", "limit", "50")
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{img}) {
			t.Fatalf("contains_url=true: %v, want only the image", got)
		}
		p = get(t, map[string]any{"contains_url": false, "types": []string{"m.room.message"}}, "dir", "b", "limit", "50")
		got := msgTIDs(p.chunk)
		if slices.Contains(got, img) || !slices.Contains(got, notURL) || !slices.Contains(got, b2) {
			t.Fatalf("contains_url=false: %v", msgTBodies(p.chunk))
		}
	})
	t.Run("lazy_load_members", func(t *testing.T) {
		p := get(t, map[string]any{"lazy_load_members": true}, "dir", "b", "limit", "4")
		if got := msgTIDs(p.chunk); !slices.Equal(got, []string{b2, a2, b1, c2}) {
			t.Fatalf("chunk %v", msgTBodies(p.chunk))
		}
		members := map[string]bool{}
		for _, e := range p.state {
			roomTCheckClientEvent(t, e, roomID)
			if e["type"] != "m.room.member" {
				continue
			}
			key, _ := e["state_key"].(string)
			if members[key] {
				t.Fatalf("member %s twice in state", key)
			}
			members[key] = true
			if c, _ := e["content"].(map[string]any); c["membership"] != "join" {
				t.Fatalf("member event of %s: %v", key, e)
			}
		}
		if len(members) != 2 || !members[alice.UserID] || !members[bob.UserID] {
			t.Fatalf("lazy-loaded members %v, want exactly the senders %s and %s", members, alice.UserID, bob.UserID)
		}
		// Without lazy loading: no member state is needed.
		p = get(t, map[string]any{"types": []string{"m.room.message"}}, "dir", "b", "limit", "2")
		for _, e := range p.state {
			if e["type"] == "m.room.member" {
				t.Fatalf("member state without lazy_load_members: %v", e)
			}
		}
	})
	t.Run("invalid filter", func(t *testing.T) {
		a := roomTBind(t, alice)
		roomTFail(a, "GET", msgTPath(roomID, "dir", "b", "filter", "{not json"), nil, http.StatusBadRequest, "M_BAD_JSON", "M_NOT_JSON", "M_INVALID_PARAM")
	})
}

// History visibility decides what a user who joined later sees, and a user
// who left sees nothing sent after they left.
func TestMessagesHistoryVisibility(t *testing.T) {
	srv := testserver.Start(t)
	for _, vis := range []string{"joined", "shared", "invited"} {
		t.Run(vis, func(t *testing.T) {
			alice := roomTUser(t, srv, "alice")
			bob := roomTUser(t, srv, "bob")
			roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
			roomTPutState(alice, roomID, "m.room.history_visibility", "", map[string]any{"history_visibility": vis})
			before := msgTSendN(alice, roomID, "before", 15)
			roomTInvite(alice, roomID, bob.UserID)
			invited := roomTSend(alice, roomID, "while invited")
			roomTJoin(bob, roomID)
			after := msgTSendN(alice, roomID, "after", 3)

			for _, dir := range []string{"b", "f"} {
				got := msgTIDs(msgTPageAll(bob, roomID, dir, 5))
				msgTCheckUnique(t, got)
				for _, id := range after {
					if !slices.Contains(got, id) {
						t.Fatalf("dir=%s: bob misses %s sent after his join", dir, id)
					}
				}
				for _, id := range before {
					if vis == "shared" && !slices.Contains(got, id) {
						t.Fatalf("dir=%s shared: bob misses %s sent before his join", dir, id)
					}
					if vis != "shared" && slices.Contains(got, id) {
						t.Fatalf("dir=%s %s: bob sees %s sent before he was in the room", dir, vis, id)
					}
				}
				if wantInvited := vis != "joined"; slices.Contains(got, invited) != wantInvited {
					t.Fatalf("dir=%s %s: bob sees the event sent while he was invited: %v, want %v", dir, vis, !wantInvited, wantInvited)
				}
			}

			// After leaving: nothing newer.
			roomTLeave(bob, roomID)
			afterLeave := roomTSend(alice, roomID, "after leave")
			got := msgTIDs(msgTPageAll(bob, roomID, "b", 5))
			if slices.Contains(got, afterLeave) {
				t.Fatal("bob sees an event sent after he left")
			}
			if !slices.Contains(got, after[2]) {
				t.Fatal("bob no longer sees an event sent while he was joined")
			}
		})
	}
	t.Run("world_readable", func(t *testing.T) {
		alice := roomTUser(t, srv, "alice")
		eve := roomTUser(t, srv, "eve")
		roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
		roomTPutState(alice, roomID, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
		ids := msgTSendN(alice, roomID, "public", 3)
		p := msgTGet(eve, roomID, "dir", "b", "limit", "3")
		if got := msgTIDs(p.chunk); !slices.Equal(got, msgTReversed(ids)) {
			t.Fatalf("non-member reading a world_readable room: %v", msgTBodies(p.chunk))
		}
	})
}

// ---- GET /rooms/{roomId}/context/{eventId} ----

func msgTContextPath(roomID, eventID string, kv ...string) string {
	p := testutil.Path("/_matrix/client/v3/rooms/%s/context/%s", roomID, eventID)
	if q := msgTQuery(kv...); len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

func TestMessagesContext(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	dave := roomTUser(t, srv, "dave")
	eve := roomTUser(t, srv, "eve")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	roomTJoin(bob, roomID)
	roomTJoin(carol, roomID)
	roomTJoin(dave, roomID)
	m := make([]string, 20)
	for i := range m {
		c := alice
		if i%2 == 1 {
			c = bob
		}
		m[i] = roomTSend(c, roomID, fmt.Sprintf("m%d", i))
	}

	ctx := alice.MustDo("GET", msgTContextPath(roomID, m[10], "limit", "6"), nil, http.StatusOK)
	ev := roomTMap(t, ctx["event"], "event")
	roomTCheckClientEvent(t, ev, roomID)
	if ev["event_id"] != m[10] {
		t.Fatalf("context event %v, want %s", ev["event_id"], m[10])
	}
	before := msgTObjects(t, ctx["events_before"], "events_before")
	after := msgTObjects(t, ctx["events_after"], "events_after")
	for _, e := range append(slices.Clone(before), after...) {
		roomTCheckClientEvent(t, e, roomID)
	}
	if got := msgTIDs(before); !slices.Equal(got, []string{m[9], m[8], m[7]}) {
		t.Fatalf("events_before %v, want m9 m8 m7 (newest first)", msgTBodies(before))
	}
	if got := msgTIDs(after); !slices.Equal(got, []string{m[11], m[12], m[13]}) {
		t.Fatalf("events_after %v, want m11 m12 m13", msgTBodies(after))
	}
	start, _ := ctx["start"].(string)
	end, _ := ctx["end"].(string)
	if start == "" || end == "" {
		t.Fatalf("context without start or end: %v", ctx)
	}
	if p := msgTGet(alice, roomID, "dir", "b", "limit", "3", "from", start); !slices.Equal(msgTIDs(p.chunk), []string{m[6], m[5], m[4]}) {
		t.Fatalf("dir=b from the context's start: %v, want m6 m5 m4", msgTBodies(p.chunk))
	}
	if p := msgTGet(alice, roomID, "dir", "f", "limit", "3", "from", end); !slices.Equal(msgTIDs(p.chunk), []string{m[14], m[15], m[16]}) {
		t.Fatalf("dir=f from the context's end: %v, want m14 m15 m16", msgTBodies(p.chunk))
	}
	// The full state: every member and the create event.
	state := msgTObjects(t, ctx["state"], "state")
	members := map[string]bool{}
	hasCreate := false
	for _, e := range state {
		roomTCheckClientEvent(t, e, roomID)
		if e["type"] == "m.room.member" {
			members[e["state_key"].(string)] = true
		}
		hasCreate = hasCreate || e["type"] == "m.room.create"
	}
	for _, u := range []string{alice.UserID, bob.UserID, carol.UserID, dave.UserID} {
		if !members[u] {
			t.Fatalf("context state without the member %s: %v", u, members)
		}
	}
	if !hasCreate {
		t.Fatal("context state without m.room.create")
	}

	t.Run("lazy_load_members", func(t *testing.T) {
		a := roomTBind(t, alice)
		flt := msgTFilter(map[string]any{"lazy_load_members": true})
		ctx := a.MustDo("GET", msgTContextPath(roomID, m[10], "limit", "6", "filter", flt), nil, http.StatusOK)
		members := map[string]bool{}
		hasCreate := false
		for _, e := range msgTObjects(t, ctx["state"], "state") {
			if e["type"] == "m.room.member" {
				members[e["state_key"].(string)] = true
			}
			hasCreate = hasCreate || e["type"] == "m.room.create"
		}
		if len(members) != 2 || !members[alice.UserID] || !members[bob.UserID] {
			t.Fatalf("lazily loaded members %v, want only the senders alice and bob", members)
		}
		if !hasCreate {
			t.Fatal("lazy loading dropped non-member state (m.room.create)")
		}
	})
	t.Run("filter", func(t *testing.T) {
		a := roomTBind(t, alice)
		flt := msgTFilter(map[string]any{"types": []string{"m.room.message"}, "senders": []string{bob.UserID}})
		ctx := a.MustDo("GET", msgTContextPath(roomID, m[10], "limit", "4", "filter", flt), nil, http.StatusOK)
		if got := msgTIDs(msgTObjects(t, ctx["events_before"], "events_before")); !slices.Equal(got, []string{m[9], m[7]}) {
			t.Fatalf("filtered events_before %v, want bob's m9 m7", got)
		}
		if got := msgTIDs(msgTObjects(t, ctx["events_after"], "events_after")); !slices.Equal(got, []string{m[11], m[13]}) {
			t.Fatalf("filtered events_after %v, want bob's m11 m13", got)
		}
	})
	t.Run("limits", func(t *testing.T) {
		a := roomTBind(t, alice)
		ctx := a.MustDo("GET", msgTContextPath(roomID, m[10], "limit", "0"), nil, http.StatusOK)
		if roomTMap(t, ctx["event"], "event")["event_id"] != m[10] {
			t.Fatalf("limit=0 context event %v", ctx["event"])
		}
		if bf, af := msgTObjects(t, ctx["events_before"], "events_before"), msgTObjects(t, ctx["events_after"], "events_after"); len(bf)+len(af) != 0 {
			t.Fatalf("limit=0: %d before, %d after", len(bf), len(af))
		}
		ctx = a.MustDo("GET", msgTContextPath(roomID, m[10]), nil, http.StatusOK)
		b, af := msgTObjects(t, ctx["events_before"], "events_before"), msgTObjects(t, ctx["events_after"], "events_after")
		if len(b)+len(af) != 10 || len(af) != 5 {
			t.Fatalf("default limit: %d before, %d after; want 5 and 5", len(b), len(af))
		}
		// The newest event: nothing after it.
		ctx = a.MustDo("GET", msgTContextPath(roomID, m[19], "limit", "4"), nil, http.StatusOK)
		if af := msgTObjects(t, ctx["events_after"], "events_after"); len(af) != 0 {
			t.Fatalf("events_after the newest event: %v", af)
		}
		if b := msgTIDs(msgTObjects(t, ctx["events_before"], "events_before")); !slices.Equal(b, []string{m[18], m[17]}) {
			t.Fatalf("events_before the newest event: %v", b)
		}
	})
	t.Run("errors", func(t *testing.T) {
		a := roomTBind(t, alice)
		a.MustFail("GET", msgTContextPath(roomID, "$unknownevent"), nil, http.StatusNotFound, "M_NOT_FOUND")
		other := roomTCreate(a, map[string]any{"preset": "private_chat"})
		otherEv := roomTSend(a, other, "elsewhere")
		a.MustFail("GET", msgTContextPath(roomID, otherEv), nil, http.StatusNotFound, "M_NOT_FOUND")
		roomTBind(t, eve).MustFail("GET", msgTContextPath(other, otherEv), nil, http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("history visibility", func(t *testing.T) {
		a := roomTBind(t, alice)
		b := roomTUser(t, srv, "late")
		room := roomTCreate(a, map[string]any{"preset": "private_chat"})
		roomTPutState(a, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
		early := msgTSendN(a, room, "early", 3)
		roomTInvite(a, room, b.UserID)
		roomTJoin(b, room)
		late := roomTSend(a, room, "late")
		b.MustFail("GET", msgTContextPath(room, early[1]), nil, http.StatusNotFound, "M_NOT_FOUND")
		ctx := b.MustDo("GET", msgTContextPath(room, late, "limit", "10"), nil, http.StatusOK)
		for _, id := range msgTIDs(msgTObjects(t, ctx["events_before"], "events_before")) {
			if slices.Contains(early, id) {
				t.Fatalf("events_before shows %s sent before bob joined", id)
			}
		}
	})
}

// ---- GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event ----

// msgTWaitClockPast waits until the clock has passed ts by a few
// milliseconds, so the next event gets a later origin_server_ts.
func msgTWaitClockPast(t testing.TB, ts int64) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "the clock to move on", func() bool { return time.Now().UnixMilli() > ts+2 })
}

func msgTTS(t testing.TB, e map[string]any) int64 {
	t.Helper()
	ts, ok := e["origin_server_ts"].(float64)
	if !ok {
		t.Fatalf("event without origin_server_ts: %v", e)
	}
	return int64(ts)
}

func TestMessagesTimestampToEvent(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	eve := roomTUser(t, srv, "eve")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	first := msgTGet(alice, roomID, "dir", "f", "limit", "1").chunk[0]
	newest := msgTGet(alice, roomID, "dir", "b", "limit", "1").chunk[0]
	msgTWaitClockPast(t, msgTTS(t, newest))
	ids := make([]string, 3)
	ts := make([]int64, 3)
	for i := range ids {
		ids[i] = roomTSend(alice, roomID, fmt.Sprintf("at %d", i))
		ts[i] = msgTTS(t, roomTEvent(alice, roomID, ids[i]))
		msgTWaitClockPast(t, ts[i])
	}
	path := func(kv ...string) string {
		return testutil.Path("/_matrix/client/v1/rooms/%s/timestamp_to_event", roomID) + "?" + msgTQuery(kv...).Encode()
	}
	find := func(ts int64, dir string) string {
		t.Helper()
		m := alice.MustDo("GET", path("ts", strconv.FormatInt(ts, 10), "dir", dir), nil, http.StatusOK)
		id, _ := m["event_id"].(string)
		if got, ok := m["origin_server_ts"].(float64); !ok || id == "" {
			t.Fatalf("timestamp_to_event: %v", m)
		} else if dir == "f" && int64(got) < ts || dir == "b" && int64(got) > ts {
			t.Fatalf("timestamp_to_event ts=%d dir=%s: origin_server_ts %d on the wrong side", ts, dir, int64(got))
		}
		return id
	}
	for i := range ids {
		if got := find(ts[i], "f"); got != ids[i] {
			t.Fatalf("ts of event %d, dir=f: %s, want %s", i, got, ids[i])
		}
		if got := find(ts[i], "b"); got != ids[i] {
			t.Fatalf("ts of event %d, dir=b: %s, want %s", i, got, ids[i])
		}
	}
	if got := find(ts[0]+1, "f"); got != ids[1] {
		t.Fatalf("just after event 0, dir=f: %s, want event 1 %s", got, ids[1])
	}
	if got := find(ts[1]-1, "b"); got != ids[0] {
		t.Fatalf("just before event 1, dir=b: %s, want event 0 %s", got, ids[0])
	}
	if got := find(ts[2]+1, "b"); got != ids[2] {
		t.Fatalf("after the newest, dir=b: %s, want %s", got, ids[2])
	}
	if got := find(1, "f"); got != first["event_id"] {
		t.Fatalf("ts=1 dir=f: %s, want the create event %v", got, first["event_id"])
	}
	if got := find(ts[0]-1, "b"); got != newest["event_id"] {
		t.Fatalf("just before event 0, dir=b: %s, want the last creation event %v", got, newest["event_id"])
	}
	// Nothing in that direction.
	future := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	alice.MustFail("GET", path("ts", future, "dir", "f"), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("GET", path("ts", "1", "dir", "b"), nil, http.StatusNotFound, "M_NOT_FOUND")
	// Parameters.
	alice.MustFail("GET", path("dir", "f"), nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", path("ts", future), nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", path(), nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", path("ts", "yesterday", "dir", "f"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path("ts", future, "dir", "x"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	// Not a member.
	eve.MustFail("GET", path("ts", strconv.FormatInt(ts[0], 10), "dir", "f"), nil, http.StatusForbidden, "M_FORBIDDEN")
}

// Every endpoint that returns room events in client format gives the create
// event its room_id, also in room version 12 where the federation format
// has none. (The suite's /messages and /context checks used the default
// room version; /state was formatted by another path, so only it was right.)
func TestMessagesCreateEventRoomID(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		roomID := roomTCreate(alice, map[string]any{"room_version": ver})
		msg := roomTSend(alice, roomID, "hello")
		create := roomTFind(roomTStateList(alice, roomID), "m.room.create", "")
		if create == nil {
			t.Fatal("no m.room.create in /state")
		}
		roomTCheckClientEvent(t, create, roomID)
		createID, _ := create["event_id"].(string)

		find := func(evs []map[string]any, where string) {
			t.Helper()
			if e := roomTFind(evs, "m.room.create", ""); e == nil {
				t.Fatalf("%s: no m.room.create", where)
			} else {
				roomTCheckClientEvent(t, e, roomID)
			}
		}
		find(msgTGet(alice, roomID, "dir", "b", "limit", "100").chunk, "/messages")
		ctx := alice.MustDo("GET", msgTContextPath(roomID, msg, "limit", "100"), nil, http.StatusOK)
		find(msgTObjects(t, ctx["events_before"], "events_before"), "/context events_before")
		find(msgTObjects(t, ctx["state"], "state"), "/context state")
		direct := alice.MustDo("GET", msgTContextPath(roomID, createID), nil, http.StatusOK)
		roomTCheckClientEvent(t, roomTMap(t, direct["event"], "event"), roomID)
		roomTCheckClientEvent(t, alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, createID), nil, http.StatusOK), roomID)
		roomTCheckClientEvent(t, alice.MustDo("GET", roomTStatePath(roomID, "m.room.create", "")+"?format=event", nil, http.StatusOK), roomID)
	})
}
