package tests

import (
	"net/http"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// filterPath is /user/{userId}/filter, or /user/{userId}/filter/{filterId}.
func filterPath(userID string, filterID ...string) string {
	p := testutil.Path("/_matrix/client/v3/user/%s/filter", userID)
	for _, id := range filterID {
		p += "/" + testutil.Path("%s", id)
	}
	return p
}

// uploadFilter creates a filter and returns its ID.
func uploadFilter(c *testutil.Client, f any) string {
	c.T.Helper()
	m := c.MustDo("POST", filterPath(c.UserID), f, http.StatusOK)
	id, ok := m["filter_id"].(string)
	if !ok || id == "" || strings.HasPrefix(id, "{") {
		c.T.Fatalf("filter_id = %v: want a non-empty string not starting with {", m["filter_id"])
	}
	return id
}

func TestFilterRoundTrip(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	room := "!room:" + srv.Config.ServerName
	full := map[string]any{
		"event_fields": []any{"type", "content", "sender"},
		"event_format": "client",
		"presence":     map[string]any{"not_senders": []any{"@spam:example.org"}, "limit": 10.0},
		"account_data": map[string]any{"types": []any{"m.*"}},
		"room": map[string]any{
			"rooms":         []any{room},
			"not_rooms":     []any{"!other:example.org"},
			"include_leave": true,
			"timeline":      map[string]any{"limit": 10.0, "types": []any{"m.room.message"}, "contains_url": true, "lazy_load_members": true},
			"state":         map[string]any{"types": []any{"m.room.*"}, "not_types": []any{"m.room.member"}, "lazy_load_members": true, "include_redundant_members": true},
			"ephemeral":     map[string]any{"types": []any{"m.receipt", "m.typing"}, "senders": []any{alice.UserID}},
			"account_data":  map[string]any{"not_rooms": []any{room}, "unread_thread_notifications": true},
		},
	}
	for name, f := range map[string]map[string]any{"empty": {}, "full": full, "federation format": {"event_format": "federation"}} {
		t.Run(name, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
			id := uploadFilter(c, f)
			got := c.MustDo("GET", filterPath(alice.UserID, id), nil, http.StatusOK)
			if !sameJSON(t, got, f) {
				t.Fatalf("GET filter %s = %v, want %v", id, got, f)
			}
			// The legacy prefix serves the same filter.
			if got := c.MustDo("GET", "/_matrix/client/r0"+strings.TrimPrefix(filterPath(alice.UserID, id), "/_matrix/client/v3"), nil, http.StatusOK); !sameJSON(t, got, f) {
				t.Fatalf("GET r0 filter %s = %v", id, got)
			}
		})
	}

	t.Run("same filter, same id", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		a := uploadFilter(c, full)
		if b := uploadFilter(c, full); b != a {
			t.Fatalf("re-uploading a filter gave id %s, first was %s", b, a)
		}
		other := uploadFilter(c, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 5}}})
		if other == a {
			t.Fatalf("different filters share id %s", a)
		}
	})
	// Synapse stores filters as canonical JSON, so key order and white
	// space do not make a different filter.
	t.Run("same filter written differently, same id", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		a := uploadFilter(c, testutil.Raw(`{"room":{"timeline":{"limit":7,"types":["m.room.message"]}},"event_format":"client"}`))
		b := uploadFilter(c, testutil.Raw(`{ "event_format": "client",
			"room": { "timeline": { "types": [ "m.room.message" ], "limit": 7 } } }`))
		if a != b {
			t.Fatalf("equal filters got ids %s and %s", a, b)
		}
	})
}

func TestFilterValidation(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	for _, body := range []string{
		`{"event_format":"xml"}`,
		`{"event_format":5}`,
		`{"event_fields":"type"}`,
		`{"event_fields":[1]}`,
		`{"presence":{"limit":-1}}`,
		`{"room":{"timeline":{"limit":-1}}}`,
		`{"room":{"state":{"limit":-3}}}`,
		`{"room":{"timeline":{"limit":"ten"}}}`,
		`{"room":{"timeline":{"limit":1.5}}}`,
		`{"room":{"rooms":["#alias:example.org"]}}`,
		`{"room":{"rooms":["not a room"]}}`,
		`{"room":{"not_rooms":["@user:example.org"]}}`,
		`{"room":{"timeline":{"rooms":["#alias:example.org"]}}}`,
		`{"room":{"rooms":"!room:example.org"}}`,
		`{"room":{"state":{"types":"m.room.name"}}}`,
		`{"room":{"timeline":{"not_types":[true]}}}`,
		`{"room":{"include_leave":"yes"}}`,
		`{"room":{"timeline":{"contains_url":"true"}}}`,
		`{"room":{"timeline":{"lazy_load_members":1}}}`,
		`{"presence":{"senders":["bob"]}}`,
		`{"presence":[]}`,
		`{"room":[]}`,
		`{"room":"all"}`,
		`{"room":null}`,
		`{"event_format":null}`,
		`[]`,
		`"filter"`,
	} {
		t.Run(body, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
			c.MustFail("POST", filterPath(alice.UserID), testutil.Raw(body), http.StatusBadRequest, "M_BAD_JSON")
		})
	}
	t.Run("not JSON", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		for _, body := range []string{`{"room":`, `{room:{}}`, ``} {
			c.MustFail("POST", filterPath(alice.UserID), testutil.Raw(body), http.StatusBadRequest, "M_NOT_JSON")
		}
	})
	// A valid filter is still accepted after the rejected ones.
	id := uploadFilter(alice, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}})
	if m := alice.MustDo("GET", filterPath(alice.UserID, id), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}) {
		t.Fatalf("filter %s = %v", id, m)
	}
}

func TestFilterAccessControl(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	aliceFilter := map[string]any{"room": map[string]any{"timeline": map[string]any{"types": []any{"com.example.alice"}}}}
	id := uploadFilter(alice, aliceFilter)

	t.Run("other user's filters", func(t *testing.T) {
		b := testutil.NewClient(t, srv.URL).As(bob.UserID, bob.DeviceID, bob.AccessToken)
		b.MustFail("GET", filterPath(alice.UserID, id), nil, http.StatusForbidden, "M_FORBIDDEN")
		b.MustFail("POST", filterPath(alice.UserID), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		// Alice's filter is not bob's, whatever its id.
		b.MustFail("GET", filterPath(bob.UserID, id), nil, http.StatusNotFound, "M_NOT_FOUND")
		bobFilter := map[string]any{"presence": map[string]any{"types": []any{"com.example.bob"}}}
		bid := uploadFilter(b, bobFilter)
		if m := b.MustDo("GET", filterPath(bob.UserID, bid), nil, http.StatusOK); !sameJSON(t, m, bobFilter) {
			t.Fatalf("bob's filter %s = %v, want %v", bid, m, bobFilter)
		}
		a := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		if m := a.MustDo("GET", filterPath(alice.UserID, id), nil, http.StatusOK); !sameJSON(t, m, aliceFilter) {
			t.Fatalf("alice's filter %s = %v, want %v", id, m, aliceFilter)
		}
	})
	t.Run("unknown filter", func(t *testing.T) {
		a := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		for _, unknown := range []string{"12345", "999999999999"} {
			a.MustFail("GET", filterPath(alice.UserID, unknown), nil, http.StatusNotFound, "M_NOT_FOUND")
		}
	})
	t.Run("no access token", func(t *testing.T) {
		anon := testutil.NewClient(t, srv.URL)
		anon.MustFail("POST", filterPath(alice.UserID), map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
		anon.MustFail("GET", filterPath(alice.UserID, id), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}
