package tests

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Helpers shared by login_test.go, devices_test.go and account_test.go. They
// carry an "acct" prefix so as not to clash with the helpers of other test
// files of the package.

const (
	acctWhoami  = "/_matrix/client/v3/account/whoami"
	acctLogin   = "/_matrix/client/v3/login"
	acctRefresh = "/_matrix/client/v3/refresh"
	acctDevices = "/_matrix/client/v3/devices"
)

// acctLoginBody is an m.login.password request with an m.id.user identifier.
func acctLoginBody(user, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
}

// acctLoginWith logs in with the given request body and returns a client for
// the new session together with the whole response.
func acctLoginWith(c *testutil.Client, body map[string]any) (*testutil.Client, map[string]any) {
	c.T.Helper()
	m := c.As("", "", "").MustDo("POST", acctLogin, body, http.StatusOK)
	token, _ := m["access_token"].(string)
	userID, _ := m["user_id"].(string)
	deviceID, _ := m["device_id"].(string)
	if token == "" || userID == "" || deviceID == "" {
		c.T.Fatalf("login response lacks user_id, device_id or access_token: %v", m)
	}
	return c.As(userID, deviceID, token), m
}

// acctWantError sends a request and checks the status and the Matrix error
// code; an empty errcode accepts any code (the spec names none).
func acctWantError(c *testutil.Client, method, path string, body any, status int, errcode string) map[string]any {
	c.T.Helper()
	r := c.Do(method, path, body)
	m := r.JSON(c.T)
	code, _ := m["errcode"].(string)
	if r.Status != status || code == "" || (errcode != "" && code != errcode) {
		want := errcode
		if want == "" {
			want = "an errcode"
		}
		c.T.Fatalf("%s %s: got %d %q, want %d with %s: %s", method, path, r.Status, code, status, want, r.Body)
	}
	if _, ok := m["error"].(string); !ok {
		c.T.Fatalf("%s %s: error response without an error string: %s", method, path, r.Body)
	}
	return m
}

// acctWantUnknownToken checks that the client's access token is refused
// with 401 M_UNKNOWN_TOKEN and returns the error body.
func acctWantUnknownToken(c *testutil.Client) map[string]any {
	c.T.Helper()
	return c.MustFail("GET", acctWhoami, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// acctWantWorks checks that the client's access token is accepted and is
// that of the client's user and device.
func acctWantWorks(c *testutil.Client) {
	c.T.Helper()
	m := c.MustDo("GET", acctWhoami, nil, http.StatusOK)
	if m["user_id"] != c.UserID || m["device_id"] != c.DeviceID {
		c.T.Fatalf("whoami = %v, want user %s device %s", m, c.UserID, c.DeviceID)
	}
}

// acctCopy returns a shallow copy of a request body.
func acctCopy(body map[string]any) map[string]any {
	out := make(map[string]any, len(body)+1)
	for k, v := range body {
		out[k] = v
	}
	return out
}

// acctChallenge sends a User-Interactive Auth request without (or with an
// incomplete) auth and checks the 401 offers exactly [[m.login.password]]
// with a session, which it returns. body may be nil (no request body).
func acctChallenge(c *testutil.Client, method, path string, body any) string {
	c.T.Helper()
	r := c.Do(method, path, body)
	if r.Status != http.StatusUnauthorized {
		c.T.Fatalf("%s %s without auth: status %d, want 401: %s", method, path, r.Status, r.Body)
	}
	m := r.JSON(c.T)
	acctCheckFlows(c.T, m)
	if _, ok := m["errcode"]; ok {
		c.T.Fatalf("%s %s: first UIA response has an errcode: %s", method, path, r.Body)
	}
	return m["session"].(string)
}

// acctCheckFlows checks a UIA 401 body: flows [[m.login.password]] and a
// session.
func acctCheckFlows(t testing.TB, m map[string]any) {
	t.Helper()
	if s, _ := m["session"].(string); s == "" {
		t.Fatalf("UIA response without a session: %v", m)
	}
	flows, _ := m["flows"].([]any)
	if len(flows) != 1 {
		t.Fatalf("flows = %v, want [[m.login.password]]", m["flows"])
	}
	f, _ := flows[0].(map[string]any)
	stages, _ := f["stages"].([]any)
	if len(stages) != 1 || stages[0] != "m.login.password" {
		t.Fatalf("flows = %v, want [[m.login.password]]", m["flows"])
	}
}

// acctPasswordAuth is the auth dict of an m.login.password stage.
func acctPasswordAuth(session, userID, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": userID},
		"password":   password,
		"session":    session,
	}
}

// acctWithAuth returns body (which may be nil) with an auth dict added.
func acctWithAuth(body map[string]any, auth map[string]any) map[string]any {
	out := acctCopy(body)
	out["auth"] = auth
	return out
}

// acctDoUIA runs a request through User-Interactive Auth with the password
// of userID: the first request gets the challenge, the second completes the
// stage. It returns the response to the second request. body may be nil.
func acctDoUIA(c *testutil.Client, method, path string, body map[string]any, userID, password string) *testutil.Response {
	c.T.Helper()
	var first any
	if body != nil {
		first = body
	}
	session := acctChallenge(c, method, path, first)
	return c.Do(method, path, acctWithAuth(body, acctPasswordAuth(session, userID, password)))
}

// acctMustUIA is acctDoUIA with the caller's own password; it fails the test
// unless the operation succeeds and returns the response body.
func acctMustUIA(c *testutil.Client, method, path string, body map[string]any, password string) map[string]any {
	c.T.Helper()
	r := acctDoUIA(c, method, path, body, c.UserID, password)
	if r.Status != http.StatusOK {
		c.T.Fatalf("%s %s with password auth: status %d, want 200: %s", method, path, r.Status, r.Body)
	}
	return r.JSON(c.T)
}

// acctDeviceList returns the caller's devices by device ID.
func acctDeviceList(c *testutil.Client) map[string]map[string]any {
	c.T.Helper()
	m := c.MustDo("GET", acctDevices, nil, http.StatusOK)
	list, ok := m["devices"].([]any)
	if !ok {
		c.T.Fatalf("GET /devices: no devices array: %v", m)
	}
	out := map[string]map[string]any{}
	for _, d := range list {
		dev, _ := d.(map[string]any)
		id, _ := dev["device_id"].(string)
		if id == "" {
			c.T.Fatalf("device without a device_id: %v", d)
		}
		if _, dup := out[id]; dup {
			c.T.Fatalf("device %s listed twice: %v", id, list)
		}
		out[id] = dev
	}
	return out
}

// acctWantDevices checks that GET /devices lists exactly the given devices.
func acctWantDevices(c *testutil.Client, ids ...string) {
	c.T.Helper()
	got := acctDeviceList(c)
	for _, id := range ids {
		if _, ok := got[id]; !ok {
			c.T.Fatalf("device %s missing from %v", id, got)
		}
	}
	if len(got) != len(ids) {
		c.T.Fatalf("devices = %v, want exactly %v", got, ids)
	}
}

func TestLoginFlows(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	m := c.MustDo("GET", acctLogin, nil, http.StatusOK)
	flows, _ := m["flows"].([]any)
	found := false
	for _, f := range flows {
		if f.(map[string]any)["type"] == "m.login.password" {
			found = true
		}
	}
	if !found {
		t.Fatalf("GET /login flows = %v, want m.login.password among them", m["flows"])
	}
}

// Every accepted way of naming the user logs in to the same account, each
// time with a new device.
func TestLoginPassword(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	server := srv.Config.ServerName
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"localpart", acctLoginBody("alice", "secret")},
		{"full user ID", acctLoginBody("@alice:"+server, "secret")},
		{"localpart in other case", acctLoginBody("ALICE", "secret")},
		{"full user ID in other case", acctLoginBody("@Alice:"+server, "secret")},
		{"legacy user field", map[string]any{"type": "m.login.password", "user": "alice", "password": "secret"}},
		{"legacy user field with full ID", map[string]any{"type": "m.login.password", "user": "@alice:" + server, "password": "secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL)
			s, m := acctLoginWith(c, tc.body)
			if s.UserID != alice.UserID {
				t.Fatalf("user_id = %s, want %s", s.UserID, alice.UserID)
			}
			if s.DeviceID == alice.DeviceID {
				t.Fatalf("login reused the registration device %s", s.DeviceID)
			}
			if _, ok := m["refresh_token"]; ok {
				t.Fatalf("refresh_token returned although not asked for: %v", m)
			}
			if _, ok := m["expires_in_ms"]; ok {
				t.Fatalf("expires_in_ms returned for a non-refreshable token: %v", m)
			}
			acctWantWorks(s)
		})
	}
	// The earlier sessions are unaffected by the logins.
	acctWantWorks(alice)
}

// A login naming an existing device takes it over: the device keeps its ID
// and the token it had before is revoked.
func TestLoginDeviceIDReuse(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")

	body := acctLoginBody("alice", "secret")
	body["device_id"] = "MYDEVICE"
	body["initial_device_display_name"] = "Alice's phone"
	first, _ := acctLoginWith(c, body)
	if first.DeviceID != "MYDEVICE" {
		t.Fatalf("device_id = %s, want MYDEVICE", first.DeviceID)
	}
	acctWantWorks(first)
	d := alice.MustDo("GET", acctDevices+"/MYDEVICE", nil, http.StatusOK)
	if d["device_id"] != "MYDEVICE" || d["display_name"] != "Alice's phone" {
		t.Fatalf("GET /devices/MYDEVICE = %v, want the initial display name", d)
	}

	second, _ := acctLoginWith(c, body)
	if second.DeviceID != "MYDEVICE" {
		t.Fatalf("second login: device_id = %s, want MYDEVICE", second.DeviceID)
	}
	if second.AccessToken == first.AccessToken {
		t.Fatal("second login returned the same access token")
	}
	acctWantUnknownToken(first)
	acctWantWorks(second)
	acctWantWorks(alice)
	acctWantDevices(alice, alice.DeviceID, "MYDEVICE")

	// A login without device_id gets a fresh device with the display name.
	body = acctLoginBody("alice", "secret")
	body["initial_device_display_name"] = "Laptop"
	third, _ := acctLoginWith(c, body)
	if third.DeviceID == "MYDEVICE" || third.DeviceID == alice.DeviceID {
		t.Fatalf("login without device_id reused device %s", third.DeviceID)
	}
	d = alice.MustDo("GET", testutil.Path(acctDevices+"/%s", third.DeviceID), nil, http.StatusOK)
	if d["display_name"] != "Laptop" {
		t.Fatalf("new device display_name = %v, want Laptop", d["display_name"])
	}
	acctWantWorks(second)
}

func TestLoginErrors(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.Register("alice", "secret")
	for _, tc := range []struct {
		name    string
		body    any
		status  int
		errcode string // "" accepts any errcode
	}{
		{"wrong password", acctLoginBody("alice", "wrong"), 403, "M_FORBIDDEN"},
		{"unknown user", acctLoginBody("nobody", "secret"), 403, "M_FORBIDDEN"},
		{"empty password", acctLoginBody("alice", ""), 403, "M_FORBIDDEN"},
		{"missing type", map[string]any{"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret"}, 400, ""},
		{"unknown login type", map[string]any{"type": "m.login.magic", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret"}, 400, ""},
		{"missing password", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}}, 400, "M_MISSING_PARAM"},
		{"user on another server", acctLoginBody("@alice:other.example.org", "secret"), 403, "M_FORBIDDEN"},
		{"third-party identifier", map[string]any{
			"type": "m.login.password", "password": "secret",
			"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org"},
		}, 403, "M_FORBIDDEN"},
		{"phone identifier", map[string]any{
			"type": "m.login.password", "password": "secret",
			"identifier": map[string]any{"type": "m.id.phone", "country": "GB", "phone": "07700900000"},
		}, 403, "M_FORBIDDEN"},
		{"malformed JSON", testutil.Raw(`{"type": "m.login.password",`), 400, "M_NOT_JSON"},
		{"JSON array", testutil.Raw(`["m.login.password"]`), 400, "M_BAD_JSON"},
		{"JSON string", testutil.Raw(`"m.login.password"`), 400, "M_BAD_JSON"},
		{"type not a string", map[string]any{"type": 1, "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret"}, 400, "M_BAD_JSON"},
		{"password not a string", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": 12345}, 400, "M_BAD_JSON"},
		{"identifier not an object", map[string]any{"type": "m.login.password", "identifier": "alice", "password": "secret"}, 400, "M_BAD_JSON"},
		{"identifier user not a string", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": 7}, "password": "secret"}, 400, "M_BAD_JSON"},
		{"device_id not a string", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "secret", "device_id": 42}, 400, "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL)
			acctWantError(c, "POST", acctLogin, tc.body, tc.status, tc.errcode)
		})
	}
	// None of the failures stopped the right password from working.
	c.Login("alice", "secret")
}

// The access token is accepted in the Authorization header and in the
// deprecated access_token query parameter.
func TestAccessTokenLocations(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	acctWantWorks(alice)

	anon := testutil.NewClient(t, srv.URL)
	m := anon.MustDo("GET", acctWhoami+"?access_token="+url.QueryEscape(alice.AccessToken), nil, http.StatusOK)
	if m["user_id"] != alice.UserID || m["device_id"] != alice.DeviceID {
		t.Fatalf("whoami with query token = %v", m)
	}

	anon.MustFail("GET", acctWhoami, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.MustFail("GET", acctWhoami+"?access_token=not-a-token", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	bad := anon.As(alice.UserID, alice.DeviceID, "not-a-token")
	m = acctWantUnknownToken(bad)
	if m["soft_logout"] == true {
		t.Fatalf("unknown token reported as a soft logout: %v", m)
	}
	// A token that is almost right is still wrong.
	acctWantUnknownToken(anon.As("", "", alice.AccessToken+"x"))
}

// acctLoginRefreshable logs in asking for a refresh token and checks the
// response carries one with its expiry.
func acctLoginRefreshable(c *testutil.Client, user, password string) (*testutil.Client, string, map[string]any) {
	c.T.Helper()
	body := acctLoginBody(user, password)
	body["refresh_token"] = true
	s, m := acctLoginWith(c, body)
	refresh, _ := m["refresh_token"].(string)
	if refresh == "" {
		c.T.Fatalf("login with refresh_token: true returned no refresh_token: %v", m)
	}
	if ms, ok := m["expires_in_ms"].(float64); !ok || ms <= 0 {
		c.T.Fatalf("login with refresh_token: true: expires_in_ms = %v, want a positive number", m["expires_in_ms"])
	}
	return s, refresh, m
}

// acctDoRefresh exchanges a refresh token and returns a client with the new
// access token and the new refresh token.
func acctDoRefresh(c *testutil.Client, refresh string) (*testutil.Client, string) {
	c.T.Helper()
	m := c.As("", "", "").MustDo("POST", acctRefresh, map[string]any{"refresh_token": refresh}, http.StatusOK)
	token, _ := m["access_token"].(string)
	next, _ := m["refresh_token"].(string)
	if token == "" || next == "" {
		c.T.Fatalf("refresh response lacks access_token or refresh_token: %v", m)
	}
	if ms, ok := m["expires_in_ms"].(float64); !ok || ms <= 0 {
		c.T.Fatalf("refresh response: expires_in_ms = %v, want a positive number", m["expires_in_ms"])
	}
	if next == refresh {
		c.T.Fatal("refresh returned the same refresh token")
	}
	return c.As(c.UserID, c.DeviceID, token), next
}

func TestRefreshTokens(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.Register("alice", "secret")

	t.Run("register returns a refresh token", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		m := c.MustDo("POST", "/_matrix/client/v3/register", map[string]any{
			"username": "bob", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}, "refresh_token": true,
		}, http.StatusOK)
		refresh, _ := m["refresh_token"].(string)
		if ms, ok := m["expires_in_ms"].(float64); refresh == "" || !ok || ms <= 0 {
			t.Fatalf("register with refresh_token: true = %v, want refresh_token and expires_in_ms", m)
		}
		bob := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
		acctWantWorks(bob)
		bob2, _ := acctDoRefresh(bob, refresh)
		acctWantWorks(bob2)
	})

	t.Run("old refresh token works until the new access token is used", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		s0, r0, _ := acctLoginRefreshable(c, "alice", "secret")
		acctWantWorks(s0)
		s1, _ := acctDoRefresh(s0, r0)
		if s1.AccessToken == s0.AccessToken {
			t.Fatal("refresh returned the same access token")
		}
		// The client lost the response: the old refresh token still works.
		s2, _ := acctDoRefresh(s0, r0)
		acctWantWorks(s2)
		// Using the new access token retired the old refresh token.
		c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": r0}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		acctWantWorks(s2)
	})

	t.Run("old refresh token works until the new refresh token is used", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		s0, r0, _ := acctLoginRefreshable(c, "alice", "secret")
		_, r1 := acctDoRefresh(s0, r0)
		s2, _ := acctDoRefresh(s0, r1)
		c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": r0}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		acctWantWorks(s2)
	})

	t.Run("errors", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": "mylr_unknown"}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		c.MustFail("POST", acctRefresh, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		// A refresh token is not an access token, nor the reverse.
		s, r, _ := acctLoginRefreshable(c, "alice", "secret")
		acctWantUnknownToken(c.As(s.UserID, s.DeviceID, r))
		c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": s.AccessToken}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})

	t.Run("logout revokes the refresh token", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		s, r, _ := acctLoginRefreshable(c, "alice", "secret")
		s.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, http.StatusOK)
		c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": r}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// A refreshable access token expires into a soft logout; refreshing gives a
// working token for the same device. Tokens of clients that do not support
// refreshing do not expire.
func TestAccessTokenExpiry(t *testing.T) {
	const lifetime = 300 * time.Millisecond
	srv := acctShortLived(t, lifetime)
	c := srv.Client()
	plain := c.Register("alice", "secret")

	s0, r0, m := acctLoginRefreshable(c, "alice", "secret")
	if m["expires_in_ms"] != float64(lifetime.Milliseconds()) {
		t.Fatalf("expires_in_ms = %v, want %d", m["expires_in_ms"], lifetime.Milliseconds())
	}
	acctWaitExpired(s0)

	start := time.Now()
	s1, _ := acctDoRefresh(s0, r0)
	r := s1.Do("GET", acctWhoami, nil)
	switch {
	case r.Status == http.StatusOK:
		if w := r.JSON(t); w["user_id"] != s0.UserID || w["device_id"] != s0.DeviceID {
			t.Fatalf("refreshed token: whoami = %v, want the device of the login", w)
		}
	case time.Since(start) < lifetime:
		t.Fatalf("refreshed token refused before its lifetime: %d %s", r.Status, r.Body)
	default:
		t.Logf("machine too slow to use the refreshed token within %v", lifetime)
	}

	// The token of a client that did not ask for a refresh token outlived
	// the refreshable one.
	acctWantWorks(plain)
}

// acctShortLived starts a server whose refreshable access tokens live for
// lifetime.
func acctShortLived(t *testing.T, lifetime time.Duration) *testserver.Server {
	return testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Auth.AccessTokenLifetime = config.Duration(lifetime)
	}})
}

// acctWaitExpired polls until the client's access token is refused and
// checks it is refused as expired: 401 M_UNKNOWN_TOKEN with soft_logout.
func acctWaitExpired(c *testutil.Client) {
	c.T.Helper()
	var r *testutil.Response
	testutil.Eventually(c.T, 10*time.Second, "the access token to expire", func() bool {
		r = c.Do("GET", acctWhoami, nil)
		return r.Status != http.StatusOK
	})
	m := r.JSON(c.T)
	if r.Status != http.StatusUnauthorized || m["errcode"] != "M_UNKNOWN_TOKEN" || m["soft_logout"] != true {
		c.T.Fatalf("expired token: got %d %s, want 401 M_UNKNOWN_TOKEN with soft_logout true", r.Status, r.Body)
	}
}

// Logging in is limited per client address.
func TestLoginRateLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.RateLimiting.Enabled = true
		c.RateLimiting.Login = config.Rate{PerSecond: 0.1, Burst: 2}
		c.RateLimiting.Registration = config.Rate{PerSecond: 100, Burst: 100}
	}})
	c := srv.Client()
	c.Register("alice", "secret")
	c.Login("alice", "secret")
	c.Login("alice", "secret")
	r := c.Do("POST", acctLogin, acctLoginBody("alice", "secret"))
	acctCheckLimited(t, r)
}

// acctCheckLimited checks a 429 M_LIMIT_EXCEEDED response with its retry
// hints.
func acctCheckLimited(t testing.TB, r *testutil.Response) {
	t.Helper()
	m := r.JSON(t)
	if r.Status != http.StatusTooManyRequests || m["errcode"] != "M_LIMIT_EXCEEDED" {
		t.Fatalf("got %d %s, want 429 M_LIMIT_EXCEEDED", r.Status, r.Body)
	}
	if ms, ok := m["retry_after_ms"].(float64); !ok || ms <= 0 {
		t.Fatalf("retry_after_ms = %v, want a positive number", m["retry_after_ms"])
	}
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs <= 0 {
		t.Fatalf("Retry-After header = %q, want a positive number of seconds", r.Header.Get("Retry-After"))
	}
}

// Failed logins are limited per account: once the account's budget is
// spent even the right password is refused, while other accounts are not
// affected.
func TestFailedLoginRateLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.RateLimiting.Enabled = true
		c.RateLimiting.Login = config.Rate{PerSecond: 100, Burst: 100}
		c.RateLimiting.Registration = config.Rate{PerSecond: 100, Burst: 100}
		c.RateLimiting.FailedLogin = config.Rate{PerSecond: 0.1, Burst: 2}
	}})
	c := srv.Client()
	c.Register("alice", "secret")
	c.Register("bob", "secret")
	c.MustFail("POST", acctLogin, acctLoginBody("alice", "wrong"), http.StatusForbidden, "M_FORBIDDEN")
	c.MustFail("POST", acctLogin, acctLoginBody("alice", "wrong"), http.StatusForbidden, "M_FORBIDDEN")
	acctCheckLimited(t, c.Do("POST", acctLogin, acctLoginBody("alice", "secret")))
	// The same account named differently is the same account.
	acctCheckLimited(t, c.Do("POST", acctLogin, acctLoginBody("@ALICE:"+srv.Config.ServerName, "secret")))
	// Successful logins do not count against an account.
	c.Login("bob", "secret")
	c.Login("bob", "secret")
	c.Login("bob", "secret")
}
