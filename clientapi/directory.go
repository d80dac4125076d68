package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// validAlias checks the room alias grammar: #localpart:server, at most 255
// bytes.
func validAlias(alias string) error {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || len(alias) > 255 {
		return mxerr.InvalidParam("%q is not a valid room alias", alias)
	}
	if _, _, valid := spec.ParseAndValidateServerName(spec.ServerName(server)); !valid {
		return mxerr.InvalidParam("%q is not a valid room alias", alias)
	}
	return nil
}

// localAlias parses the {roomAlias} of a route, which must be this server's.
func (c *ClientAPI) localAlias(r *http.Request) (string, error) {
	alias := httputil.Vars(r)["roomAlias"]
	if err := validAlias(alias); err != nil {
		return "", err
	}
	if !strings.HasSuffix(alias, ":"+c.cfg.ServerName) {
		return "", mxerr.InvalidParam("Room alias %s does not belong to this server", alias)
	}
	return alias, nil
}

// PUT /_matrix/client/v3/directory/room/{roomAlias}
func (c *ClientAPI) putAlias(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	alias, err := c.localAlias(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomID == "" {
		return nil, mxerr.MissingParam("Missing room_id")
	}
	if _, err := c.roomInfo(ctx, body.RoomID); err != nil {
		return nil, err
	}
	// An application service may alias any room, in its namespaces.
	if c.appService(ctx) == nil {
		if m, err := c.rooms.QueryMembership(ctx, body.RoomID, dev.UserID); err != nil {
			return nil, err
		} else if m.Membership != rsapi.Join && !dev.IsAdmin {
			return nil, mxerr.Forbidden("You must be in the room to give it an alias")
		}
	}
	if err := c.checkAliasWritable(ctx, dev.UserID, alias); err != nil {
		return nil, err
	}
	err = c.rooms.SetAlias(ctx, alias, body.RoomID, dev.UserID)
	if errors.Is(err, rsapi.ErrAliasExists) {
		return nil, mxerr.Unknown("Room alias %s already exists", alias).WithStatus(http.StatusConflict)
	}
	return struct{}{}, err
}

// GET /_matrix/client/v3/directory/room/{roomAlias}
func (c *ClientAPI) getAlias(r *http.Request) (any, error) {
	ctx := r.Context()
	alias := httputil.Vars(r)["roomAlias"]
	if err := validAlias(alias); err != nil {
		return nil, err
	}
	if _, server, _ := gomatrixserverlib.SplitID('#', alias); c.fed != nil && c.isRemote(server) {
		// Another server's alias: that server answers.
		roomID, servers, err := c.fed.QueryRoomAlias(ctx, alias)
		if err != nil {
			return nil, aliasError(err, alias)
		}
		if servers == nil {
			servers = []string{}
		}
		return map[string]any{"room_id": roomID, "servers": servers}, nil
	}
	roomID, err := c.queryAlias(ctx, alias)
	if errors.Is(err, rsapi.ErrAliasNotFound) {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers, err := c.joinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

// joinedServers lists the servers with joined members, this one first.
func (c *ClientAPI) joinedServers(ctx context.Context, roomID string) ([]string, error) {
	servers := []string{c.cfg.ServerName}
	pdus, err := c.rooms.QueryCurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	for _, p := range pdus {
		if m, _ := p.Membership(); p.Type() != spec.MRoomMember || m != rsapi.Join {
			continue
		}
		if uid, err := spec.NewUserID(*p.StateKey(), true); err == nil && !slices.Contains(servers, string(uid.Domain())) {
			servers = append(servers, string(uid.Domain()))
		}
	}
	return servers, nil
}

// canEditDirectory: server admins, and members who may set the room's
// canonical alias.
func (c *ClientAPI) canEditDirectory(ctx context.Context, dev *httputil.Device, roomID string) (bool, error) {
	if dev.IsAdmin {
		return true, nil
	}
	m, err := c.rooms.QueryMembership(ctx, roomID, dev.UserID)
	if err != nil || m.Membership != rsapi.Join {
		return false, err
	}
	pl, err := c.powerLevels(ctx, roomID)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(dev.UserID) >= pl.EventLevel(spec.MRoomCanonicalAlias, true), nil
}

// DELETE /_matrix/client/v3/directory/room/{roomAlias}
func (c *ClientAPI) deleteAlias(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	alias, err := c.localAlias(r)
	if err != nil {
		return nil, err
	}
	roomID, creator, err := c.rooms.QueryAliasCreator(ctx, alias)
	if errors.Is(err, rsapi.ErrAliasNotFound) {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	if c.appService(ctx) != nil {
		// A service deletes the aliases of its namespaces, whoever made
		// them, and leaves the canonical alias event alone (Synapse's
		// delete_appservice_association).
		if err := c.checkAliasWritable(ctx, dev.UserID, alias); err != nil {
			return nil, err
		}
		if _, _, err := c.rooms.RemoveAlias(ctx, alias); err != nil && !errors.Is(err, rsapi.ErrAliasNotFound) {
			return nil, err
		}
		return struct{}{}, nil
	}
	if creator != dev.UserID {
		ok, err := c.canEditDirectory(ctx, dev, roomID)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, mxerr.Forbidden("You may not delete this alias")
		}
	}
	if err := c.checkAliasWritable(ctx, dev.UserID, alias); err != nil {
		return nil, err
	}
	if _, _, err := c.rooms.RemoveAlias(ctx, alias); err != nil && !errors.Is(err, rsapi.ErrAliasNotFound) {
		return nil, err
	}
	c.dropCanonicalAlias(ctx, roomID, dev.UserID, alias)
	return struct{}{}, nil
}

// dropCanonicalAlias removes a deleted alias from the room's canonical
// alias event, as the user who deleted it, when they may (as Synapse does).
func (c *ClientAPI) dropCanonicalAlias(ctx context.Context, roomID, userID, alias string) {
	ca, err := c.currentEvent(ctx, roomID, spec.MRoomCanonicalAlias, "")
	if err != nil || ca == nil {
		return
	}
	var content map[string]any
	if json.Unmarshal(ca.Content(), &content) != nil {
		return
	}
	changed := false
	if content["alias"] == alias {
		delete(content, "alias")
		changed = true
	}
	if alt, ok := content["alt_aliases"].([]any); ok {
		kept := alt[:0]
		for _, a := range alt {
			if a != alias {
				kept = append(kept, a)
			}
		}
		changed = changed || len(kept) != len(alt)
		content["alt_aliases"] = kept
	}
	if !changed {
		return
	}
	if _, err := c.send(ctx, roomID, rsapi.ProtoEvent{Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: strPtr(""), Content: jsonObject(content)}, rsapi.LocalInput{}); err != nil {
		c.log.Info("could not update the canonical alias after deleting an alias", "room_id", roomID, "error", err.Error())
	}
}

// GET /_matrix/client/v3/rooms/{roomId}/aliases
func (c *ClientAPI) getRoomAliases(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if dev := httputil.DeviceFrom(r.Context()); dev.IsAdmin {
		if _, err := c.roomInfo(r.Context(), roomID); err != nil {
			return nil, err
		}
	} else if at, err := c.readableState(r.Context(), roomID, dev.UserID); err != nil {
		return nil, err
	} else if at != "" {
		return nil, mxerr.Forbidden("You aren't a member of the room")
	}
	aliases, err := c.rooms.QueryAliasesForRoom(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": aliases}, nil
}

// GET /_matrix/client/v3/directory/list/room/{roomId}
func (c *ClientAPI) getDirectoryVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if _, err := c.roomInfo(r.Context(), roomID); err != nil {
		return nil, err
	}
	published, err := c.rooms.QueryPublished(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	v := "private"
	if published {
		v = "public"
	}
	return map[string]string{"visibility": v}, nil
}

// PUT /_matrix/client/v3/directory/list/room/{roomId}
func (c *ClientAPI) putDirectoryVisibility(r *http.Request) (any, error) {
	ctx := r.Context()
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return nil, mxerr.InvalidParam("visibility must be public or private")
	}
	if _, err := c.roomInfo(ctx, roomID); err != nil {
		return nil, err
	}
	ok, err := c.canEditDirectory(ctx, httputil.DeviceFrom(ctx), roomID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("You may not change the directory visibility of this room")
	}
	return struct{}{}, c.rooms.SetPublished(ctx, roomID, body.Visibility == "public")
}

// PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}
// and DELETE: an application service publishes a room in the directory of
// one of its networks (listed with third_party_instance_id
// "<appservice_id>|<network_id>"), or removes it.
func (c *ClientAPI) putAppServiceDirectory(r *http.Request) (any, error) {
	ctx := r.Context()
	svc := c.appService(ctx)
	if svc == nil {
		return nil, mxerr.Forbidden("Only appservices can edit the appservice published room list")
	}
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	public := false
	if r.Method == http.MethodPut {
		var body struct {
			Visibility string `json:"visibility"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		if body.Visibility == "" {
			body.Visibility = "public" // as Synapse
		}
		if body.Visibility != "public" && body.Visibility != "private" {
			return nil, mxerr.InvalidParam("visibility must be public or private")
		}
		public = body.Visibility == "public"
	}
	if _, err := c.roomInfo(ctx, roomID); err != nil {
		return nil, err
	}
	return struct{}{}, c.rooms.SetAppServicePublished(ctx, svc.ID, httputil.Vars(r)["networkId"], roomID, public)
}

type publicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string     `json:"generic_search_term"`
		RoomTypes         *[]*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// GET /_matrix/client/v3/publicRooms
func (c *ClientAPI) getPublicRooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("limit must be a non-negative integer")
		}
		req.Limit = n
	}
	req.Since = q.Get("since")
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	return c.publicRooms(r, &req)
}

// POST /_matrix/client/v3/publicRooms
func (c *ClientAPI) postPublicRooms(r *http.Request) (any, error) {
	var req publicRoomsRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Limit < 0 {
		return nil, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	return c.publicRooms(r, &req)
}

func (c *ClientAPI) publicRooms(r *http.Request, req *publicRoomsRequest) (any, error) {
	if s := r.URL.Query().Get("server"); s != "" && c.isRemote(spec.ServerName(s)) {
		if c.fed == nil {
			return nil, mxerr.Forbidden("Cannot list the rooms of %s: this server does not federate", s)
		}
		if httputil.DeviceFrom(r.Context()) == nil {
			// As Synapse: anyone may read this server's directory, but
			// asking another server takes an access token.
			return nil, mxerr.MissingToken("Listing the rooms of another server requires an access token")
		}
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s)); !ok {
			return nil, mxerr.InvalidParam("Invalid server name %q", s)
		}
		body, err := c.fed.QueryPublicRooms(r.Context(), s, &fedapi.PublicRoomsRequest{
			Limit: req.Limit, Since: req.Since, SearchTerm: req.Filter.GenericSearchTerm,
			IncludeAllNetworks: req.IncludeAllNetworks, ThirdPartyInstanceID: req.ThirdPartyInstanceID,
		})
		if err != nil {
			return nil, federationError(err, "Room directory of "+s)
		}
		return body, nil
	}
	network, err := rsapi.ParseDirectoryNetwork(req.IncludeAllNetworks, req.ThirdPartyInstanceID)
	if err != nil {
		return nil, mxerr.InvalidParam("%s", err.Error())
	}
	rooms, err := c.rooms.QueryPublicRooms(r.Context(), req.Filter.GenericSearchTerm, network)
	if err != nil {
		return nil, err
	}
	page, err := rsapi.PagePublicRooms(rooms, req.Filter.RoomTypes, req.Since, req.Limit)
	if errors.Is(err, rsapi.ErrInvalidPageToken) {
		return nil, mxerr.InvalidParam("Invalid since token")
	}
	return page, err
}
