package testutil

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// End-to-end encryption keys for tests: real ed25519 keys and signatures
// over canonical JSON, as clients make them.

// PublicKey is the unpadded base64 public key of priv.
func PublicKey(priv ed25519.PrivateKey) string {
	return base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

// NewSigningKey returns a fresh ed25519 key.
func NewSigningKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// SignObject signs obj (a JSON object) as userID with keyID and priv,
// keeping its other signatures.
func SignObject(t testing.TB, obj any, userID, keyID string, priv ed25519.PrivateKey) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// E2EEDevice is a device's identity keys.
type E2EEDevice struct {
	UserID, DeviceID string
	Key              ed25519.PrivateKey
	Curve            string
}

// NewE2EEDevice makes identity keys for a device.
func NewE2EEDevice(t testing.TB, userID, deviceID string) *E2EEDevice {
	t.Helper()
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	return &E2EEDevice{UserID: userID, DeviceID: deviceID, Key: NewSigningKey(t), Curve: base64.RawStdEncoding.EncodeToString(curve)}
}

// KeyID is the device's ed25519 key ID.
func (d *E2EEDevice) KeyID() string { return "ed25519:" + d.DeviceID }

// DeviceKeys returns the device's DeviceKeys, self-signed.
func (d *E2EEDevice) DeviceKeys(t testing.TB) json.RawMessage {
	t.Helper()
	return SignObject(t, map[string]any{
		"user_id": d.UserID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"curve25519:" + d.DeviceID: d.Curve, d.KeyID(): PublicKey(d.Key)},
	}, d.UserID, d.KeyID(), d.Key)
}

// OneTimeKeys returns n signed_curve25519 keys with IDs from first on,
// signed by the device.
func (d *E2EEDevice) OneTimeKeys(t testing.TB, first, n int) map[string]json.RawMessage {
	t.Helper()
	out := make(map[string]json.RawMessage, n)
	for i := first; i < first+n; i++ {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		out[fmt.Sprintf("signed_curve25519:%d", i)] = SignObject(t, map[string]any{"key": base64.RawStdEncoding.EncodeToString(k)}, d.UserID, d.KeyID(), d.Key)
	}
	return out
}

// CrossSigning is a user's cross-signing keys.
type CrossSigning struct {
	UserID                           string
	Master, SelfSigning, UserSigning ed25519.PrivateKey
}

// NewCrossSigning makes fresh cross-signing keys for a user.
func NewCrossSigning(t testing.TB, userID string) *CrossSigning {
	t.Helper()
	return &CrossSigning{UserID: userID, Master: NewSigningKey(t), SelfSigning: NewSigningKey(t), UserSigning: NewSigningKey(t)}
}

// CrossSigningKey returns the CrossSigningKey object of priv for usage,
// signed by signer (nil: unsigned).
func (c *CrossSigning) CrossSigningKey(t testing.TB, priv ed25519.PrivateKey, usage string, signer ed25519.PrivateKey) json.RawMessage {
	t.Helper()
	pub := PublicKey(priv)
	obj := map[string]any{"user_id": c.UserID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
	if signer == nil {
		raw, _ := json.Marshal(obj)
		return raw
	}
	return SignObject(t, obj, c.UserID, "ed25519:"+PublicKey(signer), signer)
}

// Upload is the body of /keys/device_signing/upload with the three keys.
func (c *CrossSigning) Upload(t testing.TB) map[string]any {
	t.Helper()
	return map[string]any{
		"master_key":       c.CrossSigningKey(t, c.Master, "master", nil),
		"self_signing_key": c.CrossSigningKey(t, c.SelfSigning, "self_signing", c.Master),
		"user_signing_key": c.CrossSigningKey(t, c.UserSigning, "user_signing", c.Master),
	}
}
