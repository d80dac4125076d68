package tests

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Event IDs of room versions 4 and later are "$" and 43 unpadded URL-safe
// base64 characters; version 1 IDs are "$opaque:server".
var roomTHashEventID = regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)

func roomTCheckEventIDFormat(t testing.TB, ver, id, server string) {
	t.Helper()
	if ver == "1" {
		if !strings.HasPrefix(id, "$") || !strings.HasSuffix(id, ":"+server) {
			t.Fatalf("v1 event ID %q, want $opaque:%s", id, server)
		}
	} else if !roomTHashEventID.MatchString(id) {
		t.Fatalf("v%s event ID %q, want $ and 43 URL-safe base64 characters", ver, id)
	}
}

// roomTLatest returns the room's forward extremities.
func roomTLatest(t testing.TB, srv *testserver.Server, roomID string) []string {
	t.Helper()
	ids, err := srv.Rooms.QueryLatestEvents(context.Background(), roomID)
	if err != nil {
		t.Fatalf("QueryLatestEvents: %v", err)
	}
	return ids
}

// Transaction IDs make sends idempotent per device, room, event type and
// transaction ID.
func TestRoomSendTransactions(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		roomID := roomTCreate(alice, map[string]any{"room_version": ver})
		other := roomTCreate(alice, map[string]any{"room_version": ver})
		send := func(c *testutil.Client, room, typ, txn string, body string) string {
			t.Helper()
			m := c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/%s/%s", room, typ, txn),
				map[string]any{"msgtype": "m.text", "body": body}, http.StatusOK)
			return roomTEventID(t, m)
		}
		first := send(alice, roomID, "m.room.message", "t1", "hello")
		roomTCheckEventIDFormat(t, ver, first, srv.Config.ServerName)
		ev := roomTEvent(alice, roomID, first)
		roomTCheckClientEvent(t, ev, roomID)
		if ev["type"] != "m.room.message" || ev["sender"] != alice.UserID || roomTMap(t, ev["content"], "content")["body"] != "hello" {
			t.Fatalf("sent event %v", ev)
		}
		if _, ok := ev["state_key"]; ok {
			t.Fatalf("a message event has a state_key: %v", ev)
		}

		// The same request again (even with another body) is the same event.
		if again := send(alice, roomID, "m.room.message", "t1", "hello"); again != first {
			t.Fatalf("retried transaction: event %s, want %s", again, first)
		}
		if again := send(alice, roomID, "m.room.message", "t1", "changed"); again != first {
			t.Fatalf("retried transaction with another body: event %s, want %s", again, first)
		}
		if latest := roomTLatest(t, srv, roomID); !slices.Equal(latest, []string{first}) {
			t.Fatalf("forward extremities %v, want only %s: a retry created an event", latest, first)
		}
		if ev := roomTEvent(alice, roomID, first); roomTMap(t, ev["content"], "content")["body"] != "hello" {
			t.Fatalf("retry changed the event: %v", ev)
		}

		// Another device of the same user: a new transaction.
		alice2 := alice.Login(alice.UserID, "pw")
		if alice2.DeviceID == alice.DeviceID {
			t.Fatalf("second login reused device %s", alice.DeviceID)
		}
		ids := []string{first}
		ids = append(ids, send(alice2, roomID, "m.room.message", "t1", "from device 2"))
		// Another room, another event type: new events.
		ids = append(ids, send(alice, other, "m.room.message", "t1", "other room"))
		ids = append(ids, send(alice, roomID, "org.example.custom", "t1", "other type"))
		seen := map[string]bool{}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("event IDs %v: a different request returned an earlier event", ids)
			}
			seen[id] = true
		}
		if ev := roomTEvent(alice, roomID, ids[1]); roomTMap(t, ev["content"], "content")["body"] != "from device 2" {
			t.Fatalf("device 2's event %v", ev)
		}
		if ev := roomTEvent(alice, other, ids[2]); ev["room_id"] != other {
			t.Fatalf("other room's event %v", ev)
		}
		if ev := roomTEvent(alice, roomID, ids[3]); ev["type"] != "org.example.custom" {
			t.Fatalf("custom event %v", ev)
		}
		if latest := roomTLatest(t, srv, roomID); !slices.Equal(latest, []string{ids[3]}) {
			t.Fatalf("forward extremities %v, want %s", latest, ids[3])
		}
		// The same transaction ID on the redact endpoint is another request.
		red := roomTEventID(t, alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", roomID, ids[3], "t1"), map[string]any{}, http.StatusOK))
		if seen[red] {
			t.Fatalf("redaction with transaction t1 returned the earlier event %s", red)
		}
		// The first device's transaction still maps to its event, also
		// after a restart.
		if again := send(alice, roomID, "m.room.message", "t1", "hello"); again != first {
			t.Fatalf("retried transaction later: event %s, want %s", again, first)
		}
		srv.Restart()
		if again := send(alice, roomID, "m.room.message", "t1", "hello"); again != first {
			t.Fatalf("retried transaction after a restart: event %s, want %s", again, first)
		}
		if latest := roomTLatest(t, srv, roomID); !slices.Equal(latest, []string{red}) {
			t.Fatalf("forward extremities %v, want %s", latest, red)
		}

		// GET /event gives the transaction ID to the device that sent the
		// event alone (the suite had checked it only in /sync).
		bob := roomTUser(t, srv, "bob")
		roomTInvite(alice, roomID, bob.UserID)
		roomTJoin(bob, roomID)
		txnOf := func(c *testutil.Client, id string) any {
			t.Helper()
			u, _ := roomTEvent(c, roomID, id)["unsigned"].(map[string]any)
			return u["transaction_id"]
		}
		for _, tc := range []struct {
			c    *testutil.Client
			id   string
			want any
		}{{alice, first, "t1"}, {alice2, ids[1], "t1"}, {alice, red, "t1"}, {alice2, first, nil}, {alice, ids[1], nil}, {bob, first, nil}} {
			if got := txnOf(tc.c, tc.id); got != tc.want {
				t.Fatalf("transaction_id of %s for %s/%s = %v, want %v", tc.id, tc.c.UserID, tc.c.DeviceID, got, tc.want)
			}
		}
	})
}

func TestRoomSendErrors(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		eve := roomTUser(t, srv, "eve")
		roomID := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "public_chat"})
		msg := map[string]any{"msgtype": "m.text", "body": "hi"}
		sendPath := func(room string) string {
			return testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, roomTTxn())
		}
		// Not a member (even of a public room).
		eve.MustFail("PUT", sendPath(roomID), msg, http.StatusForbidden, "M_FORBIDDEN")
		// Invited is not joined.
		roomTInvite(alice, roomID, eve.UserID)
		eve.MustFail("PUT", sendPath(roomID), msg, http.StatusForbidden, "M_FORBIDDEN")
		// An unknown room.
		alice.MustFail("PUT", sendPath("!unknown:"+srv.Config.ServerName), msg, http.StatusNotFound, "M_NOT_FOUND")
		// Bodies that are not a JSON object.
		alice.MustFail("PUT", sendPath(roomID), testutil.Raw(`["a", "b"]`), http.StatusBadRequest, "M_BAD_JSON")
		alice.MustFail("PUT", sendPath(roomID), testutil.Raw(`"text"`), http.StatusBadRequest, "M_BAD_JSON")
		alice.MustFail("PUT", sendPath(roomID), testutil.Raw(`{"body": `), http.StatusBadRequest, "M_NOT_JSON")
		// No access token.
		testutil.NewClient(t, srv.URL).MustFail("PUT", sendPath(roomID), msg, http.StatusUnauthorized, "M_MISSING_TOKEN")
		// Events are limited to 65,536 bytes; a smaller one is fine.
		alice.MustFail("PUT", sendPath(roomID), map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 70000)},
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		big := strings.Repeat("y", 60000)
		id := roomTEventID(t, alice.MustDo("PUT", sendPath(roomID), map[string]any{"msgtype": "m.text", "body": big}, http.StatusOK))
		if ev := roomTEvent(alice, roomID, id); roomTMap(t, ev["content"], "content")["body"] != big {
			t.Fatal("the 60,000 byte message came back changed")
		}
		// Nothing of the refused sends reached the room.
		if latest := roomTLatest(t, srv, roomID); !slices.Equal(latest, []string{id}) {
			t.Fatalf("forward extremities %v, want %s", latest, id)
		}
	})
}

// PUT /rooms/{roomId}/state: sending, idempotence, power and validation.
func TestRoomPutState(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		bob := roomTUser(t, srv, "bob")
		eve := roomTUser(t, srv, "eve")
		roomID := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "public_chat"})
		other := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "public_chat"})
		roomTJoin(bob, roomID)

		// A state event and its idempotence.
		first := roomTPutState(alice, roomID, "m.room.name", "", map[string]any{"name": "One"})
		roomTCheckEventIDFormat(t, ver, first, srv.Config.ServerName)
		if again := roomTPutState(alice, roomID, "m.room.name", "", map[string]any{"name": "One"}); again != first {
			t.Fatalf("identical state again: event %s, want the same %s", again, first)
		}
		if latest := roomTLatest(t, srv, roomID); !slices.Equal(latest, []string{first}) {
			t.Fatalf("forward extremities %v, want %s: identical state created an event", latest, first)
		}
		second := roomTPutState(alice, roomID, "m.room.name", "", map[string]any{"name": "Two"})
		if second == first {
			t.Fatal("changed state returned the old event")
		}
		if n := roomTState(alice, roomID, "m.room.name", ""); n["name"] != "Two" {
			t.Fatalf("m.room.name %v", n)
		}
		ev := alice.MustDo("GET", roomTStatePath(roomID, "m.room.name", "")+"?format=event", nil, http.StatusOK)
		if ev["event_id"] != second || ev["state_key"] != "" {
			t.Fatalf("current m.room.name event %v, want %s", ev, second)
		}

		// The empty state key, without the trailing slash.
		m := alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/%s", roomID, "org.example.empty"), map[string]any{"v": 1}, http.StatusOK)
		emptyID := roomTEventID(t, m)
		ev = alice.MustDo("GET", roomTStatePath(roomID, "org.example.empty", "")+"?format=event", nil, http.StatusOK)
		if ev["event_id"] != emptyID || ev["state_key"] != "" {
			t.Fatalf("empty-key state event %v, want %s", ev, emptyID)
		}
		if c := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state/%s", roomID, "org.example.empty"), nil, http.StatusOK); roomTNum(t, c["v"], "v") != 1 {
			t.Fatalf("empty-key state content %v", c)
		}
		// A non-empty state key is another piece of state.
		roomTPutState(alice, roomID, "org.example.empty", "k", map[string]any{"v": 2})
		if c := roomTState(alice, roomID, "org.example.empty", ""); roomTNum(t, c["v"], "v") != 1 {
			t.Fatalf("empty-key state after setting key k: %v", c)
		}

		// bob has power 0; state needs 50, power levels 100.
		bob.MustFail("PUT", roomTStatePath(roomID, "m.room.name", ""), map[string]any{"name": "bob's"}, http.StatusForbidden, "M_FORBIDDEN")
		pl := roomTState(alice, roomID, "m.room.power_levels", "")
		roomTMap(t, pl["users"], "users")[bob.UserID] = 100
		bob.MustFail("PUT", roomTStatePath(roomID, "m.room.power_levels", ""), pl, http.StatusForbidden, "M_FORBIDDEN")
		bob.MustFail("PUT", roomTStatePath(roomID, "org.example.state", ""), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		if n := roomTState(bob, roomID, "m.room.name", ""); n["name"] != "Two" {
			t.Fatalf("m.room.name after refused changes: %v", n)
		}
		// Non-members and unknown rooms.
		eve.MustFail("PUT", roomTStatePath(roomID, "org.example.state", ""), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		alice.MustFail("PUT", roomTStatePath("!unknown:"+srv.Config.ServerName, "m.room.name", ""), map[string]any{"name": "x"}, http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("PUT", roomTStatePath(roomID, "m.room.name", ""), testutil.Raw(`[1]`), http.StatusBadRequest, "M_BAD_JSON")

		// A state key that is a user ID belongs to that user.
		alice.MustFail("PUT", roomTStatePath(roomID, "org.example.user", bob.UserID), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		roomTPutState(alice, roomID, "org.example.user", alice.UserID, map[string]any{})

		// State keys are limited to 255 bytes.
		roomTPutState(alice, roomID, "org.example.key", strings.Repeat("k", 255), map[string]any{})
		alice.MustFail("PUT", roomTStatePath(roomID, "org.example.key", strings.Repeat("k", 256)), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")

		// Canonical aliases must exist and point to the room.
		aliasHere := "#here-v" + ver + ":" + srv.Config.ServerName
		aliasThere := "#there-v" + ver + ":" + srv.Config.ServerName
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/directory/room/%s", aliasHere), map[string]any{"room_id": roomID}, http.StatusOK)
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/directory/room/%s", aliasThere), map[string]any{"room_id": other}, http.StatusOK)
		caPath := roomTStatePath(roomID, "m.room.canonical_alias", "")
		for _, content := range []map[string]any{
			{"alias": "#missing-v" + ver + ":" + srv.Config.ServerName},
			{"alias": aliasThere},
			{"alias": aliasHere, "alt_aliases": []string{aliasThere}},
		} {
			alice.MustFail("PUT", caPath, content, http.StatusBadRequest, "M_BAD_ALIAS")
		}
		roomTPutState(alice, roomID, "m.room.canonical_alias", "", map[string]any{"alias": aliasHere, "alt_aliases": []string{aliasHere}})
		if ca := roomTState(alice, roomID, "m.room.canonical_alias", ""); ca["alias"] != aliasHere {
			t.Fatalf("canonical alias %v", ca)
		}
		// Removing the alias is fine.
		roomTPutState(alice, roomID, "m.room.canonical_alias", "", map[string]any{})

		// Identical content from another sender is a new event.
		pl = roomTState(alice, roomID, "m.room.power_levels", "")
		roomTMap(t, pl["users"], "users")[bob.UserID] = 50
		roomTPutState(alice, roomID, "m.room.power_levels", "", pl)
		if byBob := roomTPutState(bob, roomID, "m.room.name", "", map[string]any{"name": "Two"}); byBob == second {
			t.Fatal("identical content from another sender returned the other sender's event")
		}
		ev = alice.MustDo("GET", roomTStatePath(roomID, "m.room.name", "")+"?format=event", nil, http.StatusOK)
		if ev["sender"] != bob.UserID {
			t.Fatalf("current m.room.name %v, want bob's", ev)
		}

		// The create event can never be replaced, and from room version 12
		// the power levels must not name a creator: both are bad requests
		// (400, as Synapse), not auth failures. (The suite had only checked
		// refusals by power level, which are 403.)
		alice.MustFail("PUT", roomTStatePath(roomID, "m.room.create", ""), map[string]any{"room_version": ver, "entropy": 1},
			http.StatusBadRequest, "M_BAD_JSON")
		if roomTPrivileged(ver) {
			pl = roomTState(alice, roomID, "m.room.power_levels", "")
			roomTMap(t, pl["users"], "users")[alice.UserID] = 100
			alice.MustFail("PUT", roomTStatePath(roomID, "m.room.power_levels", ""), pl, http.StatusBadRequest, "M_BAD_JSON")
		}

		// A member event's state key must be a user ID.
		for _, key := range []string{"not-a-user", "alice"} {
			roomTFail(alice, "PUT", roomTStatePath(roomID, "m.room.member", key), map[string]any{"membership": "join"},
				http.StatusBadRequest, "M_BAD_JSON", "M_INVALID_PARAM")
		}
	})
}

// PUT /rooms/{roomId}/redact: who may redact, what a redaction leaves of
// an event in each room version, and the client format of both events.
func TestRoomRedact(t *testing.T) {
	srv := testserver.Start(t)
	roomTEachVersion(t, func(t *testing.T, ver string) {
		alice := roomTUser(t, srv, "alice")
		bob := roomTUser(t, srv, "bob")
		bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", bob.UserID), map[string]any{"displayname": "Bob B"}, http.StatusOK)
		roomID := roomTCreate(alice, map[string]any{"room_version": ver, "preset": "public_chat"})
		roomTJoin(bob, roomID)
		redactPath := func(eventID, txn string) string {
			return testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", roomID, eventID, txn)
		}

		// bob redacts his own message.
		m1 := roomTSend(bob, roomID, "secret")
		txn := roomTTxn()
		r1 := roomTEventID(t, bob.MustDo("PUT", redactPath(m1, txn), map[string]any{"reason": "oops"}, http.StatusOK))
		if again := roomTEventID(t, bob.MustDo("PUT", redactPath(m1, txn), map[string]any{"reason": "oops"}, http.StatusOK)); again != r1 {
			t.Fatalf("retried redaction: %s, want %s", again, r1)
		}
		ev := roomTEvent(bob, roomID, m1)
		roomTCheckClientEvent(t, ev, roomID)
		if content := roomTMap(t, ev["content"], "content"); len(content) != 0 {
			t.Fatalf("redacted message content %v, want {}", content)
		}
		unsigned := roomTMap(t, ev["unsigned"], "unsigned")
		because := roomTMap(t, unsigned["redacted_because"], "unsigned.redacted_because")
		// A client event, with its event ID (Synapse serialises it as one).
		if because["event_id"] != r1 {
			t.Errorf("redacted_because.event_id = %v, want %s: %v", because["event_id"], r1, because)
			because["event_id"] = r1 // check the rest
		}
		roomTCheckClientEvent(t, because, roomID)
		if because["type"] != "m.room.redaction" || because["sender"] != bob.UserID {
			t.Fatalf("redacted_because %v, want the redaction %s", because, r1)
		}
		if roomTMap(t, because["content"], "redacted_because.content")["reason"] != "oops" {
			t.Fatalf("redacted_because without the reason: %v", because)
		}

		// The redaction event itself.
		red := roomTEvent(bob, roomID, r1)
		roomTCheckClientEvent(t, red, roomID)
		content := roomTMap(t, red["content"], "content")
		if red["type"] != "m.room.redaction" || red["redacts"] != m1 || content["reason"] != "oops" {
			t.Fatalf("redaction event %v, want top-level redacts %s and the reason", red, m1)
		}
		if ver == "11" || ver == "12" {
			if content["redacts"] != m1 {
				t.Fatalf("v%s redaction content %v, want redacts %s", ver, content, m1)
			}
		}

		// bob (power 0) may not redact alice's message.
		m2 := roomTSend(alice, roomID, "alice's")
		bob.MustFail("PUT", redactPath(m2, roomTTxn()), map[string]any{"reason": "no"}, http.StatusForbidden, "M_FORBIDDEN")
		if ev := roomTEvent(bob, roomID, m2); roomTMap(t, ev["content"], "content")["body"] != "alice's" {
			t.Fatalf("refused redaction changed the event: %v", ev)
		}
		// alice (power 100 / creator) may redact bob's.
		m3 := roomTSend(bob, roomID, "spam")
		roomTEventID(t, alice.MustDo("PUT", redactPath(m3, roomTTxn()), map[string]any{"reason": "spam"}, http.StatusOK))
		if ev := roomTEvent(bob, roomID, m3); len(roomTMap(t, ev["content"], "content")) != 0 {
			t.Fatalf("moderator's redaction left content: %v", ev)
		}

		// A member event keeps its membership only.
		join := alice.MustDo("GET", roomTStatePath(roomID, "m.room.member", bob.UserID)+"?format=event", nil, http.StatusOK)
		joinID := roomTEventID(t, join)
		if roomTMap(t, join["content"], "content")["displayname"] != "Bob B" {
			t.Fatalf("bob's join %v", join)
		}
		alice.MustDo("PUT", redactPath(joinID, roomTTxn()), map[string]any{"reason": "name"}, http.StatusOK)
		ev = roomTEvent(alice, roomID, joinID)
		if c := roomTMap(t, ev["content"], "content"); len(c) != 1 || c["membership"] != "join" {
			t.Fatalf("redacted member content %v, want {membership: join}", c)
		}
		if ev["state_key"] != bob.UserID {
			t.Fatalf("redacted member event lost its state key: %v", ev)
		}

		// The create event: v1-10 keep creator only, v11+ the whole content.
		room2 := roomTCreate(alice, map[string]any{"room_version": ver, "creation_content": map[string]any{"m.federate": true, "org.example.x": "y"}})
		createEv := alice.MustDo("GET", roomTStatePath(room2, "m.room.create", "")+"?format=event", nil, http.StatusOK)
		createID := roomTEventID(t, createEv)
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", room2, createID, roomTTxn()), map[string]any{}, http.StatusOK)
		ev = roomTEvent(alice, room2, createID)
		c := roomTMap(t, ev["content"], "content")
		if roomTCreatorInCreate(ver) {
			if len(c) != 1 || c["creator"] != alice.UserID {
				t.Fatalf("v%s redacted create content %v, want {creator}", ver, c)
			}
		} else if len(c) != 3 || c["room_version"] != ver || c["m.federate"] != true || c["org.example.x"] != "y" {
			t.Fatalf("v%s redacted create content %v, want all of it", ver, c)
		}
		if _, ok := roomTMap(t, ev["unsigned"], "unsigned")["redacted_because"]; !ok {
			t.Fatalf("redacted create event without redacted_because: %v", ev)
		}

		// Power 50 is enough to redact others' events.
		pl := roomTState(alice, roomID, "m.room.power_levels", "")
		roomTMap(t, pl["users"], "users")[bob.UserID] = 50
		roomTPutState(alice, roomID, "m.room.power_levels", "", pl)
		bob.MustDo("PUT", redactPath(m2, roomTTxn()), map[string]any{"reason": "moderated"}, http.StatusOK)
		if ev := roomTEvent(alice, roomID, m2); len(roomTMap(t, ev["content"], "content")) != 0 {
			t.Fatalf("redaction by a power-50 moderator left content: %v", ev)
		}

		// Redacting in an unknown room, or as a non-member.
		alice.MustFail("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/redact/%s/%s", "!unknown:"+srv.Config.ServerName, m2, roomTTxn()), map[string]any{},
			http.StatusNotFound, "M_NOT_FOUND")
		eve := roomTUser(t, srv, "eve")
		eve.MustFail("PUT", redactPath(m2, roomTTxn()), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	})
}
