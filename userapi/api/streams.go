package api

import (
	"encoding/json"

	"github.com/myelin-chat/myelin/internal/bus"
)

// UserOutputStream announces changes to users' account data, profiles and
// devices. Ordering: total order (one stream); consumers see the changes of a
// user in the order they were committed.
var UserOutputStream = bus.StreamSpec{
	Name:            "UserOutput",
	Description:     "Changes to account data, profiles and devices",
	Subjects:        []string{"UserOutput.>"},
	DuplicateWindow: 0,
}

// Subjects of UserOutput.
const (
	SubjectAccountData = "UserOutput.account_data"
	SubjectProfile     = "UserOutput.profile"
	SubjectDevices     = "UserOutput.devices"
	// SubjectKeyChange carries KeyChange, published through the user
	// API's outbox.
	SubjectKeyChange = "UserOutput.key_change"
)

// AccountDataUpdate: account data of type Type (in RoomID, "" for global)
// was set to Content.
type AccountDataUpdate struct {
	V       int             `json:"v"`
	UserID  string          `json:"user_id"`
	RoomID  string          `json:"room_id,omitempty"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// ProfileUpdate: a profile field changed; a nil Value means it was removed.
type ProfileUpdate struct {
	V      int             `json:"v"`
	UserID string          `json:"user_id"`
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value,omitempty"`
}

// DeviceUpdate: devices of a user were created, renamed or deleted.
type DeviceUpdate struct {
	V         int      `json:"v"`
	UserID    string   `json:"user_id"`
	DeviceIDs []string `json:"device_ids"`
	Deleted   bool     `json:"deleted,omitempty"`
}

// Kinds of KeyChange.
const (
	// KeyChangeDevice: a device's keys (or their signatures) or display
	// name changed, or the device was deleted (an m.device_list_update).
	KeyChangeDevice = "device"
	// KeyChangeCrossSigning: the user's master or self-signing key (or
	// their signatures) changed (an m.signing_key_update).
	KeyChangeCrossSigning = "cross_signing"
	// KeyChangeUserSigning: the user's user-signing key changed, or it
	// signed other users' master keys. Only the user's own devices care
	// (the user is in their own device_lists.changed); never sent over
	// federation.
	KeyChangeUserSigning = "user_signing"
)

// KeyChange: a local user's device list or cross-signing keys changed. It is
// written to an outbox in the transaction of the change and published
// after commit (at least once: consumers dedupe by user ID and stream ID;
// the message ID is "key:<user_id>:<stream_id>"), in commit order.
//
// StreamID is per user, strictly increasing, shared by every kind, and
// assigned in the transaction of the change. PrevID is the chain of
// m.device_list_update: for a device change, the stream ID of the user's
// previous device change (empty for the first one); for the other kinds,
// empty. A change of several devices in one transaction (a deletion of
// many devices) is one message per device with consecutive, chained stream
// IDs.
type KeyChange struct {
	V        int     `json:"v"`
	Kind     string  `json:"kind"`
	UserID   string  `json:"user_id"`
	StreamID int64   `json:"stream_id"`
	PrevID   []int64 `json:"prev_id,omitempty"`

	// For KeyChangeDevice:
	DeviceID string `json:"device_id,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
	// Keys is the device's DeviceKeys object with stored signatures;
	// absent when deleted or when the device has no keys.
	Keys              json.RawMessage `json:"keys,omitempty"`
	DeviceDisplayName *string         `json:"device_display_name,omitempty"`

	// For KeyChangeCrossSigning: the user's current keys (either may be
	// absent when only the other is set).
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	// For KeyChangeUserSigning: the user's user-signing key.
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
}

// Streams lists the streams this component produces, for setup.
func Streams() []bus.StreamSpec { return []bus.StreamSpec{UserOutputStream} }
