package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Cross-server verification: a local user's user-signing key signs the
// master key of a user of another server (what Element and mautrix upload
// after SAS). As Synapse does, the signature stays on the signer's server:
// it is verified against the remote user's master key (from the remote
// device cache, else from their server), shown to the signer only in
// /keys/query, announced to the signer's own devices, never sent over
// federation.

// rsUser is a user with a device key and cross-signing keys uploaded.
type rsUser struct {
	c  *testutil.Client
	cs *testutil.CrossSigning
}

func rsSetUp(t *testing.T, c *testutil.Client) *rsUser {
	t.Helper()
	dev := testutil.NewE2EEDevice(t, c.UserID, c.DeviceID)
	keysUpload(c, map[string]any{"device_keys": dev.DeviceKeys(t)})
	cs := testutil.NewCrossSigning(t, c.UserID)
	c.MustDo("POST", deviceSigningPath, cs.Upload(t), http.StatusOK)
	return &rsUser{c: c, cs: cs}
}

func (u *rsUser) masterPub() string { return testutil.PublicKey(u.cs.Master) }
func (u *rsUser) uskID() string     { return "ed25519:" + testutil.PublicKey(u.cs.UserSigning) }

// masterObject is u's master key as published (without signatures).
func (u *rsUser) masterObject(t *testing.T) map[string]any {
	var obj map[string]any
	_ = json.Unmarshal(u.cs.CrossSigningKey(t, u.cs.Master, "master", nil), &obj)
	return obj
}

// signMaster is signer's upload of its signature of target's master key.
func (signer *rsUser) signMaster(t *testing.T, target *rsUser) map[string]any {
	signed := testutil.SignObject(t, target.masterObject(t), signer.c.UserID, signer.uskID(), signer.cs.UserSigning)
	return map[string]any{target.c.UserID: map[string]any{target.masterPub(): signed}}
}

// rsSignatureOf returns signer's signature in target's master key as c
// reads it, and the failures of the query.
func rsSignatureOf(c *testutil.Client, target, signer, keyID string) (any, map[string]any) {
	c.T.Helper()
	m := c.MustDo("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{target: []string{}}, "timeout": 3000}, http.StatusOK)
	f, _ := m["failures"].(map[string]any)
	return dig(m, "master_keys", target, "signatures", signer, keyID), f
}

// Bob shares no room with alice: his master key is fetched from hs2, for
// the upload and for every query.
func TestRemoteUserSignaturesOverFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := rsSetUp(t, testutil.NewClient(t, hs1.URL).Register("alice", keysPassword))
	bob := rsSetUp(t, testutil.NewClient(t, hs2.URL).Register("bob", keysPassword))
	carol := rsSetUp(t, testutil.NewClient(t, hs1.URL).Register("carol", keysPassword))
	since := dlSync(alice.c, "").NextBatch

	m := alice.c.MustDo("POST", signaturesPath, alice.signMaster(t, bob), http.StatusOK)
	if f, _ := m["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("signature of bob's master key: failures %v", m["failures"])
	}
	if sig, f := rsSignatureOf(alice.c, bob.c.UserID, alice.c.UserID, alice.uskID()); sig == nil || len(f) != 0 {
		t.Fatalf("alice does not read her signature of bob's master key (failures %v)", f)
	}
	// Her own devices learn of it; nobody else sees it, not even bob on
	// his server (it did not go over federation).
	dlWaitChanged(t, alice.c, since, "changed", alice.c.UserID)
	if sig, _ := rsSignatureOf(carol.c, bob.c.UserID, alice.c.UserID, alice.uskID()); sig != nil {
		t.Fatalf("carol reads alice's signature of bob's master key")
	}
	if sig, _ := rsSignatureOf(bob.c, bob.c.UserID, alice.c.UserID, alice.uskID()); sig != nil {
		t.Fatalf("alice's signature reached hs2")
	}
	// The other way round as well: bob (hs2) signs alice's key (hs1).
	m = bob.c.MustDo("POST", signaturesPath, bob.signMaster(t, alice), http.StatusOK)
	if f, _ := m["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("signature of alice's master key: failures %v", m["failures"])
	}
	if sig, _ := rsSignatureOf(bob.c, alice.c.UserID, bob.c.UserID, bob.uskID()); sig == nil {
		t.Fatalf("bob does not read his signature of alice's master key")
	}

	// A bad signature, a master key that is not bob's, a key ID that is
	// not his master key, a user of hs2 without keys.
	wrong := testutil.SignObject(t, bob.masterObject(t), alice.c.UserID, alice.uskID(), testutil.NewSigningKey(t))
	other := bob.masterObject(t)
	other["usage"] = []string{"master", "extra"}
	otherSigned := testutil.SignObject(t, other, alice.c.UserID, alice.uskID(), alice.cs.UserSigning)
	dan := testutil.NewClient(t, hs2.URL).Register("dan", keysPassword)
	m = alice.c.MustDo("POST", signaturesPath, map[string]any{
		bob.c.UserID: map[string]any{bob.masterPub(): wrong},
		dan.UserID:   map[string]any{"KEY": otherSigned},
	}, http.StatusOK)
	if dig(m, "failures", bob.c.UserID, bob.masterPub(), "errcode") != "M_INVALID_SIGNATURE" ||
		dig(m, "failures", dan.UserID, "KEY", "errcode") != "M_NOT_FOUND" {
		t.Fatalf("failures: %v", m["failures"])
	}
	m = alice.c.MustDo("POST", signaturesPath, map[string]any{bob.c.UserID: map[string]any{bob.masterPub(): otherSigned}}, http.StatusOK)
	if dig(m, "failures", bob.c.UserID, bob.masterPub(), "errcode") == nil {
		t.Fatalf("a signature of a key that is not bob's master key: %v", m)
	}
	m = alice.c.MustDo("POST", signaturesPath, map[string]any{bob.c.UserID: map[string]any{"NOTHEKEY": otherSigned}}, http.StatusOK)
	if dig(m, "failures", bob.c.UserID, "NOTHEKEY", "errcode") != "M_NOT_FOUND" {
		t.Fatalf("a signature under another key ID: %v", m)
	}
	// A bad user ID fails as an unknown user, not the whole request.
	m = alice.c.MustDo("POST", signaturesPath, map[string]any{"not-a-user": map[string]any{"KEY": otherSigned}}, http.StatusOK)
	if dig(m, "failures", "not-a-user", "KEY", "errcode") != "M_NOT_FOUND" {
		t.Fatalf("a bad user ID: %v", m)
	}

	// hs2 away and bob not cached: no master key to check against.
	n.Partition("hs2.test")
	m = alice.c.MustDo("POST", signaturesPath, alice.signMaster(t, bob), http.StatusOK)
	if dig(m, "failures", bob.c.UserID, bob.masterPub(), "errcode") != "M_NOT_FOUND" {
		t.Fatalf("signature with hs2 away: %v", m)
	}
	n.Heal()
	// bob replaces his master key: alice's signature was of the old one.
	bob2 := testutil.NewCrossSigning(t, bob.c.UserID)
	r := bob.c.Do("POST", deviceSigningPath, bob2.Upload(t))
	if r.Status == http.StatusUnauthorized {
		r = acctDoUIA(bob.c, "POST", deviceSigningPath, bob2.Upload(t), bob.c.UserID, keysPassword)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("bob's new keys: %d %s", r.Status, r.Body)
	}
	fedTEventually(t, "bob's new master key, without alice's signature", func() string {
		m := keysQuery(alice.c, bob.c.UserID)
		if dig(m, "master_keys", bob.c.UserID, "keys", "ed25519:"+testutil.PublicKey(bob2.Master)) == nil {
			return fmt.Sprintf("master key %v", dig(m, "master_keys", bob.c.UserID))
		}
		if dig(m, "master_keys", bob.c.UserID, "signatures", alice.c.UserID) != nil {
			return "alice's old signature on the new key"
		}
		return ""
	})
}

// Bob shares a room with alice: hs1's remote device cache holds his master
// key, so signing it and reading the signature work with hs2 away.
func TestRemoteUserSignaturesFromCache(t *testing.T) {
	p := fedTStart(t, "public_chat")
	alice := rsSetUp(t, p.alice)
	bob := rsSetUp(t, p.bob)
	fedTEventually(t, "hs1 caches bob's master key", func() string {
		p.n.Partition("hs2.test")
		defer p.n.Heal()
		m := alice.c.MustDo("POST", keysQueryPath, map[string]any{"device_keys": map[string]any{bob.c.UserID: []string{}}, "timeout": 1000}, http.StatusOK)
		if f, _ := m["failures"].(map[string]any); len(f) != 0 {
			return fmt.Sprintf("failures %v", f)
		}
		if dig(m, "master_keys", bob.c.UserID, "keys", "ed25519:"+bob.masterPub()) == nil {
			return fmt.Sprintf("master keys %v", m["master_keys"])
		}
		return ""
	})
	since := dlSync(alice.c, "").NextBatch
	p.n.Partition("hs2.test")
	defer p.n.Heal()
	m := alice.c.MustDo("POST", signaturesPath, alice.signMaster(t, bob), http.StatusOK)
	if f, _ := m["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("signature of bob's cached master key: failures %v", m["failures"])
	}
	if sig, f := rsSignatureOf(alice.c, bob.c.UserID, alice.c.UserID, alice.uskID()); sig == nil || len(f) != 0 {
		t.Fatalf("alice does not read her signature from the cache (failures %v)", f)
	}
	dlWaitChanged(t, alice.c, since, "changed", alice.c.UserID)
	carol := testutil.NewClient(t, p.hs1.URL).Register("carol", keysPassword)
	if sig, _ := rsSignatureOf(carol, bob.c.UserID, alice.c.UserID, alice.uskID()); sig != nil {
		t.Fatalf("carol reads alice's signature of bob's master key")
	}
	p.n.Heal()
	// Over federation (bob is asked of hs2 once stale or not cached) the
	// answer carries it too: covered by TestRemoteUserSignaturesOverFederation.
	if sig, _ := rsSignatureOf(bob.c, bob.c.UserID, alice.c.UserID, alice.uskID()); sig != nil {
		t.Fatalf("alice's signature reached hs2")
	}
}
