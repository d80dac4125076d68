package tests

import (
	"net/http"
	"net/url"
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
