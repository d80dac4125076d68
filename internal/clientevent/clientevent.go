// Package clientevent turns room events into the client format of the
// client-server API ("ClientEvent"): the federation fields (auth_events,
// prev_events, hashes, signatures, depth, origin) are dropped.
package clientevent

import (
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Event is a ClientEvent.
type Event struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Unsigned       json.RawMessage `json:"unsigned,omitempty"`
	// Redacts is the redaction target, also at the top level in room
	// versions that moved it into the content, for older clients.
	Redacts string `json:"redacts,omitempty"`
}

// Format selects the fields of the client format.
type Format int

const (
	// WithRoomID is the format of most endpoints.
	WithRoomID Format = iota
	// WithoutRoomID is the format of /sync, where the room is implied.
	WithoutRoomID
)

// New converts an event.
func New(p gomatrixserverlib.PDU, f Format) Event {
	e := Event{
		Content:        json.RawMessage(p.Content()),
		EventID:        p.EventID(),
		OriginServerTS: int64(p.OriginServerTS()),
		Sender:         string(p.SenderID()),
		StateKey:       p.StateKey(),
		Type:           p.Type(),
	}
	if len(e.Content) == 0 {
		e.Content = json.RawMessage("{}")
	}
	if u := p.Unsigned(); len(u) > 0 && string(u) != "{}" {
		e.Unsigned = clientUnsigned(u)
	}
	if f == WithRoomID {
		e.RoomID = p.RoomID().String()
	}
	if p.Type() == spec.MRoomRedaction {
		// Room version 11 moved redacts into the content: clients get it
		// in both places, whatever the version (rooms/v11, "Moving the
		// redacts property").
		e.Redacts = p.Redacts()
		if e.Redacts == "" {
			e.Redacts = gjson.GetBytes(p.Content(), "redacts").Str
		} else if !gjson.GetBytes(p.Content(), "redacts").Exists() {
			if c, err := sjson.SetBytes(e.Content, "redacts", e.Redacts); err == nil {
				e.Content = c
			}
		}
	}
	return e
}

// List converts events.
func List(ps []gomatrixserverlib.PDU, f Format) []Event {
	out := make([]Event, len(ps))
	for i, p := range ps {
		out[i] = New(p, f)
	}
	return out
}

// federationKeys are the fields of a federation event that clients never
// see.
var federationKeys = []string{"auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state"}

// clientUnsigned returns unsigned data with the redaction that redacted
// the event (redacted_because) in client format.
func clientUnsigned(u []byte) json.RawMessage {
	rb := gjson.GetBytes(u, "redacted_because")
	if !rb.IsObject() {
		return json.RawMessage(u)
	}
	var because map[string]json.RawMessage
	if json.Unmarshal([]byte(rb.Raw), &because) != nil {
		return json.RawMessage(u)
	}
	for _, k := range federationKeys {
		delete(because, k)
	}
	var unsigned map[string]json.RawMessage
	if json.Unmarshal(u, &unsigned) != nil {
		return json.RawMessage(u)
	}
	unsigned["redacted_because"], _ = json.Marshal(because)
	out, _ := json.Marshal(unsigned)
	return out
}

// FromJSON converts an event from its stored JSON (federation format, whose
// event_id may be implied, as in room versions 3 and later).
func FromJSON(eventID string, js []byte, withRoomID bool) Event {
	e := Event{
		Content:        json.RawMessage(gjson.GetBytes(js, "content").Raw),
		EventID:        eventID,
		OriginServerTS: gjson.GetBytes(js, "origin_server_ts").Int(),
		Sender:         gjson.GetBytes(js, "sender").Str,
		Type:           gjson.GetBytes(js, "type").Str,
	}
	if len(e.Content) == 0 {
		e.Content = json.RawMessage("{}")
	}
	if sk := gjson.GetBytes(js, "state_key"); sk.Exists() {
		s := sk.Str
		e.StateKey = &s
	}
	if withRoomID {
		e.RoomID = gjson.GetBytes(js, "room_id").Str
		if e.RoomID == "" && e.Type == spec.MRoomCreate && e.StateKey != nil && *e.StateKey == "" && len(eventID) > 1 {
			// Room version 12: the create event has no room_id, the room
			// ID is its event ID with '!' for '$'; clients still get one
			// (rooms/v12, "Event format").
			e.RoomID = "!" + eventID[1:]
		}
	}
	if u := gjson.GetBytes(js, "unsigned"); u.IsObject() && u.Raw != "{}" {
		e.Unsigned = clientUnsigned([]byte(u.Raw))
	}
	if e.Type == spec.MRoomRedaction {
		top := gjson.GetBytes(js, "redacts").Str
		inContent := gjson.GetBytes(e.Content, "redacts")
		switch {
		case top != "" && !inContent.Exists():
			e.Redacts = top
			if c, err := sjson.SetBytes(e.Content, "redacts", top); err == nil {
				e.Content = c
			}
		case top != "":
			e.Redacts = top
		default:
			e.Redacts = inContent.Str
		}
	}
	return e
}
