package tests

import (
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// accountDataPath is the global account data path of a type, or the
// per-room one when a room ID is given.
func accountDataPath(userID, dataType string, roomID ...string) string {
	if len(roomID) > 0 {
		return testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/account_data/%s", userID, roomID[0], dataType)
	}
	return testutil.Path("/_matrix/client/v3/user/%s/account_data/%s", userID, dataType)
}

func TestAccountDataRoundTrip(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	room := "!room:" + srv.Config.ServerName
	other := "!other:" + srv.Config.ServerName

	global := map[string]any{"theme": "dark", "n": 3.0, "nested": map[string]any{"list": []any{1.0, "two", nil, true}}}
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.settings"), global, http.StatusOK)
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.settings"), nil, http.StatusOK); !sameJSON(t, m, global) {
		t.Fatalf("global account data = %v, want %v", m, global)
	}

	// Room account data of the same type is separate from the global one
	// and from other rooms.
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.settings", room), nil, http.StatusNotFound, "M_NOT_FOUND")
	inRoom := map[string]any{"room": "value"}
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.settings", room), inRoom, http.StatusOK)
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.settings", room), nil, http.StatusOK); !sameJSON(t, m, inRoom) {
		t.Fatalf("room account data = %v, want %v", m, inRoom)
	}
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.settings"), nil, http.StatusOK); !sameJSON(t, m, global) {
		t.Fatalf("room PUT changed global account data: %v", m)
	}
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.settings", other), nil, http.StatusNotFound, "M_NOT_FOUND")

	// A PUT replaces the whole content.
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.settings"), map[string]any{"theme": "light"}, http.StatusOK)
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.settings"), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"theme": "light"}) {
		t.Fatalf("after overwrite = %v, want only {theme: light}", m)
	}
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.settings", room), map[string]any{}, http.StatusOK)
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.settings", room), nil, http.StatusOK); len(m) != 0 {
		t.Fatalf("room data after overwrite with {} = %v", m)
	}

	// Unset types are 404.
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.unset"), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.unset", room), nil, http.StatusNotFound, "M_NOT_FOUND")

	// Account data is per user.
	bob := srv.Client().Register("bob", "pw")
	bob.MustFail("GET", accountDataPath(bob.UserID, "com.example.settings"), nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("GET", accountDataPath(bob.UserID, "com.example.settings", room), nil, http.StatusNotFound, "M_NOT_FOUND")
}

func TestAccountDataErrors(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	room := "!room:" + srv.Config.ServerName
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.a"), map[string]any{"secret": 1}, http.StatusOK)
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.a", room), map[string]any{"secret": 2}, http.StatusOK)
	as := func(t *testing.T, c *testutil.Client) *testutil.Client {
		return testutil.NewClient(t, srv.URL).As(c.UserID, c.DeviceID, c.AccessToken)
	}

	t.Run("other user's account data", func(t *testing.T) {
		b := as(t, bob)
		for _, p := range []string{accountDataPath(alice.UserID, "com.example.a"), accountDataPath(alice.UserID, "com.example.a", room)} {
			b.MustFail("GET", p, nil, http.StatusForbidden, "M_FORBIDDEN")
			b.MustFail("PUT", p, map[string]any{"evil": true}, http.StatusForbidden, "M_FORBIDDEN")
		}
		a := as(t, alice)
		if m := a.MustDo("GET", accountDataPath(alice.UserID, "com.example.a"), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"secret": 1}) {
			t.Fatalf("alice's data changed: %v", m)
		}
		if m := a.MustDo("GET", accountDataPath(alice.UserID, "com.example.a", room), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"secret": 2}) {
			t.Fatalf("alice's room data changed: %v", m)
		}
	})
	t.Run("no access token", func(t *testing.T) {
		anon := testutil.NewClient(t, srv.URL)
		anon.MustFail("GET", accountDataPath(alice.UserID, "com.example.a"), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
		anon.MustFail("PUT", accountDataPath(alice.UserID, "com.example.a"), map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
		anon.MustFail("GET", accountDataPath(alice.UserID, "com.example.a", room), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
	t.Run("m.fully_read is server managed", func(t *testing.T) {
		a := as(t, alice)
		body := map[string]any{"event_id": "$event:" + srv.Config.ServerName}
		a.MustFail("PUT", accountDataPath(alice.UserID, "m.fully_read"), body, http.StatusMethodNotAllowed, "M_BAD_JSON")
		a.MustFail("PUT", accountDataPath(alice.UserID, "m.fully_read", room), body, http.StatusMethodNotAllowed, "M_BAD_JSON")
	})
	t.Run("invalid room ID", func(t *testing.T) {
		a := as(t, alice)
		for _, bad := range []string{"#alias:" + srv.Config.ServerName, "room", "@alice:" + srv.Config.ServerName} {
			a.MustFail("GET", accountDataPath(alice.UserID, "com.example.a", bad), nil, http.StatusBadRequest, "M_INVALID_PARAM")
			a.MustFail("PUT", accountDataPath(alice.UserID, "com.example.a", bad), map[string]any{"a": 1}, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
	t.Run("body not a JSON object", func(t *testing.T) {
		a := as(t, alice)
		for _, body := range []string{`[]`, `[{"a":1}]`, `"string"`, `42`, `true`, `null`} {
			a.MustFail("PUT", accountDataPath(alice.UserID, "com.example.b"), testutil.Raw(body), http.StatusBadRequest, "M_BAD_JSON")
			a.MustFail("PUT", accountDataPath(alice.UserID, "com.example.b", room), testutil.Raw(body), http.StatusBadRequest, "M_BAD_JSON")
		}
		for _, body := range []string{`{"a":`, `{a:1}`, `not json`, ``} {
			a.MustFail("PUT", accountDataPath(alice.UserID, "com.example.b"), testutil.Raw(body), http.StatusBadRequest, "M_NOT_JSON")
			a.MustFail("PUT", accountDataPath(alice.UserID, "com.example.b", room), testutil.Raw(body), http.StatusBadRequest, "M_NOT_JSON")
		}
		a.MustFail("GET", accountDataPath(alice.UserID, "com.example.b"), nil, http.StatusNotFound, "M_NOT_FOUND")
		a.MustFail("GET", accountDataPath(alice.UserID, "com.example.b", room), nil, http.StatusNotFound, "M_NOT_FOUND")
	})
}
