package tests

import (
	"net/http"
	"regexp"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const guestRegisterPath = "/_matrix/client/v3/register?kind=guest"

// registerGuest registers a guest account and returns a client for it.
func registerGuest(t testing.TB, srv *testserver.Server, body map[string]any) *testutil.Client {
	t.Helper()
	c := testutil.NewClient(t, srv.URL)
	m := c.MustDo("POST", guestRegisterPath, body, http.StatusOK)
	uid, _ := m["user_id"].(string)
	dev, _ := m["device_id"].(string)
	tok, _ := m["access_token"].(string)
	if uid == "" || dev == "" || tok == "" {
		t.Fatalf("guest registration response: %v", m)
	}
	return c.As(uid, dev, tok)
}

func startGuestServer(t *testing.T, registration bool) *testserver.Server {
	return testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Registration.GuestAccess = true
		c.Registration.Enabled = registration
	}})
}

func TestGuestRegistration(t *testing.T) {
	srv := startGuestServer(t, true)
	numeric := regexp.MustCompile(`^@[0-9]+:` + regexp.QuoteMeta(srv.Config.ServerName) + `$`)
	g1 := registerGuest(t, srv, map[string]any{})
	g2 := registerGuest(t, srv, map[string]any{})
	for _, g := range []*testutil.Client{g1, g2} {
		if !numeric.MatchString(g.UserID) {
			t.Fatalf("guest user ID %q, want a numeric localpart", g.UserID)
		}
		who := g.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
		if who["user_id"] != g.UserID || who["device_id"] != g.DeviceID || who["is_guest"] != true {
			t.Fatalf("guest whoami = %v", who)
		}
	}
	if g1.UserID == g2.UserID {
		t.Fatalf("two guests got the same user ID %s", g1.UserID)
	}
	// A normal user is not a guest.
	alice := srv.Client().Register("alice", "pw")
	if who := alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK); who["is_guest"] != false {
		t.Fatalf("user whoami = %v", who)
	}
}

// Every parameter but initial_device_display_name is ignored for guests.
func TestGuestRegistrationIgnoresParameters(t *testing.T) {
	srv := startGuestServer(t, true)
	g := registerGuest(t, srv, map[string]any{
		"username": "chosen", "password": "pw", "device_id": "CHOSEN", "inhibit_login": true,
		"initial_device_display_name": "Guest browser",
	})
	if g.UserID == "@chosen:"+srv.Config.ServerName || g.DeviceID == "CHOSEN" {
		t.Fatalf("guest registration honoured username or device_id: %s %s", g.UserID, g.DeviceID)
	}
	devices := g.MustDo("GET", "/_matrix/client/v3/devices", nil, http.StatusOK)["devices"].([]any)
	if len(devices) != 1 {
		t.Fatalf("devices = %v, want one", devices)
	}
	if d := devices[0].(map[string]any); d["device_id"] != g.DeviceID || d["display_name"] != "Guest browser" {
		t.Fatalf("guest device = %v, want %s named Guest browser", d, g.DeviceID)
	}
	srv.Client().MustDo("GET", "/_matrix/client/v3/register/available?username=chosen", nil, http.StatusOK)
}

// Guests may use the endpoints that allow them, and no others.
func TestGuestPermissions(t *testing.T) {
	srv := startGuestServer(t, true)
	g := registerGuest(t, srv, map[string]any{})

	caps := g.MustDo("GET", "/_matrix/client/v3/capabilities", nil, http.StatusOK)
	if _, ok := caps["capabilities"].(map[string]any); !ok {
		t.Fatalf("capabilities = %v", caps)
	}
	g.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", g.UserID), map[string]any{"displayname": "Visitor"}, http.StatusOK)
	p := srv.Client().MustDo("GET", testutil.Path("/_matrix/client/v3/profile/%s/displayname", g.UserID), nil, http.StatusOK)
	if p["displayname"] != "Visitor" {
		t.Fatalf("guest displayname = %v, want Visitor", p)
	}

	g.MustFail("POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "pw"}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	g.MustFail("PUT", tagsPath(g.UserID, "!room:"+srv.Config.ServerName, "u.x"), map[string]any{}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	g.MustFail("POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{g.DeviceID}}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	g.MustFail("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", g.DeviceID), map[string]any{}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	g.MustFail("POST", "/_matrix/client/v3/account/deactivate", map[string]any{}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	// The guest's device survived.
	g.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
}

// Guest registration depends on guest access only, as in Synapse.
func TestGuestRegistrationWithRegistrationDisabled(t *testing.T) {
	srv := startGuestServer(t, false)
	srv.Client().MustFail("POST", uiaRegisterPath, map[string]any{"username": "u", "password": "pw", "auth": uiaDummyAuth("")},
		http.StatusForbidden, "M_FORBIDDEN")
	g := registerGuest(t, srv, map[string]any{})
	if who := g.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK); who["is_guest"] != true {
		t.Fatalf("whoami = %v", who)
	}
}

func TestGuestAccessDisabledAndUnknownKind(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.MustFail("POST", guestRegisterPath, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	c.MustFail("POST", "/_matrix/client/v3/register?kind=unknown", map[string]any{"username": "k", "password": "pw", "auth": uiaDummyAuth("")},
		http.StatusBadRequest, "M_INVALID_PARAM")
	c.MustDo("GET", "/_matrix/client/v3/register/available?username=k", nil, http.StatusOK)
	// kind=user is the default.
	m := c.MustDo("POST", "/_matrix/client/v3/register?kind=user", map[string]any{"username": "k", "password": "pw", "auth": uiaDummyAuth("")}, http.StatusOK)
	if m["user_id"] != "@k:"+srv.Config.ServerName {
		t.Fatalf("register response: %v", m)
	}
}
