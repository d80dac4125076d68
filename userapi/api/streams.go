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

// Streams lists the streams this component produces, for setup.
func Streams() []bus.StreamSpec { return []bus.StreamSpec{UserOutputStream} }
