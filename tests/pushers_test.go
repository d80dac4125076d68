package tests

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const (
	pushersPath    = "/_matrix/client/v3/pushers"
	pushersSetPath = "/_matrix/client/v3/pushers/set"
	pushGatewayURL = "https://push.example.org/_matrix/push/v1/notify"
)

// httpPusher is the body of POST /pushers/set for an http pusher.
func httpPusher(appID, pushKey string) map[string]any {
	return map[string]any{
		"kind": "http", "app_id": appID, "pushkey": pushKey, "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": pushGatewayURL},
	}
}

// pusherWith returns a copy of body with key set (nil deletes the key).
func pusherWith(body map[string]any, key string, value any) map[string]any {
	out := map[string]any{}
	for k, v := range body {
		out[k] = v
	}
	if value == nil {
		delete(out, key)
	} else {
		out[key] = value
	}
	return out
}

// listPushers returns GET /pushers' list.
func listPushers(c *testutil.Client) []map[string]any {
	c.T.Helper()
	var body struct {
		Pushers []map[string]any `json:"pushers"`
	}
	r := c.Do("GET", pushersPath, nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET /pushers: %d %s", r.Status, r.Body)
	}
	r.Decode(c.T, &body)
	if body.Pushers == nil {
		c.T.Fatalf("GET /pushers without a pushers list: %s", r.Body)
	}
	return body.Pushers
}

// pushKeys lists the push keys of GET /pushers, sorted.
func pushKeys(c *testutil.Client) []string {
	c.T.Helper()
	var keys []string
	for _, p := range listPushers(c) {
		keys = append(keys, p["pushkey"].(string))
	}
	slices.Sort(keys)
	return keys
}

func TestPushersSetAndList(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	if l := listPushers(alice); len(l) != 0 {
		t.Fatalf("a new user's pushers: %v", l)
	}

	full := httpPusher("com.example.app.ios", "key1")
	full["profile_tag"] = "xyz"
	full["data"] = map[string]any{"url": pushGatewayURL, "format": "event_id_only", "custom": map[string]any{"k": 1.0}}
	alice.MustDo("POST", pushersSetPath, full, http.StatusOK)
	l := listPushers(alice)
	if len(l) != 1 {
		t.Fatalf("pushers %v", l)
	}
	want := map[string]any{
		"kind": "http", "app_id": "com.example.app.ios", "pushkey": "key1", "app_display_name": "Example",
		"device_display_name": "Phone", "lang": "en", "profile_tag": "xyz",
		"data": map[string]any{"url": pushGatewayURL, "format": "event_id_only", "custom": map[string]any{"k": 1.0}},
	}
	if !sameJSON(t, l[0], want) {
		t.Fatalf("listed pusher %v, want exactly %v", l[0], want)
	}

	// The same app ID and push key replace the pusher; another push key
	// adds one.
	alice.MustDo("POST", pushersSetPath, pusherWith(httpPusher("com.example.app.ios", "key1"), "app_display_name", "Renamed"), http.StatusOK)
	alice.MustDo("POST", pushersSetPath, httpPusher("com.example.app.ios", "key2"), http.StatusOK)
	alice.MustDo("POST", pushersSetPath, httpPusher("com.example.app.android", "key1"), http.StatusOK)
	l = listPushers(alice)
	if len(l) != 3 {
		t.Fatalf("after replace and add: %v", l)
	}
	for _, p := range l {
		if p["app_id"] == "com.example.app.ios" && p["pushkey"] == "key1" && (p["app_display_name"] != "Renamed" || p["profile_tag"] != nil) {
			t.Fatalf("replaced pusher %v", p)
		}
	}

	// kind null deletes (unknown pushers too, without error).
	alice.MustDo("POST", pushersSetPath, map[string]any{"kind": nil, "app_id": "com.example.app.ios", "pushkey": "key2"}, http.StatusOK)
	alice.MustDo("POST", pushersSetPath, map[string]any{"kind": nil, "app_id": "com.example.app.ios", "pushkey": "nope"}, http.StatusOK)
	alice.MustFail("POST", pushersSetPath, map[string]any{"kind": nil, "app_id": "com.example.app.ios"}, http.StatusBadRequest, "M_MISSING_PARAM")
	if k := pushKeys(alice); !slices.Equal(k, []string{"key1", "key1"}) {
		t.Fatalf("after delete: %v", k)
	}

	// Another user's pusher with the same app ID and push key: appended,
	// both stay; set without append, it replaces alice's.
	bob.MustDo("POST", pushersSetPath, pusherWith(httpPusher("com.example.app.android", "key1"), "append", true), http.StatusOK)
	if len(listPushers(alice)) != 2 || len(listPushers(bob)) != 1 {
		t.Fatalf("append: alice %v, bob %v", listPushers(alice), listPushers(bob))
	}
	bob.MustDo("POST", pushersSetPath, pusherWith(httpPusher("com.example.app.android", "key1"), "append", false), http.StatusOK)
	if l := listPushers(alice); len(l) != 1 || l[0]["app_id"] != "com.example.app.ios" {
		t.Fatalf("alice's pushers after bob took the key: %v", l)
	}
	if len(listPushers(bob)) != 1 {
		t.Fatalf("bob's pushers: %v", listPushers(bob))
	}
	// Deleting is per user.
	alice.MustDo("POST", pushersSetPath, map[string]any{"kind": nil, "app_id": "com.example.app.android", "pushkey": "key1"}, http.StatusOK)
	if len(listPushers(bob)) != 1 {
		t.Fatal("alice deleted bob's pusher")
	}
}

func TestPushersValidation(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	ok := httpPusher("com.example.app", "key")
	fail := func(body any, errcode string) {
		t.Helper()
		alice.MustFail("POST", pushersSetPath, body, http.StatusBadRequest, errcode)
	}
	for _, k := range []string{"kind", "app_id", "pushkey", "app_display_name", "device_display_name", "lang", "data"} {
		m := alice.MustFail("POST", pushersSetPath, pusherWith(ok, k, nil), http.StatusBadRequest, "M_MISSING_PARAM")
		if !strings.Contains(m["error"].(string), k) {
			t.Errorf("missing %s: the error does not name it: %v", k, m["error"])
		}
	}
	fail(map[string]any{}, "M_MISSING_PARAM")
	fail(pusherWith(ok, "kind", "email"), "M_INVALID_PARAM")
	fail(pusherWith(pusherWith(ok, "kind", "email"), "app_id", "m.email"), "M_INVALID_PARAM")
	fail(pusherWith(ok, "kind", "carrier-pigeon"), "M_INVALID_PARAM")
	fail(pusherWith(ok, "data", map[string]any{}), "M_MISSING_PARAM")
	fail(pusherWith(ok, "data", map[string]any{"format": "event_id_only"}), "M_MISSING_PARAM")
	for _, bad := range []any{"/_matrix/push/v1/notify", "ftp://push.example.org/_matrix/push/v1/notify",
		"https://push.example.org/notify", "https:///_matrix/push/v1/notify", 42.0, "://bad"} {
		fail(pusherWith(ok, "data", map[string]any{"url": bad}), "M_INVALID_PARAM")
	}
	fail(pusherWith(ok, "data", map[string]any{"url": pushGatewayURL, "format": "full"}), "M_INVALID_PARAM")
	fail(pusherWith(ok, "app_id", strings.Repeat("a", 65)), "M_INVALID_PARAM")
	fail(pusherWith(ok, "pushkey", strings.Repeat("k", 513)), "M_INVALID_PARAM")
	fail(pusherWith(ok, "app_id", ""), "M_INVALID_PARAM")
	fail(pusherWith(ok, "pushkey", ""), "M_INVALID_PARAM")
	fail(pusherWith(ok, "app_id", 7.0), "M_BAD_JSON")
	fail(pusherWith(ok, "lang", true), "M_BAD_JSON")
	fail(pusherWith(ok, "data", "https://push.example.org"), "M_BAD_JSON")
	fail(pusherWith(ok, "append", "yes"), "M_BAD_JSON")
	fail(testutil.Raw(`[]`), "M_BAD_JSON")
	fail(testutil.Raw(`{"kind":`), "M_NOT_JSON")
	if l := listPushers(alice); len(l) != 0 {
		t.Fatalf("refused pushers were stored: %v", l)
	}

	// The bounds themselves are fine: 64 characters (not bytes) of app
	// ID, 512 bytes of push key, an http URL, and the data of the spec.
	alice.MustDo("POST", pushersSetPath, pusherWith(ok, "app_id", strings.Repeat("é", 64)), http.StatusOK)
	alice.MustDo("POST", pushersSetPath, pusherWith(ok, "pushkey", strings.Repeat("k", 512)), http.StatusOK)
	alice.MustDo("POST", pushersSetPath, pusherWith(pusherWith(ok, "pushkey", "plain"), "data", map[string]any{"url": "http://127.0.0.1:5000/_matrix/push/v1/notify"}), http.StatusOK)
	if l := listPushers(alice); len(l) != 3 {
		t.Fatalf("pushers at the bounds: %v", l)
	}

	anon := srv.Client()
	anon.MustFail("GET", pushersPath, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.MustFail("POST", pushersSetPath, ok, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// A pusher goes with the device whose access token set it: device
// deletion, logout, logout/all, a password change that logs out the other
// devices (Complement's TestChangePasswordPushers) and deactivation.
func TestPushersGoWithTheirDevice(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	session := func(key string) *testutil.Client {
		t.Helper()
		s := c.Login("alice", "pw")
		s.MustDo("POST", pushersSetPath, httpPusher("app", key), http.StatusOK)
		return s
	}
	alice.MustDo("POST", pushersSetPath, httpPusher("app", "main"), http.StatusOK)

	// DELETE /devices/{deviceId} (with User-Interactive Auth).
	other := session("deleted-device")
	acctMustUIA(alice, "DELETE", acctDevicePath(other.DeviceID), map[string]any{}, "pw")
	if k := pushKeys(alice); !slices.Equal(k, []string{"main"}) {
		t.Fatalf("after deleting the device: %v", k)
	}

	// A pusher edited from another device stays its creator's.
	other = session("logout")
	alice.MustDo("POST", pushersSetPath, pusherWith(httpPusher("app", "logout"), "app_display_name", "Edited"), http.StatusOK)
	other.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, http.StatusOK)
	if k := pushKeys(alice); !slices.Equal(k, []string{"main"}) {
		t.Fatalf("after logout: %v", k)
	}

	// The password change: the pusher of the other session goes, the one
	// of the session that changed the password stays.
	session("other-session")
	alice.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{
		"new_password": "pw2", "auth": map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}, "password": "pw"},
	}, http.StatusOK)
	if k := pushKeys(alice); !slices.Equal(k, []string{"main"}) {
		t.Fatalf("after the password change: %v", k)
	}
	alice.MustDo("POST", "/_matrix/client/v3/account/password", map[string]any{
		"new_password": "pw", "logout_devices": false, "auth": map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}, "password": "pw2"},
	}, http.StatusOK)
	if k := pushKeys(alice); !slices.Equal(k, []string{"main"}) {
		t.Fatalf("after a password change without logout: %v", k)
	}

	// logout/all.
	last := session("all")
	last.MustDo("POST", "/_matrix/client/v3/logout/all", map[string]any{}, http.StatusOK)
	alice = c.Login("alice", "pw")
	if k := pushKeys(alice); len(k) != 0 {
		t.Fatalf("after logout/all: %v", k)
	}

	// Deactivation: no token is left to ask with, so ask the user API.
	alice.MustDo("POST", pushersSetPath, httpPusher("app", "deactivated"), http.StatusOK)
	acctMustUIA(alice, "POST", "/_matrix/client/v3/account/deactivate", map[string]any{}, "pw")
	left, err := srv.Users.QueryPushers(context.Background(), []string{alice.UserID})
	if err != nil || len(left) != 0 {
		t.Fatalf("pushers after deactivation: %v %v", left, err)
	}
}

// Deleting a device deletes its local notification settings (MSC3890),
// as Synapse does (Complement's
// TestDeletingDeviceRemovesDeviceLocalNotificationSettings).
func TestDeviceDeletionRemovesLocalNotificationSettings(t *testing.T) {
	srv := syncTStart(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	second := c.Login("alice", "pw")
	types := []string{"org.matrix.msc3890.local_notification_settings." + second.DeviceID, "m.local_notification_settings." + second.DeviceID}
	mine := "org.matrix.msc3890.local_notification_settings." + alice.DeviceID
	for _, typ := range append(types, mine) {
		second.MustDo("PUT", accountDataPath(alice.UserID, typ), map[string]any{"is_silenced": true}, http.StatusOK)
		alice.MustDo("GET", accountDataPath(alice.UserID, typ), nil, http.StatusOK)
	}
	since := syncTInitial(alice).NextBatch

	second.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, http.StatusOK)
	for _, typ := range types {
		alice.MustFail("GET", accountDataPath(alice.UserID, typ), nil, http.StatusNotFound, "M_NOT_FOUND")
	}
	alice.MustDo("GET", accountDataPath(alice.UserID, mine), nil, http.StatusOK)

	// The deletion reaches /sync as empty content.
	testutil.Eventually(t, 10*time.Second, "the deletion in /sync", func() bool {
		s := syncTSince(alice, since)
		got := 0
		for _, e := range syncTList(s.AccountData) {
			if slices.Contains(types, e["type"].(string)) {
				if c, _ := e["content"].(map[string]any); c == nil || len(c) != 0 {
					t.Fatalf("deleted %s in /sync: %v", e["type"], e)
				}
				got++
			}
		}
		return got == len(types)
	})
}
