package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Bounds of what one read request returns, as Synapse has them.
const (
	// serveMaxBackfill caps /backfill's limit.
	serveMaxBackfill = 100
	// serveMaxMissingEvents caps /get_missing_events' limit; defaultMissing is
	// the limit when none is given.
	serveMaxMissingEvents     = 20
	serveDefaultMissingEvents = 10
	// serveMaxEventIDs bounds the event IDs of one /backfill or
	// /get_missing_events request.
	serveMaxEventIDs = 100
)

// registerServing mounts the routes that serve events, state and lookups
// to other servers.
//
// Rooms are served as Synapse serves them: a room route needs a room this
// server knows with state (404 M_NOT_FOUND otherwise) and an origin the
// room's server ACL lets in (403 M_FORBIDDEN). The routes that read the
// room (/event, /state, /state_ids, /event_auth, /backfill,
// /get_missing_events) also need the origin to be in the room (a user of
// it joined): 403 M_FORBIDDEN "Host not in room" otherwise. Events the
// origin may not see under the room's history visibility (as a server:
// rsapi.FederationQueryAPI.QueryServerMayRead) come redacted from /event,
// /backfill and /get_missing_events, as Synapse sends them, so that the
// DAG stays whole while their content stays private; state and auth
// chains are served whole, as they are needed to authorise events.
func (f *FederationAPI) registerServing(srv *httputil.Server) {
	const v1 = "/_matrix/federation/v1"
	f.handle(srv, http.MethodGet, v1+"/event/{eventId}", f.getEvent)
	f.handle(srv, http.MethodGet, v1+"/state/{roomId}", f.getState)
	f.handle(srv, http.MethodGet, v1+"/state_ids/{roomId}", f.getStateIDs)
	f.handle(srv, http.MethodGet, v1+"/event_auth/{roomId}/{eventId}", f.getEventAuth)
	f.handle(srv, http.MethodPost, v1+"/get_missing_events/{roomId}", f.getMissingEvents)
	f.handle(srv, http.MethodGet, v1+"/backfill/{roomId}", f.getBackfill)
	f.handle(srv, http.MethodGet, v1+"/timestamp_to_event/{roomId}", f.getTimestampToEvent)
	f.handle(srv, http.MethodGet, v1+"/query/directory", f.queryDirectory)
	f.handle(srv, http.MethodGet, v1+"/query/profile", f.queryProfile)
	f.handle(srv, http.MethodGet, v1+"/publicRooms", f.getPublicRooms)
	f.handle(srv, http.MethodPost, v1+"/publicRooms", f.postPublicRooms)
}

// servedRoom checks the room of a room route: a valid room ID (400
// M_INVALID_PARAM), a room this server knows with state (404 M_NOT_FOUND),
// an origin its server ACL lets in (403 M_FORBIDDEN).
func (f *FederationAPI) servedRoom(ctx context.Context, roomID string, origin spec.ServerName) (*rsapi.RoomInfo, error) {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("Invalid room ID %q", roomID)
	}
	info, err := f.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) || (err == nil && !info.HasState) {
		return nil, mxerr.NotFound("Unknown room %s", roomID)
	} else if err != nil {
		return nil, err
	}
	if ok, err := f.aclAllows(ctx, roomID, origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, mxerr.Forbidden("Server is banned from the room by its server ACL")
	}
	return info, nil
}

// readableRoom is servedRoom for the routes that read the room: the origin
// must also be in it.
func (f *FederationAPI) readableRoom(ctx context.Context, roomID string, origin spec.ServerName) (*rsapi.RoomInfo, error) {
	info, err := f.servedRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if in, err := f.serverInRoom(ctx, roomID, origin); err != nil {
		return nil, err
	} else if !in {
		return nil, mxerr.Forbidden("Host not in room.")
	}
	return info, nil
}

// serverInRoom reports whether a server has a user joined to the room. The
// cached list of servers can lag behind a join the roomserver has just
// taken in, so a server missing from it is looked up afresh.
func (f *FederationAPI) serverInRoom(ctx context.Context, roomID string, server spec.ServerName) (bool, error) {
	servers, err := f.joinedServers(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if slices.Contains(servers, string(server)) {
		return true, nil
	}
	servers, err = f.rooms.QueryJoinedServers(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return false, nil
	}
	return slices.Contains(servers, string(server)), err
}

// servedTxn is the response of /event and /backfill: a transaction
// carrying PDUs.
type servedTxn struct {
	Origin         spec.ServerName   `json:"origin"`
	OriginServerTS spec.Timestamp    `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

func (f *FederationAPI) txnOf(pdus []json.RawMessage) *servedTxn {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return &servedTxn{Origin: f.cfg.ServerName, OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus}
}

// serveForServer returns events of a room (of the DAG) as a server may see them:
// whole, or redacted when the room's history visibility hides them from
// it (see registerServing).
func (f *FederationAPI) serveForServer(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, server spec.ServerName, pdus []gomatrixserverlib.PDU) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		ok, err := f.rooms.QueryServerMayRead(ctx, string(server), p.EventID())
		if errors.Is(err, rsapi.ErrEventNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		js := json.RawMessage(p.JSON())
		if !ok && !p.Redacted() {
			red, err := verImpl.RedactEventJSON(p.JSON())
			if err != nil {
				return nil, err
			}
			js = red
		}
		out = append(out, js)
	}
	return out, nil
}

// GET /_matrix/federation/v1/event/{eventId}: a transaction with the event
// (404 M_NOT_FOUND when unknown or rejected; 403 when the origin is not in
// its room or denied by its ACL; redacted when its history visibility hides
// it from the origin). Outliers (which have no state to judge by) are
// served whole, as Synapse serves them.
func (f *FederationAPI) getEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	eventID := httputil.Vars(r)["eventId"]
	if !strings.HasPrefix(eventID, "$") {
		return nil, mxerr.InvalidParam("Invalid event ID %q", eventID)
	}
	evs, err := f.rooms.QueryEvents(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, mxerr.NotFound("Could not find event %s", eventID)
	}
	pdu := evs[0]
	info, err := f.readableRoom(ctx, pdu.RoomID().String(), origin)
	if err != nil {
		if e, ok := mxerr.As(err); ok && e.Code == mxerr.CodeNotFound {
			return nil, mxerr.NotFound("Could not find event %s", eventID)
		}
		return nil, err
	}
	kinds, err := f.rooms.QueryEventKinds(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if kinds[eventID] == rsapi.KindOutlier {
		return f.txnOf([]json.RawMessage{pdu.JSON()}), nil
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	if err != nil {
		return nil, err
	}
	out, err := f.serveForServer(ctx, verImpl, origin, evs)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, mxerr.NotFound("Could not find event %s", eventID)
	}
	return f.txnOf(out), nil
}

// serveStateAt returns the IDs of the state before an event of a room (the
// event_id query parameter) and of its auth chain, for /state and
// /state_ids.
func (f *FederationAPI) serveStateAt(r *http.Request, origin spec.ServerName) (roomID string, stateIDs, chainIDs []string, err error) {
	ctx := r.Context()
	roomID = httputil.Vars(r)["roomId"]
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return "", nil, nil, mxerr.MissingParam("Missing event_id")
	}
	if _, err := f.readableRoom(ctx, roomID, origin); err != nil {
		return "", nil, nil, err
	}
	if in, err := f.serverInRoom(ctx, roomID, f.cfg.ServerName); err != nil {
		return "", nil, nil, err
	} else if !in {
		return "", nil, nil, mxerr.NotFound("This server is not in room %s", roomID)
	}
	stateIDs, err = f.rooms.QueryStateBefore(ctx, roomID, eventID)
	if errors.Is(err, rsapi.ErrEventNotFound) {
		return "", nil, nil, mxerr.NotFound("Could not find event %s", eventID)
	} else if err != nil {
		return "", nil, nil, err
	}
	chainIDs, err = f.rooms.QueryAuthChain(ctx, stateIDs)
	if err != nil {
		return "", nil, nil, err
	}
	return roomID, stateIDs, chainIDs, nil
}

// serveEventsJSON loads events by ID with one query and returns their JSON in
// the order of each list (events the roomserver lacks are left out).
func (f *FederationAPI) serveEventsJSON(ctx context.Context, lists ...[]string) ([][]json.RawMessage, error) {
	seen := map[string]bool{}
	var all []string
	for _, l := range lists {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				all = append(all, id)
			}
		}
	}
	evs, err := f.rooms.QueryEvents(ctx, all)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]json.RawMessage, len(evs))
	for _, e := range evs {
		byID[e.EventID()] = e.JSON()
	}
	out := make([][]json.RawMessage, len(lists))
	for i, l := range lists {
		out[i] = make([]json.RawMessage, 0, len(l))
		for _, id := range l {
			if js, ok := byID[id]; ok {
				out[i] = append(out[i], js)
			}
		}
	}
	return out, nil
}

// GET /_matrix/federation/v1/state/{roomId}?event_id=: the state before the
// event and its auth chain.
func (f *FederationAPI) getState(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	_, stateIDs, chainIDs, err := f.serveStateAt(r, origin)
	if err != nil {
		return nil, err
	}
	evs, err := f.serveEventsJSON(r.Context(), stateIDs, chainIDs)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": evs[0], "auth_chain": evs[1]}, nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=: the IDs of the
// state before the event and of its auth chain.
func (f *FederationAPI) getStateIDs(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	_, stateIDs, chainIDs, err := f.serveStateAt(r, origin)
	if err != nil {
		return nil, err
	}
	if chainIDs == nil {
		chainIDs = []string{}
	}
	return map[string]any{"pdu_ids": stateIDs, "auth_chain_ids": chainIDs}, nil
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}: the auth chain
// of an event of the room (in the DAG or an outlier).
func (f *FederationAPI) getEventAuth(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomId"], vars["eventId"]
	if _, err := f.readableRoom(ctx, roomID, origin); err != nil {
		return nil, err
	}
	evs, err := f.rooms.QueryEvents(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].RoomID().String() != roomID {
		return nil, mxerr.NotFound("Could not find event %s", eventID)
	}
	chainIDs, err := f.rooms.QueryAuthChain(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	chain, err := f.serveEventsJSON(ctx, chainIDs)
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": chain[0]}, nil
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}: the events
// between earliest_events and latest_events (breadth first back from
// latest_events, at most limit (20 at most, 10 by default), oldest first).
func (f *FederationAPI) getMissingEvents(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	var req struct {
		Limit          *int     `json:"limit"`
		MinDepth       int64    `json:"min_depth"`
		EarliestEvents []string `json:"earliest_events"`
		LatestEvents   []string `json:"latest_events"`
	}
	if err := httputil.UnmarshalRemoteObject(body, &req); err != nil {
		return nil, err
	}
	if len(req.EarliestEvents) > serveMaxEventIDs || len(req.LatestEvents) > serveMaxEventIDs {
		return nil, mxerr.InvalidParam("Too many event IDs (at most %d)", serveMaxEventIDs)
	}
	limit := serveDefaultMissingEvents
	if req.Limit != nil {
		limit = min(*req.Limit, serveMaxMissingEvents)
	}
	info, err := f.readableRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	if limit > 0 && len(req.LatestEvents) > 0 {
		pdus, err := f.rooms.QueryMissingEvents(ctx, roomID, req.EarliestEvents, req.LatestEvents, limit, req.MinDepth)
		if err != nil {
			return nil, err
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
		if err != nil {
			return nil, err
		}
		if out, err = f.serveForServer(ctx, verImpl, origin, pdus); err != nil {
			return nil, err
		}
	}
	if out == nil {
		out = []json.RawMessage{}
	}
	return map[string]any{"events": out}, nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=: the events v
// and those before them, newest first, at most limit (100 at most).
func (f *FederationAPI) getBackfill(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, mxerr.MissingParam("Missing v")
	}
	if len(from) > serveMaxEventIDs {
		return nil, mxerr.InvalidParam("Too many event IDs (at most %d)", serveMaxEventIDs)
	}
	if q.Get("limit") == "" {
		return nil, mxerr.MissingParam("Missing limit")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 0 {
		return nil, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	limit = min(limit, serveMaxBackfill)
	info, err := f.readableRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	if limit > 0 {
		pdus, err := f.rooms.QueryBackfill(ctx, roomID, from, limit)
		if err != nil {
			return nil, err
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
		if err != nil {
			return nil, err
		}
		if out, err = f.serveForServer(ctx, verImpl, origin, pdus); err != nil {
			return nil, err
		}
	}
	return f.txnOf(out), nil
}

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=: the
// event of the room closest to ts in the direction dir (f or b); 404
// M_NOT_FOUND when there is none. As in Synapse, the origin needs no
// user in the room (an event ID and a timestamp are all it learns).
func (f *FederationAPI) getTimestampToEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return nil, mxerr.MissingParam("Missing ts")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, mxerr.InvalidParam("ts must be an integer")
	}
	dir := q.Get("dir")
	switch dir {
	case "f", "b":
	case "":
		return nil, mxerr.MissingParam("Missing dir")
	default:
		return nil, mxerr.InvalidParam("dir must be f or b")
	}
	if _, err := f.servedRoom(ctx, roomID, origin); err != nil {
		return nil, err
	}
	eventID, originTS, err := f.rooms.QueryEventAtTimestamp(ctx, roomID, ts, dir == "f")
	if errors.Is(err, rsapi.ErrEventNotFound) || errors.Is(err, rsapi.ErrRoomNotFound) {
		direction := "backward"
		if dir == "f" {
			direction = "forward"
		}
		return nil, mxerr.NotFound("Unable to find event from %d in %s direction", ts, direction)
	} else if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": eventID, "origin_server_ts": originTS}, nil
}

// GET /_matrix/federation/v1/query/directory?room_alias=: the room of one
// of this server's aliases and the servers in it (this one first).
func (f *FederationAPI) queryDirectory(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, mxerr.MissingParam("Missing room_alias")
	}
	_, domain, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid room alias %q", alias)
	}
	if !f.isLocal(domain) {
		return nil, mxerr.InvalidParam("Room alias %s is not hosted on this homeserver", alias)
	}
	roomID, err := f.rooms.QueryAlias(ctx, alias)
	if errors.Is(err, rsapi.ErrAliasNotFound) && f.cfg.AppServices != nil && f.cfg.AppServices.QueryAlias(ctx, alias) {
		// An application service created it (as Synapse's
		// get_association_from_room_alias).
		roomID, err = f.rooms.QueryAlias(ctx, alias)
	}
	if errors.Is(err, rsapi.ErrAliasNotFound) {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	} else if err != nil {
		return nil, err
	}
	servers := []string{string(f.cfg.ServerName)}
	joined, err := f.rooms.QueryJoinedServers(ctx, roomID)
	if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil, err
	}
	for _, s := range joined {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

// GET /_matrix/federation/v1/query/profile?user_id=&field=: a local user's
// profile, or one field of it (404 M_NOT_FOUND for an unknown user; a
// field the user has not set is left out, as Synapse leaves it).
func (f *FederationAPI) queryProfile(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	q := r.URL.Query()
	userID := q.Get("user_id")
	if userID == "" {
		return nil, mxerr.MissingParam("Missing user_id")
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID %q", userID)
	}
	if !f.isLocal(uid.Domain()) {
		return nil, mxerr.InvalidParam("User %s is not hosted on this homeserver", userID)
	}
	profile, err := f.users.QueryProfile(r.Context(), userID)
	if errors.Is(err, userapi.ErrNotFound) {
		return nil, mxerr.NotFound("Profile was not found")
	} else if err != nil {
		return nil, err
	}
	if field, ok := q["field"]; ok {
		out := map[string]json.RawMessage{}
		if v, ok := profile[field[0]]; ok {
			out[field[0]] = v
		}
		return out, nil
	}
	if profile == nil {
		profile = map[string]json.RawMessage{}
	}
	return profile, nil
}

// servePublicRoomsRequest is the query of /publicRooms (the body of POST).
type servePublicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string     `json:"generic_search_term"`
		RoomTypes         *[]*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// GET /_matrix/federation/v1/publicRooms
func (f *FederationAPI) getPublicRooms(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	q := r.URL.Query()
	var req servePublicRoomsRequest
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
	return f.publicRooms(r.Context(), &req)
}

// POST /_matrix/federation/v1/publicRooms
func (f *FederationAPI) postPublicRooms(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	var req servePublicRoomsRequest
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := httputil.UnmarshalRemoteObject(body, &req); err != nil {
		return nil, err
	}
	if req.Limit < 0 {
		return nil, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	return f.publicRooms(r.Context(), &req)
}

// publicRooms lists the rooms published in this server's directory, in
// the format and with the pagination of the client API's /publicRooms
// (since tokens are offsets).
func (f *FederationAPI) publicRooms(ctx context.Context, req *servePublicRoomsRequest) (any, error) {
	network, err := rsapi.ParseDirectoryNetwork(req.IncludeAllNetworks, req.ThirdPartyInstanceID)
	if err != nil {
		return nil, mxerr.InvalidParam("%s", err.Error())
	}
	rooms, err := f.rooms.QueryPublicRooms(ctx, req.Filter.GenericSearchTerm, network)
	if err != nil {
		return nil, err
	}
	page, err := rsapi.PagePublicRooms(rooms, req.Filter.RoomTypes, req.Since, req.Limit)
	if errors.Is(err, rsapi.ErrInvalidPageToken) {
		return nil, mxerr.InvalidParam("Invalid since token")
	}
	return page, err
}
