package tests

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const (
	sharedSecretRegisterPath = "/_synapse/admin/v1/register"
	regTokensPath            = "/_synapse/admin/v1/registration_tokens"
)

func nowMillis() int64 { return time.Now().UnixMilli() }

// sharedSecretNonce fetches a nonce for shared-secret registration.
func sharedSecretNonce(c *testutil.Client) string {
	c.T.Helper()
	m := c.MustDo("GET", sharedSecretRegisterPath, nil, http.StatusOK)
	nonce, _ := m["nonce"].(string)
	if nonce == "" {
		c.T.Fatalf("nonce response: %v", m)
	}
	return nonce
}

// sharedSecretMAC is Synapse's registration MAC: hex(HMAC-SHA1(secret,
// nonce NUL username NUL password NUL admin|notadmin [NUL user_type])).
func sharedSecretMAC(secret, nonce, username, password string, admin bool, userType ...string) string {
	m := hmac.New(sha1.New, []byte(secret))
	flag := "notadmin"
	if admin {
		flag = "admin"
	}
	m.Write([]byte(strings.Join(append([]string{nonce, username, password, flag}, userType...), "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

// sharedSecretBody is a signed shared-secret registration request.
func sharedSecretBody(nonce, username, password string, admin bool) map[string]any {
	return map[string]any{
		"nonce": nonce, "username": username, "password": password, "admin": admin,
		"mac": sharedSecretMAC(testserver.SharedSecret, nonce, username, password, admin),
	}
}

// registerWithSharedSecret creates a user through Synapse's shared-secret
// registration API (which works even when open registration is off) and
// returns a client logged in as it. admin makes the user a server admin.
func registerWithSharedSecret(t testing.TB, srv *testserver.Server, localpart, password string, admin bool) *testutil.Client {
	t.Helper()
	c := testutil.NewClient(t, srv.URL)
	m := c.MustDo("POST", sharedSecretRegisterPath, sharedSecretBody(sharedSecretNonce(c), localpart, password, admin), http.StatusOK)
	return c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
}

// createRegToken creates a registration token through the admin API.
func createRegToken(t testing.TB, admin *testutil.Client, body map[string]any) map[string]any {
	t.Helper()
	return admin.MustDo("POST", regTokensPath+"/new", body, http.StatusOK)
}

// getRegToken fetches one registration token through the admin API.
func getRegToken(t testing.TB, admin *testutil.Client, token string) map[string]any {
	t.Helper()
	return admin.MustDo("GET", testutil.Path(regTokensPath+"/%s", token), nil, http.StatusOK)
}

// listRegTokens lists registration tokens; query is "" or "?valid=...".
func listRegTokens(t testing.TB, admin *testutil.Client, query string) []any {
	t.Helper()
	m := admin.MustDo("GET", regTokensPath+query, nil, http.StatusOK)
	list, ok := m["registration_tokens"].([]any)
	if !ok {
		t.Fatalf("list response without registration_tokens array: %v", m)
	}
	return list
}

// regTokenNames returns the sorted token strings of a token list.
func regTokenNames(list []any) []string {
	names := []string{}
	for _, e := range list {
		names = append(names, e.(map[string]any)["token"].(string))
	}
	slices.Sort(names)
	return names
}

// wantRegToken checks every field of a registration token object (nil for
// a null uses_allowed or expiry_time).
func wantRegToken(t testing.TB, got map[string]any, token string, usesAllowed any, pending, completed float64, expiry any) {
	t.Helper()
	want := map[string]any{"token": token, "uses_allowed": usesAllowed, "pending": pending, "completed": completed, "expiry_time": expiry}
	for k, v := range want {
		gv, ok := got[k]
		if !ok || gv != v {
			t.Fatalf("token %s: %s = %v (present %v), want %v; token: %v", token, k, gv, ok, v, got)
		}
	}
}

// Shared-secret registration works even when open registration is off, and
// the account is a normal one.
func TestSharedSecretRegistration(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Registration.Enabled = false }})
	c := srv.Client()
	c.MustFail("POST", uiaRegisterPath, map[string]any{"username": "sam", "password": "pw", "auth": uiaDummyAuth("")}, http.StatusForbidden, "M_FORBIDDEN")

	n1, n2 := sharedSecretNonce(c), sharedSecretNonce(c)
	if n1 == n2 {
		t.Fatalf("two nonces are equal: %q", n1)
	}
	body := sharedSecretBody(n2, "sam", "sam's password", false)
	body["displayname"] = "Sam Smith"
	m := c.MustDo("POST", sharedSecretRegisterPath, body, http.StatusOK)
	if m["user_id"] != "@sam:"+srv.Config.ServerName || m["home_server"] != srv.Config.ServerName {
		t.Fatalf("register response: %v", m)
	}
	for _, k := range []string{"access_token", "device_id"} {
		if s, _ := m[k].(string); s == "" {
			t.Fatalf("register response without %s: %v", k, m)
		}
	}
	sam := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
	who := sam.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	if who["user_id"] != sam.UserID || who["device_id"] != sam.DeviceID || who["is_guest"] != false {
		t.Fatalf("whoami = %v", who)
	}
	c.Login("sam", "sam's password")
	p := c.MustDo("GET", testutil.Path("/_matrix/client/v3/profile/%s/displayname", sam.UserID), nil, http.StatusOK)
	if p["displayname"] != "Sam Smith" {
		t.Fatalf("displayname = %v, want Sam Smith", p)
	}
	// The first nonce is still usable; it is a one-time value, not a session.
	c.MustDo("POST", sharedSecretRegisterPath, sharedSecretBody(n1, "Mixed.Case", "pw", false), http.StatusOK)
	c.Login("mixed.case", "pw")

	// A user type is covered by the MAC.
	nonce := sharedSecretNonce(c)
	bot := sharedSecretBody(nonce, "botty", "pw", false)
	bot["user_type"] = "bot"
	bot["mac"] = sharedSecretMAC(testserver.SharedSecret, nonce, "botty", "pw", false, "bot")
	c.MustDo("POST", sharedSecretRegisterPath, bot, http.StatusOK)
	nonce = sharedSecretNonce(c)
	bot = sharedSecretBody(nonce, "botty2", "pw", false)
	bot["user_type"] = "bot" // not in the MAC
	c.MustFail("POST", sharedSecretRegisterPath, bot, http.StatusForbidden, "M_FORBIDDEN")
}

func TestSharedSecretRegistrationErrors(t *testing.T) {
	regForEachDB(t, testSharedSecretRegistrationErrors)
}

func testSharedSecretRegistrationErrors(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)
	registerWithSharedSecret(t, srv, "taken", "pw", false)

	t.Run("wrong mac", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		var nonce string
		for _, mac := range []func(nonce string) string{
			func(n string) string { return sharedSecretMAC("wrong secret", n, "mallory", "pw", false) },
			func(n string) string { return sharedSecretMAC(testserver.SharedSecret, n, "mallory", "pw", true) }, // admin flag flipped
			func(n string) string { return sharedSecretMAC(testserver.SharedSecret, n, "mallory", "other", false) },
			func(string) string { return "not hex" },
		} {
			nonce = sharedSecretNonce(c)
			body := sharedSecretBody(nonce, "mallory", "pw", false)
			body["mac"] = mac(nonce)
			c.MustFail("POST", sharedSecretRegisterPath, body, http.StatusForbidden, "M_FORBIDDEN")
		}
		// As in Synapse, a nonce is gone even after a failed attempt.
		c.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody(nonce, "mallory", "pw", false), http.StatusBadRequest, "M_UNKNOWN")
		c.MustDo("GET", "/_matrix/client/v3/register/available?username=mallory", nil, http.StatusOK)
	})

	t.Run("unknown nonce", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		c.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody("0123456789abcdef", "nobody", "pw", false), http.StatusBadRequest, "M_UNKNOWN")
	})

	t.Run("reused nonce", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		nonce := sharedSecretNonce(c)
		c.MustDo("POST", sharedSecretRegisterPath, sharedSecretBody(nonce, "once", "pw", false), http.StatusOK)
		c.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody(nonce, "twice", "pw", false), http.StatusBadRequest, "M_UNKNOWN")
		c.MustDo("GET", "/_matrix/client/v3/register/available?username=twice", nil, http.StatusOK)
	})

	t.Run("missing fields", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		for _, field := range []string{"nonce", "username", "password", "mac"} {
			body := sharedSecretBody(sharedSecretNonce(c), "partial", "pw", false)
			delete(body, field)
			c.MustFail("POST", sharedSecretRegisterPath, body, http.StatusBadRequest, "M_MISSING_PARAM")
		}
		c.MustDo("GET", "/_matrix/client/v3/register/available?username=partial", nil, http.StatusOK)
	})

	t.Run("username taken", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		c.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody(sharedSecretNonce(c), "taken", "pw", false), http.StatusBadRequest, "M_USER_IN_USE")
	})

	t.Run("invalid username", func(t *testing.T) {
		c := testutil.NewClient(t, srv.URL)
		c.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody(sharedSecretNonce(c), "not valid", "pw", false), http.StatusBadRequest, "M_INVALID_USERNAME")
	})
}

func TestSharedSecretRegistrationDisabled(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Registration.SharedSecret = "" }})
	c := srv.Client()
	c.MustFail("GET", sharedSecretRegisterPath, nil, http.StatusBadRequest, "M_UNKNOWN")
	// Not even a MAC made with an empty secret gets in.
	body := map[string]any{"nonce": "abc", "username": "eve", "password": "pw", "admin": true,
		"mac": sharedSecretMAC("", "abc", "eve", "pw", true)}
	c.MustFail("POST", sharedSecretRegisterPath, body, http.StatusBadRequest, "M_UNKNOWN")
	c.MustDo("GET", "/_matrix/client/v3/register/available?username=eve", nil, http.StatusOK)
}

// admin:true makes a server admin, who alone may use the admin API.
func TestSharedSecretAdminFlag(t *testing.T) {
	srv := testserver.Start(t)
	admin := registerWithSharedSecret(t, srv, "boss", "pw", true)
	notAdmin := registerWithSharedSecret(t, srv, "worker", "pw", false)
	ordinary := srv.Client().Register("ordinary", "pw")

	for _, ep := range []struct {
		method, path string
		body         any
	}{
		{"GET", regTokensPath, nil},
		{"POST", regTokensPath + "/new", map[string]any{"token": "probe"}},
		{"GET", regTokensPath + "/probe", nil},
		{"PUT", regTokensPath + "/probe", map[string]any{"uses_allowed": 1}},
		{"DELETE", regTokensPath + "/probe", nil},
	} {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			anon := testutil.NewClient(t, srv.URL)
			anon.MustFail(ep.method, ep.path, ep.body, http.StatusUnauthorized, "M_MISSING_TOKEN")
			anon.As("", "", "not-a-token").MustFail(ep.method, ep.path, ep.body, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
			for _, u := range []*testutil.Client{notAdmin, ordinary} {
				u := testutil.NewClient(t, srv.URL).As(u.UserID, u.DeviceID, u.AccessToken)
				u.MustFail(ep.method, ep.path, ep.body, http.StatusForbidden, "M_FORBIDDEN")
			}
		})
	}
	// Nothing the others tried took effect; the admin may do it all.
	if names := regTokenNames(listRegTokens(t, admin, "")); len(names) != 0 {
		t.Fatalf("tokens = %v, want none", names)
	}
	createRegToken(t, admin, map[string]any{"token": "probe"})
	getRegToken(t, admin, "probe")
	admin.MustDo("PUT", regTokensPath+"/probe", map[string]any{"uses_allowed": 1}, http.StatusOK)
	admin.MustDo("DELETE", regTokensPath+"/probe", nil, http.StatusOK)
}

var regTokenChars = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)

func TestRegistrationTokenAdminCreate(t *testing.T) {
	srv := testserver.Start(t)
	admin := registerWithSharedSecret(t, srv, "admin", "pw", true)

	t.Run("defaults", func(t *testing.T) {
		tok := createRegToken(t, admin, map[string]any{})
		s, _ := tok["token"].(string)
		if len(s) != 16 || !regTokenChars.MatchString(s) {
			t.Fatalf("generated token %q, want 16 characters of [A-Za-z0-9._~-]", s)
		}
		wantRegToken(t, tok, s, nil, 0, 0, nil)
		wantRegToken(t, getRegToken(t, admin, s), s, nil, 0, 0, nil)
		if other := createRegToken(t, admin, map[string]any{})["token"]; other == s {
			t.Fatalf("two generated tokens are both %q", s)
		}
	})

	t.Run("length", func(t *testing.T) {
		for _, n := range []int{1, 8, 64} {
			s, _ := createRegToken(t, admin, map[string]any{"length": n})["token"].(string)
			if len(s) != n || !regTokenChars.MatchString(s) {
				t.Fatalf("length %d: token %q", n, s)
			}
		}
	})

	t.Run("explicit", func(t *testing.T) {
		expiry := float64(nowMillis() + 3600_000)
		tok := createRegToken(t, admin, map[string]any{"token": "Abc-1.2_3~", "uses_allowed": 5, "expiry_time": expiry})
		wantRegToken(t, tok, "Abc-1.2_3~", 5.0, 0, 0, expiry)
		wantRegToken(t, getRegToken(t, admin, "Abc-1.2_3~"), "Abc-1.2_3~", 5.0, 0, 0, expiry)
		wantRegToken(t, createRegToken(t, admin, map[string]any{"token": "zero-uses", "uses_allowed": 0}), "zero-uses", 0.0, 0, 0, nil)
		wantRegToken(t, createRegToken(t, admin, map[string]any{"token": "nulls", "uses_allowed": nil, "expiry_time": nil}), "nulls", nil, 0, 0, nil)
	})

	t.Run("invalid", func(t *testing.T) {
		admin := testutil.NewClient(t, srv.URL).As(admin.UserID, admin.DeviceID, admin.AccessToken)
		createRegToken(t, admin, map[string]any{"token": "dup"})
		for name, body := range map[string]map[string]any{
			"expiry in the past":  {"token": "past", "expiry_time": nowMillis() - 1000},
			"negative uses":       {"token": "neg", "uses_allowed": -1},
			"fractional uses":     {"token": "frac", "uses_allowed": 1.5},
			"string uses":         {"token": "str", "uses_allowed": "3"},
			"string expiry":       {"token": "strexp", "expiry_time": "tomorrow"},
			"space":               {"token": "a b"},
			"slash":               {"token": "a/b"},
			"non-ASCII":           {"token": "tökén"},
			"empty":               {"token": ""},
			"too long":            {"token": strings.Repeat("a", 65)},
			"not a string":        {"token": 42},
			"duplicate":           {"token": "dup"},
			"length zero":         {"length": 0},
			"length too big":      {"length": 65},
			"length not a number": {"length": "8"},
		} {
			r := admin.Do("POST", regTokensPath+"/new", body)
			if m := r.JSON(t); r.Status != http.StatusBadRequest || m["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("%s: got %d %s, want 400 M_INVALID_PARAM", name, r.Status, r.Body)
			}
		}
		names := regTokenNames(listRegTokens(t, admin, ""))
		for _, bad := range []string{"past", "neg", "frac", "str", "strexp", "a b", "a/b", "tökén"} {
			if slices.Contains(names, bad) {
				t.Errorf("rejected token %q was created", bad)
			}
		}
		wantRegToken(t, getRegToken(t, admin, "dup"), "dup", nil, 0, 0, nil)
	})
}

func TestRegistrationTokenAdminManage(t *testing.T) {
	regForEachDB(t, testRegistrationTokenAdminManage)
}

func testRegistrationTokenAdminManage(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)
	admin := registerWithSharedSecret(t, srv, "admin", "pw", true)
	createRegToken(t, admin, map[string]any{"token": "open"})
	createRegToken(t, admin, map[string]any{"token": "exhausted", "uses_allowed": 0})
	future := float64(nowMillis() + 3600_000)
	createRegToken(t, admin, map[string]any{"token": "later", "expiry_time": future})

	t.Run("list", func(t *testing.T) {
		admin := testutil.NewClient(t, srv.URL).As(admin.UserID, admin.DeviceID, admin.AccessToken)
		all := listRegTokens(t, admin, "")
		if names := regTokenNames(all); !slices.Equal(names, []string{"exhausted", "later", "open"}) {
			t.Fatalf("tokens = %v", names)
		}
		for _, e := range all {
			if e.(map[string]any)["token"] == "later" {
				wantRegToken(t, e.(map[string]any), "later", nil, 0, 0, future)
			}
		}
		if names := regTokenNames(listRegTokens(t, admin, "?valid=true")); !slices.Equal(names, []string{"later", "open"}) {
			t.Fatalf("valid tokens = %v, want [later open]", names)
		}
		if names := regTokenNames(listRegTokens(t, admin, "?valid=false")); !slices.Equal(names, []string{"exhausted"}) {
			t.Fatalf("invalid tokens = %v, want [exhausted]", names)
		}
		admin.MustFail("GET", regTokensPath+"?valid=maybe", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("get unknown", func(t *testing.T) {
		admin := testutil.NewClient(t, srv.URL).As(admin.UserID, admin.DeviceID, admin.AccessToken)
		admin.MustFail("GET", regTokensPath+"/nope", nil, http.StatusNotFound, "M_NOT_FOUND")
		admin.MustFail("GET", regTokensPath+"/OPEN", nil, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("update", func(t *testing.T) {
		admin := testutil.NewClient(t, srv.URL).As(admin.UserID, admin.DeviceID, admin.AccessToken)
		put := func(token string, body map[string]any) map[string]any {
			t.Helper()
			return admin.MustDo("PUT", testutil.Path(regTokensPath+"/%s", token), body, http.StatusOK)
		}
		wantRegToken(t, put("exhausted", map[string]any{"uses_allowed": 3}), "exhausted", 3.0, 0, 0, nil)
		expiry := float64(nowMillis() + 7200_000)
		wantRegToken(t, put("exhausted", map[string]any{"expiry_time": expiry}), "exhausted", 3.0, 0, 0, expiry)
		// An empty body changes nothing.
		wantRegToken(t, put("exhausted", map[string]any{}), "exhausted", 3.0, 0, 0, expiry)
		wantRegToken(t, getRegToken(t, admin, "exhausted"), "exhausted", 3.0, 0, 0, expiry)
		if names := regTokenNames(listRegTokens(t, admin, "?valid=false")); len(names) != 0 {
			t.Fatalf("invalid tokens = %v after raising uses_allowed, want none", names)
		}
		// null clears a limit.
		wantRegToken(t, put("exhausted", map[string]any{"uses_allowed": nil}), "exhausted", nil, 0, 0, expiry)
		wantRegToken(t, put("exhausted", map[string]any{"expiry_time": nil}), "exhausted", nil, 0, 0, nil)
		wantRegToken(t, put("later", map[string]any{"uses_allowed": 0, "expiry_time": nil}), "later", 0.0, 0, 0, nil)
		wantRegToken(t, getRegToken(t, admin, "later"), "later", 0.0, 0, 0, nil)

		for name, body := range map[string]map[string]any{
			"expiry in the past": {"expiry_time": nowMillis() - 1000},
			"negative uses":      {"uses_allowed": -2},
			"string uses":        {"uses_allowed": "2"},
		} {
			r := admin.Do("PUT", regTokensPath+"/open", body)
			if m := r.JSON(t); r.Status != http.StatusBadRequest || m["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("%s: got %d %s, want 400 M_INVALID_PARAM", name, r.Status, r.Body)
			}
		}
		wantRegToken(t, getRegToken(t, admin, "open"), "open", nil, 0, 0, nil)
		admin.MustFail("PUT", regTokensPath+"/nope", map[string]any{"uses_allowed": 1}, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("delete", func(t *testing.T) {
		admin := testutil.NewClient(t, srv.URL).As(admin.UserID, admin.DeviceID, admin.AccessToken)
		createRegToken(t, admin, map[string]any{"token": "doomed"})
		if m := admin.MustDo("DELETE", regTokensPath+"/doomed", nil, http.StatusOK); len(m) != 0 {
			t.Fatalf("delete response = %v, want {}", m)
		}
		admin.MustFail("GET", regTokensPath+"/doomed", nil, http.StatusNotFound, "M_NOT_FOUND")
		admin.MustFail("DELETE", regTokensPath+"/doomed", nil, http.StatusNotFound, "M_NOT_FOUND")
		admin.MustFail("DELETE", regTokensPath+"/nope", nil, http.StatusNotFound, "M_NOT_FOUND")
		if slices.Contains(regTokenNames(listRegTokens(t, admin, "")), "doomed") {
			t.Fatal("deleted token still listed")
		}
		// The name can be reused.
		createRegToken(t, admin, map[string]any{"token": "doomed"})
	})
}
