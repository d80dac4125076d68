// Package filter is the Matrix event filter (client-server API "Filtering"):
// its JSON form, validation against the specification's schema, and the
// matching that /sync, /messages and /context apply.
package filter

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Filter is a sync filter.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender. A nil list does not
// restrict; an empty list (types: []) matches nothing.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	NotSenders *[]string `json:"not_senders,omitempty"`
	NotTypes   *[]string `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	Types      *[]string `json:"types,omitempty"`
}

// RoomEventFilter also selects by room and content.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	NotRooms                  *[]string `json:"not_rooms,omitempty"`
	Rooms                     *[]string `json:"rooms,omitempty"`
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	// RelTypes, NotRelTypes select events by their own relation's type
	// (MSC3874); RelatedByRelTypes, RelatedBySenders select events that
	// have children of those relation types, from those senders (MSC3440,
	// as Synapse names them).
	RelTypes          *[]string `json:"org.matrix.msc3874.rel_types,omitempty"`
	NotRelTypes       *[]string `json:"org.matrix.msc3874.not_rel_types,omitempty"`
	RelatedByRelTypes *[]string `json:"related_by_rel_types,omitempty"`
	RelatedBySenders  *[]string `json:"related_by_senders,omitempty"`
}

// RoomFilter applies to room data.
type RoomFilter struct {
	NotRooms     *[]string        `json:"not_rooms,omitempty"`
	Rooms        *[]string        `json:"rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse decodes and validates a filter. Errors describe the offending key
// and are meant for an M_BAD_JSON response.
func Parse(data []byte) (*Filter, error) {
	if err := checkNulls(data); err != nil {
		return nil, err
	}
	var f Filter
	if err := json.Unmarshal(data, &f); err != nil {
		if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
			return nil, fmt.Errorf("%s: expected %s", te.Field, te.Type)
		}
		return nil, fmt.Errorf("invalid filter: %v", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks what the JSON types alone do not.
func (f *Filter) Validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return fmt.Errorf("event_format: must be client or federation")
	}
	for _, p := range f.EventFields {
		if p == "" {
			return fmt.Errorf("event_fields: empty path")
		}
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	if r := f.Room; r != nil {
		if err := roomIDs("room.rooms", r.Rooms); err != nil {
			return err
		}
		if err := roomIDs("room.not_rooms", r.NotRooms); err != nil {
			return err
		}
		for _, sub := range []struct {
			name string
			f    *RoomEventFilter
		}{{"room.ephemeral", r.Ephemeral}, {"room.state", r.State}, {"room.timeline", r.Timeline}, {"room.account_data", r.AccountData}} {
			if err := sub.f.validate(sub.name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *EventFilter) validate(name string) error {
	if e == nil {
		return nil
	}
	// The spec asks for a limit above 0; 0 (no events, as Synapse
	// allows) is accepted, for clients that want a room's state alone.
	if e.Limit != nil && *e.Limit < 0 {
		return fmt.Errorf("%s.limit: must be a non-negative integer", name)
	}
	for _, l := range []struct {
		key  string
		list *[]string
	}{{"senders", e.Senders}, {"not_senders", e.NotSenders}} {
		if l.list == nil {
			continue
		}
		for _, u := range *l.list {
			if _, err := spec.NewUserID(u, true); err != nil {
				return fmt.Errorf("%s.%s: %q is not a user ID", name, l.key, u)
			}
		}
	}
	return nil
}

func (r *RoomEventFilter) validate(name string) error {
	if r == nil {
		return nil
	}
	if err := r.EventFilter.validate(name); err != nil {
		return err
	}
	if err := roomIDs(name+".rooms", r.Rooms); err != nil {
		return err
	}
	if r.RelatedBySenders != nil {
		for _, u := range *r.RelatedBySenders {
			if _, err := spec.NewUserID(u, true); err != nil {
				return fmt.Errorf("%s.related_by_senders: %q is not a user ID", name, u)
			}
		}
	}
	return roomIDs(name+".not_rooms", r.NotRooms)
}

func roomIDs(name string, list *[]string) error {
	if list == nil {
		return nil
	}
	for _, id := range *list {
		if !strings.HasPrefix(id, "!") || len(id) < 2 {
			return fmt.Errorf("%s: %q is not a room ID", name, id)
		}
	}
	return nil
}

// ParseRoomEventFilter decodes and validates a room event filter (the
// filter parameter of /messages and /context).
func ParseRoomEventFilter(data []byte) (*RoomEventFilter, error) {
	f, err := Parse([]byte(`{"room":{"timeline":` + string(data) + `}}`))
	if err != nil {
		return nil, err
	}
	return f.Room.Timeline, nil
}
