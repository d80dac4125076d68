package tests

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// profilePath is /_matrix/client/v3/profile/{userId}, or
// /_matrix/client/v3/profile/{userId}/{keyName} when a key is given.
func profilePath(userID string, key ...string) string {
	p := "/_matrix/client/v3/profile/" + url.PathEscape(userID)
	for _, k := range key {
		p += "/" + url.PathEscape(k)
	}
	return p
}

// sameJSON reports whether a and b are equal once both are decoded JSON
// values (numbers are float64 on both sides).
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	return reflect.DeepEqual(roundTripJSON(t, a), roundTripJSON(t, b))
}

func roundTripJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	var out any
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		t.Fatalf("round-trip %v through JSON: %v", v, err)
	}
	return out
}

// A new user's display name is their localpart; display name and avatar
// round-trip through the field endpoints and the whole-profile endpoint,
// which needs no access token.
func TestProfileDisplayNameAndAvatar(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	anon := srv.Client()

	m := anon.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK)
	if len(m) != 1 || m["displayname"] != "alice" {
		t.Fatalf("default displayname = %v, want {displayname: alice}", m)
	}

	alice.MustDo("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "Alice Wonderland"}, http.StatusOK)
	alice.MustDo("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://example.org/SDGdghriugerRg"}, http.StatusOK)
	if m := anon.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK); len(m) != 1 || m["displayname"] != "Alice Wonderland" {
		t.Fatalf("displayname = %v", m)
	}
	if m := anon.MustDo("GET", profilePath(alice.UserID, "avatar_url"), nil, http.StatusOK); len(m) != 1 || m["avatar_url"] != "mxc://example.org/SDGdghriugerRg" {
		t.Fatalf("avatar_url = %v", m)
	}
	m = anon.MustDo("GET", profilePath(alice.UserID), nil, http.StatusOK)
	if m["displayname"] != "Alice Wonderland" || m["avatar_url"] != "mxc://example.org/SDGdghriugerRg" {
		t.Fatalf("profile = %v", m)
	}

	// Any string is an avatar URL, as Synapse stores it (Complement
	// TestAvatarUrlUpdate sets "LemurLover"); a non-string is not.
	for _, odd := range []string{"LemurLover", "https://example.org/a.png", "mxc:/example.org/a"} {
		alice.MustDo("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": odd}, http.StatusOK)
		if m := anon.MustDo("GET", profilePath(alice.UserID, "avatar_url"), nil, http.StatusOK); m["avatar_url"] != odd {
			t.Fatalf("avatar_url = %v, want %s", m, odd)
		}
	}
	alice.MustFail("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": 5}, http.StatusBadRequest, "M_BAD_JSON")
	alice.MustDo("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": "mxc://example.org/SDGdghriugerRg"}, http.StatusOK)

	// Setting an empty display name or avatar removes it.
	alice.MustDo("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": ""}, http.StatusOK)
	alice.MustDo("PUT", profilePath(alice.UserID, "avatar_url"), map[string]any{"avatar_url": ""}, http.StatusOK)
	anon.MustFail("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusNotFound, "M_NOT_FOUND")
	anon.MustFail("GET", profilePath(alice.UserID, "avatar_url"), nil, http.StatusNotFound, "M_NOT_FOUND")
	m = anon.MustDo("GET", profilePath(alice.UserID), nil, http.StatusOK)
	if _, ok := m["displayname"]; ok {
		t.Fatalf("cleared displayname still in profile: %v", m)
	}
	if _, ok := m["avatar_url"]; ok {
		t.Fatalf("cleared avatar_url still in profile: %v", m)
	}

	// The legacy r0 prefix serves the same profile.
	alice.MustDo("PUT", "/_matrix/client/r0/profile/"+url.PathEscape(alice.UserID)+"/displayname", map[string]any{"displayname": "Via r0"}, http.StatusOK)
	if m := anon.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK); m["displayname"] != "Via r0" {
		t.Fatalf("displayname after r0 PUT = %v", m)
	}
}

// Custom fields (m.tz and namespaced keys) take any JSON value and can be
// deleted (v1.16).
func TestProfileCustomFields(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	anon := srv.Client()

	values := map[string]any{
		"m.tz":                    "Europe/London",
		"com.example.string":      "value",
		"com.example.number":      42.5,
		"com.example.bool":        true,
		"com.example.list":        []any{"a", 1.0, false, nil},
		"com.example.object":      map[string]any{"nested": map[string]any{"deep": []any{1.0, 2.0}}},
		"org.example_2.under_key": "x",
	}
	for k, v := range values {
		alice.MustDo("PUT", profilePath(alice.UserID, k), map[string]any{k: v}, http.StatusOK)
		m := anon.MustDo("GET", profilePath(alice.UserID, k), nil, http.StatusOK)
		if len(m) != 1 || !sameJSON(t, m[k], v) {
			t.Errorf("GET %s = %v, want {%s: %v}", k, m, k, v)
		}
	}
	all := anon.MustDo("GET", profilePath(alice.UserID), nil, http.StatusOK)
	for k, v := range values {
		if !sameJSON(t, all[k], v) {
			t.Errorf("profile[%s] = %v, want %v", k, all[k], v)
		}
	}
	if all["displayname"] != "alice" {
		t.Errorf("profile lost the displayname: %v", all)
	}

	// Overwriting replaces the value; other body keys are not stored.
	alice.MustDo("PUT", profilePath(alice.UserID, "com.example.object"), map[string]any{"com.example.object": map[string]any{"b": 2.0}}, http.StatusOK)
	if m := anon.MustDo("GET", profilePath(alice.UserID, "com.example.object"), nil, http.StatusOK); !sameJSON(t, m["com.example.object"], map[string]any{"b": 2.0}) {
		t.Fatalf("after overwrite: %v", m)
	}

	// A key of 255 bytes is fine.
	long := "com." + strings.Repeat("a", 251)
	alice.MustDo("PUT", profilePath(alice.UserID, long), map[string]any{long: 1}, http.StatusOK)

	// DELETE removes a field; deleting a missing one is fine too.
	alice.MustDo("DELETE", profilePath(alice.UserID, "com.example.string"), nil, http.StatusOK)
	anon.MustFail("GET", profilePath(alice.UserID, "com.example.string"), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("DELETE", profilePath(alice.UserID, "com.example.string"), nil, http.StatusOK)
	alice.MustDo("DELETE", profilePath(alice.UserID, "m.tz"), nil, http.StatusOK)
	alice.MustDo("DELETE", profilePath(alice.UserID, "displayname"), nil, http.StatusOK)
	all = anon.MustDo("GET", profilePath(alice.UserID), nil, http.StatusOK)
	for _, k := range []string{"com.example.string", "m.tz", "displayname"} {
		if _, ok := all[k]; ok {
			t.Errorf("deleted field %s still in profile: %v", k, all)
		}
	}
	if !sameJSON(t, all["com.example.bool"], true) {
		t.Errorf("delete removed other fields: %v", all)
	}

	// A null custom value, if accepted, is stored rather than treated as a
	// deletion.
	r := alice.Do("PUT", profilePath(alice.UserID, "com.example.bool"), testutil.Raw(`{"com.example.bool": null}`))
	if r.Status == http.StatusOK {
		m := anon.MustDo("GET", profilePath(alice.UserID, "com.example.bool"), nil, http.StatusOK)
		if v, ok := m["com.example.bool"]; !ok || v != nil {
			t.Errorf("null value not stored: %v", m)
		}
	} else if r.Status != http.StatusBadRequest {
		t.Errorf("PUT null custom value: status %d: %s", r.Status, r.Body)
	}
}

func TestProfileValidation(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	put := func(t *testing.T, key string, body any, status int, errcode string) {
		t.Helper()
		testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken).
			MustFail("PUT", profilePath(alice.UserID, key), body, status, errcode)
	}
	// Keys outside the common namespaced identifier grammar, and keys the
	// keyName pattern of the specification excludes as well.
	badKeys := []string{"Com.example.field", "com.Example", "1com.example", ".com.example", "com.ex ample", "com.ex$ample", "_com.example"}
	badPatternKeys := []string{"nodots", "com..example", "com.example.", "com.example-field"}

	t.Run("invalid key on PUT and DELETE", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL).As(alice.UserID, alice.DeviceID, alice.AccessToken)
		for _, k := range append(badKeys, badPatternKeys...) {
			c.MustFail("PUT", profilePath(alice.UserID, k), map[string]any{k: "v"}, http.StatusBadRequest, "M_INVALID_PARAM")
			c.MustFail("DELETE", profilePath(alice.UserID, k), nil, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
	// Synapse validates the key name on GET as well.
	t.Run("invalid key on GET", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		for _, k := range badKeys {
			c.MustFail("GET", profilePath(alice.UserID, k), nil, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
	t.Run("key too long", func(t *testing.T) {
		k := "com." + strings.Repeat("a", 252)
		put(t, k, map[string]any{k: "v"}, http.StatusBadRequest, "M_KEY_TOO_LARGE")
	})
	t.Run("body without the key", func(t *testing.T) {
		put(t, "displayname", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		put(t, "displayname", map[string]any{"avatar_url": "mxc://a/b"}, http.StatusBadRequest, "M_MISSING_PARAM")
		put(t, "com.example.field", map[string]any{"com.example.other": 1}, http.StatusBadRequest, "M_MISSING_PARAM")
	})
	t.Run("displayname and avatar_url must be strings", func(t *testing.T) {
		for _, v := range []string{`42`, `true`, `{"a":"b"}`, `["x"]`} {
			put(t, "displayname", testutil.Raw(`{"displayname":`+v+`}`), http.StatusBadRequest, "M_BAD_JSON")
			put(t, "avatar_url", testutil.Raw(`{"avatar_url":`+v+`}`), http.StatusBadRequest, "M_BAD_JSON")
		}
		c := testutil.NewClient(t, srv.URL)
		if m := c.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK); m["displayname"] != "alice" {
			t.Fatalf("rejected PUTs changed the displayname: %v", m)
		}
	})
	// null is not a string either, and the specification says a null must
	// not be taken as a deletion.
	t.Run("null displayname and avatar_url", func(t *testing.T) {
		put(t, "displayname", testutil.Raw(`{"displayname":null}`), http.StatusBadRequest, "M_BAD_JSON")
		put(t, "avatar_url", testutil.Raw(`{"avatar_url":null}`), http.StatusBadRequest, "M_BAD_JSON")
	})
	t.Run("body not an object or not JSON", func(t *testing.T) {
		put(t, "displayname", testutil.Raw(`["displayname"]`), http.StatusBadRequest, "M_BAD_JSON")
		put(t, "displayname", testutil.Raw(`"alice"`), http.StatusBadRequest, "M_BAD_JSON")
		put(t, "displayname", testutil.Raw(`{"displayname":`), http.StatusBadRequest, "M_NOT_JSON")
	})
}

// The whole profile must stay under 64 KiB.
func TestProfileSizeLimit(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	anon := srv.Client()
	alice.MustFail("PUT", profilePath(alice.UserID, "com.example.huge"), map[string]any{"com.example.huge": strings.Repeat("x", 64*1024)},
		http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	anon.MustFail("GET", profilePath(alice.UserID, "com.example.huge"), nil, http.StatusNotFound, "M_NOT_FOUND")

	// Each field alone fits, together they do not.
	alice.MustDo("PUT", profilePath(alice.UserID, "com.example.a"), map[string]any{"com.example.a": strings.Repeat("a", 40*1024)}, http.StatusOK)
	alice.MustFail("PUT", profilePath(alice.UserID, "com.example.b"), map[string]any{"com.example.b": strings.Repeat("b", 40*1024)},
		http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	anon.MustFail("GET", profilePath(alice.UserID, "com.example.b"), nil, http.StatusNotFound, "M_NOT_FOUND")
	// Replacing the big field with a small one makes room again.
	alice.MustDo("PUT", profilePath(alice.UserID, "com.example.a"), map[string]any{"com.example.a": "small"}, http.StatusOK)
	alice.MustDo("PUT", profilePath(alice.UserID, "com.example.b"), map[string]any{"com.example.b": strings.Repeat("b", 40*1024)}, http.StatusOK)
}

func TestProfileAccessControl(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob := c.Register("bob", "pw")

	t.Run("other user's profile is read-only", func(t *testing.T) {
		b := testutil.NewClient(t, srv.URL).As(bob.UserID, bob.DeviceID, bob.AccessToken)
		for _, k := range []string{"displayname", "avatar_url", "m.tz", "com.example.field"} {
			b.MustFail("PUT", profilePath(alice.UserID, k), map[string]any{k: "mxc://x/y"}, http.StatusForbidden, "M_FORBIDDEN")
			b.MustFail("DELETE", profilePath(alice.UserID, k), nil, http.StatusForbidden, "M_FORBIDDEN")
		}
		if m := b.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK); m["displayname"] != "alice" {
			t.Fatalf("alice's displayname = %v", m)
		}
	})
	t.Run("no access token", func(t *testing.T) {
		anon := testutil.NewClient(t, srv.URL)
		anon.MustFail("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "x"}, http.StatusUnauthorized, "M_MISSING_TOKEN")
		anon.MustFail("DELETE", profilePath(alice.UserID, "displayname"), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
	t.Run("unknown token", func(t *testing.T) {
		bad := testutil.NewClient(t, srv.URL).As(alice.UserID, "", "not-a-token")
		bad.MustFail("PUT", profilePath(alice.UserID, "displayname"), map[string]any{"displayname": "x"}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
	t.Run("unknown user and field", func(t *testing.T) {
		anon := testutil.NewClient(t, srv.URL)
		nobody := "@nobody:" + srv.Config.ServerName
		anon.MustFail("GET", profilePath(nobody), nil, http.StatusNotFound, "M_NOT_FOUND")
		anon.MustFail("GET", profilePath(nobody, "displayname"), nil, http.StatusNotFound, "M_NOT_FOUND")
		anon.MustFail("GET", profilePath(nobody, "com.example.field"), nil, http.StatusNotFound, "M_NOT_FOUND")
		anon.MustFail("GET", profilePath(alice.UserID, "com.example.unset"), nil, http.StatusNotFound, "M_NOT_FOUND")
		anon.MustFail("GET", profilePath(alice.UserID, "avatar_url"), nil, http.StatusNotFound, "M_NOT_FOUND")
		anon.MustFail("GET", profilePath("not-a-user-id"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
