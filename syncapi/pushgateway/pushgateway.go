// Package pushgateway delivers notifications to push gateways: the HTTP
// pushers of POST /_matrix/client/v3/pushers/set, which are sent
// POST /_matrix/push/v1/notify (the Push Gateway API).
//
// A [Client] sends one notification to one [Target] and classifies what
// went wrong. A [Pool] runs one worker goroutine per target, which reads
// the target's notifications from a [Source] in order, sends each once,
// records its progress after each, backs off while the gateway is
// unreachable, and stops when the gateway rejects the push key. Idle
// workers wait for [Pool.Wake] and cost nothing but a goroutine.
//
// Behaviour follows Synapse's HTTP pusher where the specification leaves
// room: the payload's fields (including the event_id_only format), prio
// "high" only for highlights, sounds and encrypted events, the badge as
// counts.unread, and the rejected push keys of the response.
package pushgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/tidwall/gjson"
)

// FormatEventIDOnly is the data.format of pushers that get only the event
// ID, room ID, prio and counts of each notification (the gateway fetches
// the rest, or shows something generic).
const FormatEventIDOnly = "event_id_only"

// Target is one pusher to deliver to. Targets are compared field by
// field: a change of any field is a different target.
type Target struct {
	UserID  string
	AppID   string
	PushKey string
	// URL is the pusher's data.url, the gateway's notify endpoint.
	URL string
	// Format is data.format: "" (everything) or FormatEventIDOnly.
	Format string
	// Data is the pusher's data without "url", sent as devices[].data;
	// nil is sent as {}.
	Data json.RawMessage
	// PushKeyTS is when the pusher was created, in milliseconds (sent in
	// seconds as pushkey_ts).
	PushKeyTS int64
	// ProfileTag is the pusher's profile_tag (not sent: gateways are
	// not told it; kept so that a change restarts the worker).
	ProfileTag string
}

// key identifies the worker of a target: a user's pusher is identified by
// app ID and push key.
type key struct{ userID, appID, pushKey string }

func (t Target) key() key { return key{t.UserID, t.AppID, t.PushKey} }

func (t Target) equal(o Target) bool {
	return t.UserID == o.UserID && t.AppID == o.AppID && t.PushKey == o.PushKey && t.URL == o.URL &&
		t.Format == o.Format && string(t.Data) == string(o.Data) && t.PushKeyTS == o.PushKeyTS &&
		t.ProfileTag == o.ProfileTag
}

// NewTarget builds the target of an HTTP pusher from its data object:
// URL and Format come from data.url and data.format, and Data is data
// without url (format and every custom key kept, as the specification
// requires). It fails if data is not an object or has no string url.
func NewTarget(userID, appID, pushKey string, data json.RawMessage, createdTS int64, profileTag string) (Target, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return Target{}, errors.New("pushgateway: pusher data is not a JSON object")
	}
	var u string
	if err := json.Unmarshal(m["url"], &u); err != nil || u == "" {
		return Target{}, errors.New("pushgateway: pusher data has no url")
	}
	var format string
	_ = json.Unmarshal(m["format"], &format) // a non-string format is the default format
	delete(m, "url")
	rest, err := json.Marshal(m)
	if err != nil {
		return Target{}, fmt.Errorf("pushgateway: pusher data: %w", err)
	}
	return Target{UserID: userID, AppID: appID, PushKey: pushKey, URL: u, Format: format,
		Data: rest, PushKeyTS: createdTS, ProfileTag: profileTag}, nil
}

// gatewayHost is what logs say about a target's URL: its host only, since
// some gateways put secrets in the rest.
func gatewayHost(t Target) string {
	if u, err := url.Parse(t.URL); err == nil && u.Host != "" {
		return u.Host
	}
	return "(invalid URL)"
}

// Notification is one notification of the target's user, in the order of
// Pos. A Notification without an EventID sends nothing: it moves the
// progress to Pos (the Source read that far and found nothing to push).
type Notification struct {
	// Pos is the position in the user's notifications (increasing).
	Pos int64
	// The event notified about.
	EventID string
	RoomID  string
	Type    string
	Sender  string
	// SenderDisplayName, RoomName and RoomAlias are sent when not empty.
	SenderDisplayName string
	RoomName          string
	RoomAlias         string
	// UserIsTarget is true for an m.room.member event whose state key is
	// the user (user_is_target, sent only for m.room.member events).
	UserIsTarget bool
	// Content is the event's content; nil or {} is not sent.
	Content json.RawMessage
	// Tweaks are the set_tweak actions of the push rule that matched
	// (a tweak without a value is true), sent as devices[].tweaks.
	Tweaks map[string]json.RawMessage
	// Unread is the badge (counts.unread): the number of rooms with
	// unread notifications, as Synapse's default
	// push.group_unread_count_by_room.
	Unread int
	// Highlight is true when the notification highlights. Like a truthy
	// highlight or sound tweak, or an m.room.encrypted event, it makes
	// prio "high"; anything else is "low".
	Highlight bool
}

// Source is where the pool reads what to deliver and records progress.
// Its methods are called from the target's worker goroutine (one call at
// a time per target, concurrently across targets); they fail only with
// storage errors, and the worker retries them with backoff.
type Source interface {
	// Progress returns the position of the last notification handled
	// for t.
	Progress(ctx context.Context, t Target) (int64, error)
	// Pending returns up to limit notifications of t.UserID after pos,
	// oldest first.
	Pending(ctx context.Context, t Target, after int64, limit int) ([]Notification, error)
	// Advance records that t handled everything up to pos.
	Advance(ctx context.Context, t Target, pos int64) error
	// Rejected is called when the gateway rejected t's push key: the
	// pusher must be deleted. The worker stops after it returns nil.
	Rejected(ctx context.Context, t Target) error
}

// notifyBody is the request of POST /_matrix/push/v1/notify. Empty
// optional fields are left out, as Synapse does.
type notifyBody struct {
	Notification notification `json:"notification"`
}

type notification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	Membership        string          `json:"membership,omitempty"`
	UserIsTarget      *bool           `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            counts          `json:"counts"`
	Devices           []device        `json:"devices"`
}

// counts always carries unread, even 0 (as Synapse: a zero badge clears
// the app's badge).
type counts struct {
	Unread int `json:"unread"`
}

type device struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"`
	Data      json.RawMessage            `json:"data"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// Payload returns the JSON body Notify sends for n to t.
//
// The default format has event_id, room_id, type, sender, prio, counts
// and devices, plus sender_display_name, room_name, room_alias and
// content when not empty, and for m.room.member events membership (from
// the content, as Synapse adds) and user_is_target. FormatEventIDOnly has
// only event_id, room_id, prio, counts and devices, without tweaks.
// devices has the one device of t: app_id, pushkey, pushkey_ts (seconds),
// data (t.Data, {} if nil) and tweaks (when any).
//
// It fails if t.Data, n.Content or a tweak is not valid JSON.
func Payload(t Target, n Notification) ([]byte, error) {
	data := t.Data
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage(`{}`)
	}
	dev := device{AppID: t.AppID, PushKey: t.PushKey, PushKeyTS: t.PushKeyTS / 1000, Data: data}
	nb := notification{
		EventID: n.EventID,
		RoomID:  n.RoomID,
		Prio:    prio(n),
		Counts:  counts{Unread: n.Unread},
	}
	if t.Format != FormatEventIDOnly {
		nb.Type = n.Type
		nb.Sender = n.Sender
		nb.SenderDisplayName = n.SenderDisplayName
		nb.RoomName = n.RoomName
		nb.RoomAlias = n.RoomAlias
		if n.Type == "m.room.member" {
			nb.Membership = gjson.GetBytes(n.Content, "membership").Str
			target := n.UserIsTarget
			nb.UserIsTarget = &target
		}
		if !emptyObject(n.Content) {
			nb.Content = n.Content
		}
		if len(n.Tweaks) > 0 {
			dev.Tweaks = n.Tweaks
		}
	}
	nb.Devices = []device{dev}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(notifyBody{Notification: nb}); err != nil {
		return nil, fmt.Errorf("building the notification: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// prio is "high" for what may make a sound or highlight (an encrypted
// event may do either), "low" for the rest.
func prio(n Notification) string {
	if n.Highlight || n.Type == "m.room.encrypted" || truthy(n.Tweaks["highlight"]) || truthy(n.Tweaks["sound"]) {
		return "high"
	}
	return "low"
}

// truthy reports whether a JSON value is set in the sense Synapse tests
// tweaks: not absent, null, false, 0, "", [] or {}.
func truthy(v json.RawMessage) bool {
	r := gjson.ParseBytes(bytes.TrimSpace(v))
	switch r.Type {
	case gjson.Null, gjson.False:
		return false
	case gjson.Number:
		return r.Num != 0
	case gjson.String:
		return r.Str != ""
	case gjson.JSON:
		if r.IsArray() {
			return len(r.Array()) > 0
		}
		return len(r.Map()) > 0
	}
	return true
}

// emptyObject reports whether content is absent, null or {}.
func emptyObject(content json.RawMessage) bool {
	c := bytes.TrimSpace(content)
	if len(c) == 0 || string(c) == "null" {
		return true
	}
	if c[0] != '{' || c[len(c)-1] != '}' {
		return false
	}
	return len(bytes.TrimSpace(c[1:len(c)-1])) == 0
}
