// Package api is the roomserver's contract: the RoomInput and RoomOutput
// streams with their message types, the client that submits input and waits
// for its result, and the query interfaces other components read rooms
// through.
//
// Query methods fail with the sentinel errors below (test with errors.Is),
// or with an opaque error when storage failed.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Sentinel errors.
var (
	ErrRoomNotFound  = errors.New("room not found")
	ErrEventNotFound = errors.New("event not found")
	ErrAliasExists   = errors.New("alias already exists")
	ErrAliasNotFound = errors.New("alias not found")
	ErrNotAllowed    = errors.New("not allowed")
)

// Membership values.
const (
	Join   = "join"
	Invite = "invite"
	Leave  = "leave"
	Ban    = "ban"
	Knock  = "knock"
)

// StateKeyTuple names a piece of state.
type StateKeyTuple = gomatrixserverlib.StateKeyTuple

// RoomInfo describes a room the server knows.
type RoomInfo struct {
	RoomID  string
	Version gomatrixserverlib.RoomVersion
	// HasState is false for a room known only through an invite or a
	// knock of a local user received or sent over federation: this server
	// has never been in it.
	HasState bool
}

// MemberInfo is a user's current membership of a room.
type MemberInfo struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
	Forgotten  bool
}

// QueryAPI reads rooms.
type QueryAPI interface {
	// QueryRoomInfo returns ErrRoomNotFound for a room the server does not know.
	QueryRoomInfo(ctx context.Context, roomID string) (*RoomInfo, error)
	// QueryCurrentState returns the current state events of the room; with
	// no tuples, the whole state. Missing tuples are absent from the result.
	QueryCurrentState(ctx context.Context, roomID string, tuples ...StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	// QueryStateAfterEvent returns the state after an event of the room.
	QueryStateAfterEvent(ctx context.Context, roomID, eventID string, tuples ...StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	// QueryEvents returns the events the server has, in the order asked
	// (missing ones are skipped); redacted events come redacted.
	QueryEvents(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error)
	// QueryMembership returns the user's current membership ("" if none).
	QueryMembership(ctx context.Context, roomID, userID string) (*MemberInfo, error)
	// QueryRoomsForUser lists the rooms where the user's current membership
	// is one of memberships.
	QueryRoomsForUser(ctx context.Context, userID string, memberships ...string) ([]MemberInfo, error)
	// QueryLatestEvents returns the forward extremities of the room.
	QueryLatestEvents(ctx context.Context, roomID string) ([]string, error)
	// QueryEventVisible reports whether the user may see the event under
	// the room's history visibility.
	QueryEventVisible(ctx context.Context, userID, eventID string) (bool, error)
	// QueryTransactionID returns the client transaction ID with which the
	// user's device sent the event, or "" (another device, another user,
	// or no transaction).
	QueryTransactionID(ctx context.Context, userID, deviceID, eventID string) (string, error)
}

// AliasAPI manages room aliases and the published room directory.
type AliasAPI interface {
	// SetAlias maps alias to roomID; ErrAliasExists if it is taken.
	SetAlias(ctx context.Context, alias, roomID, creator string) error
	// QueryAlias returns the room of an alias; ErrAliasNotFound.
	QueryAlias(ctx context.Context, alias string) (roomID string, err error)
	// RemoveAlias deletes an alias and returns who created it and its room.
	RemoveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
	// QueryAliasCreator returns who created an alias; ErrAliasNotFound.
	QueryAliasCreator(ctx context.Context, alias string) (roomID, creator string, err error)
	QueryAliasesForRoom(ctx context.Context, roomID string) ([]string, error)
	SetPublished(ctx context.Context, roomID string, published bool) error
	QueryPublished(ctx context.Context, roomID string) (bool, error)
	// SetAppServicePublished publishes a room in (or removes it from) the
	// directory of an application service's network.
	SetAppServicePublished(ctx context.Context, appServiceID, networkID, roomID string, published bool) error
	// QueryPublicRooms lists the published rooms anyone can join or read
	// of the directories network selects that match a search term (in
	// name, topic or alias), most joined first.
	QueryPublicRooms(ctx context.Context, searchTerm string, network DirectoryNetwork) ([]PublicRoom, error)
	// ForgetRoom marks a room the user has left or was banned from as
	// forgotten (until their next membership event), and announces it
	// as OutputForget. ErrNotAllowed while the user is joined, invited or
	// knocking; a room the user was never in, or one the server does not
	// know, has nothing to forget (no error, as in Synapse).
	ForgetRoom(ctx context.Context, userID, roomID string) error
}

// PublicRoom is an entry of the directory.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// ProtoEvent is an event a local user sends, before the roomserver adds
// prev_events, auth_events, depth, hashes and signatures.
type ProtoEvent struct {
	Sender   string          `json:"sender"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key,omitempty"`
	Content  json.RawMessage `json:"content"`
	// Redacts is the target of a redaction (the roomserver moves it into
	// content for room versions 11 and later).
	Redacts string `json:"redacts,omitempty"`
	// OriginServerTS, when set (milliseconds), is the event's
	// origin_server_ts instead of the time it is built: an application
	// service's timestamp massaging (the ts query parameter) for history
	// it bridges.
	OriginServerTS int64 `json:"origin_server_ts,omitempty"`
}

// EventKind is how an event is stored.
type EventKind int

// Event kinds.
const (
	KindNormal   EventKind = 1 // in the DAG, with state
	KindOutlier  EventKind = 2 // outside the DAG (auth chains, out-of-band memberships)
	KindRejected EventKind = 3 // in the DAG but failed the auth rules: never applied
	// KindRejectedOutlier failed the auth rules outside the DAG: it has no
	// state and never joins the DAG.
	KindRejectedOutlier EventKind = 4
)

// FederationQueryAPI answers what the federation API serves to other
// servers and needs to take their events in.
type FederationQueryAPI interface {
	// QueryEventKinds reports how each known event is stored; unknown
	// events are absent.
	QueryEventKinds(ctx context.Context, eventIDs []string) (map[string]EventKind, error)
	// QueryStateBefore returns the IDs of the state before an event (the
	// state /state_ids and /state serve), ErrEventNotFound when the event
	// is not in the room's DAG.
	QueryStateBefore(ctx context.Context, roomID, eventID string) ([]string, error)
	// QueryCurrentStateIDs returns the IDs of the room's current state.
	QueryCurrentStateIDs(ctx context.Context, roomID string) ([]string, error)
	// QueryAuthChain returns the IDs of the auth chain of events: their
	// auth events, recursively, without the events themselves.
	QueryAuthChain(ctx context.Context, eventIDs []string) ([]string, error)
	// QueryMissingEvents walks prev_events back from latest, never past
	// earliest, and returns up to limit events of depth >= minDepth
	// (oldest first), as /get_missing_events serves them.
	QueryMissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error)
	// QueryBackfill walks prev_events back from (and including) from and
	// returns up to limit events, newest first, as /backfill serves them.
	QueryBackfill(ctx context.Context, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error)
	// QueryServerMayRead applies history visibility to a server: whether
	// a user of server could see the event (any of its users was in the
	// room at the event, or the history is shared or world readable).
	QueryServerMayRead(ctx context.Context, server string, eventID string) (bool, error)
	// QueryJoinedServers lists the servers with a user joined to the room.
	QueryJoinedServers(ctx context.Context, roomID string) ([]string, error)
	// QueryEventTemplate builds an unsigned event on the room's forward
	// extremities (prev_events, auth_events, depth filled in), for
	// make_join, make_leave, make_knock and invites of remote users. It
	// fails with ErrNotAllowed (wrapped, with the reason) when the event
	// would fail the auth rules, and ErrRoomNotFound for a room without
	// state here.
	QueryEventTemplate(ctx context.Context, roomID string, proto ProtoEvent) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error)
	// QueryEventAtTimestamp returns the event of the room's DAG closest to
	// ts (milliseconds) in a direction, as /timestamp_to_event serves it:
	// forward the first at or after ts, backward the last at or before it
	// (rejected, soft-failed and outlier events are skipped). It fails
	// with ErrRoomNotFound for an unknown room and ErrEventNotFound when
	// no event qualifies.
	QueryEventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (eventID string, originServerTS int64, err error)
}

// ErrInvalidPageToken: a room directory since token this server did not
// issue.
var ErrInvalidPageToken = errors.New("invalid pagination token")

// DirectoryNetwork selects the room directories /publicRooms lists: the
// server's own (the zero value), the directory of one network of an
// application service, or all of them (include_all_networks).
type DirectoryNetwork struct {
	AllNetworks  bool
	AppServiceID string
	NetworkID    string
}

// ParseDirectoryNetwork reads /publicRooms' include_all_networks and
// third_party_instance_id, whose form is "<appservice_id>|<network_id>" (the
// instance_id of the protocol instances services list, as Synapse). It
// fails for a malformed instance ID, and when both are given (Synapse's
// "Can't use include_all_networks with an explicit network").
func ParseDirectoryNetwork(includeAll bool, instanceID string) (DirectoryNetwork, error) {
	if instanceID == "" {
		return DirectoryNetwork{AllNetworks: includeAll}, nil
	}
	if includeAll {
		return DirectoryNetwork{}, errors.New("can't use include_all_networks with an explicit network")
	}
	as, network, ok := strings.Cut(instanceID, "|")
	if !ok || as == "" {
		return DirectoryNetwork{}, errors.New("invalid third_party_instance_id")
	}
	return DirectoryNetwork{AppServiceID: as, NetworkID: network}, nil
}

// PublicRoomsPage is a page of the room directory, as the client and
// federation APIs serve it.
type PublicRoomsPage struct {
	Chunk                  []PublicRoom `json:"chunk"`
	NextBatch              string       `json:"next_batch,omitempty"`
	PrevBatch              string       `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int          `json:"total_room_count_estimate"`
}

// PagePublicRooms keeps the rooms of the given room types (nil: any type;
// a nil entry: rooms without a type) and cuts the page that starts at since
// (an offset token, "" for the first page) with at most limit rooms (0: all
// of them). It fails with ErrInvalidPageToken for a bad since.
func PagePublicRooms(rooms []PublicRoom, roomTypes *[]*string, since string, limit int) (*PublicRoomsPage, error) {
	start := 0
	if since != "" {
		n, err := strconv.Atoi(since)
		if err != nil || n < 0 {
			return nil, ErrInvalidPageToken
		}
		start = n
	}
	if roomTypes != nil {
		rooms = slices.DeleteFunc(slices.Clone(rooms), func(pr PublicRoom) bool {
			for _, t := range *roomTypes {
				if (t == nil && pr.RoomType == "") || (t != nil && *t == pr.RoomType) {
					return false
				}
			}
			return true
		})
	}
	total := len(rooms)
	start = min(start, total)
	end := total
	if limit > 0 {
		end = min(start+limit, total)
	}
	page := &PublicRoomsPage{Chunk: append([]PublicRoom{}, rooms[start:end]...), TotalRoomCountEstimate: total}
	if end < total {
		page.NextBatch = strconv.Itoa(end)
	}
	if start > 0 {
		page.PrevBatch = strconv.Itoa(max(start-max(limit, 1), 0))
	}
	return page, nil
}
