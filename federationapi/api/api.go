// Package api is the federation API's contract: what other components ask
// of remote servers (joins, leaves, knocks and invites across servers,
// directory, profile and room directory lookups, backfill), and the
// FederationIn and FederationOut streams that carry EDUs between this
// server's components and other servers.
//
// Perform and Query methods fail with *RemoteError when a remote server
// answered with a Matrix error, with ErrNoServer when no server could be
// reached, with ErrDisabled when federation is off, or with an opaque error.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrDisabled: federation is turned off in the configuration.
	ErrDisabled = errors.New("federation is disabled")
	// ErrNoServer: none of the candidate servers answered.
	ErrNoServer = errors.New("no server could be reached")
	// ErrDenied: the server is not allowed by the domain allow/deny lists.
	ErrDenied = errors.New("federation with this server is not allowed")
)

// RemoteError is a Matrix error a remote server answered with.
type RemoteError struct {
	Server  string
	Status  int
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.Server, e.Status, e.Code, e.Message)
}

// FederationAPI is what other components ask of remote servers.
type FederationAPI interface {
	// PerformJoin joins a local user to a room this server is not in,
	// through the first of servers that lets it (make_join, send_join),
	// and stores the room's state. It returns the room ID. A refusal any
	// server of the room would repeat (403...) ends the attempt with that
	// server's *RemoteError; when every server failed, the result is the
	// last *RemoteError if all answered with client errors, ErrNoServer
	// otherwise.
	PerformJoin(ctx context.Context, req *JoinRequest) (roomID string, err error)
	// PerformLeave leaves (or rejects an invite to, or withdraws a knock
	// on) a room this server is not in, through servers (make_leave,
	// send_leave). When no server takes the leave of an invite or knock,
	// it is made locally only (as Synapse does) and PerformLeave succeeds.
	PerformLeave(ctx context.Context, req *MembershipRequest) error
	// PerformKnock knocks on a room this server is not in (make_knock,
	// send_knock).
	PerformKnock(ctx context.Context, req *MembershipRequest) error
	// PerformInvite invites a remote user to a room this server is in: the
	// invitee's server co-signs the invite (/invite), which then enters
	// the room. It returns the event ID. An invite the room's auth rules
	// refuse fails with an error wrapping roomserver/api's ErrNotAllowed,
	// one to a room without state here with ErrRoomNotFound.
	PerformInvite(ctx context.Context, req *InviteRequest) (eventID string, err error)
	// QueryRoomAlias resolves an alias of another server (/query/directory).
	QueryRoomAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// QueryProfile returns a remote user's profile, or one field of it
	// (/query/profile); a missing user or field is a *RemoteError M_NOT_FOUND.
	QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// QueryPublicRooms returns the published room directory of a server
	// (/publicRooms), as the client-server API's response body.
	QueryPublicRooms(ctx context.Context, server string, req *PublicRoomsRequest) (json.RawMessage, error)
	// Backfill fetches up to limit events of a room's history older than
	// the events in from (the oldest this server has) from a server in the
	// room, and stores them. It returns how many new events were stored
	// (0: there is no more history to fetch).
	Backfill(ctx context.Context, roomID string, from []string, limit int) (int, error)
	// EventAtTimestamp asks the room's other servers in turn for the event
	// closest to ts (milliseconds) in a direction (forward: at or after
	// it), as /timestamp_to_event: the first answer wins. found is false
	// when none of them knows such an event; err is set only when none
	// could answer.
	EventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (ev RemoteEventAt, found bool, err error)

	// QueryKeys asks server for its users' device and cross-signing keys
	// (/user/keys/query); deviceKeys maps user IDs to device IDs (empty:
	// all). The answer keeps only users of deviceKeys.
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*KeysQueryResponse, error)
	// ClaimKeys claims one-time keys of server's users (/user/keys/claim);
	// oneTimeKeys maps user IDs to device IDs to algorithms. The answer
	// (user -> device -> "<algorithm>:<key ID>" -> key) keeps only the
	// users and devices asked for.
	ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// QueryUserDevices fetches a remote user's device list from its
	// server (/user/devices/{userId}), for device-list resyncs. An answer
	// for another user is an error.
	QueryUserDevices(ctx context.Context, server, userID string) (*UserDevicesResponse, error)
}

// KeysQueryResponse is a remote server's answer to /user/keys/query: user
// ID -> device ID -> DeviceKeys, and cross-signing keys by user ID.
type KeysQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// UserDevicesResponse is a remote server's answer to /user/devices/{userId}.
type UserDevicesResponse struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device of a UserDevicesResponse.
type UserDevice struct {
	DeviceID          string          `json:"device_id"`
	Keys              json.RawMessage `json:"keys"`
	DeviceDisplayName string          `json:"device_display_name,omitempty"`
}

// JoinRequest asks to join a room over federation.
type JoinRequest struct {
	RoomID  string
	UserID  string
	Servers []string
	// Content is the member event content (displayname, avatar_url,
	// reason...); membership is set to join.
	Content map[string]any
}

// MembershipRequest asks to leave or knock on a room over federation.
type MembershipRequest struct {
	RoomID  string
	UserID  string
	Servers []string
	Content map[string]any
}

// InviteRequest asks to invite a remote user.
type InviteRequest struct {
	RoomID  string
	Sender  string
	Invitee string
	Content map[string]any
}

// PublicRoomsRequest filters a remote room directory.
type PublicRoomsRequest struct {
	Limit                int    `json:"limit,omitempty"`
	Since                string `json:"since,omitempty"`
	SearchTerm           string `json:"-"`
	IncludeAllNetworks   bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string `json:"third_party_instance_id,omitempty"`
}

// RemoteEventAt is a server's answer to /timestamp_to_event.
type RemoteEventAt struct {
	Server   string
	EventID  string
	OriginTS int64
}
