package tests

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const uiaRegisterPath = "/_matrix/client/v3/register"

// uiaChallenge checks that r is a User-Interactive Authentication 401: flows
// (a list of {"stages": [...]}), params (an object) and a session. It returns
// the body, the flows as lists of stage types and the session.
func uiaChallenge(t testing.TB, r *testutil.Response) (body map[string]any, flows [][]string, session string) {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401 with a UIA challenge: %s", r.Status, r.Body)
	}
	body = r.JSON(t)
	if _, ok := body["params"].(map[string]any); !ok {
		t.Fatalf("UIA challenge: params is not an object: %s", r.Body)
	}
	session, _ = body["session"].(string)
	if session == "" {
		t.Fatalf("UIA challenge without a session: %s", r.Body)
	}
	rawFlows, ok := body["flows"].([]any)
	if !ok || len(rawFlows) == 0 {
		t.Fatalf("UIA challenge without flows: %s", r.Body)
	}
	for _, f := range rawFlows {
		fm, _ := f.(map[string]any)
		stages, ok := fm["stages"].([]any)
		if !ok {
			t.Fatalf("UIA flow without stages: %s", r.Body)
		}
		var flow []string
		for _, s := range stages {
			str, ok := s.(string)
			if !ok {
				t.Fatalf("UIA stage is not a string: %s", r.Body)
			}
			flow = append(flow, str)
		}
		flows = append(flows, flow)
	}
	return body, flows, session
}

// uiaWantFlows fails the test unless flows is exactly want.
func uiaWantFlows(t testing.TB, flows [][]string, want ...[]string) {
	t.Helper()
	if !slices.EqualFunc(flows, want, slices.Equal[[]string]) {
		t.Fatalf("flows = %v, want %v", flows, want)
	}
}

// uiaPasswordAuth is an m.login.password auth dict for a UIA session.
func uiaPasswordAuth(session, userID, password string) map[string]any {
	return map[string]any{
		"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": userID},
	}
}

// uiaDummyAuth is an m.login.dummy auth dict (no session when session is "").
func uiaDummyAuth(session string) map[string]any {
	a := map[string]any{"type": "m.login.dummy"}
	if session != "" {
		a["session"] = session
	}
	return a
}

func TestUIAChallengeShape(t *testing.T) {
	srv := testserver.Start(t)

	t.Run("no auth gets flows, params and a session", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		body, flows, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "shape", "password": "pw"}))
		uiaWantFlows(t, flows, []string{"m.login.dummy"})
		if _, ok := body["errcode"]; ok {
			t.Fatalf("a request without auth is not a failed attempt, yet the 401 has an errcode: %v", body)
		}
		// A second request without auth starts another session.
		_, _, session2 := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "shape", "password": "pw"}))
		if session2 == session {
			t.Fatalf("two unauthenticated requests share session %q", session)
		}
	})

	t.Run("auth without a session creates one", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		// A stage that is completed at once finishes the new session.
		m := c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "nosession", "password": "pw", "auth": uiaDummyAuth("")}, http.StatusOK)
		if m["user_id"] != "@nosession:"+srv.Config.ServerName {
			t.Fatalf("register response: %v", m)
		}
		// A failed attempt without a session still gets one to continue with.
		body, flows, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{
			"username": "nosession2", "password": "pw", "auth": map[string]any{"type": "m.login.password", "password": "x"},
		}))
		uiaWantFlows(t, flows, []string{"m.login.dummy"})
		if body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("errcode = %v, want M_UNRECOGNIZED: %v", body["errcode"], body)
		}
		c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "nosession2", "password": "pw", "auth": uiaDummyAuth(session)}, http.StatusOK)
	})

	t.Run("unknown session", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "ghost", "password": "pw", "auth": uiaDummyAuth("no-such-session")},
			http.StatusBadRequest, "M_UNKNOWN")
		c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "ghost", "password": "pw", "auth": map[string]any{"session": "no-such-session"}},
			http.StatusBadRequest, "M_UNKNOWN")
	})

	t.Run("stage not offered", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		req := map[string]any{"username": "unoffered", "password": "pw"}
		_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, req))
		req["auth"] = map[string]any{"type": "m.login.registration_token", "token": "abc", "session": session}
		body, flows, session2 := uiaChallenge(t, c.Do("POST", uiaRegisterPath, req))
		if body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("errcode = %v, want M_UNRECOGNIZED: %v", body["errcode"], body)
		}
		if _, ok := body["error"].(string); !ok {
			t.Fatalf("failed stage without an error string: %v", body)
		}
		uiaWantFlows(t, flows, []string{"m.login.dummy"})
		if session2 != session {
			t.Fatalf("session changed from %q to %q", session, session2)
		}
		if done, ok := body["completed"].([]any); ok && len(done) > 0 {
			t.Fatalf("completed = %v after a rejected stage", done)
		}
		// The client may go on with an offered stage in the same session.
		req["auth"] = uiaDummyAuth(session)
		c.MustDo("POST", uiaRegisterPath, req, http.StatusOK)
	})
}

// A session is bound to the operation that started it.
func TestUIASessionBoundToOperation(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "old password")
	second := alice.Login("alice", "old password")

	_, flows, session := uiaChallenge(t, alice.Do("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", second.DeviceID), map[string]any{}))
	uiaWantFlows(t, flows, []string{"m.login.password"})
	alice.MustFail("POST", "/_matrix/client/v3/account/password", map[string]any{
		"new_password": "new password", "auth": uiaPasswordAuth(session, alice.UserID, "old password"),
	}, http.StatusForbidden, "M_FORBIDDEN")
	// The password did not change, and the session still works for the
	// operation it was started for.
	alice.Login("alice", "old password")
	alice.MustDo("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", second.DeviceID),
		map[string]any{"auth": uiaPasswordAuth(session, alice.UserID, "old password")}, http.StatusOK)
	second.MustFail("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Nor may it delete another device than the one it was started for.
	third, fourth := alice.Login("alice", "old password"), alice.Login("alice", "old password")
	_, _, session = uiaChallenge(t, alice.Do("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", third.DeviceID), map[string]any{}))
	alice.MustFail("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", fourth.DeviceID),
		map[string]any{"auth": uiaPasswordAuth(session, alice.UserID, "old password")}, http.StatusForbidden, "M_FORBIDDEN")
	fourth.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	third.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)

	// A registration session cannot authorise a password change either.
	_, _, regSession := uiaChallenge(t, srv.Client().Do("POST", uiaRegisterPath, map[string]any{"username": "other", "password": "pw"}))
	alice.MustFail("POST", "/_matrix/client/v3/account/password", map[string]any{
		"new_password": "new password", "auth": uiaPasswordAuth(regSession, alice.UserID, "old password"),
	}, http.StatusForbidden, "M_FORBIDDEN")
}

// A failed stage is a 401 with the error and the challenge; the client may
// try again in the same session.
func TestUIAFailedStageCanBeRetried(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "right")
	bob := srv.Client().Register("bob", "bobs")
	doomed := alice.Login("alice", "right")
	path := testutil.Path("/_matrix/client/v3/devices/%s", doomed.DeviceID)
	_, _, session := uiaChallenge(t, alice.Do("DELETE", path, nil))
	for _, auth := range []map[string]any{
		uiaPasswordAuth(session, alice.UserID, "wrong"),
	} {
		body, flows, session2 := uiaChallenge(t, alice.Do("DELETE", path, map[string]any{"auth": auth}))
		if body["errcode"] != "M_FORBIDDEN" || session2 != session {
			t.Fatalf("auth %v: errcode %v session %q, want M_FORBIDDEN in session %q: %v", auth, body["errcode"], session2, session, body)
		}
		if _, ok := body["error"].(string); !ok {
			t.Fatalf("failed stage without an error string: %v", body)
		}
		uiaWantFlows(t, flows, []string{"m.login.password"})
		doomed.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	}
	// Another account's password, valid (as Synapse) or not (so that the
	// answer does not tell whether it was right), is a plain 403, and the
	// session can still be completed.
	for _, auth := range []map[string]any{
		uiaPasswordAuth(session, bob.UserID, "bobs"),
		uiaPasswordAuth(session, "@nobody:"+srv.Config.ServerName, "right"),
	} {
		r := alice.Do("DELETE", path, map[string]any{"auth": auth})
		if m := r.JSON(t); r.Status != http.StatusForbidden || m["errcode"] != "M_FORBIDDEN" || m["flows"] != nil {
			t.Fatalf("another account's password: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
		}
		doomed.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	}
	alice.MustDo("DELETE", path, map[string]any{"auth": uiaPasswordAuth(session, alice.UserID, "right")}, http.StatusOK)
	doomed.MustFail("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// Once the operation succeeded, its session cannot authorise another one.
func TestUIACompletedSessionIsConsumed(t *testing.T) {
	regForEachDB(t, testUIACompletedSessionIsConsumed)
}

func testUIACompletedSessionIsConsumed(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)

	t.Run("register", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		req := map[string]any{"username": "first", "password": "pw"}
		_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, req))
		req["auth"] = uiaDummyAuth(session)
		c.MustDo("POST", uiaRegisterPath, req, http.StatusOK)
		for _, auth := range []map[string]any{uiaDummyAuth(session), {"session": session}} {
			c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "second", "password": "pw", "auth": auth},
				http.StatusBadRequest, "M_UNKNOWN")
		}
		c.MustFail("GET", "/_matrix/client/v3/register/available?username=first", nil, http.StatusBadRequest, "M_USER_IN_USE")
		c.MustDo("GET", "/_matrix/client/v3/register/available?username=second", nil, http.StatusOK)
	})

	t.Run("delete device", func(t *testing.T) {
		bob := testutil.NewClient(t, srv.URL).Register("bob", "pw")
		d1, d2 := bob.Login("bob", "pw"), bob.Login("bob", "pw")
		path1 := testutil.Path("/_matrix/client/v3/devices/%s", d1.DeviceID)
		_, _, session := uiaChallenge(t, bob.Do("DELETE", path1, map[string]any{}))
		bob.MustDo("DELETE", path1, map[string]any{"auth": uiaPasswordAuth(session, bob.UserID, "pw")}, http.StatusOK)
		// Same endpoint and method, another device: the session is gone.
		bob.MustFail("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", d2.DeviceID), map[string]any{"auth": map[string]any{"session": session}},
			http.StatusBadRequest, "M_UNKNOWN")
		d2.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	})
}

// The spec requires /register to check the username before authentication.
func TestRegisterChecksRunBeforeUIA(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.Register("taken", "pw")
	_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "fresh", "password": "pw"}))
	for _, tc := range []struct{ username, errcode string }{
		{"taken", "M_USER_IN_USE"},
		{"Taken", "M_USER_IN_USE"},
		{"not valid", "M_INVALID_USERNAME"},
		{"@colon:x", "M_INVALID_USERNAME"},
	} {
		t.Run(tc.username, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL)
			c.MustFail("POST", uiaRegisterPath, map[string]any{"username": tc.username, "password": "pw"}, http.StatusBadRequest, tc.errcode)
			// Not even a valid session gets past the check.
			c.MustFail("POST", uiaRegisterPath, map[string]any{"username": tc.username, "password": "pw", "auth": uiaDummyAuth(session)},
				http.StatusBadRequest, tc.errcode)
		})
	}
	// The session that saw those rejections still registers "fresh".
	c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "fresh", "password": "pw", "auth": uiaDummyAuth(session)}, http.StatusOK)
}

// A request that fails after UIA completed keeps the session: the client
// fixes the request and retries without authenticating again.
func TestRegisterMissingPasswordKeepsSession(t *testing.T) {
	regForEachDB(t, testRegisterMissingPasswordKeepsSession)
}

func testRegisterMissingPasswordKeepsSession(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)
	c := srv.Client()
	_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "carol"}))
	c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "carol", "auth": uiaDummyAuth(session)}, http.StatusBadRequest, "M_MISSING_PARAM")
	c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "carol", "password": "", "auth": map[string]any{"session": session}},
		http.StatusBadRequest, "M_MISSING_PARAM")
	// The account was not created.
	c.MustDo("GET", "/_matrix/client/v3/register/available?username=carol", nil, http.StatusOK)
	// Retrying with the session alone completes the registration.
	m := c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "carol", "password": "pw", "auth": map[string]any{"session": session}}, http.StatusOK)
	if m["user_id"] != "@carol:"+srv.Config.ServerName || m["access_token"] == nil {
		t.Fatalf("register response: %v", m)
	}
	c.Login("carol", "pw")
}

// Without a username the server picks one.
func TestRegisterWithoutUsername(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	ids := map[string]bool{}
	for range 2 {
		m := c.MustDo("POST", uiaRegisterPath, map[string]any{"password": "pw", "auth": uiaDummyAuth("")}, http.StatusOK)
		uid, _ := m["user_id"].(string)
		if !strings.HasPrefix(uid, "@") || !strings.HasSuffix(uid, ":"+srv.Config.ServerName) || ids[uid] {
			t.Fatalf("generated user ID %q (earlier: %v)", uid, ids)
		}
		ids[uid] = true
		c.Login(uid, "pw")
	}
}

func TestRegisterInhibitLogin(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	m := c.MustDo("POST", uiaRegisterPath, map[string]any{
		"username": "quiet", "password": "pw", "inhibit_login": true, "auth": uiaDummyAuth(""),
	}, http.StatusOK)
	if m["user_id"] != "@quiet:"+srv.Config.ServerName {
		t.Fatalf("user_id = %v, want @quiet:%s", m["user_id"], srv.Config.ServerName)
	}
	for _, k := range []string{"access_token", "device_id", "refresh_token", "expires_in_ms"} {
		if _, ok := m[k]; ok {
			t.Fatalf("inhibit_login response has %s: %v", k, m)
		}
	}
	// The account exists and has no devices until it logs in.
	quiet := c.Login("quiet", "pw")
	devices := quiet.MustDo("GET", "/_matrix/client/v3/devices", nil, http.StatusOK)["devices"].([]any)
	if len(devices) != 1 || devices[0].(map[string]any)["device_id"] != quiet.DeviceID {
		t.Fatalf("devices = %v, want only the login's device %s", devices, quiet.DeviceID)
	}
}

func TestRegisterDeviceIDAndDisplayName(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	m := c.MustDo("POST", uiaRegisterPath, map[string]any{
		"username": "dana", "password": "pw", "device_id": "MYPHONE", "initial_device_display_name": "Dana's phone", "auth": uiaDummyAuth(""),
	}, http.StatusOK)
	if m["device_id"] != "MYPHONE" {
		t.Fatalf("device_id = %v, want MYPHONE", m["device_id"])
	}
	dana := c.As(m["user_id"].(string), "MYPHONE", m["access_token"].(string))
	devices := dana.MustDo("GET", "/_matrix/client/v3/devices", nil, http.StatusOK)["devices"].([]any)
	if len(devices) != 1 {
		t.Fatalf("devices = %v, want one", devices)
	}
	d := devices[0].(map[string]any)
	if d["device_id"] != "MYPHONE" || d["display_name"] != "Dana's phone" {
		t.Fatalf("device = %v, want MYPHONE named Dana's phone", d)
	}
	who := dana.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	if who["device_id"] != "MYPHONE" {
		t.Fatalf("whoami = %v", who)
	}
}

func TestRegisterRefreshToken(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	m := c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "plain", "password": "pw", "auth": uiaDummyAuth("")}, http.StatusOK)
	if _, ok := m["refresh_token"]; ok {
		t.Fatalf("refresh_token without refresh_token:true: %v", m)
	}
	m = c.MustDo("POST", uiaRegisterPath, map[string]any{
		"username": "fresh", "password": "pw", "refresh_token": true, "auth": uiaDummyAuth(""),
	}, http.StatusOK)
	rt, _ := m["refresh_token"].(string)
	exp, _ := m["expires_in_ms"].(float64)
	if rt == "" || exp <= 0 || m["access_token"] == nil {
		t.Fatalf("register with refresh_token:true: %v", m)
	}
	fresh := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
	fresh.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	// The refresh token is a working one.
	r := c.MustDo("POST", "/_matrix/client/v3/refresh", map[string]any{"refresh_token": rt}, http.StatusOK)
	if r["access_token"] == nil || r["access_token"] == m["access_token"] {
		t.Fatalf("refresh response: %v", r)
	}
}

// regForEachDB runs body on SQLite and, when MYELIN_TEST_POSTGRES is set,
// on PostgreSQL: o is the testserver.Options selecting the database.
func regForEachDB(t *testing.T, body func(t *testing.T, o testserver.Options)) {
	t.Run("sqlite", func(t *testing.T) { body(t, testserver.Options{}) })
	t.Run("postgres", func(t *testing.T) { body(t, testserver.Options{Postgres: true}) })
}

// startTokenServer starts a server (on the database o selects) that requires
// registration tokens and returns it with an admin client.
func startTokenServer(t *testing.T, o testserver.Options) (*testserver.Server, *testutil.Client) {
	t.Helper()
	o.Configure = func(c *config.Config) { c.Registration.RequireToken = true }
	srv := testserver.Start(t, o)
	return srv, registerWithSharedSecret(t, srv, "admin", "admin password", true)
}

// uiaTokenAuth is an m.login.registration_token auth dict.
func uiaTokenAuth(session, token string) map[string]any {
	a := map[string]any{"type": "m.login.registration_token", "token": token}
	if session != "" {
		a["session"] = session
	}
	return a
}

// tokenValidity queries the registration token validity endpoint.
func tokenValidity(c *testutil.Client, token string) bool {
	c.T.Helper()
	m := c.MustDo("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+url.QueryEscape(token), nil, http.StatusOK)
	v, ok := m["valid"].(bool)
	if !ok {
		c.T.Fatalf("validity response: %v", m)
	}
	return v
}

func TestRegistrationTokenFlow(t *testing.T) { regForEachDB(t, testRegistrationTokenFlow) }

func testRegistrationTokenFlow(t *testing.T, o testserver.Options) {
	srv, admin := startTokenServer(t, o)
	createRegToken(t, admin, map[string]any{"token": "letmein"})
	c := srv.Client()
	req := map[string]any{"username": "tokenuser", "password": "pw"}
	_, flows, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, req))
	uiaWantFlows(t, flows, []string{"m.login.registration_token"})

	t.Run("dummy is not enough", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		body, _, _ := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "cheat", "password": "pw", "auth": uiaDummyAuth("")}))
		if body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("errcode = %v, want M_UNRECOGNIZED", body["errcode"])
		}
		c.MustDo("GET", "/_matrix/client/v3/register/available?username=cheat", nil, http.StatusOK)
	})

	for _, bad := range []string{"wrong", "LETMEIN", ""} {
		req["auth"] = uiaTokenAuth(session, bad)
		body, flows, session2 := uiaChallenge(t, c.Do("POST", uiaRegisterPath, req))
		if body["errcode"] != "M_UNAUTHORIZED" || session2 != session {
			t.Fatalf("token %q: errcode %v session %q, want M_UNAUTHORIZED in session %q: %v", bad, body["errcode"], session2, session, body)
		}
		uiaWantFlows(t, flows, []string{"m.login.registration_token"})
	}
	req["auth"] = uiaTokenAuth(session, "letmein")
	m := c.MustDo("POST", uiaRegisterPath, req, http.StatusOK)
	if m["user_id"] != "@tokenuser:"+srv.Config.ServerName || m["access_token"] == nil {
		t.Fatalf("register response: %v", m)
	}
	tok := getRegToken(t, admin, "letmein")
	if tok["completed"] != 1.0 || tok["pending"] != 0.0 {
		t.Fatalf("token after one registration: %v, want completed 1, pending 0", tok)
	}
}

func TestRegistrationTokenValidity(t *testing.T) {
	const path = "/_matrix/client/v1/register/m.login.registration_token/validity"
	t.Run("tokens not required", func(t *testing.T) {
		c := testserver.Start(t).Client()
		c.MustFail("GET", path+"?token=abc", nil, http.StatusForbidden, "M_FORBIDDEN")
	})
	srv, admin := startTokenServer(t, testserver.Options{})
	c := srv.Client()
	c.MustFail("GET", path, nil, http.StatusBadRequest, "M_MISSING_PARAM")
	if tokenValidity(c, "unknown") {
		t.Fatal("an unknown token is valid")
	}
	createRegToken(t, admin, map[string]any{"token": "good"})
	createRegToken(t, admin, map[string]any{"token": "none-left", "uses_allowed": 0})
	if !tokenValidity(c, "good") {
		t.Fatal("a new unlimited token is not valid")
	}
	if tokenValidity(c, "GOOD") {
		t.Fatal("tokens are case-sensitive, yet GOOD is valid")
	}
	if tokenValidity(c, "none-left") {
		t.Fatal("a token with uses_allowed 0 is valid")
	}
}

// A token with uses_allowed 1 lets exactly one user register; a session
// that completed the token stage holds the use (pending) until it registers.
func TestRegistrationTokenSingleUse(t *testing.T) { regForEachDB(t, testRegistrationTokenSingleUse) }

func testRegistrationTokenSingleUse(t *testing.T, o testserver.Options) {
	srv, admin := startTokenServer(t, o)
	createRegToken(t, admin, map[string]any{"token": "once", "uses_allowed": 1})
	c := srv.Client()

	// The first user completes the token stage but forgets the password.
	_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "first"}))
	c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "first", "auth": uiaTokenAuth(session, "once")},
		http.StatusBadRequest, "M_MISSING_PARAM")
	if tok := getRegToken(t, admin, "once"); tok["pending"] != 1.0 || tok["completed"] != 0.0 {
		t.Fatalf("token with a pending registration: %v, want pending 1, completed 0", tok)
	}
	if tokenValidity(c, "once") {
		t.Fatal("a token whose only use is pending is still valid")
	}
	// Nobody else can use it meanwhile.
	body, _, _ := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "second", "password": "pw", "auth": uiaTokenAuth("", "once")}))
	if body["errcode"] != "M_UNAUTHORIZED" {
		t.Fatalf("second use of a single-use token: errcode %v, want M_UNAUTHORIZED", body["errcode"])
	}
	// The first user finishes.
	c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "first", "password": "pw", "auth": map[string]any{"session": session}}, http.StatusOK)
	if tok := getRegToken(t, admin, "once"); tok["pending"] != 0.0 || tok["completed"] != 1.0 {
		t.Fatalf("used-up token: %v, want pending 0, completed 1", tok)
	}
	if tokenValidity(c, "once") {
		t.Fatal("a used-up token is valid")
	}
	body, _, _ = uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "third", "password": "pw", "auth": uiaTokenAuth("", "once")}))
	if body["errcode"] != "M_UNAUTHORIZED" {
		t.Fatalf("use of a used-up token: errcode %v, want M_UNAUTHORIZED", body["errcode"])
	}
	if names := regTokenNames(listRegTokens(t, admin, "?valid=false")); !slices.Equal(names, []string{"once"}) {
		t.Fatalf("invalid tokens = %v, want [once]", names)
	}
}

// Many registrations race for a token with two uses: exactly two win.
func TestRegistrationTokenConcurrentUse(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv, admin := startTokenServer(t, o)
		createRegToken(t, admin, map[string]any{"token": "twice", "uses_allowed": 2})
		const n = 8
		results := concurrently(n, func(i int) *testutil.Response {
			return srv.Client().Do("POST", uiaRegisterPath, map[string]any{
				"username": "racer" + strconv.Itoa(i), "password": "pw", "auth": uiaTokenAuth("", "twice"),
			})
		})
		won := 0
		for _, r := range results {
			switch {
			case r.Status == http.StatusOK:
				won++
			case r.Status == http.StatusUnauthorized && r.JSON(t)["errcode"] == "M_UNAUTHORIZED":
			default:
				t.Errorf("unexpected response %d: %s", r.Status, r.Body)
			}
		}
		if won != 2 {
			t.Fatalf("%d registrations used a token with uses_allowed 2", won)
		}
		if tok := getRegToken(t, admin, "twice"); tok["pending"] != 0.0 || tok["completed"] != 2.0 {
			t.Fatalf("token after the race: %v, want pending 0, completed 2", tok)
		}
	})
}

// A completed session authorises one registration, even when the client
// sends it several times at once: a single-use token cannot be spent twice.
func TestRegistrationTokenSessionReplayedConcurrently(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv, admin := startTokenServer(t, o)
		createRegToken(t, admin, map[string]any{"token": "single", "uses_allowed": 1})
		c := srv.Client()
		// Complete the token stage; the missing password keeps the session.
		_, _, session := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "replay0"}))
		c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "replay0", "auth": uiaTokenAuth(session, "single")},
			http.StatusBadRequest, "M_MISSING_PARAM")
		const n = 12
		results := concurrently(n, func(i int) *testutil.Response {
			return srv.Client().Do("POST", uiaRegisterPath, map[string]any{
				"username": "replay" + strconv.Itoa(i), "password": "pw", "auth": map[string]any{"session": session},
			})
		})
		won := 0
		for i, r := range results {
			switch {
			case r.Status == http.StatusOK:
				won++
			case r.Status == http.StatusBadRequest && r.JSON(t)["errcode"] == "M_UNKNOWN":
				c.MustDo("GET", "/_matrix/client/v3/register/available?username=replay"+strconv.Itoa(i), nil, http.StatusOK)
			default:
				t.Errorf("unexpected response %d: %s", r.Status, r.Body)
			}
		}
		if won != 1 {
			t.Errorf("one UIA session registered %d accounts", won)
		}
		if tok := getRegToken(t, admin, "single"); tok["pending"] != 0.0 || tok["completed"] != 1.0 {
			t.Errorf("token after the replay: %v, want pending 0, completed 1", tok)
		}
	})
}

func TestRegistrationTokenExpiry(t *testing.T) {
	srv, admin := startTokenServer(t, testserver.Options{})
	expiry := float64(nowMillis() + 1000)
	tok := createRegToken(t, admin, map[string]any{"token": "shortlived", "expiry_time": expiry})
	if tok["expiry_time"] != expiry {
		t.Fatalf("expiry_time = %v, want %v", tok["expiry_time"], expiry)
	}
	c := srv.Client()
	testutil.Eventually(t, 10*time.Second, "the token to expire", func() bool { return !tokenValidity(c, "shortlived") })
	body, _, _ := uiaChallenge(t, c.Do("POST", uiaRegisterPath, map[string]any{"username": "late", "password": "pw", "auth": uiaTokenAuth("", "shortlived")}))
	if body["errcode"] != "M_UNAUTHORIZED" {
		t.Fatalf("expired token: errcode %v, want M_UNAUTHORIZED", body["errcode"])
	}
	if names := regTokenNames(listRegTokens(t, admin, "?valid=false")); !slices.Equal(names, []string{"shortlived"}) {
		t.Fatalf("invalid tokens = %v, want [shortlived]", names)
	}
	if names := regTokenNames(listRegTokens(t, admin, "?valid=true")); len(names) != 0 {
		t.Fatalf("valid tokens = %v, want none", names)
	}
	// Clearing the expiry makes it usable again.
	admin.MustDo("PUT", testutil.Path(regTokensPath+"/%s", "shortlived"), map[string]any{"expiry_time": nil}, http.StatusOK)
	c.MustDo("POST", uiaRegisterPath, map[string]any{"username": "late", "password": "pw", "auth": uiaTokenAuth("", "shortlived")}, http.StatusOK)
}
