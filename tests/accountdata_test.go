package tests

import (
	"net/http"
	"testing"
	"time"

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
	// A PUT of {} deletes (MSC3391, TestAccountDataDeletion).
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.settings", room), map[string]any{}, http.StatusOK)
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.settings", room), nil, http.StatusNotFound, "M_NOT_FOUND")

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

// msc3391Path is the unstable DELETE path of an account data item.
func msc3391Path(userID, dataType string, roomID ...string) string {
	if len(roomID) > 0 {
		return testutil.Path("/_matrix/client/unstable/org.matrix.msc3391/user/%s/rooms/%s/account_data/%s", userID, roomID[0], dataType)
	}
	return testutil.Path("/_matrix/client/unstable/org.matrix.msc3391/user/%s/account_data/%s", userID, dataType)
}

// accountDataIn returns the item of the type in a sync's global account
// data (room "") or a joined room's, waiting up to 5 s for it to come,
// and the sync's next_batch.
func accountDataIn(t *testing.T, c *testutil.Client, since, roomID, dataType string) (map[string]any, string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := syncTSince(c, since, "timeout", "1000")
		evs := syncTList(s.AccountData)
		if roomID != "" {
			evs = nil
			if j := s.Rooms.Join[roomID]; j != nil {
				evs = syncTList(j.AccountData)
			}
		}
		if e := syncTOfType(evs, dataType); e != nil || time.Now().After(deadline) {
			return e, s.NextBatch
		}
		since = s.NextBatch
	}
}

// Deleting account data (MSC3391, as Synapse with it enabled): the DELETE
// endpoints and a PUT of {} remove the item, GET is 404 after, an
// incremental sync shows the deletion as content {}, an initial sync omits
// the item. The repository's suites had only the stable PUT/GET, and
// stored {} as content (Complement's msc3391 package runs the same cases).
func TestAccountDataDeletion(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)
	const typ = "org.example.test"
	content := map[string]any{"test_data": 1.0}

	for _, tc := range []struct {
		name   string
		roomID string
		put    bool
	}{{"global via DELETE", "", false}, {"global via PUT", "", true}, {"room via DELETE", room, false}, {"room via PUT", room, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rooms := []string{}
			if tc.roomID != "" {
				rooms = append(rooms, tc.roomID)
			}
			since := syncTInitial(alice).NextBatch
			alice.MustDo("PUT", accountDataPath(alice.UserID, typ, rooms...), content, http.StatusOK)
			e, since := accountDataIn(t, alice, since, tc.roomID, typ)
			if e == nil || !sameJSON(t, e["content"].(map[string]any), content) {
				t.Fatalf("sync after PUT: %v, want content %v", e, content)
			}
			if tc.put {
				alice.MustDo("PUT", accountDataPath(alice.UserID, typ, rooms...), map[string]any{}, http.StatusOK)
			} else {
				alice.MustDo("DELETE", msc3391Path(alice.UserID, typ, rooms...), nil, http.StatusOK)
			}
			alice.MustFail("GET", accountDataPath(alice.UserID, typ, rooms...), nil, http.StatusNotFound, "M_NOT_FOUND")
			e, _ = accountDataIn(t, alice, since, tc.roomID, typ)
			if e == nil || len(e["content"].(map[string]any)) != 0 {
				t.Fatalf("incremental sync after the deletion: %v, want content {}", e)
			}
			s := syncTInitial(alice)
			evs := syncTList(s.AccountData)
			if tc.roomID != "" {
				evs = syncTList(syncTJoin(t, s, tc.roomID).AccountData)
			}
			if syncTHasType(evs, typ) {
				t.Fatalf("initial sync still has the deleted item: %s", syncTShort(s.Body))
			}
			// Deleting what is not set changes nothing.
			alice.MustDo("DELETE", msc3391Path(alice.UserID, typ, rooms...), nil, http.StatusOK)
		})
	}

	t.Run("errors", func(t *testing.T) {
		bob := srv.Client().Register("bob", "pw")
		alice.MustDo("PUT", accountDataPath(alice.UserID, typ), content, http.StatusOK)
		bob.MustFail("DELETE", msc3391Path(alice.UserID, typ), nil, http.StatusForbidden, "M_FORBIDDEN")
		bob.MustFail("DELETE", msc3391Path(alice.UserID, typ, room), nil, http.StatusForbidden, "M_FORBIDDEN")
		testutil.NewClient(t, srv.URL).MustFail("DELETE", msc3391Path(alice.UserID, typ), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
		alice.MustFail("DELETE", msc3391Path(alice.UserID, "m.push_rules"), nil, http.StatusMethodNotAllowed, "M_BAD_JSON")
		alice.MustFail("DELETE", msc3391Path(alice.UserID, typ, "not-a-room"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
		if m := alice.MustDo("GET", accountDataPath(alice.UserID, typ), nil, http.StatusOK); !sameJSON(t, m, content) {
			t.Fatalf("alice's data after refused deletions = %v", m)
		}
		// The stable prefix has no DELETE.
		alice.MustFail("DELETE", accountDataPath(alice.UserID, typ), nil, http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	})
}
