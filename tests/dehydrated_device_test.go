package tests

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Dehydrated devices (MSC3814, unstable org.matrix.msc3814.v1, as Synapse
// serves them): PUT/GET/DELETE /dehydrated_device and the device's
// to-device messages through .../dehydrated_device/{deviceId}/events.

const dehydratedPath = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

func dehydratedEventsPath(deviceID string) string {
	return testutil.Path(dehydratedPath+"/%s/events", deviceID)
}

// dehydratedBody is a PUT body for a dehydrated device dev with n one-time
// keys and a fallback key, all signed by the device.
func dehydratedBody(t *testing.T, dev *testutil.E2EEDevice, data string, n int) map[string]any {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	fallback := testutil.SignObject(t, map[string]any{"key": base64.RawStdEncoding.EncodeToString(k), "fallback": true}, dev.UserID, dev.KeyID(), dev.Key)
	return map[string]any{
		"device_id":                   dev.DeviceID,
		"device_data":                 map[string]any{"algorithm": "m.dehydration.v2", "device_pickle": data},
		"initial_device_display_name": "Backup device",
		"device_keys":                 dev.DeviceKeys(t),
		"one_time_keys":               dev.OneTimeKeys(t, 0, n),
		"fallback_keys":               map[string]any{signedCurve + ":fb": fallback},
	}
}

// deviceIDs lists the caller's devices by ID.
func deviceIDs(c *testutil.Client) map[string]any {
	c.T.Helper()
	out := map[string]any{}
	var body struct {
		Devices []map[string]any `json:"devices"`
	}
	r := c.Do("GET", acctDevices, nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET /devices: %d %s", r.Status, r.Body)
	}
	r.Decode(c.T, &body)
	for _, d := range body.Devices {
		out[d["device_id"].(string)] = d["display_name"]
	}
	return out
}

func TestDehydratedDeviceLifecycle(t *testing.T) { dehydratedLifecycle(t, testserver.Start(t)) }

// On PostgreSQL too (skipped without MYELIN_TEST_POSTGRES).
func TestDehydratedDevicePostgres(t *testing.T) {
	dehydratedLifecycle(t, testserver.Start(t, testserver.Options{Postgres: true}))
}

func dehydratedLifecycle(t *testing.T, srv *testserver.Server) {
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)

	alice.MustFail("GET", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("DELETE", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")

	// PUT creates a real device, with no access token, and its keys.
	dev1 := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED1")
	body1 := dehydratedBody(t, dev1, "pickle-1", 2)
	if m := alice.MustDo("PUT", dehydratedPath, body1, http.StatusOK); !reflect.DeepEqual(m, map[string]any{"device_id": "DEHYDRATED1"}) {
		t.Fatalf("PUT: %v", m)
	}
	if got := deviceIDs(alice); got["DEHYDRATED1"] != "Backup device" || len(got) != 2 {
		t.Fatalf("devices after PUT: %v", got)
	}
	m := alice.MustDo("GET", dehydratedPath, nil, http.StatusOK)
	want := map[string]any{"device_id": "DEHYDRATED1", "device_data": map[string]any{"algorithm": "m.dehydration.v2", "device_pickle": "pickle-1"}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("GET: %v, want %v", m, want)
	}

	// Another user sees its keys and claims its one-time keys, then its
	// fallback key.
	keys := dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID, "DEHYDRATED1", "keys").(map[string]any)
	if keys[dev1.KeyID()] != testutil.PublicKey(dev1.Key) || keys["curve25519:DEHYDRATED1"] != dev1.Curve {
		t.Fatalf("queried keys %v", keys)
	}
	claimed := map[string]bool{}
	for range 2 {
		for id := range keysClaim(bob, alice.UserID, "DEHYDRATED1") {
			claimed[id] = true
		}
	}
	if !claimed[signedCurve+":0"] || !claimed[signedCurve+":1"] || len(claimed) != 2 {
		t.Fatalf("claimed %v, want the two one-time keys", claimed)
	}
	if got := keysClaim(bob, alice.UserID, "DEHYDRATED1"); got[signedCurve+":fb"] == nil {
		t.Fatalf("third claim %v, want the fallback key", got)
	}

	// A second PUT replaces the first device, which goes with its keys.
	dev2 := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED2")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, dev2, "pickle-2", 1), http.StatusOK)
	if got := alice.MustDo("GET", dehydratedPath, nil, http.StatusOK); got["device_id"] != "DEHYDRATED2" || dig(got, "device_data", "device_pickle") != "pickle-2" {
		t.Fatalf("GET after the second PUT: %v", got)
	}
	if got := deviceIDs(alice); got["DEHYDRATED1"] != nil || len(got) != 2 {
		t.Fatalf("devices after the second PUT: %v", got)
	}
	q := keysQuery(bob, alice.UserID)
	if dig(q, "device_keys", alice.UserID, "DEHYDRATED1") != nil || dig(q, "device_keys", alice.UserID, "DEHYDRATED2") == nil {
		t.Fatalf("keys after the second PUT: %v", dig(q, "device_keys", alice.UserID))
	}
	if got := keysClaim(bob, alice.UserID, "DEHYDRATED1"); len(got) != 0 {
		t.Fatalf("claimed %v from the replaced device", got)
	}

	// The same device ID again: replaced, fresh (its old keys are gone).
	dev2b := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED2")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, dev2b, "pickle-2b", 1), http.StatusOK)
	keys = dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID, "DEHYDRATED2", "keys").(map[string]any)
	if keys[dev2b.KeyID()] != testutil.PublicKey(dev2b.Key) {
		t.Fatalf("keys after re-uploading DEHYDRATED2: %v", keys)
	}
	if got := alice.MustDo("GET", dehydratedPath, nil, http.StatusOK); dig(got, "device_data", "device_pickle") != "pickle-2b" {
		t.Fatalf("GET after re-uploading DEHYDRATED2: %v", got)
	}

	// DELETE removes it like any device deletion; then there is none.
	if got := alice.MustDo("DELETE", dehydratedPath, nil, http.StatusOK); !reflect.DeepEqual(got, map[string]any{"device_id": "DEHYDRATED2"}) {
		t.Fatalf("DELETE: %v", got)
	}
	alice.MustFail("GET", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("DELETE", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	if got := deviceIDs(alice); len(got) != 1 {
		t.Fatalf("devices after DELETE: %v", got)
	}
	if dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID, "DEHYDRATED2") != nil {
		t.Fatal("keys of the deleted dehydrated device still queryable")
	}
	// Each user has their own.
	bob.MustFail("GET", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")

	// Deleting the device through the ordinary device API forgets it as
	// the dehydrated device.
	dev3 := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED3")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, dev3, "pickle-3", 1), http.StatusOK)
	if r := acctDoUIA(alice, "DELETE", acctDevicePath("DEHYDRATED3"), map[string]any{}, alice.UserID, keysPassword); r.Status != http.StatusOK {
		t.Fatalf("DELETE /devices/DEHYDRATED3: %d %s", r.Status, r.Body)
	}
	alice.MustFail("GET", dehydratedPath, nil, http.StatusNotFound, "M_NOT_FOUND")
}

// dehydratedSeqs returns the "seq" contents of events, checking that each
// is an m.test from sender.
func dehydratedSeqs(t *testing.T, m map[string]any, sender string) []int {
	t.Helper()
	evs, ok := m["events"].([]any)
	if !ok {
		t.Fatalf("no events array: %v", m)
	}
	out := make([]int, len(evs))
	for i, e := range evs {
		ev := e.(map[string]any)
		if ev["sender"] != sender || ev["type"] != "m.test" {
			t.Fatalf("event %v, want an m.test from %s", ev, sender)
		}
		out[i] = int(dig(ev, "content", "seq").(float64))
	}
	return out
}

func seqRange(from, to int) []int {
	out := []int{}
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestDehydratedDeviceEvents(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, dev, "p", 1), http.StatusOK)
	path := dehydratedEventsPath("DEHYDRATED")

	// Nothing yet: no next_batch on GET, a token on POST.
	if m := alice.MustDo("GET", path, nil, http.StatusOK); len(m["events"].([]any)) != 0 || m["next_batch"] != nil {
		t.Fatalf("empty inbox: %v", m)
	}
	if m := alice.MustDo("POST", path, map[string]any{}, http.StatusOK); len(m["events"].([]any)) != 0 || m["next_batch"] == nil {
		t.Fatalf("empty inbox (POST): %v", m)
	}

	// 110 messages from another user, one request each.
	for i := range 110 {
		tdSend(bob, "m.test", tdTxn(), map[string]any{alice.UserID: map[string]any{"DEHYDRATED": map[string]any{"seq": i}}})
	}
	// Another device of alice's gets none of them.
	_, a0 := tdSync(t, alice, "", 0)
	if evs, _ := tdSync(t, alice, a0, 0); len(evs) != 0 {
		t.Fatalf("alice's own device got %v", evs)
	}

	// Legacy POST: 100, then the same 100 again (reading acknowledges
	// nothing), then the rest with next_batch, then an empty page.
	m := alice.MustDo("POST", path, map[string]any{}, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); !reflect.DeepEqual(got, seqRange(0, 100)) {
		t.Fatalf("first page %v", got)
	}
	m = alice.MustDo("POST", path, map[string]any{}, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); !reflect.DeepEqual(got, seqRange(0, 100)) {
		t.Fatalf("first page again %v", got)
	}
	next, ok := m["next_batch"].(string)
	if !ok {
		t.Fatalf("no next_batch: %v", m)
	}
	m = alice.MustDo("POST", path, map[string]any{"next_batch": next}, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); !reflect.DeepEqual(got, seqRange(100, 110)) {
		t.Fatalf("second page %v", got)
	}
	m = alice.MustDo("POST", path, map[string]any{"next_batch": m["next_batch"]}, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); len(got) != 0 || m["next_batch"] == nil {
		t.Fatalf("page after the last: %v", m)
	}

	// GET with from and limit: pages of 30 with next_batch, the last
	// without; all 110 in order.
	var all []int
	from := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		p := path + "?limit=30"
		if from != "" {
			p += "&from=" + url.QueryEscape(from)
		}
		m := alice.MustDo("GET", p, nil, http.StatusOK)
		got := dehydratedSeqs(t, m, bob.UserID)
		all = append(all, got...)
		nb, ok := m["next_batch"].(string)
		if !ok {
			if len(got) != 20 || pages != 3 {
				t.Fatalf("last page: %d events on page %d", len(got), pages)
			}
			break
		}
		if len(got) != 30 {
			t.Fatalf("page %d: %d events with a next_batch", pages, len(got))
		}
		from = nb
	}
	if !reflect.DeepEqual(all, seqRange(0, 110)) {
		t.Fatalf("all pages: %v", all)
	}

	// New messages after the last token come next, "*" included.
	tdSend(bob, "m.test", tdTxn(), map[string]any{alice.UserID: map[string]any{"*": map[string]any{"seq": 110}}})
	m = alice.MustDo("POST", path, map[string]any{"next_batch": next}, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); !reflect.DeepEqual(got, seqRange(100, 111)) {
		t.Fatalf("after a new message: %v", got)
	}

	// Only the caller's own dehydrated device: 403.
	alice.MustFail("POST", dehydratedEventsPath("OTHER"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	alice.MustFail("GET", dehydratedEventsPath(alice.DeviceID), nil, http.StatusForbidden, "M_FORBIDDEN")
	bob.MustFail("POST", path, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	bob.MustFail("GET", path, nil, http.StatusForbidden, "M_FORBIDDEN")
	bobDev := testutil.NewE2EEDevice(t, bob.UserID, "BOBDEHYDRATED")
	bob.MustDo("PUT", dehydratedPath, dehydratedBody(t, bobDev, "b", 1), http.StatusOK)
	bob.MustFail("POST", path, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	alice.MustFail("POST", dehydratedEventsPath("BOBDEHYDRATED"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	srv.Client().MustFail("POST", path, map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")

	// Bad tokens, limits and bodies.
	alice.MustFail("GET", path+"?from=s12", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path+"?from=dx", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path+"?limit=-1", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", path+"?limit=many", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", path, map[string]any{"next_batch": "12"}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", path, map[string]any{"next_batch": 12}, http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("POST", path, testutil.Raw(`[]`), http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("POST", path, testutil.Raw(`{`), http.StatusBadRequest, "M_NOT_JSON")
	alice.MustFail("POST", path, nil, http.StatusBadRequest, "M_NOT_JSON")

	// A new dehydrated device starts with an empty inbox; the old one's
	// messages are no longer served.
	dev2 := testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED2")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, dev2, "p2", 1), http.StatusOK)
	alice.MustFail("POST", path, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	if m := alice.MustDo("GET", dehydratedEventsPath("DEHYDRATED2"), nil, http.StatusOK); len(m["events"].([]any)) != 0 {
		t.Fatalf("new dehydrated device's inbox: %v", m)
	}
	tdSend(bob, "m.test", tdTxn(), map[string]any{alice.UserID: map[string]any{"DEHYDRATED2": map[string]any{"seq": 7}}})
	m = alice.MustDo("GET", dehydratedEventsPath("DEHYDRATED2"), nil, http.StatusOK)
	if got := dehydratedSeqs(t, m, bob.UserID); !reflect.DeepEqual(got, []int{7}) || m["next_batch"] != nil {
		t.Fatalf("new dehydrated device: %v", m)
	}

	// Uploaded again under the same ID, the device comes back with an
	// empty inbox (emptied as for any deleted device).
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, testutil.NewE2EEDevice(t, alice.UserID, "DEHYDRATED2"), "p3", 1), http.StatusOK)
	testutil.Eventually(t, 10*time.Second, "the re-uploaded device's inbox to be emptied", func() bool {
		m := alice.MustDo("GET", dehydratedEventsPath("DEHYDRATED2"), nil, http.StatusOK)
		return len(m["events"].([]any)) == 0
	})

	// After DELETE, nothing to read.
	alice.MustDo("DELETE", dehydratedPath, nil, http.StatusOK)
	alice.MustFail("GET", dehydratedEventsPath("DEHYDRATED2"), nil, http.StatusForbidden, "M_FORBIDDEN")
}

func TestDehydratedDeviceBadRequests(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Registration.GuestAccess = true }})
	alice := srv.Client().Register("alice", keysPassword)
	good := testutil.NewE2EEDevice(t, alice.UserID, "KEPT")
	alice.MustDo("PUT", dehydratedPath, dehydratedBody(t, good, "kept", 1), http.StatusOK)

	dev := testutil.NewE2EEDevice(t, alice.UserID, "NEWDEVICE")
	with := func(edit func(b map[string]any)) map[string]any {
		b := dehydratedBody(t, dev, "new", 1)
		edit(b)
		return b
	}
	cases := []struct {
		name    string
		body    any
		status  int
		errcode string
	}{
		{"not JSON", testutil.Raw(`{"device_id":`), 400, "M_NOT_JSON"},
		{"no body", nil, 400, "M_NOT_JSON"},
		{"array", testutil.Raw(`[]`), 400, "M_BAD_JSON"},
		{"no device_id", with(func(b map[string]any) { delete(b, "device_id") }), 400, "M_MISSING_PARAM"},
		{"device_id number", with(func(b map[string]any) { b["device_id"] = 5 }), 400, "M_BAD_JSON"},
		{"empty device_id", with(func(b map[string]any) { b["device_id"] = "" }), 400, "M_INVALID_PARAM"},
		{"no device_data", with(func(b map[string]any) { delete(b, "device_data") }), 400, "M_MISSING_PARAM"},
		{"device_data string", with(func(b map[string]any) { b["device_data"] = "x" }), 400, "M_BAD_JSON"},
		{"no algorithm", with(func(b map[string]any) { b["device_data"] = map[string]any{"x": 1} }), 400, "M_MISSING_PARAM"},
		{"algorithm number", with(func(b map[string]any) { b["device_data"] = map[string]any{"algorithm": 1} }), 400, "M_BAD_JSON"},
		{"display name number", with(func(b map[string]any) { b["initial_device_display_name"] = 1 }), 400, "M_BAD_JSON"},
		{"no device_keys", with(func(b map[string]any) { delete(b, "device_keys") }), 400, "M_MISSING_PARAM"},
		{"null device_keys", with(func(b map[string]any) { b["device_keys"] = nil }), 400, "M_MISSING_PARAM"},
		{"one_time_keys array", with(func(b map[string]any) { b["one_time_keys"] = []int{1} }), 400, "M_BAD_JSON"},
		{"keys of another device", with(func(b map[string]any) { b["device_keys"] = good.DeviceKeys(t) }), 400, "M_BAD_JSON"},
		{"bad one-time key", with(func(b map[string]any) { b["one_time_keys"] = map[string]any{"nocolon": "x"} }), 400, "M_BAD_JSON"},
		{"forged signature", with(func(b map[string]any) {
			other := testutil.NewE2EEDevice(t, alice.UserID, "NEWDEVICE")
			b["device_keys"] = testutil.SignObject(t, map[string]any{
				"user_id": alice.UserID, "device_id": "NEWDEVICE", "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
				"keys": map[string]string{dev.KeyID(): testutil.PublicKey(dev.Key), "curve25519:NEWDEVICE": dev.Curve},
			}, alice.UserID, dev.KeyID(), other.Key)
		}), 400, "M_INVALID_SIGNATURE"},
	}
	for _, tc := range cases {
		r := alice.Do("PUT", dehydratedPath, tc.body)
		m := r.JSON(t)
		if r.Status != tc.status || m["errcode"] != tc.errcode {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.errcode)
		}
	}
	// Nothing of the refused requests stayed: no new device, and the
	// previous dehydrated device is still there.
	if got := deviceIDs(alice); got["NEWDEVICE"] != nil || got["KEPT"] == nil || len(got) != 2 {
		t.Fatalf("devices after refused PUTs: %v", got)
	}
	if got := alice.MustDo("GET", dehydratedPath, nil, http.StatusOK); got["device_id"] != "KEPT" {
		t.Fatalf("dehydrated device after refused PUTs: %v", got)
	}

	// Authentication: a token is needed, and guests may not.
	anon := srv.Client()
	anon.MustFail("PUT", dehydratedPath, dehydratedBody(t, dev, "x", 1), http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.MustFail("GET", dehydratedPath, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.MustFail("DELETE", dehydratedPath, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	g := anon.MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, http.StatusOK)
	guest := anon.As(g["user_id"].(string), g["device_id"].(string), g["access_token"].(string))
	guestDev := testutil.NewE2EEDevice(t, guest.UserID, "GUESTDEHYDRATED")
	guest.MustFail("PUT", dehydratedPath, dehydratedBody(t, guestDev, "g", 1), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	guest.MustFail("GET", dehydratedPath, nil, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}

func TestDehydratedDeviceVersions(t *testing.T) {
	srv := testserver.Start(t)
	var v struct {
		UnstableFeatures map[string]json.RawMessage `json:"unstable_features"`
	}
	r := srv.Client().Do("GET", "/_matrix/client/versions", nil)
	r.Decode(t, &v)
	if got := string(v.UnstableFeatures["org.matrix.msc3814"]); got != "true" {
		t.Fatalf("unstable_features[org.matrix.msc3814] = %q, want true (%s)", got, fmt.Sprint(v.UnstableFeatures))
	}
}
