package tests

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// The whole m.login.dummy flow: the first request gets the flows and a
// session, the second completes it.
func TestRegisterDummyFlow(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	body := map[string]any{"username": "alice", "password": "correct horse"}
	r := c.Do("POST", "/_matrix/client/v3/register", body)
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("first request: status %d, want 401: %s", r.Status, r.Body)
	}
	m := r.JSON(t)
	session, _ := m["session"].(string)
	flows, _ := m["flows"].([]any)
	if session == "" || len(flows) != 1 {
		t.Fatalf("401 body lacks session or flows: %s", r.Body)
	}
	if st := flows[0].(map[string]any)["stages"].([]any); len(st) != 1 || st[0] != "m.login.dummy" {
		t.Fatalf("flows = %v, want [[m.login.dummy]]", flows)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
	m = c.MustDo("POST", "/_matrix/client/v3/register", body, http.StatusOK)
	if m["user_id"] != "@alice:"+srv.Config.ServerName || m["access_token"] == "" || m["device_id"] == "" {
		t.Fatalf("register response: %v", m)
	}
	alice := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
	who := alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	if who["user_id"] != alice.UserID || who["device_id"] != alice.DeviceID || who["is_guest"] != false {
		t.Fatalf("whoami = %v", who)
	}
	// The completed session cannot authorise a second registration.
	body["username"] = "alice2"
	c.MustFail("POST", "/_matrix/client/v3/register", body, http.StatusBadRequest, "M_UNKNOWN")
}

func TestRegisterUsernameRules(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.Register("taken", "pw")
	for _, tc := range []struct {
		name, username string
		status         int
		errcode        string
	}{
		{"taken", "taken", 400, "M_USER_IN_USE"},
		{"taken in other case", "TAKEN", 400, "M_USER_IN_USE"},
		{"bad characters", "al ice", 400, "M_INVALID_USERNAME"},
		{"unicode", "alicé", 400, "M_INVALID_USERNAME"},
		{"leading underscore", "_bridge", 400, "M_INVALID_USERNAME"},
		{"numeric", "12345", 400, "M_INVALID_USERNAME"},
		{"too long", longName(260), 400, "M_INVALID_USERNAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testutil.NewClient(t, srv.URL)
			// The checks run before authentication: no auth needed.
			c.MustFail("POST", "/_matrix/client/v3/register", map[string]any{"username": tc.username, "password": "pw"}, tc.status, tc.errcode)
			c.MustFail("GET", "/_matrix/client/v3/register/available?username="+url.QueryEscape(tc.username), nil, tc.status, tc.errcode)
		})
	}
	m := c.MustDo("GET", "/_matrix/client/v3/register/available?username=free.name", nil, http.StatusOK)
	if m["available"] != true {
		t.Fatalf("available = %v", m)
	}
	// Mixed case is registered lower-cased.
	bob := c.Register("BoB", "pw")
	if bob.UserID != "@bob:"+srv.Config.ServerName {
		t.Fatalf("user ID %s, want lower case", bob.UserID)
	}
}

func longName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

// Many clients race for one name: exactly one wins, the rest get
// M_USER_IN_USE.
func TestConcurrentRegistrationOfOneName(t *testing.T) {
	srv := testserver.Start(t)
	results := concurrently(10, func(int) *testutil.Response {
		return srv.Client().Do("POST", "/_matrix/client/v3/register", map[string]any{
			"username": "contested", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
		})
	})
	won := 0
	for _, r := range results {
		switch {
		case r.Status == http.StatusOK:
			won++
		case r.Status == http.StatusBadRequest && r.JSON(t)["errcode"] == "M_USER_IN_USE":
		default:
			t.Errorf("unexpected response %d: %s", r.Status, r.Body)
		}
	}
	if won != 1 {
		t.Fatalf("%d registrations won, want exactly 1", won)
	}
}

func TestRegisterWhenDisabled(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configT) { c.Registration.Enabled = false }})
	c := srv.Client()
	c.MustFail("POST", "/_matrix/client/v3/register", map[string]any{"username": "a", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}},
		http.StatusForbidden, "M_FORBIDDEN")
	c.MustFail("GET", "/_matrix/client/v3/register/available?username=a", nil, http.StatusForbidden, "M_FORBIDDEN")
}

// An account survives a restart of the server.
func TestAccountSurvivesRestart(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	srv.Restart()
	alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	c.Login("alice", "secret")
}
