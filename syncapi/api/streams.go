// Package api is the sync API's contract with other components: the
// SyncOutput stream, which carries the typing notifications, read
// receipts, presence and to-device messages the sync API takes in, for
// the application service component.
package api

import (
	"encoding/json"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
)

// SyncOutputStream announces typing, receipts, presence and to-device
// messages (those of local and remote users alike). Ordering: total order
// (one stream); receipts, presence and to-device messages are published
// through the sync API's outbox, written in the transaction that stores
// them, in commit order; typing, which lives in memory, is best effort.
// The sync API publishes only what its Config.Output asks for.
var SyncOutputStream = bus.StreamSpec{
	Name:            "SyncOutput",
	Description:     "Typing, receipts, presence and to-device messages",
	Subjects:        []string{"SyncOutput.>"},
	MaxAge:          7 * 24 * time.Hour,
	DuplicateWindow: 2 * time.Minute,
}

// Streams lists the streams the sync API produces, for setup.
func Streams() []bus.StreamSpec { return []bus.StreamSpec{SyncOutputStream} }

// Subjects of SyncOutput.
const (
	SubjectTyping   = "SyncOutput.typing"
	SubjectReceipt  = "SyncOutput.receipt"
	SubjectPresence = "SyncOutput.presence"
	SubjectToDevice = "SyncOutput.to_device"
)

// TypingUpdate: who is typing in a room changed; UserIDs is everyone
// typing there now (empty: nobody).
type TypingUpdate struct {
	V       int      `json:"v"`
	RoomID  string   `json:"room_id"`
	UserIDs []string `json:"user_ids"`
}

// ReceiptUpdate: a user's receipt moved (Type is m.read or
// m.read.private; ThreadID is empty for an unthreaded receipt).
type ReceiptUpdate struct {
	V        int    `json:"v"`
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Type     string `json:"receipt_type"`
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id,omitempty"`
	TS       int64  `json:"ts"`
}

// PresenceUpdate: a user's presence changed.
type PresenceUpdate struct {
	V               int     `json:"v"`
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveTS    int64   `json:"last_active_ts,omitempty"`
	CurrentlyActive bool    `json:"currently_active,omitempty"`
}

// ToDeviceMessage: a message reached a local device's inbox (a message
// for every device, "*", comes as one per device).
type ToDeviceMessage struct {
	V        int             `json:"v"`
	Sender   string          `json:"sender"`
	Type     string          `json:"type"`
	Content  json.RawMessage `json:"content"`
	UserID   string          `json:"to_user_id"`
	DeviceID string          `json:"to_device_id"`
}

// Output selects what the sync API publishes on SyncOutput (nothing by
// default: only the application service component reads it).
type Output struct {
	// Ephemeral publishes typing, receipts and presence.
	Ephemeral bool
	// ToDevice, when set, publishes the to-device messages of the users
	// it accepts.
	ToDevice func(userID string) bool
}
