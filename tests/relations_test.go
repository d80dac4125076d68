package tests

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// ---- helpers of relations_test.go (prefix relT) ----

// relTSend sends an event of a type with content and returns its ID.
func relTSend(c *testutil.Client, roomID, typ string, content map[string]any) string {
	c.T.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/%s/%s", roomID, typ, roomTTxn()), content, http.StatusOK)
	return roomTEventID(c.T, m)
}

// relTReply sends an m.room.message relating to parent.
func relTReply(c *testutil.Client, roomID, relType, parent, body string) string {
	c.T.Helper()
	return relTSend(c, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": relType, "event_id": parent}})
}

// relTEdit sends an edit of parent.
func relTEdit(c *testutil.Client, roomID, parent, body string) string {
	c.T.Helper()
	return relTSend(c, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": parent}})
}

// relTGet reads a path with query key, value pairs.
func relTGet(c *testutil.Client, path string, kv ...string) map[string]any {
	c.T.Helper()
	if q := msgTQuery(kv...); len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.MustDo("GET", path, nil, http.StatusOK)
}

func relTPath(roomID, eventID string, rest ...string) string {
	p := testutil.Path("/_matrix/client/v1/rooms/%s/relations/%s", roomID, eventID)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// relTChunkIDs is the event IDs of a response's chunk.
func relTChunkIDs(t testing.TB, m map[string]any) []string {
	t.Helper()
	var ids []string
	for _, e := range msgTObjects(t, m["chunk"], "chunk") {
		id, _ := e["event_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// relTDig walks nested objects by keys.
func relTDig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// relTFind returns the event of a chunk with the ID, or fails.
func relTFind(t testing.TB, chunk any, id string) map[string]any {
	t.Helper()
	for _, e := range msgTObjects(t, chunk, "chunk") {
		if e["event_id"] == id {
			return e
		}
	}
	t.Fatalf("event %s not in %v", id, chunk)
	return nil
}

func relTWant[T comparable](t testing.TB, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// ---- tests ----

// TestRelations: /relations pages, filters and recursion, bundled
// aggregations on /messages, /context, /sync, /event and /relations, /threads,
// redactions leaving the aggregations, and the errors; on SQLite and
// PostgreSQL.
func TestRelations(t *testing.T) {
	for _, db := range []struct {
		name string
		opts testserver.Options
	}{{"sqlite", testserver.Options{}}, {"postgres", testserver.Options{Postgres: true}}} {
		t.Run(db.name, func(t *testing.T) { relTScenario(t, testserver.Start(t, db.opts)) })
	}
}

func relTScenario(t *testing.T, srv *testserver.Server) {
	alice := roomTUser(t, srv, "alice")
	bob := roomTUser(t, srv, "bob")
	carol := roomTUser(t, srv, "carol")
	outsider := roomTUser(t, srv, "outsider")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	for _, u := range []*testutil.Client{bob, carol} {
		roomTInvite(alice, roomID, u.UserID)
		roomTJoin(u, roomID)
	}
	root := roomTSend(alice, roomID, "root")
	r1 := relTReply(alice, roomID, "m.thread", root, "reply 1")
	r2 := relTReply(bob, roomID, "m.thread", root, "reply 2")
	ref := relTReply(carol, roomID, "m.reference", root, "see above")
	edit1 := relTEdit(alice, roomID, root, "root, edited")
	edit2 := relTEdit(alice, roomID, root, "root, edited again")
	bobEdit := relTEdit(bob, roomID, root, "not yours to edit")
	dummy := relTSend(alice, roomID, "m.dummy", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	r3 := relTReply(alice, roomID, "m.thread", root, "reply 3")
	reaction := relTSend(bob, roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": r3, "key": "👍"}})
	r3edit := relTEdit(alice, roomID, r3, "reply 3, edited")

	// /relations: newest first; by relation type; by event type too.
	all := relTGet(bob, relTPath(roomID, root))
	relTWant(t, "children of the root", relTChunkIDs(t, all), []string{r3, dummy, bobEdit, edit2, edit1, ref, r2, r1}[:5])
	relTWant(t, "children of the root", relTChunkIDs(t, relTGet(bob, relTPath(roomID, root), "limit", "20")),
		[]string{r3, dummy, bobEdit, edit2, edit1, ref, r2, r1})
	relTWant(t, "m.thread children", relTChunkIDs(t, relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "20")), []string{r3, dummy, r2, r1})
	relTWant(t, "m.thread m.room.message children", relTChunkIDs(t, relTGet(bob, relTPath(roomID, root, "m.thread", "m.room.message"), "limit", "20")),
		[]string{r3, r2, r1})
	if _, ok := all["recursion_depth"]; ok {
		t.Fatalf("recursion_depth without recurse: %v", all)
	}

	// Pages both ways, with next_batch and to.
	p1 := relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "2")
	relTWant(t, "first page", relTChunkIDs(t, p1), []string{r3, dummy})
	next, _ := p1["next_batch"].(string)
	p2 := relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "2", "from", next)
	relTWant(t, "second page", relTChunkIDs(t, p2), []string{r2, r1})
	if p2["prev_batch"] != next {
		t.Fatalf("prev_batch = %v, want the from token %s", p2["prev_batch"], next)
	}
	if n, ok := p2["next_batch"]; ok {
		t.Fatalf("last page with next_batch %v", n)
	}
	f1 := relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "3", "dir", "f")
	relTWant(t, "first forward page", relTChunkIDs(t, f1), []string{r1, r2, dummy})
	f2 := relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "3", "dir", "f", "from", f1["next_batch"].(string))
	relTWant(t, "second forward page", relTChunkIDs(t, f2), []string{r3})
	relTWant(t, "page up to the first page's end", relTChunkIDs(t, relTGet(bob, relTPath(roomID, root, "m.thread"), "limit", "9", "to", next)),
		[]string{r3, dummy})

	// Recursion reaches the reply's reaction and edit.
	rec := relTGet(bob, relTPath(roomID, root), "recurse", "true", "limit", "20")
	relTWant(t, "recursive children", relTChunkIDs(t, rec), []string{r3edit, reaction, r3, dummy, bobEdit, edit2, edit1, ref, r2, r1})
	if rec["recursion_depth"] != float64(3) {
		t.Fatalf("recursion_depth = %v, want 3", rec["recursion_depth"])
	}

	// Bundled aggregations of the root on /messages.
	msgs := relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30")
	rootEv := relTFind(t, msgs["chunk"], root)
	relTCheckRoot(t, rootEv, r3, r3edit, ref, edit2, false)
	if relTDig(rootEv, "content", "body") != "root" {
		t.Fatalf("the root's content was replaced: %v", rootEv["content"])
	}
	// An edit carries no aggregations; the reply has its edit.
	if rel := relTDig(relTFind(t, msgs["chunk"], edit1), "unsigned", "m.relations"); rel != nil {
		t.Fatalf("an edit with aggregations: %v", rel)
	}
	if got := relTDig(relTFind(t, msgs["chunk"], r3), "unsigned", "m.relations", "m.replace", "event_id"); got != r3edit {
		t.Fatalf("the reply's m.replace = %v, want %s", got, r3edit)
	}
	// Participation: alice started it, bob replied, carol did neither.
	relTCheckRoot(t, relTFind(t, relTGet(alice, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30")["chunk"], root),
		r3, r3edit, ref, edit2, true)
	relTCheckRoot(t, relTFind(t, relTGet(bob, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30")["chunk"], root),
		r3, r3edit, ref, edit2, true)

	// /context, /sync and /relations bundle them too.
	cx := relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/context/%s", roomID, root), "limit", "4")
	relTCheckRoot(t, cx["event"].(map[string]any), r3, r3edit, ref, edit2, false)
	flt, _ := json.Marshal(map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 30}}})
	sync := msgTSync(carol, "filter", string(flt))
	relTCheckRoot(t, relTFind(t, relTDig(msgTJoinedRoom(sync, roomID), "timeline", "events"), root), r3, r3edit, ref, edit2, false)
	if got := relTDig(relTFind(t, relTGet(bob, relTPath(roomID, root), "limit", "20")["chunk"], r3), "unsigned", "m.relations", "m.replace", "event_id"); got != r3edit {
		t.Fatalf("/relations: the reply's m.replace = %v, want %s", got, r3edit)
	}

	relTCheckRoot(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, root)), r3, r3edit, ref, edit2, false)

	// /threads: the root; carol took part in none.
	threads := relTGet(carol, testutil.Path("/_matrix/client/v1/rooms/%s/threads", roomID))
	relTWant(t, "threads", relTChunkIDs(t, threads), []string{root})
	relTCheckRoot(t, relTFind(t, threads["chunk"], root), r3, r3edit, ref, edit2, false)
	relTWant(t, "carol's threads", relTChunkIDs(t, relTGet(carol, testutil.Path("/_matrix/client/v1/rooms/%s/threads", roomID), "include", "participated")), nil)
	relTWant(t, "bob's threads", relTChunkIDs(t, relTGet(bob, testutil.Path("/_matrix/client/v1/rooms/%s/threads", roomID), "include", "participated")), []string{root})

	// Filters on /messages: the events' own relation types (MSC3874) and
	// their children's (related_by_*).
	all2 := relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30",
		"filter", `{"org.matrix.msc3874.rel_types":["m.reference","m.annotation"]}`)
	relTWant(t, "rel_types m.reference, m.annotation", relTChunkIDs(t, all2), []string{reaction, ref})
	notThread := relTChunkIDs(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "12",
		"filter", `{"org.matrix.msc3874.not_rel_types":["m.thread","m.replace"], "types":["m.room.message","m.reaction"]}`))
	relTWant(t, "not_rel_types m.thread, m.replace", notThread, []string{reaction, ref, root})
	relTWant(t, "related_by_rel_types m.annotation", relTChunkIDs(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID),
		"dir", "b", "filter", `{"related_by_rel_types":["m.annotation"]}`)), []string{r3})
	relTWant(t, "related_by_senders carol", relTChunkIDs(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID),
		"dir", "b", "filter", `{"related_by_senders":["`+carol.UserID+`"]}`)), []string{root})

	// Redactions: the latest reply leaves the thread, the latest edit
	// leaves m.replace; a redacted root keeps no edit.
	redact := func(id string) {
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", roomID, id, roomTTxn()), map[string]any{}, http.StatusOK)
	}
	redact(r3)
	redact(edit2)
	rootEv = relTFind(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30")["chunk"], root)
	if got := relTDig(rootEv, "unsigned", "m.relations", "m.thread", "latest_event", "event_id"); got != dummy {
		t.Fatalf("after the redaction, latest_event = %v, want %s", got, dummy)
	}
	if got := relTDig(rootEv, "unsigned", "m.relations", "m.thread", "count"); got != float64(3) {
		t.Fatalf("after the redaction, count = %v, want 3", got)
	}
	if got := relTDig(rootEv, "unsigned", "m.relations", "m.replace", "event_id"); got != edit1 {
		t.Fatalf("after the redaction, m.replace = %v, want %s", got, edit1)
	}
	relTWant(t, "m.thread children after the redaction", relTChunkIDs(t, relTGet(bob, relTPath(roomID, root, "m.thread"))), []string{dummy, r2, r1})
	redact(root)
	rootEv = relTFind(t, relTGet(carol, testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID), "dir", "b", "limit", "30")["chunk"], root)
	if got := relTDig(rootEv, "unsigned", "m.relations", "m.replace"); got != nil {
		t.Fatalf("a redacted root with m.replace %v", got)
	}

	// Errors.
	bob.MustFail("GET", relTPath(roomID, "$nope"), nil, http.StatusNotFound, "M_NOT_FOUND")
	outsider.MustFail("GET", relTPath(roomID, root), nil, http.StatusForbidden, "M_FORBIDDEN")
	outsider.MustFail("GET", testutil.Path("/_matrix/client/v1/rooms/%s/threads", roomID), nil, http.StatusForbidden, "M_FORBIDDEN")
	for _, q := range []string{"dir=x", "limit=-1", "limit=many", "recurse=maybe", "from=garbage", "to=t"} {
		bob.MustFail("GET", relTPath(roomID, root)+"?"+q, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	for _, q := range []string{"include=some", "limit=-2", "from=zz"} {
		bob.MustFail("GET", testutil.Path("/_matrix/client/v1/rooms/%s/threads", roomID)+"?"+q, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	bob.MustFail("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID)+"?dir=b&filter="+url.QueryEscape(`{"related_by_senders":["nobody"]}`),
		nil, http.StatusBadRequest, "M_BAD_JSON")
}

// relTCheckRoot checks a thread root's bundled aggregations.
func relTCheckRoot(t *testing.T, ev map[string]any, latest, latestEdit, ref, edit string, participated bool) {
	t.Helper()
	rel := relTDig(ev, "unsigned", "m.relations")
	if got := relTDig(rel, "m.thread", "latest_event", "event_id"); got != latest {
		t.Fatalf("m.thread.latest_event = %v, want %s (%v)", got, latest, rel)
	}
	if got := relTDig(rel, "m.thread", "latest_event", "unsigned", "m.relations", "m.replace", "event_id"); got != latestEdit {
		t.Fatalf("the latest reply's m.replace = %v, want %s", got, latestEdit)
	}
	if got := relTDig(rel, "m.thread", "count"); got != float64(4) {
		t.Fatalf("m.thread.count = %v, want 4", got)
	}
	if got := relTDig(rel, "m.thread", "current_user_participated"); got != participated {
		t.Fatalf("m.thread.current_user_participated = %v, want %v", got, participated)
	}
	refs, _ := relTDig(rel, "m.reference", "chunk").([]any)
	if len(refs) != 1 || relTDig(refs[0], "event_id") != ref {
		t.Fatalf("m.reference = %v, want [%s]", relTDig(rel, "m.reference"), ref)
	}
	if got := relTDig(rel, "m.replace", "event_id"); got != edit {
		t.Fatalf("m.replace = %v, want %s (the latest edit by the sender)", got, edit)
	}
}

// TestThreadSubscriptions (MSC4306): manual and automatic subscriptions,
// manual ones overriding automatic ones, the cause event checked against
// the thread and against a later unsubscribe, and the errors.
func TestThreadSubscriptions(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	outsider := roomTUser(t, srv, "outsider")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	root := roomTSend(alice, roomID, "root")
	other := roomTSend(alice, roomID, "other root")
	r1 := relTReply(alice, roomID, "m.thread", root, "reply 1")
	elsewhere := relTReply(alice, roomID, "m.thread", other, "elsewhere")
	path := testutil.Path("/_matrix/client/unstable/io.element.msc4306/rooms/%s/thread/%s/subscription", roomID, root)
	automatic := func(id string) map[string]any { return map[string]any{"automatic": id} }

	alice.MustFail("GET", path, nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("DELETE", path, nil, http.StatusOK) // without a subscription
	alice.MustFail("PUT", path, automatic(root), http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
	alice.MustFail("PUT", path, automatic(elsewhere), http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
	alice.MustFail("PUT", path, automatic("$unknown"), http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("PUT", path, map[string]any{"automatic": 5}, http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("PUT", testutil.Path("/_matrix/client/unstable/io.element.msc4306/rooms/%s/thread/%s/subscription", roomID, "$nothread"),
		map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
	outsider.MustFail("PUT", path, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")

	// Automatic, then manual over it.
	alice.MustDo("PUT", path, automatic(r1), http.StatusOK)
	if got := alice.MustDo("GET", path, nil, http.StatusOK); got["automatic"] != true {
		t.Fatalf("after an automatic subscription: %v", got)
	}
	alice.MustDo("PUT", path, map[string]any{}, http.StatusOK)
	if got := alice.MustDo("GET", path, nil, http.StatusOK); got["automatic"] != false {
		t.Fatalf("after a manual subscription: %v", got)
	}
	alice.MustDo("PUT", path, automatic(r1), http.StatusOK) // leaves the manual one
	if got := alice.MustDo("GET", path, nil, http.StatusOK); got["automatic"] != false {
		t.Fatalf("an automatic subscription replaced a manual one: %v", got)
	}

	// An unsubscribe refuses causes from before it.
	r2 := relTReply(alice, roomID, "m.thread", root, "reply 2")
	alice.MustDo("DELETE", path, nil, http.StatusOK)
	alice.MustFail("GET", path, nil, http.StatusNotFound, "M_NOT_FOUND")
	r3 := relTReply(alice, roomID, "m.thread", root, "reply 3")
	for _, id := range []string{r1, r2} {
		alice.MustFail("PUT", path, automatic(id), http.StatusConflict, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
	}
	alice.MustFail("GET", path, nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("PUT", path, automatic(r3), http.StatusOK)
	if got := alice.MustDo("GET", path, nil, http.StatusOK); got["automatic"] != true {
		t.Fatalf("after an automatic subscription caused by a later reply: %v", got)
	}
}
