package api

import (
	"context"
	"encoding/json"
	"errors"
)

// Errors of KeysAPI. Each is returned wrapped with a sentence meant for the
// client (fmt.Errorf("%w: ...")), so callers test with errors.Is and may
// show err.Error().
var (
	// ErrInvalidKeys: a key object is malformed or names another user
	// or device (400: M_BAD_JSON in /keys/upload, M_INVALID_PARAM in
	// /keys/device_signing/upload, as Synapse answers).
	ErrInvalidKeys = errors.New("invalid keys")
	// ErrInvalidSignature: a key is not signed as it must be: device keys
	// by the device's ed25519 key, self-signing and user-signing keys by
	// the master key (400 M_INVALID_SIGNATURE).
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrKeyExists: a one-time key ID was uploaded before with other
	// content (400 M_UNKNOWN, as Synapse answers).
	ErrKeyExists = errors.New("key already exists")
	// ErrMissingMasterKey: self-signing or user-signing keys were
	// uploaded while the user has no master key (400 M_MISSING_PARAM).
	ErrMissingMasterKey = errors.New("no master key")
)

// KeyFailure is one entry of a "failures" map: a Matrix errcode and a
// message.
type KeyFailure struct {
	Errcode string `json:"errcode"`
	Error   string `json:"error"`
}

// UploadKeysRequest is what POST /keys/upload takes for one device. Keys
// are the JSON objects of the spec, unchanged.
type UploadKeysRequest struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	// DeviceKeys is the DeviceKeys object; nil or null: none.
	DeviceKeys json.RawMessage `json:"device_keys,omitempty"`
	// OneTimeKeys maps "<algorithm>:<key ID>" to a key (a string or a
	// signed key object).
	OneTimeKeys map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	// FallbackKeys maps "<algorithm>:<key ID>" to a key; at most one per
	// algorithm.
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// OneTimeKeyCounts is what a device has left: unclaimed one-time keys by
// algorithm (always with "signed_curve25519", as Synapse does), and the
// algorithms of its fallback keys that have not been claimed yet.
type OneTimeKeyCounts struct {
	Counts                 map[string]int `json:"one_time_key_counts"`
	UnusedFallbackKeyTypes []string       `json:"unused_fallback_key_types"`
}

// QueryKeysRequest asks for the keys of local users.
type QueryKeysRequest struct {
	// RequesterUserID is the local user asking; it decides whether a
	// user-signing key is returned (only one's own). Empty over
	// federation.
	RequesterUserID string `json:"requester_user_id,omitempty"`
	// DeviceKeys maps user IDs to the device IDs wanted; an empty list
	// means every device.
	DeviceKeys map[string][]string `json:"device_keys"`
	// OverFederation leaves out device display names, as Synapse does
	// by default (allow_device_name_lookup_over_federation: false).
	OverFederation bool `json:"over_federation,omitempty"`
	// DeviceNames keeps device display names over federation (the
	// operator's allow_device_name_lookup).
	DeviceNames bool `json:"device_names,omitempty"`
}

// QueryKeysResponse holds the keys found, in the shape of the spec's
// /keys/query response: stored signatures are merged in, and each device's
// unsigned.device_display_name is set when it has one (not over
// federation). Users and devices without keys are absent, but every
// requested user has an entry (maybe empty) in DeviceKeys.
type QueryKeysResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys,omitempty"`
}

// ClaimKeysRequest maps user IDs to device IDs to the algorithm of the key
// wanted.
type ClaimKeysRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// ClaimKeysResponse maps user IDs to device IDs to "<algorithm>:<key ID>" to
// the key claimed. Devices without a key are absent.
type ClaimKeysResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// CrossSigningKeys are the cross-signing keys of a user, as the spec's
// CrossSigningKey objects; nil ones are not set (or, in an upload, not
// changed).
type CrossSigningKeys struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
}

// UserDevice is a device as GET /_matrix/federation/v1/user/devices lists it.
type UserDevice struct {
	DeviceID string `json:"device_id"`
	// Keys is the device's DeviceKeys object with stored signatures.
	Keys        json.RawMessage `json:"keys"`
	DisplayName *string         `json:"device_display_name,omitempty"`
}

// UserDevices is the answer to /user/devices/{userId}.
type UserDevices struct {
	UserID string `json:"user_id"`
	// StreamID is the stream_id of the user's latest device change (the
	// KeyChange chain), 0 when there was none.
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// KeysAPI manages end-to-end encryption keys of local users: device keys,
// one-time and fallback keys, cross-signing keys and signatures. Every change
// to a user's device list or published cross-signing keys is announced on
// UserOutput (SubjectKeyChange) through an outbox, in commit order.
//
// Methods that take user IDs ignore users that are not local (callers go
// over federation for those). Storage failures are opaque errors.
type KeysAPI interface {
	// UploadKeys stores a device's keys and returns its counts. It fails
	// with ErrInvalidKeys (device keys not for this user and device or
	// malformed; a malformed one-time or fallback key, two fallback keys
	// of one algorithm), ErrInvalidSignature (device keys not signed by
	// their own ed25519 key), ErrKeyExists (a one-time key ID reused with
	// other content; signatures may differ), or ErrNotFound (the device
	// does not exist). Nothing is stored when it fails. Re-uploading
	// identical keys changes nothing; new device keys (the first or
	// changed ones, which replace the old ones as Synapse does) are
	// announced.
	UploadKeys(ctx context.Context, req UploadKeysRequest) (*OneTimeKeyCounts, error)
	// OneTimeKeyCounts returns what the device has left; an unknown
	// device has nothing (no error).
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*OneTimeKeyCounts, error)
	// QueryKeys returns the keys of local users.
	QueryKeys(ctx context.Context, req QueryKeysRequest) (*QueryKeysResponse, error)
	// ClaimKeys claims one key per requested device, atomically: the
	// oldest one-time key of the algorithm, or else the device's
	// fallback key of that algorithm (which is then marked used but
	// handed out again until replaced). Concurrent claims never get the
	// same one-time key.
	ClaimKeys(ctx context.Context, req ClaimKeysRequest) (*ClaimKeysResponse, error)
	// CrossSigningUploadNeedsAuth says whether uploading keys needs
	// User-Interactive Auth, as Synapse decides: not when the user has
	// no master key yet, nor when every key given equals the stored one
	// (UploadCrossSigningKeys is then a no-op).
	CrossSigningUploadNeedsAuth(ctx context.Context, keys CrossSigningKeys) (bool, error)
	// UploadCrossSigningKeys replaces the keys given. It fails with
	// ErrInvalidKeys (wrong usage or user, not exactly one ed25519 public
	// key), ErrInvalidSignature (self-signing or user-signing key not
	// signed by the master key, the new one if given) or
	// ErrMissingMasterKey. Keys equal to the stored ones change nothing.
	UploadCrossSigningKeys(ctx context.Context, keys CrossSigningKeys) error
	// UploadSignatures stores signatures made by userID: of its own
	// devices and master key (by the self-signing key or a device), and
	// of other users' master keys (by its user-signing key), local or
	// remote. signed maps user IDs to key IDs (device ID or public key) to
	// the signed object. remoteMasters holds the master keys of the
	// remote users in signed, as their servers publish them (the caller
	// reads them from the remote device cache or over federation); a
	// remote user without one fails with M_NOT_FOUND. Each signature is
	// verified; the ones that fail are returned in failures (user ID ->
	// key ID -> failure, M_INVALID_SIGNATURE for a bad signature) and the
	// others are stored. Signatures of remote users' keys stay on this
	// server: they are shown to their signer only (MergeSignatures).
	UploadSignatures(ctx context.Context, userID string, signed map[string]map[string]json.RawMessage, remoteMasters map[string]json.RawMessage) (failures map[string]map[string]KeyFailure, err error)
	// MergeSignatures returns the master keys of remote users (user ID
	// -> key, as their servers publish them) with the signatures signer
	// made over them merged in. Keys that are not a valid master key of
	// their user, or that signer did not sign, are returned unchanged.
	MergeSignatures(ctx context.Context, signer string, masterKeys map[string]json.RawMessage) (map[string]json.RawMessage, error)
	// QueryUserDevices lists a local user's devices with keys, their
	// display names and the user's master and self-signing keys (for
	// federation's /user/devices/{userId}). An unknown user has no
	// devices and stream ID 0.
	QueryUserDevices(ctx context.Context, userID string) (*UserDevices, error)
}
