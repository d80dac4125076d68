package keys

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/userapi/api"
)

// Parsing and checking of key objects: device keys, one-time keys,
// cross-signing keys, and their ed25519 signatures (over the canonical JSON
// of the object without "signatures" and "unsigned").

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{api.ErrInvalidKeys}, args...)...)
}

func badSignature(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{api.ErrInvalidSignature}, args...)...)
}

// canonical returns the canonical JSON of raw, which must be a JSON value.
func canonical(raw []byte) ([]byte, error) {
	return gomatrixserverlib.CanonicalJSON(raw)
}

// signatures is the "signatures" property of a signed object.
type signatures map[string]map[string]string

// deviceKeys is a DeviceKeys object as checked on upload.
type deviceKeys struct {
	UserID     *string           `json:"user_id"`
	DeviceID   *string           `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
	Signatures signatures        `json:"signatures"`
}

// checkDeviceKeys checks uploaded device keys as Synapse does (the
// required properties with their types; the user and device of the
// access token) and that the device signed them with its ed25519 key. It
// returns their canonical JSON.
func checkDeviceKeys(raw json.RawMessage, userID, deviceID string) ([]byte, error) {
	var dk deviceKeys
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, invalid("device_keys: %s", jsonProblem(err))
	}
	switch {
	case dk.UserID == nil || dk.DeviceID == nil:
		return nil, invalid("device_keys must have user_id and device_id")
	case dk.Algorithms == nil || dk.Keys == nil || dk.Signatures == nil:
		return nil, invalid("device_keys must have algorithms, keys and signatures")
	case *dk.UserID != userID:
		return nil, invalid("Provided `user_id` in `device_keys` does not match that of the authenticated user")
	case *dk.DeviceID != deviceID:
		return nil, invalid("Provided `device_id` in `device_keys` does not match that of the authenticated user device")
	}
	// Synapse stores device keys without checking their signatures (the
	// clients that use them do). A self-signature that is there must
	// verify, though: a device whose keys do not verify their own
	// signature is unusable for every client that fetches them.
	keyID := "ed25519:" + deviceID
	if _, signed := dk.Signatures[userID][keyID]; signed {
		pub, err := decodeEd25519(dk.Keys[keyID])
		if err != nil {
			return nil, badSignature("device_keys is signed by %s but has no such ed25519 key", keyID)
		}
		if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(keyID), pub, raw); err != nil {
			return nil, badSignature("device_keys has a signature by %s that does not verify", keyID)
		}
	}
	return canonical(raw)
}

// decodeEd25519 decodes an unpadded base64 ed25519 public key.
func decodeEd25519(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
		return te.Field + " has the wrong type"
	}
	return "not a valid key object"
}

// parsedKey is a one-time or fallback key as uploaded.
type parsedKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte // canonical
}

// checkOneTimeKeys checks one-time or fallback keys ("<algorithm>:<key
// ID>" to an unpadded base64 string or a key object with "key" and
// "signatures") and returns them sorted by key ID.
func checkOneTimeKeys(field string, in map[string]json.RawMessage) ([]parsedKey, error) {
	out := make([]parsedKey, 0, len(in))
	for id, raw := range in {
		alg, keyID, ok := strings.Cut(id, ":")
		if !ok || alg == "" || keyID == "" || strings.Contains(keyID, ":") {
			return nil, invalid("Invalid %s key %q. Expected \"<algorithm>:<key_id>\".", field, id)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			var obj struct {
				Key        *string    `json:"key"`
				Fallback   *bool      `json:"fallback"`
				Signatures signatures `json:"signatures"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil || obj.Key == nil || obj.Signatures == nil {
				return nil, invalid("%s.%s must be a string or an object with key and signatures", field, id)
			}
		}
		c, err := canonical(raw)
		if err != nil {
			return nil, invalid("%s.%s is not valid JSON", field, id)
		}
		out = append(out, parsedKey{Algorithm: alg, KeyID: keyID, JSON: c})
	}
	sortKeys(out)
	return out, nil
}

// sortKeys sorts keys by algorithm and key ID, shorter IDs first (numeric
// IDs in numeric order): the insertion order decides the claim order of
// keys uploaded together.
func sortKeys(keys []parsedKey) {
	slices.SortFunc(keys, func(a, b parsedKey) int {
		if c := strings.Compare(a.Algorithm, b.Algorithm); c != 0 {
			return c
		}
		if c := cmp.Compare(len(a.KeyID), len(b.KeyID)); c != 0 {
			return c
		}
		return strings.Compare(a.KeyID, b.KeyID)
	})
}

// sameOneTimeKey reports whether two one-time keys are the same, as
// Synapse decides: strings must be equal; objects must be equal but for
// their signatures.
func sameOneTimeKey(stored, uploaded []byte) bool {
	if bytes.Equal(stored, uploaded) {
		return true
	}
	a, errA := withoutFields(stored, "signatures")
	b, errB := withoutFields(uploaded, "signatures")
	return errA == nil && errB == nil && a != nil && bytes.Equal(a, b)
}

// withoutFields returns the canonical JSON of an object without the named
// properties (nil, nil when raw is not an object).
func withoutFields(raw []byte, fields ...string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, nil
	}
	for _, f := range fields {
		delete(obj, f)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return canonical(b)
}

// crossSigningKey is a checked CrossSigningKey.
type crossSigningKey struct {
	KeyID     string // "ed25519:<public key>"
	PublicKey string // unpadded base64
	Verify    ed25519.PublicKey
	JSON      []byte // canonical, as uploaded
}

// checkCrossSigningKey checks a cross-signing key of userID for usage as
// Synapse does (user_id, usage, exactly one key) and that the key is an
// ed25519 key named after itself; with signer, that it is signed by that
// (master) key.
func checkCrossSigningKey(raw json.RawMessage, userID, usage string, signer *crossSigningKey) (*crossSigningKey, error) {
	var k struct {
		UserID     string            `json:"user_id"`
		Usage      []string          `json:"usage"`
		Keys       map[string]string `json:"keys"`
		Signatures signatures        `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, invalid("Invalid %s key: %s", usage, jsonProblem(err))
	}
	hasUsage := false
	for _, u := range k.Usage {
		hasUsage = hasUsage || u == usage
	}
	if k.UserID != userID || !hasUsage || len(k.Keys) != 1 {
		return nil, invalid("Invalid %s key", usage)
	}
	var out crossSigningKey
	for id, pub := range k.Keys {
		alg, name, _ := strings.Cut(id, ":")
		v, err := decodeEd25519(pub)
		if alg != "ed25519" || name != pub || err != nil {
			return nil, invalid("Invalid %s key: keys must hold one ed25519 key named after itself", usage)
		}
		out = crossSigningKey{KeyID: id, PublicKey: pub, Verify: v}
	}
	if signer != nil {
		if err := gomatrixserverlib.VerifyJSON(userID, gomatrixserverlib.KeyID(signer.KeyID), signer.Verify, raw); err != nil {
			return nil, badSignature("Invalid signature on %s key", usage)
		}
	}
	c, err := canonical(raw)
	if err != nil {
		return nil, invalid("Invalid %s key", usage)
	}
	out.JSON = c
	return &out, nil
}

// storedCrossSigningKey decodes a stored key (already checked).
func storedCrossSigningKey(js string) (*crossSigningKey, error) {
	var k struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(js), &k); err != nil {
		return nil, err
	}
	for id, pub := range k.Keys {
		v, err := decodeEd25519(pub)
		if err != nil {
			return nil, err
		}
		return &crossSigningKey{KeyID: id, PublicKey: pub, Verify: v, JSON: []byte(js)}, nil
	}
	return nil, fmt.Errorf("stored cross-signing key without a key")
}

// withSignatures returns the object raw with extra signatures merged into
// its own and, when unsigned is not nil, "unsigned" set to it.
func withSignatures(raw []byte, extra signatures, unsigned map[string]any) ([]byte, error) {
	if len(extra) == 0 && unsigned == nil {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(extra) > 0 {
		sigs := signatures{}
		if s, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(s, &sigs); err != nil || sigs == nil {
				sigs = signatures{}
			}
		}
		for u, m := range extra {
			if sigs[u] == nil {
				sigs[u] = map[string]string{}
			}
			for k, v := range m {
				sigs[u][k] = v
			}
		}
		b, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if unsigned != nil {
		b, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = b
	}
	return json.Marshal(obj)
}
