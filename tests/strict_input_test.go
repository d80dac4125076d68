package tests

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Path parameters and query values that are not valid UTF-8 once unescaped,
// or carry NUL, are 400 M_INVALID_PARAM. Before, the transaction IDs %FF%FE
// and %C0%AF both became "\ufffd\ufffd" and the second message was dropped as
// a retry of the first (the suite had only sent ASCII transaction IDs).
func TestStrictInputPathAndQuery(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{})
	room := url.PathEscape(roomID)
	msg := map[string]any{"msgtype": "m.text", "body": "hi"}
	for _, txn := range []string{"%FF%FE", "%C0%AF", "a%00b", "%ED%A0%80"} {
		roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+txn, msg, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.%FF/t1", msg, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/%21x%FF%3Aexample.org/send/m.room.message/t1", msg, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.topic/%00", map[string]any{"topic": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&from=%FF", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&filter=%7B%22a%00%22%7D", nil, http.StatusBadRequest, "M_INVALID_PARAM")

	// Valid non-ASCII transaction IDs are distinct transactions.
	first := roomTEventID(t, alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/%C3%A9", msg, http.StatusOK))
	second := roomTEventID(t, alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/%C3%A8", msg, http.StatusOK))
	if first == second {
		t.Fatalf("transactions é and è gave the same event %s", first)
	}
}

// JSON bodies with a lone surrogate escape (encoding/json decodes it as
// U+FFFD), duplicate keys (the last silently wins) or NUL in a string are
// refused, in event content and elsewhere; a surrogate pair is fine. The
// suite had only sent bodies that Go's encoder had written.
func TestStrictInputJSONBodies(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{})
	send := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
	for _, tc := range []struct{ body, code string }{
		{`{"msgtype":"m.text","body":"\ud800"}`, "M_NOT_JSON"},
		{`{"msgtype":"m.text","body":"\udc00\ud83d"}`, "M_NOT_JSON"},
		{`{"msgtype":"m.text","body":"a","body":"b"}`, "M_BAD_JSON"},
		{`{"msgtype":"m.text","body":"a","x":{"k":1,"k":2}}`, "M_BAD_JSON"},
		{`{"msgtype":"m.text","body":"a\u0000b"}`, "M_BAD_JSON"},
	} {
		roomTFail(alice, "PUT", send+roomTTxn(), testutil.Raw(tc.body), http.StatusBadRequest, tc.code)
	}
	roomTFail(alice, "PUT", roomTStatePath(roomID, "m.room.topic", ""), testutil.Raw(`{"topic":"a","topic":"b"}`), http.StatusBadRequest, "M_BAD_JSON")
	roomTFail(alice, "PUT", accountDataPath(alice.UserID, "com.example.x"), testutil.Raw(`{"a":"\ud800"}`), http.StatusBadRequest, "M_NOT_JSON")

	id := roomTEventID(t, alice.MustDo("PUT", send+roomTTxn(), testutil.Raw(`{"msgtype":"m.text","body":"\ud83d\ude00"}`), http.StatusOK))
	if body := roomTMap(t, roomTEvent(alice, roomID, id)["content"], "content")["body"]; body != "😀" {
		t.Fatalf("body %q, want 😀", body)
	}
}

// Identifiers are at most 255 bytes (device IDs, transaction IDs, event
// types and state keys too) and account data objects at most 64 KiB, each
// a clear 4xx; joining an over-long room ID is 400, not a 502 from trying to
// reach its server. The suite had never sent over-long identifiers.
func TestStrictInputLengths(t *testing.T) {
	srv := testserver.Start(t)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{})
	room := url.PathEscape(roomID)
	long, max := strings.Repeat("x", 256), strings.Repeat("x", 255)
	msg := map[string]any{"msgtype": "m.text", "body": "hi"}

	login := func(deviceID string) *testutil.Response {
		return srv.Client().Do("POST", "/_matrix/client/v3/login", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice.UserID},
			"password": "pw", "device_id": deviceID})
	}
	checkMatrixError(t, "login with a long device_id", login(long), http.StatusBadRequest, "M_INVALID_PARAM")
	if r := login(max); r.Status != http.StatusOK {
		t.Fatalf("login with a 255-byte device_id: %d %s", r.Status, r.Body)
	}
	checkMatrixError(t, "register with a long device_id", srv.Client().Do("POST", "/_matrix/client/v3/register", map[string]any{
		"username": "longdev", "password": "pw", "device_id": long, "auth": map[string]any{"type": "m.login.dummy"}}),
		http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "GET", "/_matrix/client/v3/devices/"+long, nil, http.StatusBadRequest, "M_INVALID_PARAM")

	roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+long, msg, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/"+long+"/t1", msg, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/"+max, msg, http.StatusOK)
	roomTFail(alice, "PUT", roomTStatePath(roomID, "com.example.s", long), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "PUT", roomTStatePath(roomID, long, ""), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustDo("PUT", roomTStatePath(roomID, "com.example.s", max), map[string]any{}, http.StatusOK)
	roomTFail(alice, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+long, map[string]any{"messages": map[string]any{}}, http.StatusBadRequest, "M_INVALID_PARAM")

	longRoom := "!" + strings.Repeat("r", 300) + ":elsewhere.example"
	roomTFail(alice, "POST", testutil.Path("/_matrix/client/v3/join/%s", longRoom), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	roomTFail(alice, "POST", testutil.Path("/_matrix/client/v3/rooms/%s/join", longRoom), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")

	big := map[string]any{"v": strings.Repeat("a", 64<<10)}
	roomTFail(alice, "PUT", accountDataPath(alice.UserID, "com.example.big"), big, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	roomTFail(alice, "PUT", testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/account_data/com.example.big", alice.UserID, roomID), big, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.big"), map[string]any{"v": strings.Repeat("a", 60<<10)}, http.StatusOK)
	roomTFail(alice, "PUT", accountDataPath(alice.UserID, long), map[string]any{"a": 1}, http.StatusBadRequest, "M_INVALID_PARAM")
}
