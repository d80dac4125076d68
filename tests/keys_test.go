package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const (
	keysUploadPath    = "/_matrix/client/v3/keys/upload"
	keysQueryPath     = "/_matrix/client/v3/keys/query"
	keysClaimPath     = "/_matrix/client/v3/keys/claim"
	deviceSigningPath = "/_matrix/client/v3/keys/device_signing/upload"
	signaturesPath    = "/_matrix/client/v3/keys/signatures/upload"
	keysPassword      = "keys-password"
	signedCurve       = "signed_curve25519"
)

// keysOTKCount uploads body and returns the signed_curve25519 count.
func keysUpload(c *testutil.Client, body map[string]any) map[string]any {
	c.T.Helper()
	m := c.MustDo("POST", keysUploadPath, body, http.StatusOK)
	counts, ok := m["one_time_key_counts"].(map[string]any)
	if !ok {
		c.T.Fatalf("upload without one_time_key_counts: %v", m)
	}
	return counts
}

// keysQuery queries the devices of users (all of them).
func keysQuery(c *testutil.Client, users ...string) map[string]any {
	c.T.Helper()
	q := map[string][]string{}
	for _, u := range users {
		q[u] = []string{}
	}
	return c.MustDo("POST", keysQueryPath, map[string]any{"device_keys": q}, http.StatusOK)
}

// dig walks nested objects of a decoded response.
func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = obj[p]
	}
	return cur
}

func keysClaim(c *testutil.Client, userID, deviceID string) map[string]any {
	c.T.Helper()
	m := c.MustDo("POST", keysClaimPath, map[string]any{"one_time_keys": map[string]any{userID: map[string]string{deviceID: signedCurve}}}, http.StatusOK)
	keys, _ := dig(m, "one_time_keys", userID, deviceID).(map[string]any)
	return keys
}

func TestKeysUpload(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	otks := dev.OneTimeKeys(t, 0, 4)

	if c := keysUpload(alice, map[string]any{}); c[signedCurve] != 0.0 {
		t.Fatalf("counts of a device without keys: %v", c)
	}
	if c := keysUpload(alice, map[string]any{"device_keys": dev.DeviceKeys(t), "one_time_keys": otks}); c[signedCurve] != 4.0 {
		t.Fatalf("counts after 4 keys: %v", c)
	}
	// Idempotent: the same keys again, and an overlapping set.
	if c := keysUpload(alice, map[string]any{"device_keys": dev.DeviceKeys(t), "one_time_keys": otks}); c[signedCurve] != 4.0 {
		t.Fatalf("counts after the same keys: %v", c)
	}
	more := dev.OneTimeKeys(t, 4, 2)
	more["signed_curve25519:3"] = otks["signed_curve25519:3"]
	if c := keysUpload(alice, map[string]any{"one_time_keys": more}); c[signedCurve] != 6.0 {
		t.Fatalf("counts after an overlapping upload: %v", c)
	}
	// A key ID reused with other content: 400 (M_UNKNOWN, as Synapse), and
	// nothing of that upload is stored.
	conflict := dev.OneTimeKeys(t, 0, 1)
	for k, v := range dev.OneTimeKeys(t, 10, 1) {
		conflict[k] = v
	}
	alice.MustFail("POST", keysUploadPath, map[string]any{"one_time_keys": conflict}, http.StatusBadRequest, "M_UNKNOWN")
	if c := keysUpload(alice, map[string]any{}); c[signedCurve] != 6.0 {
		t.Fatalf("a failed upload stored keys: %v", c)
	}

	// Invalid device keys.
	bobDev := testutil.NewE2EEDevice(t, bob.UserID, bob.DeviceID)
	bob.MustFail("POST", keysUploadPath, map[string]any{"device_keys": map[string]any{"user_id": bob.UserID, "device_id": bob.DeviceID}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysUploadPath, map[string]any{"device_keys": dev.DeviceKeys(t)}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysUploadPath, map[string]any{"device_keys": nil}, http.StatusBadRequest, "M_BAD_JSON")
	other := testutil.NewE2EEDevice(t, bob.UserID, bob.DeviceID)
	forged := testutil.SignObject(t, map[string]any{
		"user_id": bob.UserID, "device_id": bob.DeviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"ed25519:" + bob.DeviceID: testutil.PublicKey(bobDev.Key), "curve25519:" + bob.DeviceID: bobDev.Curve},
	}, bob.UserID, "ed25519:"+bob.DeviceID, other.Key)
	bob.MustFail("POST", keysUploadPath, map[string]any{"device_keys": forged}, http.StatusBadRequest, "M_INVALID_SIGNATURE")
	// Keys with no self-signature are stored, as Synapse does (Complement's
	// TestDeviceListUpdates uploads such keys): only a self-signature that
	// is there must verify.
	carol := srv.Client().Register("carol", keysPassword)
	carolDev := testutil.NewE2EEDevice(t, carol.UserID, carol.DeviceID)
	carol.MustDo("POST", keysUploadPath, map[string]any{"device_keys": map[string]any{
		"user_id": carol.UserID, "device_id": carol.DeviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys":       map[string]string{"ed25519:" + carol.DeviceID: testutil.PublicKey(carolDev.Key), "curve25519:" + carol.DeviceID: carolDev.Curve},
		"signatures": map[string]any{},
	}}, http.StatusOK)
	if got := dig(keysQuery(alice, carol.UserID), "device_keys", carol.UserID, carol.DeviceID, "keys", "curve25519:"+carol.DeviceID); got != carolDev.Curve {
		t.Errorf("unsigned device keys were not stored: %v", got)
	}
	bob.MustFail("POST", keysUploadPath, map[string]any{"one_time_keys": map[string]any{"nocolon": "abc"}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysUploadPath, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:1": 5}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysUploadPath, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:a": "x", "signed_curve25519:b": "y"}}, http.StatusBadRequest, "M_BAD_JSON")
	srv.Client().MustFail("POST", keysUploadPath, map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	if got := dig(keysQuery(alice, bob.UserID), "device_keys", bob.UserID); len(got.(map[string]any)) != 0 {
		t.Fatalf("rejected keys were stored: %v", got)
	}
}

func TestKeysQuery(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	alice2 := srv.Client().Login("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	d1 := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	d2 := testutil.NewE2EEDevice(t, alice.UserID, alice2.DeviceID)
	keysUpload(alice, map[string]any{"device_keys": d1.DeviceKeys(t)})
	keysUpload(alice2, map[string]any{"device_keys": d2.DeviceKeys(t)})
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/devices/%s", alice.DeviceID), map[string]any{"display_name": "Alice's phone"}, http.StatusOK)

	m := keysQuery(bob, alice.UserID, bob.UserID, "@nobody:"+srvName(alice))
	devs := dig(m, "device_keys", alice.UserID).(map[string]any)
	if len(devs) != 2 {
		t.Fatalf("devices of alice: %v", devs)
	}
	if dig(m, "device_keys", alice.UserID, alice.DeviceID, "unsigned", "device_display_name") != "Alice's phone" {
		t.Fatalf("display name missing: %v", devs[alice.DeviceID])
	}
	var want map[string]any
	_ = json.Unmarshal(d1.DeviceKeys(t), &want)
	for _, k := range []string{"keys", "algorithms", "user_id", "device_id"} {
		if fmt.Sprint(dig(m, "device_keys", alice.UserID, alice.DeviceID, k)) != fmt.Sprint(want[k]) {
			t.Fatalf("%s: got %v want %v", k, dig(m, "device_keys", alice.UserID, alice.DeviceID, k), want[k])
		}
	}
	if dig(m, "device_keys", alice.UserID, alice.DeviceID, "signatures", alice.UserID, "ed25519:"+alice.DeviceID) == nil {
		t.Fatalf("self-signature missing: %v", devs[alice.DeviceID])
	}
	for _, u := range []string{bob.UserID, "@nobody:" + srvName(alice)} {
		if d, ok := dig(m, "device_keys", u).(map[string]any); !ok || len(d) != 0 {
			t.Fatalf("user without keys: %v", m)
		}
	}
	if f, ok := m["failures"].(map[string]any); !ok || len(f) != 0 {
		t.Fatalf("failures: %v", m["failures"])
	}
	// One device by ID.
	one := bob.MustDo("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{alice.UserID: []string{alice2.DeviceID, "NOSUCH"}}}, http.StatusOK)
	if devs := dig(one, "device_keys", alice.UserID).(map[string]any); len(devs) != 1 || devs[alice2.DeviceID] == nil {
		t.Fatalf("one device: %v", devs)
	}
	// A device that re-keys: Synapse replaces the keys.
	d1b := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	keysUpload(alice, map[string]any{"device_keys": d1b.DeviceKeys(t)})
	if got := dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID, alice.DeviceID, "keys", "ed25519:"+alice.DeviceID); got != testutil.PublicKey(d1b.Key) {
		t.Fatalf("re-keyed device: %v", got)
	}

	// Errors.
	bob.MustFail("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{alice.UserID: map[string]bool{"D1": true}}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{alice.UserID: nil}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysQueryPath, map[string]any{}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{"not-a-user": []string{}}}, http.StatusBadRequest, "M_INVALID_PARAM")
	bob.MustFail("POST", keysQueryPath, testutil.Raw("{"), http.StatusBadRequest, "M_NOT_JSON")
}

// srvName is the server name of a client's user.
func srvName(c *testutil.Client) string {
	for i := range c.UserID {
		if c.UserID[i] == ':' {
			return c.UserID[i+1:]
		}
	}
	return ""
}

func TestKeysClaim(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	otks := dev.OneTimeKeys(t, 0, 3)
	// Uploaded one by one: claimed oldest first (Complement's
	// TestKeyClaimOrdering).
	for _, id := range []string{"2", "0", "1"} {
		keysUpload(alice, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:" + id: otks["signed_curve25519:"+id]}})
	}
	fallback := dev.OneTimeKeys(t, 100, 1)
	fallbackKey := map[string]any{}
	for k, v := range fallback {
		var obj map[string]any
		_ = json.Unmarshal(v, &obj)
		obj["fallback"] = true
		fallbackKey[k] = obj
	}
	keysUpload(alice, map[string]any{"fallback_keys": fallbackKey})
	for _, id := range []string{"2", "0", "1"} {
		got := keysClaim(bob, alice.UserID, alice.DeviceID)
		var want any
		_ = json.Unmarshal(otks["signed_curve25519:"+id], &want)
		if len(got) != 1 || fmt.Sprint(got["signed_curve25519:"+id]) != fmt.Sprint(want) {
			t.Fatalf("claim %s: got %v", id, got)
		}
	}
	if c := keysUpload(alice, map[string]any{}); c[signedCurve] != 0.0 {
		t.Fatalf("counts after claiming every key: %v", c)
	}
	// Then the fallback key, again and again.
	for range 2 {
		got := keysClaim(bob, alice.UserID, alice.DeviceID)
		if _, ok := got["signed_curve25519:100"]; !ok || len(got) != 1 {
			t.Fatalf("fallback claim: %v", got)
		}
	}
	// Nothing for an algorithm without keys, an unknown device or user.
	m := bob.MustDo("POST", keysClaimPath, map[string]any{"one_time_keys": map[string]any{
		alice.UserID:                map[string]string{alice.DeviceID: "curve25519", "NOSUCH": signedCurve},
		"@nobody:" + srvName(alice): map[string]string{"X": signedCurve},
	}}, http.StatusOK)
	if otk, ok := m["one_time_keys"].(map[string]any); !ok || len(otk) != 0 {
		t.Fatalf("claim without keys: %v", m)
	}
	if f, ok := m["failures"].(map[string]any); !ok || len(f) != 0 {
		t.Fatalf("failures: %v", m["failures"])
	}
	bob.MustFail("POST", keysClaimPath, map[string]any{"one_time_keys": map[string]any{alice.UserID: []string{"x"}}}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", keysClaimPath, map[string]any{}, http.StatusBadRequest, "M_BAD_JSON")
}

func TestKeysDeviceDeletion(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	phone := srv.Client().Login("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, phone.DeviceID)
	keysUpload(phone, map[string]any{"device_keys": dev.DeviceKeys(t), "one_time_keys": dev.OneTimeKeys(t, 0, 2),
		"fallback_keys": map[string]any{"signed_curve25519:f": "fallbackkey"}})
	if devs := dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID).(map[string]any); len(devs) != 1 {
		t.Fatalf("before deletion: %v", devs)
	}
	path := testutil.Path("/_matrix/client/v3/devices/%s", phone.DeviceID)
	_, _, session := uiaChallenge(t, alice.Do("DELETE", path, map[string]any{}))
	alice.MustDo("DELETE", path, map[string]any{"auth": uiaPasswordAuth(session, alice.UserID, keysPassword)}, http.StatusOK)
	if devs := dig(keysQuery(bob, alice.UserID), "device_keys", alice.UserID).(map[string]any); len(devs) != 0 {
		t.Fatalf("keys of a deleted device: %v", devs)
	}
	if got := keysClaim(bob, alice.UserID, phone.DeviceID); got != nil {
		t.Fatalf("claimed a key of a deleted device: %v", got)
	}
}

func TestCrossSigningUpload(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	cs := testutil.NewCrossSigning(t, alice.UserID)

	// Malformed keys.
	bad := testutil.NewCrossSigning(t, bob.UserID)
	alice.MustFail("POST", deviceSigningPath, map[string]any{"master_key": bad.CrossSigningKey(t, bad.Master, "master", nil)}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", deviceSigningPath, map[string]any{"master_key": cs.CrossSigningKey(t, cs.Master, "self_signing", nil)}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", deviceSigningPath, map[string]any{"self_signing_key": cs.CrossSigningKey(t, cs.SelfSigning, "self_signing", cs.Master)}, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("POST", deviceSigningPath, map[string]any{
		"master_key":       cs.CrossSigningKey(t, cs.Master, "master", nil),
		"self_signing_key": cs.CrossSigningKey(t, cs.SelfSigning, "self_signing", cs.UserSigning),
	}, http.StatusBadRequest, "M_INVALID_SIGNATURE")

	// The first upload needs no UIA, nor does the same upload again.
	alice.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)
	alice.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)
	m := keysQuery(bob, alice.UserID)
	if dig(m, "master_keys", alice.UserID, "keys", "ed25519:"+testutil.PublicKey(cs.Master)) == nil ||
		dig(m, "self_signing_keys", alice.UserID, "keys", "ed25519:"+testutil.PublicKey(cs.SelfSigning)) == nil {
		t.Fatalf("cross-signing keys: %v", m)
	}
	if dig(m, "user_signing_keys", alice.UserID) != nil {
		t.Fatalf("another user's user-signing key shown: %v", m["user_signing_keys"])
	}
	if dig(keysQuery(alice, alice.UserID), "user_signing_keys", alice.UserID, "keys", "ed25519:"+testutil.PublicKey(cs.UserSigning)) == nil {
		t.Fatalf("own user-signing key missing")
	}

	// Replacing keys needs UIA.
	cs2 := testutil.NewCrossSigning(t, alice.UserID)
	body := cs2.Upload(t)
	_, flows, session := uiaChallenge(t, alice.Do("POST", deviceSigningPath, body))
	if len(flows) == 0 {
		t.Fatalf("no UIA flows")
	}
	if got := dig(keysQuery(bob, alice.UserID), "master_keys", alice.UserID, "keys", "ed25519:"+testutil.PublicKey(cs.Master)); got == nil {
		t.Fatalf("the master key changed without UIA")
	}
	body["auth"] = uiaPasswordAuth(session, alice.UserID, keysPassword)
	alice.MustDo("POST", deviceSigningPath, body, http.StatusOK)
	if got := dig(keysQuery(bob, alice.UserID), "master_keys", alice.UserID, "keys", "ed25519:"+testutil.PublicKey(cs2.Master)); got == nil {
		t.Fatalf("new master key missing")
	}
	// A new self-signing key alone, signed by the stored master: UIA too.
	ssk := map[string]any{"self_signing_key": cs2.CrossSigningKey(t, testutil.NewSigningKey(t), "self_signing", cs2.Master)}
	uiaChallenge(t, alice.Do("POST", deviceSigningPath, ssk))
}

func TestSignaturesUpload(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", keysPassword)
	bob := srv.Client().Register("bob", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	keysUpload(alice, map[string]any{"device_keys": dev.DeviceKeys(t)})
	cs := testutil.NewCrossSigning(t, alice.UserID)
	alice.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)
	bcs := testutil.NewCrossSigning(t, bob.UserID)
	bob.MustDo("POST", deviceSigningPath, bcs.Upload(t), http.StatusOK)
	masterPub := testutil.PublicKey(cs.Master)
	sskID := "ed25519:" + testutil.PublicKey(cs.SelfSigning)
	uskID := "ed25519:" + testutil.PublicKey(cs.UserSigning)
	bobMasterPub := testutil.PublicKey(bcs.Master)

	var devKeys map[string]any
	_ = json.Unmarshal(dev.DeviceKeys(t), &devKeys)
	var bobMaster map[string]any
	_ = json.Unmarshal(bcs.CrossSigningKey(t, bcs.Master, "master", nil), &bobMaster)
	var aliceMaster map[string]any
	_ = json.Unmarshal(cs.CrossSigningKey(t, cs.Master, "master", nil), &aliceMaster)
	wrong := testutil.NewSigningKey(t)
	m := alice.MustDo("POST", signaturesPath, map[string]any{
		alice.UserID: map[string]any{
			alice.DeviceID: testutil.SignObject(t, devKeys, alice.UserID, sskID, cs.SelfSigning),
			masterPub:      testutil.SignObject(t, aliceMaster, alice.UserID, dev.KeyID(), dev.Key),
			"NOSUCH":       testutil.SignObject(t, map[string]any{"device_id": "NOSUCH"}, alice.UserID, sskID, cs.SelfSigning),
		},
		bob.UserID: map[string]any{
			bobMasterPub: testutil.SignObject(t, bobMaster, alice.UserID, uskID, cs.UserSigning),
		},
	}, http.StatusOK)
	if f, _ := m["failures"].(map[string]any); len(f) != 1 || dig(m, "failures", alice.UserID, "NOSUCH", "errcode") != "M_NOT_FOUND" {
		t.Fatalf("failures: %v", m["failures"])
	}
	// The device's signature by the self-signing key: for everyone.
	q := keysQuery(bob, alice.UserID)
	if dig(q, "device_keys", alice.UserID, alice.DeviceID, "signatures", alice.UserID, sskID) == nil {
		t.Fatalf("device signature missing: %v", dig(q, "device_keys", alice.UserID))
	}
	// Signatures over cross-signing keys: for the signer only.
	if dig(q, "master_keys", alice.UserID, "signatures", alice.UserID, dev.KeyID()) != nil {
		t.Fatalf("alice's signature of her master key shown to bob")
	}
	own := keysQuery(alice, alice.UserID, bob.UserID)
	if dig(own, "master_keys", alice.UserID, "signatures", alice.UserID, dev.KeyID()) == nil {
		t.Fatalf("alice's device signature of her master key missing: %v", own["master_keys"])
	}
	if dig(own, "master_keys", bob.UserID, "signatures", alice.UserID, uskID) == nil {
		t.Fatalf("alice's signature of bob's master key missing: %v", own["master_keys"])
	}
	if dig(keysQuery(bob, bob.UserID), "master_keys", bob.UserID, "signatures", alice.UserID) != nil {
		t.Fatalf("alice's signature of bob's master key shown to bob")
	}

	// Bad signatures, changed content.
	tampered := map[string]any{}
	for k, v := range devKeys {
		tampered[k] = v
	}
	tampered["algorithms"] = []string{"other"}
	m = alice.MustDo("POST", signaturesPath, map[string]any{
		bob.UserID:   map[string]any{bobMasterPub: testutil.SignObject(t, bobMaster, alice.UserID, uskID, wrong)},
		alice.UserID: map[string]any{alice.DeviceID: testutil.SignObject(t, tampered, alice.UserID, sskID, cs.SelfSigning)},
	}, http.StatusOK)
	if dig(m, "failures", bob.UserID, bobMasterPub, "errcode") != "M_INVALID_SIGNATURE" || dig(m, "failures", alice.UserID, alice.DeviceID) == nil {
		t.Fatalf("failures: %v", m["failures"])
	}
	// bob has no signature of alice's keys to make with her keys.
	m = bob.MustDo("POST", signaturesPath, map[string]any{
		alice.UserID: map[string]any{masterPub: testutil.SignObject(t, aliceMaster, bob.UserID, "ed25519:"+testutil.PublicKey(bcs.UserSigning), wrong)},
	}, http.StatusOK)
	if dig(m, "failures", alice.UserID, masterPub, "errcode") != "M_INVALID_SIGNATURE" {
		t.Fatalf("failures: %v", m["failures"])
	}
	alice.MustFail("POST", signaturesPath, map[string]any{alice.UserID: map[string]any{alice.DeviceID: "string"}}, http.StatusBadRequest, "M_INVALID_PARAM")
}

// Keys of users of another Myelin: /keys/query and /keys/claim go over
// federation; an unreachable server is a failure.
func TestKeysFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", keysPassword)
	bob := testutil.NewClient(t, hs2.URL).Register("bob", keysPassword)
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/devices/%s", bob.DeviceID), map[string]any{"display_name": "Bob's laptop"}, http.StatusOK)
	dev := testutil.NewE2EEDevice(t, bob.UserID, bob.DeviceID)
	keysUpload(bob, map[string]any{"device_keys": dev.DeviceKeys(t), "one_time_keys": dev.OneTimeKeys(t, 0, 1),
		"fallback_keys": map[string]any{"signed_curve25519:f": "fallbackkey"}})
	cs := testutil.NewCrossSigning(t, bob.UserID)
	bob.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)

	m := keysQuery(alice, bob.UserID, alice.UserID)
	if dig(m, "device_keys", bob.UserID, bob.DeviceID, "keys", dev.KeyID()) != testutil.PublicKey(dev.Key) {
		t.Fatalf("remote device keys: %v", m)
	}
	if dig(m, "device_keys", bob.UserID, bob.DeviceID, "unsigned", "device_display_name") != nil {
		t.Fatalf("display name sent over federation (Synapse's default is not to)")
	}
	if dig(m, "master_keys", bob.UserID, "keys", "ed25519:"+testutil.PublicKey(cs.Master)) == nil ||
		dig(m, "self_signing_keys", bob.UserID) == nil || dig(m, "user_signing_keys", bob.UserID) != nil {
		t.Fatalf("remote cross-signing keys: %v", m)
	}
	if got := keysClaim(alice, bob.UserID, bob.DeviceID); got["signed_curve25519:0"] == nil {
		t.Fatalf("remote claim: %v", got)
	}
	if got := keysClaim(alice, bob.UserID, bob.DeviceID); got["signed_curve25519:f"] != "fallbackkey" {
		t.Fatalf("remote fallback claim: %v", got)
	}

	// An unreachable server: a failure under its name, within the timeout.
	n.Partition("hs2.test")
	m = alice.MustDo("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}, "timeout": 2000}, http.StatusOK)
	if dig(m, "failures", "hs2.test") == nil {
		t.Fatalf("no failure for an unreachable server: %v", m)
	}
	m = alice.MustDo("POST", keysClaimPath, map[string]any{"one_time_keys": map[string]any{bob.UserID: map[string]string{bob.DeviceID: signedCurve}}, "timeout": 2000}, http.StatusOK)
	if dig(m, "failures", "hs2.test") == nil {
		t.Fatalf("no claim failure for an unreachable server: %v", m)
	}
	n.Heal()
}

// The served federation routes: /user/devices, and refusals of users of
// other servers.
func TestKeysFederationServing(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test")
	remote := n.StartRemote("remote.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", keysPassword)
	dev := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	status, body, err := remote.Do("GET", "hs1.test", "/_matrix/federation/v1/user/devices/"+alice.UserID, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("user/devices: %d %s %v", status, body, err)
	}
	var res struct {
		StreamID int64            `json:"stream_id"`
		Devices  []map[string]any `json:"devices"`
	}
	_ = json.Unmarshal(body, &res)
	if res.StreamID != 0 || len(res.Devices) != 0 {
		t.Fatalf("devices before any keys: %s", body)
	}
	keysUpload(alice, map[string]any{"device_keys": dev.DeviceKeys(t)})
	cs := testutil.NewCrossSigning(t, alice.UserID)
	alice.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)
	_, body, _ = remote.Do("GET", "hs1.test", "/_matrix/federation/v1/user/devices/"+alice.UserID, nil)
	var full struct {
		UserID    string           `json:"user_id"`
		StreamID  int64            `json:"stream_id"`
		Devices   []map[string]any `json:"devices"`
		MasterKey map[string]any   `json:"master_key"`
		SSK       map[string]any   `json:"self_signing_key"`
	}
	_ = json.Unmarshal(body, &full)
	if full.UserID != alice.UserID || full.StreamID != 1 || len(full.Devices) != 1 || full.Devices[0]["device_id"] != alice.DeviceID ||
		full.MasterKey == nil || full.SSK == nil {
		t.Fatalf("user/devices: %s", body)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/_matrix/federation/v1/user/devices/@x:remote.test"},
	} {
		if status, body, _ := remote.Do(tc.method, "hs1.test", tc.path, nil); status != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", tc.path, status, body)
		}
	}
	if status, body, _ := remote.Do("POST", "hs1.test", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string]any{"@x:remote.test": []string{}}}); status != http.StatusBadRequest {
		t.Fatalf("query of a user of another server: %d %s", status, body)
	}
	if status, body, _ := remote.Do("POST", "hs1.test", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": map[string]any{"@x:remote.test": map[string]string{"D": "x"}}}); status != http.StatusBadRequest {
		t.Fatalf("claim of a user of another server: %d %s", status, body)
	}
	if status, body, _ := remote.Do("POST", "hs1.test", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}); status != http.StatusOK ||
		!json.Valid(body) {
		t.Fatalf("query: %d %s", status, body)
	}
}
