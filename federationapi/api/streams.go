package api

import (
	"encoding/json"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
)

// FederationInStream carries the EDUs other servers sent, once their origin
// is checked (a typing notification only from the server of the typing
// user, and so on). Ordering: total order (one stream), in the order the
// transactions were received. Consumers: syncapi (typing, receipts,
// presence, to-device messages) and the federation API's device list
// consumer (device lists and signing keys, into userapi's remote device
// cache).
var FederationInStream = bus.StreamSpec{
	Name:            "FederationIn",
	Description:     "EDUs received from other homeservers",
	Subjects:        []string{"FederationIn.>"},
	MaxAge:          7 * 24 * time.Hour,
	DuplicateWindow: 2 * time.Minute,
}

// FederationOutStream carries the EDUs this server's components want sent
// to other servers. Ordering: total order; the federation API queues them
// per destination in that order.
var FederationOutStream = bus.StreamSpec{
	Name:            "FederationOut",
	Description:     "EDUs for other homeservers",
	Subjects:        []string{"FederationOut.>"},
	MaxAge:          24 * time.Hour,
	DuplicateWindow: 2 * time.Minute,
}

// Streams lists the streams of the federation API, for setup.
func Streams() []bus.StreamSpec { return []bus.StreamSpec{FederationInStream, FederationOutStream} }

// InSubject is the FederationIn subject of an EDU type (m.typing ->
// FederationIn.m_typing).
func InSubject(eduType string) string { return "FederationIn." + subjectToken(eduType) }

// OutSubject is the FederationOut subject of an EDU type.
func OutSubject(eduType string) string { return "FederationOut." + subjectToken(eduType) }

func subjectToken(t string) string {
	b := []byte(t)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' {
			b[i] = '_'
		}
	}
	return string(b)
}

// EDU types.
const (
	EDUTyping         = "m.typing"
	EDUReceipt        = "m.receipt"
	EDUPresence       = "m.presence"
	EDUDeviceList     = "m.device_list_update"
	EDUSigningKey     = "m.signing_key_update"
	EDUDirectToDevice = "m.direct_to_device"
)

// MaxToDeviceMessagesPerEDU is how many (user, device) messages an
// m.direct_to_device EDU holds at most: a server's EDU with more is
// dropped, so the sync API splits the messages for a server into EDUs of
// at most this many.
const MaxToDeviceMessagesPerEDU = 10000

// InboundEDU is a FederationIn message (version 1): an EDU from Origin.
type InboundEDU struct {
	V       int             `json:"v"`
	Origin  string          `json:"origin"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// OutboundEDU is a FederationOut message (version 1): an EDU to send. The
// destinations are the servers in RoomID (typing, receipts), the servers
// sharing a room with UserID (presence, device lists), plus Destinations;
// this server is never one of them.
type OutboundEDU struct {
	V            int             `json:"v"`
	Type         string          `json:"type"`
	Content      json.RawMessage `json:"content"`
	RoomID       string          `json:"room_id,omitempty"`
	UserID       string          `json:"user_id,omitempty"`
	Destinations []string        `json:"destinations,omitempty"`
}
