package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Black-box tests of notification counts: push rules evaluated for each
// new event and local member, the counts in /sync, read receipts clearing
// them, and GET /notifications.

// pushRoomCounts is a joined room's counts as /sync shows them.
type pushRoomCounts struct {
	Unread  *pushCount            `json:"unread_notifications"`
	Threads map[string]*pushCount `json:"unread_thread_notifications"`
}

type pushCount struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// pushSync is a /sync response with what these tests read of it.
type pushSync struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		} `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]*pushRoomCounts `json:"join"`
	} `json:"rooms"`
}

// syncPush runs a /sync (since "" for an initial one; filter may be "").
func syncPush(t testing.TB, c *testutil.Client, since, filter string, timeout time.Duration) *pushSync {
	t.Helper()
	q := url.Values{"timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	var out pushSync
	r := c.Do("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &out)
	return &out
}

// countsOf waits (through incremental syncs) until the room's counts are
// want, and returns the sync token after them.
func countsOf(t *testing.T, c *testutil.Client, since, roomID string, want pushCount) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last *pushCount
	for time.Now().Before(deadline) {
		s := syncPush(t, c, since, "", time.Second)
		since = s.NextBatch
		if jr := s.Rooms.Join[roomID]; jr != nil {
			if jr.Unread == nil {
				t.Fatalf("joined room %s without unread_notifications", roomID)
			}
			last = jr.Unread
			if *jr.Unread == want {
				return since
			}
		}
	}
	t.Fatalf("counts of %s: last %+v, want %+v", roomID, last, want)
	return ""
}

func pushSend(t *testing.T, c *testutil.Client, roomID, typ string, content map[string]any) string {
	t.Helper()
	m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/%s/%s", roomID, typ, fmt.Sprint(time.Now().UnixNano())), content, http.StatusOK)
	return m["event_id"].(string)
}

func pushRoom(t *testing.T, creator *testutil.Client, members ...*testutil.Client) string {
	t.Helper()
	roomID := creator.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	for _, m := range members {
		m.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	}
	return roomID
}

func text(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func TestPushCountsInSync(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	carol := srv.Client().Register("carol", "password1")
	roomID := pushRoom(t, bob, alice, carol)

	// The initial sync has the default push rules and zero counts.
	first := syncPush(t, alice, "", "", 0)
	var rules json.RawMessage
	for _, e := range first.AccountData.Events {
		if e.Type == "m.push_rules" {
			rules = e.Content
		}
	}
	var rs struct {
		Global struct {
			Override  []map[string]any `json:"override"`
			Underride []map[string]any `json:"underride"`
		} `json:"global"`
	}
	if err := json.Unmarshal(rules, &rs); err != nil || len(rs.Global.Override) == 0 || rs.Global.Override[0]["rule_id"] != ".m.rule.master" {
		t.Fatalf("initial sync: m.push_rules %s (%v), want the defaults with .m.rule.master first", rules, err)
	}
	if jr := first.Rooms.Join[roomID]; jr == nil || jr.Unread == nil || *jr.Unread != (pushCount{}) {
		t.Fatalf("initial sync: counts %+v, want zero", jr)
	}
	since := first.NextBatch

	// A message counts (.m.rule.message); a mention highlights.
	pushSend(t, bob, roomID, "m.room.message", text("hello all"))
	since = countsOf(t, alice, since, roomID, pushCount{1, 0})
	mention := pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "alice: look",
		"m.mentions": map[string]any{"user_ids": []string{alice.UserID}}})
	since = countsOf(t, alice, since, roomID, pushCount{2, 1})
	// Carol was not mentioned: two notifications, no highlight.
	countsOf(t, carol, "", roomID, pushCount{2, 0})

	// Notices, reactions and edits do not count.
	pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "a bot says"})
	pushSend(t, bob, roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": mention, "key": "👍"}})
	pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* fixed",
		"m.new_content": text("fixed"), "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": mention}})
	last := pushSend(t, bob, roomID, "m.room.message", text("one more"))
	since = countsOf(t, alice, since, roomID, pushCount{3, 1})

	// The read receipt clears the counts, and the sync showing it shows
	// them cleared.
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, last), map[string]any{}, http.StatusOK)
	s := syncPush(t, alice, since, "", 5*time.Second)
	if jr := s.Rooms.Join[roomID]; jr == nil || jr.Unread == nil || *jr.Unread != (pushCount{}) {
		t.Fatalf("sync after the receipt: %+v, want zero counts", jr)
	}
	since = s.NextBatch

	// A private receipt clears them too.
	priv := pushSend(t, bob, roomID, "m.room.message", text("private"))
	since = countsOf(t, alice, since, roomID, pushCount{1, 0})
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read.private/%s", roomID, priv), map[string]any{}, http.StatusOK)
	since = countsOf(t, alice, since, roomID, pushCount{0, 0})

	// Sending is reading: alice's own message clears what she had.
	pushSend(t, bob, roomID, "m.room.message", text("before she speaks"))
	since = countsOf(t, alice, since, roomID, pushCount{1, 0})
	pushSend(t, alice, roomID, "m.room.message", text("she speaks"))
	countsOf(t, alice, since, roomID, pushCount{0, 0})
	// Her own message is no notification for her, but is for carol.
	countsOf(t, carol, "", roomID, pushCount{6, 0})
}

func TestPushCountsOneToOneAndRules(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	roomID := pushRoom(t, bob, alice)
	since := syncPush(t, alice, "", "", 0).NextBatch

	// Encrypted events count in a room of two (.m.rule.encrypted_room_one_to_one).
	pushSend(t, bob, roomID, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA",
		"sender_key": "key", "device_id": "DEV", "session_id": "sess"})
	since = countsOf(t, alice, since, roomID, pushCount{1, 0})

	// A room rule with no actions silences the room.
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/pushrules/global/room/%s", roomID), map[string]any{"actions": []any{}}, http.StatusOK)
	syncPush(t, alice, since, "", 0) // the rule change is applied before the next event
	pushSend(t, bob, roomID, "m.room.message", text("silenced"))
	// Then removing it brings the counts back.
	alice.MustDo("DELETE", testutil.Path("/_matrix/client/v3/pushrules/global/room/%s", roomID), nil, http.StatusOK)
	syncPush(t, alice, since, "", 0)
	pushSend(t, bob, roomID, "m.room.message", text("heard"))
	since = countsOf(t, alice, since, roomID, pushCount{2, 0})

	// The master rule turns everything off.
	alice.MustDo("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", map[string]any{"enabled": true}, http.StatusOK)
	syncPush(t, alice, since, "", 0)
	pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "@room!", "m.mentions": map[string]any{"room": true}})
	pushSend(t, bob, roomID, "m.room.message", text("still nothing"))
	mark := pushSend(t, bob, roomID, "m.room.name", map[string]any{"name": "marker"})
	_ = mark
	s := syncPush(t, alice, since, "", 2*time.Second)
	for i := 0; i < 5 && s.Rooms.Join[roomID] == nil; i++ {
		s = syncPush(t, alice, s.NextBatch, "", 2*time.Second)
	}
	if jr := s.Rooms.Join[roomID]; jr == nil || *jr.Unread != (pushCount{2, 0}) {
		t.Fatalf("with the master rule on: %+v, want the counts unchanged at 2", jr)
	}

	// An invite notifies the invitee (.m.rule.invite_for_me).
	alice.MustDo("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", map[string]any{"enabled": false}, http.StatusOK)
	syncPush(t, alice, s.NextBatch, "", 0)
	other := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}, http.StatusOK)["room_id"].(string)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", other), map[string]any{"user_id": alice.UserID}, http.StatusOK)
	testutil.Eventually(t, 5*time.Second, "the invite in /notifications", func() bool {
		n := alice.MustDo("GET", "/_matrix/client/v3/notifications", nil, http.StatusOK)
		list, _ := n["notifications"].([]any)
		if len(list) == 0 {
			return false
		}
		first := list[0].(map[string]any)
		ev := first["event"].(map[string]any)
		return first["room_id"] == other && ev["type"] == "m.room.member" && ev["state_key"] == alice.UserID
	})
}

func TestPushThreadCounts(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	carol := srv.Client().Register("carol", "password1")
	roomID := pushRoom(t, bob, alice, carol)
	byThread := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
	since := syncPush(t, alice, "", byThread, 0).NextBatch

	root := pushSend(t, bob, roomID, "m.room.message", text("thread root"))
	inThread := func(body string) string {
		return pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	}
	inThread("reply 1")
	reply2 := inThread("reply 2")
	// A reaction to a threaded reply would count in the thread, were
	// reactions notified; an edit of one is suppressed too. A reply
	// (m.in_reply_to) to the root without a thread relation is main.
	pushSend(t, bob, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "main reply",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})

	want := func(main pushCount, thread *pushCount) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var last *pushRoomCounts
		for time.Now().Before(deadline) {
			s := syncPush(t, alice, since, byThread, time.Second)
			since = s.NextBatch
			if jr := s.Rooms.Join[roomID]; jr != nil {
				last = jr
				got := jr.Threads[root]
				if *jr.Unread == main && ((thread == nil && got == nil) || (thread != nil && got != nil && *got == *thread)) {
					return
				}
			}
		}
		t.Fatalf("thread counts: last %+v (thread %+v), want main %+v thread %+v", last, last.Threads[root], main, thread)
	}
	want(pushCount{2, 0}, &pushCount{2, 0})

	// Without the filter option, everything counts together.
	if jr := syncPush(t, alice, "", "", 0).Rooms.Join[roomID]; jr == nil || *jr.Unread != (pushCount{4, 0}) || jr.Threads != nil {
		t.Fatalf("counts without unread_thread_notifications: %+v, want 4 in all and no threads", jr)
	}

	// A threaded receipt clears the thread only; a main one the main
	// timeline only.
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, reply2), map[string]any{"thread_id": root}, http.StatusOK)
	want(pushCount{2, 0}, nil)
	inThread("reply 3")
	want(pushCount{2, 0}, &pushCount{1, 0})
	last := pushSend(t, bob, roomID, "m.room.message", text("main again"))
	want(pushCount{3, 0}, &pushCount{1, 0})
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, last), map[string]any{"thread_id": "main"}, http.StatusOK)
	want(pushCount{0, 0}, &pushCount{1, 0})
	// An unthreaded receipt clears every thread up to its event.
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, last), map[string]any{}, http.StatusOK)
	want(pushCount{0, 0}, nil)
}

func TestNotificationsList(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	carol := srv.Client().Register("carol", "password1")
	roomID := pushRoom(t, bob, alice, carol)
	since := syncPush(t, alice, "", "", 0).NextBatch

	var ids []string
	for i := 0; i < 5; i++ {
		content := text(fmt.Sprintf("message %d", i))
		if i%2 == 1 {
			content["m.mentions"] = map[string]any{"user_ids": []string{alice.UserID}}
		}
		ids = append(ids, pushSend(t, bob, roomID, "m.room.message", content))
	}
	since = countsOf(t, alice, since, roomID, pushCount{5, 2})
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, ids[1]), map[string]any{}, http.StatusOK)
	countsOf(t, alice, since, roomID, pushCount{3, 1})

	type entry struct {
		Actions []any          `json:"actions"`
		Event   map[string]any `json:"event"`
		Read    bool           `json:"read"`
		RoomID  string         `json:"room_id"`
		TS      int64          `json:"ts"`
	}
	type page struct {
		Notifications []entry `json:"notifications"`
		NextToken     string  `json:"next_token"`
	}
	get := func(query string) page {
		t.Helper()
		var p page
		r := alice.Do("GET", "/_matrix/client/v3/notifications"+query, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET /notifications%s: %d %s", query, r.Status, r.Body)
		}
		r.Decode(t, &p)
		return p
	}
	// Newest first, in pages, with read flags, actions and the event.
	p1 := get("?limit=3")
	if len(p1.Notifications) != 3 || p1.NextToken == "" {
		t.Fatalf("first page: %+v", p1)
	}
	p2 := get("?limit=3&from=" + url.QueryEscape(p1.NextToken))
	all := append(p1.Notifications, p2.Notifications...)
	if len(all) != 5 || p2.NextToken != "" {
		t.Fatalf("two pages: %d notifications, next %q; want 5 and no more", len(all), p2.NextToken)
	}
	for i, n := range all {
		wantID := ids[4-i]
		if n.Event["event_id"] != wantID || n.RoomID != roomID || n.TS == 0 || len(n.Actions) == 0 || n.Actions[0] != "notify" {
			t.Errorf("notification %d: %+v, want event %s", i, n, wantID)
		}
		if wantRead := 4-i <= 1; n.Read != wantRead {
			t.Errorf("notification %d (%s): read %v, want %v", i, wantID, n.Read, wantRead)
		}
	}
	// Only highlights.
	hl := get("?only=highlight")
	if len(hl.Notifications) != 2 || hl.Notifications[0].Event["event_id"] != ids[3] || hl.Notifications[1].Event["event_id"] != ids[1] {
		t.Fatalf("highlights: %+v", hl)
	}
	if c := get("?limit=0"); len(c.Notifications) != 0 {
		t.Errorf("limit=0: %+v", c)
	}
	// Bad parameters.
	alice.MustFail("GET", "/_matrix/client/v3/notifications?limit=x", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", "/_matrix/client/v3/notifications?from=nope", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", "/_matrix/client/v3/notifications?only=everything", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	srv.Client().MustFail("GET", "/_matrix/client/v3/notifications", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// Bob has none of alice's.
	if n := bob.MustDo("GET", "/_matrix/client/v3/notifications", nil, http.StatusOK)["notifications"].([]any); len(n) != 0 {
		t.Errorf("bob's notifications: %v, want none", n)
	}
}
