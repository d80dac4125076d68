package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// registerRooms mounts the room endpoints.
func (c *ClientAPI) registerRooms(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()
	msg := httputil.RateLimited(RateMessage)

	srv.HandleClient(http.MethodPost, "/createRoom", c.postCreateRoom, auth, msg)
	srv.HandleClient(http.MethodPut, "/rooms/{roomId}/send/{eventType}/{txnId}", c.putSend, auth, guests, msg)
	for _, p := range []string{"/rooms/{roomId}/state/{eventType}/{stateKey}", "/rooms/{roomId}/state/{eventType}", "/rooms/{roomId}/state/{eventType}/"} {
		srv.HandleClient(http.MethodPut, p, c.putState, auth, guests, msg)
		srv.HandleClient(http.MethodGet, p, c.getStateEvent, auth, guests)
	}
	srv.HandleClient(http.MethodPut, "/rooms/{roomId}/redact/{eventId}/{txnId}", c.putRedact, auth, guests, msg)

	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/state", c.getState, auth, guests)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/joined_members", c.getJoinedMembers, auth, guests)
	srv.HandleClient(http.MethodGet, "/joined_rooms", c.getJoinedRooms, auth, guests)
	srv.Handle(http.MethodGet, "/_matrix/client/v1/mutual_rooms", c.getMutualRooms, auth)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/event/{eventId}", c.getEvent, auth, guests)

	srv.HandleClient(http.MethodPost, "/join/{roomIdOrAlias}", c.postJoin, auth, guests)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/join", c.postJoin, auth, guests)
	srv.HandleClient(http.MethodPost, "/knock/{roomIdOrAlias}", c.postKnock, auth)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/leave", c.postLeave, auth, guests)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/forget", c.postForget, auth, guests)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/invite", c.postInvite, auth)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/kick", c.postKick, auth)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/ban", c.postBan, auth)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/unban", c.postUnban, auth)

	srv.HandleClient(http.MethodPut, "/directory/room/{roomAlias}", c.putAlias, auth)
	srv.HandleClient(http.MethodGet, "/directory/room/{roomAlias}", c.getAlias)
	srv.HandleClient(http.MethodDelete, "/directory/room/{roomAlias}", c.deleteAlias, auth)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/aliases", c.getRoomAliases, auth, guests)
	srv.HandleClient(http.MethodGet, "/directory/list/room/{roomId}", c.getDirectoryVisibility)
	srv.HandleClient(http.MethodPut, "/directory/list/room/{roomId}", c.putDirectoryVisibility, auth)
	srv.HandleClient(http.MethodPut, "/directory/list/appservice/{networkId}/{roomId}", c.putAppServiceDirectory, auth)
	srv.HandleClient(http.MethodDelete, "/directory/list/appservice/{networkId}/{roomId}", c.putAppServiceDirectory, auth)
	srv.HandleClient(http.MethodGet, "/publicRooms", c.getPublicRooms, httputil.OptionalAuth())
	srv.HandleClient(http.MethodPost, "/publicRooms", c.postPublicRooms, auth)

	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/upgrade", c.postUpgrade, auth)
}

// submit sends local events to the roomserver and maps a refusal to its
// Matrix error.
func (c *ClientAPI) submit(ctx context.Context, roomID string, li *rsapi.LocalInput) (*rsapi.InputResult, error) {
	res, err := c.input.Input(ctx, &rsapi.InputMessage{RoomID: roomID, Local: li})
	var ie *rsapi.InputError
	if errors.As(err, &ie) {
		if ie.Code == mxerr.CodeUnknown {
			return nil, errors.New(ie.Message)
		}
		return nil, mxerr.New(ie.Code, "%s", ie.Message)
	}
	return res, err
}

// send submits one event and returns its ID.
func (c *ClientAPI) send(ctx context.Context, roomID string, p rsapi.ProtoEvent, li rsapi.LocalInput) (string, error) {
	li.Events = []rsapi.ProtoEvent{p}
	res, err := c.submit(ctx, roomID, &li)
	if err != nil {
		return "", err
	}
	return res.EventIDs[0], nil
}

// roomIDVar parses the {roomId} of a route.
func roomIDVar(r *http.Request) (string, error) {
	id := httputil.Vars(r)["roomId"]
	if _, err := spec.NewRoomID(id); err != nil {
		return "", mxerr.InvalidParam("%q is not a valid room ID", id)
	}
	return id, nil
}

// roomInfo returns a room's version, or 404 M_NOT_FOUND.
func (c *ClientAPI) roomInfo(ctx context.Context, roomID string) (*rsapi.RoomInfo, error) {
	info, err := c.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil, mxerr.NotFound("Unknown room %s", roomID)
	}
	return info, err
}

func jsonObject(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func strPtr(s string) *string { return &s }

// txnKey scopes a transaction ID to one endpoint: the same ID on another
// endpoint, room or event type is another request.
func txnKey(parts ...string) string { return strings.Join(parts, "|") }

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
func (c *ClientAPI) putSend(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	vars := httputil.Vars(r)
	var content json.RawMessage
	if err := httputil.DecodeJSON(r, &content); err != nil {
		return nil, err
	}
	if _, err := c.roomInfo(r.Context(), roomID); err != nil {
		return nil, err
	}
	ts, err := c.massagedTS(r)
	if err != nil {
		return nil, err
	}
	id, err := c.send(r.Context(), roomID, rsapi.ProtoEvent{Sender: dev.UserID, Type: vars["eventType"], Content: content, OriginServerTS: ts},
		rsapi.LocalInput{TxnKey: txnKey("send", roomID, vars["eventType"], vars["txnId"]), DeviceID: dev.DeviceID})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": id}, nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (c *ClientAPI) putState(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	vars := httputil.Vars(r)
	eventType, stateKey := vars["eventType"], vars["stateKey"]
	var content json.RawMessage
	if err := httputil.DecodeJSON(r, &content); err != nil {
		return nil, err
	}
	if _, err := c.roomInfo(r.Context(), roomID); err != nil {
		return nil, err
	}
	if err := c.checkStateContent(r.Context(), roomID, eventType, stateKey, content); err != nil {
		return nil, err
	}
	if eventType == spec.MRoomMember {
		if gjson.GetBytes(content, "membership").Str == rsapi.Invite {
			if err := c.checkInvitePermission(r.Context(), stateKey, dev.UserID); err != nil {
				return nil, err
			}
		}
		// Only the server that authorises a restricted join names its
		// authoriser (and signs for it): a client's copy of the field, as
		// one sends back when changing a display name, would make the
		// event fail the signature checks of other servers. Synapse
		// strips it too.
		if stripped, err := sjson.DeleteBytes(content, authorisedViaKey); err == nil {
			content = stripped
		}
	}
	ts, err := c.massagedTS(r)
	if err != nil {
		return nil, err
	}
	id, err := c.send(r.Context(), roomID, rsapi.ProtoEvent{Sender: dev.UserID, Type: eventType, StateKey: &stateKey, Content: content, OriginServerTS: ts},
		rsapi.LocalInput{SkipUnchangedState: true})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": id}, nil
}

// checkStateContent validates state events whose content the server
// vouches for: a canonical alias must exist and point to the room, and a
// member event's state key must be a user ID.
func (c *ClientAPI) checkStateContent(ctx context.Context, roomID, eventType, stateKey string, content json.RawMessage) error {
	switch eventType {
	case spec.MRoomCanonicalAlias:
		var ca struct {
			Alias      *string   `json:"alias"`
			AltAliases *[]string `json:"alt_aliases"`
		}
		if err := json.Unmarshal(content, &ca); err != nil {
			return mxerr.BadJSON("Invalid m.room.canonical_alias content")
		}
		var aliases []string
		if ca.Alias != nil && *ca.Alias != "" {
			aliases = append(aliases, *ca.Alias)
		}
		if ca.AltAliases != nil {
			aliases = append(aliases, *ca.AltAliases...)
		}
		for _, a := range aliases {
			if err := validAlias(a); err != nil {
				return err
			}
			target, err := c.rooms.QueryAlias(ctx, a)
			if errors.Is(err, rsapi.ErrAliasNotFound) || (err == nil && target != roomID) {
				return mxerr.New("M_BAD_ALIAS", "Room alias %s does not point to this room", a)
			}
			if err != nil {
				return err
			}
		}
	case spec.MRoomMember:
		if _, err := spec.NewUserID(stateKey, true); err != nil {
			return mxerr.BadJSON("The state key of a member event must be a user ID")
		}
	case spec.MRoomCreate:
		// As Synapse: a request that can never be valid, 400.
		return mxerr.BadJSON("The create event cannot be changed")
	}
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
func (c *ClientAPI) putRedact(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	vars := httputil.Vars(r)
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := httputil.DecodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	if _, err := c.roomInfo(r.Context(), roomID); err != nil {
		return nil, err
	}
	content := map[string]any{}
	if body.Reason != nil {
		content["reason"] = *body.Reason
	}
	id, err := c.send(r.Context(), roomID, rsapi.ProtoEvent{Sender: dev.UserID, Type: spec.MRoomRedaction, Content: jsonObject(content), Redacts: vars["eventId"]},
		rsapi.LocalInput{TxnKey: txnKey("redact", roomID, vars["eventId"], vars["txnId"]), DeviceID: dev.DeviceID})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": id}, nil
}

// currentEvent returns one current state event, or nil.
func (c *ClientAPI) currentEvent(ctx context.Context, roomID, eventType, stateKey string) (gomatrixserverlib.PDU, error) {
	pdus, err := c.rooms.QueryCurrentState(ctx, roomID, rsapi.StateKeyTuple{EventType: eventType, StateKey: stateKey})
	if err != nil || len(pdus) == 0 {
		return nil, err
	}
	return pdus[0], nil
}

// powerLevels returns the current power levels of a room.
func (c *ClientAPI) powerLevels(ctx context.Context, roomID string) (*rsapi.PowerLevels, error) {
	pdus, err := c.rooms.QueryCurrentState(ctx, roomID, rsapi.StateKeyTuple{EventType: spec.MRoomCreate}, rsapi.StateKeyTuple{EventType: spec.MRoomPowerLevels})
	if err != nil {
		return nil, err
	}
	pl, err := rsapi.PowerLevelsFromState(pdus)
	if err == nil && pl == nil {
		err = mxerr.NotFound("Unknown room %s", roomID)
	}
	return pl, err
}
