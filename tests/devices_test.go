package tests

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// acctDevicePath is the path of one of the caller's devices.
func acctDevicePath(deviceID string) string {
	return testutil.Path(acctDevices+"/%s", deviceID)
}

func TestDevicesList(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	start := time.Now()
	alice := c.Register("alice", "secret")
	body := acctLoginBody("alice", "secret")
	body["initial_device_display_name"] = "Laptop"
	laptop, _ := acctLoginWith(c, body)
	bob := c.Register("bob", "secret")

	devs := acctDeviceList(alice)
	if len(devs) != 2 || devs[alice.DeviceID] == nil || devs[laptop.DeviceID] == nil {
		t.Fatalf("devices = %v, want exactly %s and %s", devs, alice.DeviceID, laptop.DeviceID)
	}
	if name := devs[laptop.DeviceID]["display_name"]; name != "Laptop" {
		t.Fatalf("laptop display_name = %v, want Laptop", name)
	}
	// The calling device has just been seen, from the loopback address.
	me := devs[alice.DeviceID]
	if me["last_seen_ip"] != "127.0.0.1" {
		t.Fatalf("last_seen_ip = %v, want 127.0.0.1", me["last_seen_ip"])
	}
	ts, _ := me["last_seen_ts"].(float64)
	if int64(ts) < start.Add(-time.Minute).UnixMilli() || int64(ts) > time.Now().Add(time.Minute).UnixMilli() {
		t.Fatalf("last_seen_ts = %v, want about now (%d)", me["last_seen_ts"], time.Now().UnixMilli())
	}

	d := alice.MustDo("GET", acctDevicePath(laptop.DeviceID), nil, http.StatusOK)
	if d["device_id"] != laptop.DeviceID || d["display_name"] != "Laptop" {
		t.Fatalf("GET /devices/%s = %v", laptop.DeviceID, d)
	}
	alice.MustFail("GET", acctDevicePath("NOSUCHDEVICE"), nil, http.StatusNotFound, "M_NOT_FOUND")

	// Another user's devices are invisible.
	alice.MustFail("GET", acctDevicePath(bob.DeviceID), nil, http.StatusNotFound, "M_NOT_FOUND")
	acctWantDevices(bob, bob.DeviceID)

	srv.Client().MustFail("GET", acctDevices, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestDeviceRename(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	laptop := c.Login("alice", "secret")
	bob := c.Register("bob", "secret")

	rename := func(c *testutil.Client, deviceID, name string) *testutil.Response {
		c.T.Helper()
		return c.Do("PUT", acctDevicePath(deviceID), map[string]any{"display_name": name})
	}
	nameOf := func(c *testutil.Client, deviceID string) any {
		c.T.Helper()
		return c.MustDo("GET", acctDevicePath(deviceID), nil, http.StatusOK)["display_name"]
	}

	if r := rename(alice, laptop.DeviceID, "Work laptop"); r.Status != http.StatusOK {
		t.Fatalf("rename: %d %s", r.Status, r.Body)
	}
	if n := nameOf(alice, laptop.DeviceID); n != "Work laptop" {
		t.Fatalf("display_name = %v, want Work laptop", n)
	}
	if n := acctDeviceList(laptop)[laptop.DeviceID]["display_name"]; n != "Work laptop" {
		t.Fatalf("GET /devices: display_name = %v, want Work laptop", n)
	}

	// 100 characters (not bytes) is the limit.
	hundred := strings.Repeat("é", 100)
	if r := rename(alice, laptop.DeviceID, hundred); r.Status != http.StatusOK {
		t.Fatalf("rename to 100 characters: %d %s", r.Status, r.Body)
	}
	acctWantError(alice, "PUT", acctDevicePath(laptop.DeviceID), map[string]any{"display_name": strings.Repeat("a", 101)}, http.StatusBadRequest, "")
	if n := nameOf(alice, laptop.DeviceID); n != hundred {
		t.Fatalf("display_name = %v after a refused rename, want it unchanged", n)
	}

	// A body without display_name changes nothing.
	alice.MustDo("PUT", acctDevicePath(laptop.DeviceID), map[string]any{}, http.StatusOK)
	if n := nameOf(alice, laptop.DeviceID); n != hundred {
		t.Fatalf("display_name = %v after an empty update, want it unchanged", n)
	}

	alice.MustFail("PUT", acctDevicePath("NOSUCHDEVICE"), map[string]any{"display_name": "x"}, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("PUT", acctDevicePath("NOSUCHDEVICE"), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
	// Another user's device cannot be renamed.
	rename(bob, bob.DeviceID, "Bob's phone")
	alice.MustFail("PUT", acctDevicePath(bob.DeviceID), map[string]any{"display_name": "pwned"}, http.StatusNotFound, "M_NOT_FOUND")
	if n := nameOf(bob, bob.DeviceID); n != "Bob's phone" {
		t.Fatalf("bob's device display_name = %v, want Bob's phone", n)
	}

	alice.MustFail("PUT", acctDevicePath(laptop.DeviceID), testutil.Raw(`{"display_name":`), http.StatusBadRequest, "M_NOT_JSON")
	alice.MustFail("PUT", acctDevicePath(laptop.DeviceID), map[string]any{"display_name": 5}, http.StatusBadRequest, "M_BAD_JSON")
}

func TestDeleteDeviceUIA(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	phone := c.Login("alice", "secret")
	bob := c.Register("bob", "bobsecret")
	path := acctDevicePath(phone.DeviceID)

	// No body at all starts UIA as well.
	acctChallenge(alice, "DELETE", path, nil)
	session := acctChallenge(alice, "DELETE", path, map[string]any{})
	acctWantWorks(phone)

	// A wrong password fails the stage: 401 with the error and the flows.
	r := alice.Do("DELETE", path, map[string]any{"auth": acctPasswordAuth(session, alice.UserID, "wrong")})
	m := r.JSON(t)
	if r.Status != http.StatusUnauthorized || m["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong password: got %d %s, want 401 M_FORBIDDEN", r.Status, r.Body)
	}
	acctCheckFlows(t, m)
	if m["session"] != session {
		t.Fatalf("session = %v, want %s", m["session"], session)
	}

	// The password must be that of the caller's own account.
	r = alice.Do("DELETE", path, map[string]any{"auth": acctPasswordAuth(session, bob.UserID, "bobsecret")})
	m = r.JSON(t)
	// Synapse's answer (and Complement's "DELETE /device/{deviceId}
	// requires UI auth user to match device owner"): 403, not a challenge.
	if r.Status != http.StatusForbidden || m["errcode"] != "M_FORBIDDEN" || m["flows"] != nil {
		t.Fatalf("another user's password: got %d %s, want 403 M_FORBIDDEN without flows", r.Status, r.Body)
	}
	r = acctDoUIA(alice, "DELETE", acctDevicePath(bob.DeviceID), map[string]any{}, bob.UserID, "bobsecret")
	if r.Status == http.StatusOK {
		t.Fatalf("alice's request authorised with bob's password: %s", r.Body)
	}
	acctWantWorks(phone)
	acctWantWorks(bob)

	r = alice.Do("DELETE", path, map[string]any{"auth": acctPasswordAuth(session, alice.UserID, "secret")})
	if r.Status != http.StatusOK {
		t.Fatalf("delete with the right password: %d %s", r.Status, r.Body)
	}
	acctWantUnknownToken(phone)
	alice.MustFail("GET", path, nil, http.StatusNotFound, "M_NOT_FOUND")
	acctWantDevices(alice, alice.DeviceID)
	acctWantWorks(alice)

	// Deleting one of bob's devices by ID, with alice's password, leaves it.
	r = acctDoUIA(alice, "DELETE", acctDevicePath(bob.DeviceID), map[string]any{}, alice.UserID, "secret")
	if r.Status != http.StatusOK && r.Status != http.StatusNotFound {
		t.Fatalf("delete of another user's device: %d %s", r.Status, r.Body)
	}
	acctWantWorks(bob)
	acctWantDevices(bob, bob.DeviceID)

	// The legacy top-level "user" field names the account too, and a
	// device may delete itself.
	session = acctChallenge(alice, "DELETE", acctDevicePath(alice.DeviceID), nil)
	alice.MustDo("DELETE", acctDevicePath(alice.DeviceID), map[string]any{"auth": map[string]any{
		"type": "m.login.password", "user": "alice", "password": "secret", "session": session,
	}}, http.StatusOK)
	acctWantUnknownToken(alice)
}

func TestDeleteDevicesBulk(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "secret")
	b := c.Login("alice", "secret")
	cc := c.Login("alice", "secret")
	d := c.Login("alice", "secret")
	bob := c.Register("bob", "secret")
	const path = "/_matrix/client/v3/delete_devices"

	alice.MustFail("POST", path, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
	acctMustUIA(alice, "POST", path, map[string]any{"devices": []string{b.DeviceID, cc.DeviceID, bob.DeviceID, "NOSUCHDEVICE"}}, "secret")
	acctWantUnknownToken(b)
	acctWantUnknownToken(cc)
	acctWantWorks(d)
	acctWantWorks(alice)
	acctWantDevices(alice, alice.DeviceID, d.DeviceID)
	// bob's device was named but is not alice's to delete.
	acctWantWorks(bob)

	// A wrong password deletes nothing.
	body := map[string]any{"devices": []string{d.DeviceID}}
	r := acctDoUIA(alice, "POST", path, body, alice.UserID, "wrong")
	if m := r.JSON(t); r.Status != http.StatusUnauthorized || m["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("wrong password: got %d %s, want 401 M_FORBIDDEN", r.Status, r.Body)
	}
	acctWantWorks(d)
}
