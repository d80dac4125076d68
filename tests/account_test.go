package tests

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const (
	acctPasswordPath   = "/_matrix/client/v3/account/password"
	acctDeactivatePath = "/_matrix/client/v3/account/deactivate"
	acctLogoutPath     = "/_matrix/client/v3/logout"
)

func TestWhoami(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	m := alice.MustDo("GET", acctWhoami, nil, http.StatusOK)
	if m["user_id"] != "@alice:"+srv.Config.ServerName || m["device_id"] != alice.DeviceID || m["is_guest"] != false {
		t.Fatalf("whoami = %v, want alice's user and device, not a guest", m)
	}
	// Each login is its own device.
	other := c.Login("alice", "secret")
	m = other.MustDo("GET", acctWhoami, nil, http.StatusOK)
	if m["user_id"] != alice.UserID || m["device_id"] != other.DeviceID || m["device_id"] == alice.DeviceID {
		t.Fatalf("whoami of the second device = %v", m)
	}
	c.MustFail("GET", acctWhoami, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// /logout deletes the device along with its token.
func TestLogout(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	phone := c.Login("alice", "secret")
	acctWantDevices(alice, alice.DeviceID, phone.DeviceID)

	phone.MustDo("POST", acctLogoutPath, map[string]any{}, http.StatusOK)
	acctWantUnknownToken(phone)
	acctWantDevices(alice, alice.DeviceID)
	acctWantWorks(alice)
	// A second logout with the dead token is refused.
	phone.MustFail("POST", acctLogoutPath, map[string]any{}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	c.MustFail("POST", acctLogoutPath, map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// A client whose access token has expired can still log out (Synapse lets
// /logout and /logout/all through with expired tokens): the device goes, and
// its refresh token with it.
func TestLogoutWithExpiredToken(t *testing.T) {
	srv := acctShortLived(t, 300*time.Millisecond)
	c := srv.Client()
	alice := c.Register("alice", "secret") // not refreshable: never expires
	one, refreshOne, _ := acctLoginRefreshable(c, "alice", "secret")
	two, refreshTwo, _ := acctLoginRefreshable(c, "alice", "secret")
	acctWaitExpired(one)
	acctWaitExpired(two)

	one.MustDo("POST", acctLogoutPath, map[string]any{}, http.StatusOK)
	c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": refreshOne}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	acctWantDevices(alice, alice.DeviceID, two.DeviceID)

	two.MustDo("POST", acctLogoutPath+"/all", map[string]any{}, http.StatusOK)
	c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": refreshTwo}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	acctWantUnknownToken(alice)
}

// /logout/all kills every session of the user and no one else's.
func TestLogoutAll(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	phone := c.Login("alice", "secret")
	laptop := c.Login("alice", "secret")
	bob := c.Register("bob", "secret")
	acctWantWorks(phone) // cached tokens must go as well

	phone.MustDo("POST", acctLogoutPath+"/all", map[string]any{}, http.StatusOK)
	for _, s := range []*testutil.Client{alice, phone, laptop} {
		acctWantUnknownToken(s)
	}
	acctWantWorks(bob)
	acctWantDevices(bob, bob.DeviceID)

	// The account itself lives on.
	again := c.Login("alice", "secret")
	acctWantDevices(again, again.DeviceID)
}

func TestChangePassword(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "old password")
	phone := c.Login("alice", "old password")
	laptop := c.Login("alice", "old password")
	acctWantWorks(laptop)

	// The new password is required. The request is authenticated properly
	// so that the missing parameter is the only thing wrong with it.
	session := acctChallenge(alice, "POST", acctPasswordPath, map[string]any{"new_password": "new password"})
	alice.MustFail("POST", acctPasswordPath, map[string]any{
		"auth": acctPasswordAuth(session, alice.UserID, "old password"),
	}, http.StatusBadRequest, "M_MISSING_PARAM")

	// A wrong password changes nothing.
	r := acctDoUIA(alice, "POST", acctPasswordPath, map[string]any{"new_password": "new password"}, alice.UserID, "wrong")
	if m := r.JSON(t); r.Status != http.StatusUnauthorized || m["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong password: got %d %s, want 401 M_FORBIDDEN", r.Status, r.Body)
	}
	c.Login("alice", "old password")

	acctMustUIA(alice, "POST", acctPasswordPath, map[string]any{"new_password": "new password"}, "old password")
	c.MustFail("POST", acctLogin, acctLoginBody("alice", "old password"), http.StatusForbidden, "M_FORBIDDEN")
	fresh := c.Login("alice", "new password")

	// logout_devices defaults to true: every other device is gone, the
	// caller's stays.
	acctWantWorks(alice)
	acctWantUnknownToken(phone)
	acctWantUnknownToken(laptop)
	acctWantDevices(alice, alice.DeviceID, fresh.DeviceID)
}

func TestChangePasswordKeepDevices(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "old password")
	phone := c.Login("alice", "old password")

	acctMustUIA(alice, "POST", acctPasswordPath, map[string]any{"new_password": "new password", "logout_devices": false}, "old password")
	acctWantWorks(alice)
	acctWantWorks(phone)
	acctWantDevices(alice, alice.DeviceID, phone.DeviceID)
	c.MustFail("POST", acctLogin, acctLoginBody("alice", "old password"), http.StatusForbidden, "M_FORBIDDEN")
	c.Login("alice", "new password")
}

func TestDeactivate(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	phone, refresh, _ := acctLoginRefreshable(c, "alice", "secret")
	bob := c.Register("bob", "bobsecret")

	// The password must be alice's own.
	r := acctDoUIA(alice, "POST", acctDeactivatePath, map[string]any{}, bob.UserID, "bobsecret")
	if m := r.JSON(t); (r.Status != http.StatusUnauthorized && r.Status != http.StatusForbidden) || m["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("deactivate with another user's password: got %d %s, want 401 or 403 M_FORBIDDEN", r.Status, r.Body)
	}
	acctWantWorks(alice)

	m := acctMustUIA(alice, "POST", acctDeactivatePath, map[string]any{}, "secret")
	if res := m["id_server_unbind_result"]; res != "success" && res != "no-support" {
		t.Fatalf("id_server_unbind_result = %v, want success or no-support", res)
	}

	acctWantUnknownToken(alice)
	acctWantUnknownToken(phone)
	c.MustFail("POST", acctRefresh, map[string]any{"refresh_token": refresh}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	c.MustFail("POST", acctLogin, acctLoginBody("alice", "secret"), http.StatusForbidden, "M_USER_DEACTIVATED")

	// The name stays taken.
	c.MustFail("POST", "/_matrix/client/v3/register", map[string]any{
		"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
	}, http.StatusBadRequest, "M_USER_IN_USE")
	c.MustFail("GET", "/_matrix/client/v3/register/available?username=alice", nil, http.StatusBadRequest, "M_USER_IN_USE")

	// Other users are untouched.
	acctWantWorks(bob)
	c.Login("bob", "bobsecret")
}

// erase: true removes the profile of the deactivated user.
func TestDeactivateErase(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	profile := testutil.Path("/_matrix/client/v3/profile/%s", alice.UserID)
	alice.MustDo("PUT", profile+"/displayname", map[string]any{"displayname": "Alice Liddell"}, http.StatusOK)
	if m := c.MustDo("GET", profile, nil, http.StatusOK); m["displayname"] != "Alice Liddell" {
		t.Fatalf("profile before deactivation = %v", m)
	}

	acctMustUIA(alice, "POST", acctDeactivatePath, map[string]any{"erase": true}, "secret")
	r := c.Do("GET", profile, nil)
	m := r.JSON(t)
	switch {
	case r.Status == http.StatusOK:
		if _, ok := m["displayname"]; ok {
			t.Fatalf("profile after erasure still has a displayname: %s", r.Body)
		}
	case r.Status == http.StatusNotFound && m["errcode"] == "M_NOT_FOUND":
	default:
		t.Fatalf("GET profile after erasure: %d %s, want 200 without displayname or 404", r.Status, r.Body)
	}
	c.MustFail("GET", "/_matrix/client/v3/register/available?username="+url.QueryEscape("alice"), nil, http.StatusBadRequest, "M_USER_IN_USE")
}
