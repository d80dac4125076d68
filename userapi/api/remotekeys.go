package api

import (
	"context"
	"encoding/json"
)

// SubjectRemoteKeyChange carries RemoteKeyChange.
const SubjectRemoteKeyChange = "UserOutput.remote_key_change"

// RemoteKeyChange: the device list or cross-signing keys of a remote user
// changed (an m.device_list_update or m.signing_key_update arrived). It is
// published once the remote device cache reflects the change (or knows it
// is out of date), so that a client reading the user's keys after seeing
// them in device_lists.changed gets the new ones. At least once; the
// message ID is "rkey:<user_id>:<stream_id>" ("rsk:" for signing keys).
type RemoteKeyChange struct {
	V      int    `json:"v"`
	UserID string `json:"user_id"`
}

// RemoteDeviceUpdate is an m.device_list_update EDU.
type RemoteDeviceUpdate struct {
	UserID            string          `json:"user_id"`
	DeviceID          string          `json:"device_id"`
	DeviceDisplayName *string         `json:"device_display_name,omitempty"`
	StreamID          int64           `json:"stream_id"`
	PrevID            []int64         `json:"prev_id,omitempty"`
	Deleted           bool            `json:"deleted,omitempty"`
	Keys              json.RawMessage `json:"keys,omitempty"`
}

// RemoteSigningKeyUpdate is an m.signing_key_update EDU.
type RemoteSigningKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// RemoteKeysAPI is the cache of remote users' device lists and
// cross-signing keys, for the remote users this server shares a room with.
// The federation API feeds it (the EDUs it receives, the device lists it
// fetches) and drops users no room is shared with any more; clients'
// /keys/query reads it. A user's cached list is authoritative only while
// it is up to date: after a gap in the updates it is stale until a resync
// replaces it, and stale users are read from their server instead.
type RemoteKeysAPI interface {
	// ApplyRemoteDeviceUpdate applies an m.device_list_update when it
	// follows the cached list (its prev_id is the cached stream ID), and
	// announces the change (RemoteKeyChange) in every case. resync is true
	// when the update does not follow (the user is not cached, or updates
	// were missed): the user is then stale until StoreRemoteDevices.
	ApplyRemoteDeviceUpdate(ctx context.Context, u *RemoteDeviceUpdate) (resync bool, err error)
	// ApplyRemoteSigningKeyUpdate stores the cross-signing keys given (of
	// a cached user) and announces the change.
	ApplyRemoteSigningKeyUpdate(ctx context.Context, u *RemoteSigningKeyUpdate) error
	// StoreRemoteDevices replaces a user's cached list with a full one
	// (from /user/devices), which makes it up to date, unless the cache has
	// moved past list.StreamID meanwhile.
	StoreRemoteDevices(ctx context.Context, list *UserDevices) error
	// ForgetRemoteDevices drops the cached lists of users (no room is
	// shared with them any more, so updates will stop coming).
	ForgetRemoteDevices(ctx context.Context, userIDs []string) error
	// StaleRemoteUsers lists up to limit stale users, to resync.
	StaleRemoteUsers(ctx context.Context, limit int) ([]string, error)
	// QueryRemoteKeys answers /keys/query for the cached, up-to-date users
	// among the request's: their devices (all, or those named), master and
	// self-signing keys, in the shape of QueryKeysResponse. The other
	// users are returned in missing, to be asked of their servers.
	QueryRemoteKeys(ctx context.Context, deviceKeys map[string][]string) (resp *QueryKeysResponse, missing map[string][]string, err error)
}
