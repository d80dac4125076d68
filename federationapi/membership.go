package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/eventrules"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/invitefilter"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Error codes of restricted joins (not in mxerr: only these routes use
// them). Both are 400s.
const (
	codeUnableToAuthoriseJoin = "M_UNABLE_TO_AUTHORISE_JOIN"
	codeUnableToGrantJoin     = "M_UNABLE_TO_GRANT_JOIN"
)

// authorisedViaKey is the member content field naming the local user who
// authorises a restricted join.
const authorisedViaKey = "join_authorised_via_users_server"

// membStrippedTypes are the state events a knocker gets to see the room by
// (Synapse's room_prejoin_state defaults), as full events (MSC4311).
var membStrippedTypes = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomCanonicalAlias, spec.MRoomAvatar, spec.MRoomEncryption, spec.MRoomName,
	"m.room.topic",
}

// registerMembership mounts the routes through which remote users join,
// leave, knock on and are invited to rooms of this server.
//
// The make_* routes build a template on the room's forward extremities
// (the roomserver checks it against the auth rules: 403 M_FORBIDDEN when
// it fails them); the send_* routes check the event the origin completed
// from it (room, event ID, type, membership, sender of the origin, state
// key = sender, the origin's signature: 400 otherwise, M_INVALID_PARAM as
// the spec asks), take it into the room (403 M_FORBIDDEN when the auth
// rules reject it) and send it to the room's other servers. They need a
// room this server is in (404 M_NOT_FOUND) and an origin the room's server
// ACL lets in (403 M_FORBIDDEN).
func (f *FederationAPI) registerMembership(srv *httputil.Server) {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	f.handle(srv, http.MethodGet, v1+"/make_join/{roomId}/{userId}", f.makeJoin)
	f.handle(srv, http.MethodPut, v1+"/send_join/{roomId}/{eventId}", func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		return v1Response(f.sendJoin(r, origin, body))
	})
	f.handle(srv, http.MethodPut, v2+"/send_join/{roomId}/{eventId}", f.sendJoin)
	f.handle(srv, http.MethodGet, v1+"/make_leave/{roomId}/{userId}", f.makeLeave)
	f.handle(srv, http.MethodPut, v1+"/send_leave/{roomId}/{eventId}", func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		return v1Response(f.sendLeave(r, origin, body))
	})
	f.handle(srv, http.MethodPut, v2+"/send_leave/{roomId}/{eventId}", f.sendLeave)
	f.handle(srv, http.MethodGet, v1+"/make_knock/{roomId}/{userId}", f.makeKnock)
	f.handle(srv, http.MethodPut, v1+"/send_knock/{roomId}/{eventId}", f.sendKnock)
	f.handle(srv, http.MethodPut, v1+"/invite/{roomId}/{eventId}", func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		return v1Response(f.inviteV1(r, origin, body))
	})
	f.handle(srv, http.MethodPut, v2+"/invite/{roomId}/{eventId}", f.inviteV2)
}

// v1Response wraps a response in the [200, body] of the v1 membership
// routes (a historical accident the spec keeps).
func v1Response(body any, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return []any{200, body}, nil
}

// membRoom checks the room of a membership route: servedRoom, and this
// server must be in the room (404 M_NOT_FOUND: it cannot vouch for a room
// it left).
func (f *FederationAPI) membRoom(ctx context.Context, roomID string, origin spec.ServerName) (*rsapi.RoomInfo, gomatrixserverlib.IRoomVersion, error) {
	info, err := f.servedRoom(ctx, roomID, origin)
	if err != nil {
		return nil, nil, err
	}
	if in, err := f.serverInRoom(ctx, roomID, f.cfg.ServerName); err != nil {
		return nil, nil, err
	} else if !in {
		return nil, nil, mxerr.NotFound("Not an active room on this server")
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	if err != nil {
		return nil, nil, err
	}
	return info, verImpl, nil
}

// membUser checks the user of a make_* route: a valid user ID (400
// M_INVALID_PARAM) of the origin (403 M_FORBIDDEN).
func membUser(userID string, origin spec.ServerName) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return mxerr.InvalidParam("Invalid user ID %q", userID)
	}
	if uid.Domain() != origin {
		return mxerr.Forbidden("User not from origin")
	}
	return nil
}

// checkVersions applies the ver query parameters of make_join and
// make_knock (def when there are none): 400 M_INCOMPATIBLE_ROOM_VERSION
// with the room's version when it is not among them.
func checkVersions(r *http.Request, version gomatrixserverlib.RoomVersion, def []string) error {
	vers := r.URL.Query()["ver"]
	if len(vers) == 0 {
		vers = def
	}
	if !slices.Contains(vers, string(version)) {
		return mxerr.New(mxerr.CodeIncompatibleRoomVer, "Your homeserver does not support the features required to interact with this room").
			With("room_version", string(version))
	}
	return nil
}

// knockSupported reports whether a room version has knocking (7 and
// later).
func knockSupported(verImpl gomatrixserverlib.IRoomVersion) bool {
	return verImpl.CheckKnockingAllowed(string(verImpl.Version()), "@a:x", "@a:x", spec.Knock, spec.Leave) == nil
}

// template builds the unsigned template of a membership event of a remote
// user, as make_join, make_leave and make_knock answer it: the event as
// Synapse templates it (origin and origin_server_ts of this server, no
// hashes or signatures). The roomserver checks it against the auth rules:
// 403 M_FORBIDDEN when it fails them.
func (f *FederationAPI) template(ctx context.Context, roomID, userID string, content map[string]any) (json.RawMessage, gomatrixserverlib.RoomVersion, error) {
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, "", err
	}
	stateKey := userID
	proto, version, err := f.rooms.QueryEventTemplate(ctx, roomID, rsapi.ProtoEvent{
		Sender: userID, Type: spec.MRoomMember, StateKey: &stateKey, Content: raw,
	})
	switch {
	case errors.Is(err, rsapi.ErrNotAllowed):
		return nil, "", mxerr.Forbidden("%s", notAllowedReason(err))
	case errors.Is(err, rsapi.ErrRoomNotFound):
		return nil, "", mxerr.NotFound("Unknown room %s", roomID)
	case err != nil:
		return nil, "", err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return nil, "", err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return nil, "", err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON(), &fields); err != nil {
		return nil, "", err
	}
	for _, k := range []string{"hashes", "signatures", "unsigned", "event_id"} {
		delete(fields, k)
	}
	out, err := json.Marshal(fields)
	return out, version, err
}

// notAllowedReason is the reason in an rsapi.ErrNotAllowed error.
func notAllowedReason(err error) string {
	msg := err.Error()
	if p := rsapi.ErrNotAllowed.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...: a join
// template. Without ver the origin is taken to support room version 1
// only. In a restricted room the template names a local user able to
// invite who authorises the join (see restrictedJoin).
func (f *FederationAPI) makeJoin(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, userID := vars["roomId"], vars["userId"]
	if err := membUser(userID, origin); err != nil {
		return nil, err
	}
	info, verImpl, err := f.membRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if err := checkVersions(r, info.Version, []string{string(gomatrixserverlib.RoomVersionV1)}); err != nil {
		return nil, err
	}
	content := map[string]any{"membership": spec.Join}
	via, err := f.restrictedJoin(ctx, roomID, verImpl, userID, true)
	if err != nil {
		return nil, err
	}
	if via != "" {
		content[authorisedViaKey] = via
	}
	tmpl, version, err := f.template(ctx, roomID, userID, content)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": tmpl, "room_version": version}, nil
}

// restrictedJoin applies a restricted room's join rules to a remote user
// about to join, as Synapse does. Outside restricted (and
// knock_restricted) rooms, and for a user already joined or invited, there
// is nothing to check. Otherwise the user must be joined to one of the
// rooms the rules allow, as this server sees them: 400
// M_UNABLE_TO_AUTHORISE_JOIN when it is not and this server is not in all
// of those rooms (another server may know better), 403 M_FORBIDDEN when it
// is not. With pick, it returns the local user who authorises the join:
// the one with the highest power level among those joined who may invite
// (400 M_UNABLE_TO_GRANT_JOIN when there is none).
func (f *FederationAPI) restrictedJoin(ctx context.Context, roomID string, verImpl gomatrixserverlib.IRoomVersion, userID string, pick bool) (string, error) {
	if verImpl.CheckRestrictedJoinsAllowed() != nil {
		return "", nil
	}
	evs, err := f.rooms.QueryCurrentState(ctx, roomID,
		rsapi.StateKeyTuple{EventType: spec.MRoomCreate}, rsapi.StateKeyTuple{EventType: spec.MRoomPowerLevels},
		rsapi.StateKeyTuple{EventType: spec.MRoomJoinRules}, rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: userID})
	if err != nil {
		return "", err
	}
	var joinRule string
	var allowed []string
	for _, e := range evs {
		switch e.Type() {
		case spec.MRoomJoinRules:
			joinRule, allowed = rsapi.RestrictedJoinRule(e.Content())
		case spec.MRoomMember:
			if m, _ := e.Membership(); m == spec.Join || m == spec.Invite {
				return "", nil
			}
		}
	}
	if joinRule != spec.Restricted && joinRule != spec.KnockRestricted {
		return "", nil
	}
	resident, member := true, false
	for _, allowedID := range allowed {
		info, err := f.rooms.QueryRoomInfo(ctx, allowedID)
		if errors.Is(err, rsapi.ErrRoomNotFound) || (err == nil && !info.HasState) {
			resident = false
			continue
		} else if err != nil {
			return "", err
		}
		if in, err := f.serverInRoom(ctx, allowedID, f.cfg.ServerName); err != nil {
			return "", err
		} else if !in {
			resident = false
			continue
		}
		m, err := f.rooms.QueryMembership(ctx, allowedID, userID)
		if err != nil {
			return "", err
		}
		if m.Membership == spec.Join {
			member = true
			break
		}
	}
	if !member {
		if !resident {
			return "", mxerr.New(codeUnableToAuthoriseJoin, "Unable to check if %s is in the allowed rooms", userID)
		}
		return "", mxerr.Forbidden("You do not belong to any of the required rooms/spaces to join this room.")
	}
	if !pick {
		return "", nil
	}
	via, err := f.localInviter(ctx, roomID, evs)
	if err != nil {
		return "", err
	}
	if via == "" {
		return "", mxerr.New(codeUnableToGrantJoin, "Unable to find a user which could issue an invite")
	}
	return via, nil
}

// localInviter picks the local user of a room with the highest power level
// among those joined who may invite ("" when there is none). state holds
// the room's create and power levels events.
func (f *FederationAPI) localInviter(ctx context.Context, roomID string, state []gomatrixserverlib.PDU) (string, error) {
	pl, err := rsapi.PowerLevelsFromState(state)
	if err != nil || pl == nil {
		return "", err
	}
	all, err := f.rooms.QueryCurrentState(ctx, roomID)
	if err != nil {
		return "", err
	}
	for _, u := range pl.Inviters(all) {
		if f.isLocalUser(u) {
			return u, nil
		}
	}
	return "", nil
}

func (f *FederationAPI) isLocalUser(userID string) bool {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	return err == nil && f.isLocal(domain)
}

// membEvent parses and checks the event of a send_* route against the
// route (room, event ID) and what it must be: a membership event of the
// given membership whose state key is its sender, a user of the origin.
func (f *FederationAPI) membEvent(r *http.Request, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, body []byte, membership string) (gomatrixserverlib.PDU, error) {
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomId"], vars["eventId"]
	if err := httputil.UnmarshalRemoteObject(body, &struct{}{}); err != nil {
		return nil, err
	}
	if err := eventrules.CheckReceived(body); err != nil {
		return nil, mxerr.BadJSON("Invalid event: %v", err)
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(body)
	if err != nil {
		return nil, mxerr.BadJSON("Invalid event: %v", err)
	}
	if pdu.RoomID().String() != roomID {
		return nil, mxerr.BadJSON("Room ID in body does not match that in request path")
	}
	if pdu.EventID() != eventID {
		return nil, mxerr.BadJSON("Event ID in body (%s) does not match that in request path", pdu.EventID())
	}
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return nil, mxerr.InvalidParam("Not an m.room.member event")
	}
	if m, err := pdu.Membership(); err != nil || m != membership {
		return nil, mxerr.InvalidParam("Not a %s event", membership)
	}
	if !pdu.StateKeyEquals(string(pdu.SenderID())) {
		return nil, mxerr.InvalidParam("state_key and sender must match")
	}
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return nil, mxerr.InvalidParam("The sender is not a user of the origin server")
	}
	return pdu, nil
}

// verifySignatures checks the signatures an event needs (those of its
// sender's server, and of the servers that must co-sign it): 400
// M_INVALID_PARAM, as the spec asks, when they fail.
func (f *FederationAPI) verifySignatures(ctx context.Context, pdu gomatrixserverlib.PDU) error {
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, f.keyring, userIDForSender); err != nil {
		return mxerr.InvalidParam("Signature check failed: %v", err)
	}
	return nil
}

// takeMembership takes a remote user's membership event into the room;
// this server sends it to the room's other servers. 403 M_FORBIDDEN when
// the auth rules reject it (at its place in the DAG, or against the
// current state).
func (f *FederationAPI) takeMembership(ctx context.Context, roomID string, pdu gomatrixserverlib.PDU) error {
	res, err := f.input.Input(context.WithoutCancel(ctx), &rsapi.InputMessage{
		RoomID: roomID, Events: []json.RawMessage{pdu.JSON()}, SendAsServer: string(f.cfg.ServerName),
	})
	if err != nil {
		return inputFailure(err)
	}
	for _, e := range res.Events {
		if e.Rejected != "" {
			return mxerr.Forbidden("The %s event was rejected: %s", gjson.GetBytes(pdu.Content(), "membership").Str, e.Rejected)
		}
		if e.SoftFailed {
			return mxerr.Forbidden("The %s event is not allowed by the room's current state", gjson.GetBytes(pdu.Content(), "membership").Str)
		}
	}
	return nil
}

// inputFailure turns a roomserver refusal of a remote's event into a
// Matrix error (400, or 403 for M_FORBIDDEN); internal failures stay
// internal.
func inputFailure(err error) error {
	var ie *rsapi.InputError
	if !errors.As(err, &ie) || ie.Code == mxerr.CodeUnknown || ie.Code == "" {
		return err
	}
	e := mxerr.New(ie.Code, "%s", ie.Message)
	if ie.Code == mxerr.CodeForbidden {
		return e
	}
	return e.WithStatus(http.StatusBadRequest)
}

// sendJoinResponse is the body of send_join (v2; v1 wraps it).
type sendJoinResponse struct {
	Origin         spec.ServerName   `json:"origin"`
	Event          json.RawMessage   `json:"event"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId} (and v1): the
// join goes into the room, signed by this server (as the spec has the
// resident server sign it; needed when it authorises a restricted join),
// and the answer carries the room's state before it, the auth chain of
// that state, and the join as signed here. Membership events are never
// omitted (omit_members is ignored, as is allowed).
//
// The state and its auth chain come from ID queries, and their events
// from one load of their union, so a large room is read once.
func (f *FederationAPI) sendJoin(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	_, verImpl, err := f.membRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	pdu, err := f.membEvent(r, origin, verImpl, body, spec.Join)
	if err != nil {
		return nil, err
	}
	if via := gjson.GetBytes(pdu.Content(), authorisedViaKey); via.Exists() && verImpl.CheckRestrictedJoinsAllowed() == nil {
		if via.Type != gjson.String || !f.isLocalUser(via.Str) {
			return nil, mxerr.InvalidParam("Cannot authorise a join for %s: this server can only authorise joins through its own users", via.Raw)
		}
	}
	if _, err := f.restrictedJoin(ctx, roomID, verImpl, string(pdu.SenderID()), false); err != nil {
		return nil, err
	}
	signed := pdu.Sign(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey)
	if err := f.verifySignatures(ctx, signed); err != nil {
		return nil, err
	}
	if err := f.takeMembership(ctx, roomID, signed); err != nil {
		return nil, err
	}
	stateIDs, err := f.rooms.QueryStateBefore(ctx, roomID, signed.EventID())
	if err != nil {
		return nil, err
	}
	chainIDs, err := f.rooms.QueryAuthChain(ctx, stateIDs)
	if err != nil {
		return nil, err
	}
	evs, err := f.rooms.QueryEvents(ctx, unionIDs(stateIDs, chainIDs))
	if err != nil {
		return nil, err
	}
	byID := make(map[string]gomatrixserverlib.PDU, len(evs))
	for _, e := range evs {
		byID[e.EventID()] = e
	}
	res := &sendJoinResponse{Origin: f.cfg.ServerName, Event: signed.JSON(),
		State: make([]json.RawMessage, 0, len(stateIDs)), AuthChain: make([]json.RawMessage, 0, len(chainIDs))}
	servers := map[string]bool{}
	for _, id := range stateIDs {
		e, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("state event %s of room %s is not stored", id, roomID)
		}
		res.State = append(res.State, e.JSON())
		if e.Type() == spec.MRoomMember && e.StateKey() != nil {
			if m, _ := e.Membership(); m == spec.Join {
				if _, domain, err := gomatrixserverlib.SplitID('@', *e.StateKey()); err == nil {
					servers[string(domain)] = true
				}
			}
		}
	}
	for _, id := range chainIDs {
		if e, ok := byID[id]; ok {
			res.AuthChain = append(res.AuthChain, e.JSON())
		}
	}
	res.ServersInRoom = make([]string, 0, len(servers))
	for s := range servers {
		res.ServersInRoom = append(res.ServersInRoom, s)
	}
	sort.Strings(res.ServersInRoom)
	f.log.Info("remote user joined", slog.String("room_id", roomID), slog.String("event_id", signed.EventID()),
		slog.String("origin", string(origin)), slog.Int("state", len(res.State)), slog.Int("auth_chain", len(res.AuthChain)))
	return res, nil
}

// unionIDs merges lists of IDs without repeats.
func unionIDs(lists ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lists {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}: a leave
// template (which also rejects an invite or withdraws a knock).
func (f *FederationAPI) makeLeave(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, userID := vars["roomId"], vars["userId"]
	if err := membUser(userID, origin); err != nil {
		return nil, err
	}
	if _, _, err := f.membRoom(ctx, roomID, origin); err != nil {
		return nil, err
	}
	tmpl, version, err := f.template(ctx, roomID, userID, map[string]any{"membership": spec.Leave})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": tmpl, "room_version": version}, nil
}

// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId} (and v1): the
// leave goes into the room; the answer is empty.
func (f *FederationAPI) sendLeave(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	_, verImpl, err := f.membRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	pdu, err := f.membEvent(r, origin, verImpl, body, spec.Leave)
	if err != nil {
		return nil, err
	}
	if err := f.verifySignatures(ctx, pdu); err != nil {
		return nil, err
	}
	if err := f.takeMembership(ctx, roomID, pdu); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=...: a knock
// template (ver is required; rooms before version 7 have no knocking: 403
// M_FORBIDDEN).
func (f *FederationAPI) makeKnock(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, userID := vars["roomId"], vars["userId"]
	if len(r.URL.Query()["ver"]) == 0 {
		return nil, mxerr.MissingParam("Missing ver")
	}
	if err := membUser(userID, origin); err != nil {
		return nil, err
	}
	info, verImpl, err := f.membRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if err := checkVersions(r, info.Version, nil); err != nil {
		return nil, err
	}
	if !knockSupported(verImpl) {
		return nil, mxerr.Forbidden("This room version does not support knocking")
	}
	tmpl, version, err := f.template(ctx, roomID, userID, map[string]any{"membership": spec.Knock})
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": tmpl, "room_version": version}, nil
}

// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: the knock goes
// into the room; the answer carries the state the knocker sees the room by
// (knock_room_state: full events of the room's state after the knock,
// the create event among them, as MSC4311 has it since v1.16).
func (f *FederationAPI) sendKnock(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	ctx := r.Context()
	roomID := httputil.Vars(r)["roomId"]
	_, verImpl, err := f.membRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if !knockSupported(verImpl) {
		return nil, mxerr.Forbidden("This room version does not support knocking")
	}
	pdu, err := f.membEvent(r, origin, verImpl, body, spec.Knock)
	if err != nil {
		return nil, err
	}
	if err := f.verifySignatures(ctx, pdu); err != nil {
		return nil, err
	}
	if err := f.takeMembership(ctx, roomID, pdu); err != nil {
		return nil, err
	}
	tuples := make([]rsapi.StateKeyTuple, 0, len(membStrippedTypes))
	for _, t := range membStrippedTypes {
		tuples = append(tuples, rsapi.StateKeyTuple{EventType: t})
	}
	evs, err := f.rooms.QueryStateAfterEvent(ctx, roomID, pdu.EventID(), tuples...)
	if err != nil {
		return nil, err
	}
	state := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		state = append(state, e.JSON())
	}
	return map[string]any{"knock_room_state": state}, nil
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: an invite of a
// local user to a room of the origin, which this server signs and returns.
func (f *FederationAPI) inviteV2(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	var req struct {
		RoomVersion     *string           `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := httputil.UnmarshalRemoteObject(body, &req); err != nil {
		return nil, err
	}
	if req.RoomVersion == nil {
		return nil, mxerr.MissingParam("Missing room_version")
	}
	if len(req.Event) == 0 {
		return nil, mxerr.MissingParam("Missing event")
	}
	return f.invite(r, origin, gomatrixserverlib.RoomVersion(*req.RoomVersion), req.Event, req.InviteRoomState)
}

// PUT /_matrix/federation/v1/invite/{roomId}/{eventId}: the body is the
// event, with the room's state in unsigned.invite_room_state; the room
// version is taken to be 1, as Synapse takes it (versions 1 and 2 differ
// only in state resolution, which an invite does not need).
func (f *FederationAPI) inviteV1(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	if err := httputil.UnmarshalRemoteObject(body, &struct{}{}); err != nil {
		return nil, err
	}
	var state []json.RawMessage
	if st := gjson.GetBytes(body, "unsigned.invite_room_state"); st.IsArray() {
		for _, e := range st.Array() {
			state = append(state, json.RawMessage(e.Raw))
		}
	}
	return f.invite(r, origin, gomatrixserverlib.RoomVersionV1, body, state)
}

// invite checks an invite of a local user (the spec's list, 400
// M_INVALID_PARAM: an m.room.member invite event of a user of the origin,
// for an existing user of this server, signed by the origin), signs it
// and stores it out of band with the room's state the invitee sees it by.
// A room this server is in refuses an invite of a user it has banned or
// joined (403 M_FORBIDDEN), which the auth rules would reject anyway.
func (f *FederationAPI) invite(r *http.Request, origin spec.ServerName, version gomatrixserverlib.RoomVersion, raw json.RawMessage, roomState []json.RawMessage) (any, error) {
	ctx := r.Context()
	vars := httputil.Vars(r)
	roomID, eventID := vars["roomId"], vars["eventId"]
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !rsapi.SupportedRoomVersion(verImpl.Version()) {
		return nil, mxerr.New(mxerr.CodeIncompatibleRoomVer, "Room version %q is not supported by this server", version).
			With("room_version", string(version))
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("Invalid room ID %q", roomID)
	}
	info, err := f.rooms.QueryRoomInfo(ctx, roomID)
	if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil, err
	}
	known := err == nil && info.HasState
	if known {
		if ok, err := f.aclAllows(ctx, roomID, origin); err != nil {
			return nil, err
		} else if !ok {
			return nil, mxerr.Forbidden("Server is banned from the room by its server ACL")
		}
	}
	if err := eventrules.CheckReceived(raw); err != nil {
		return nil, mxerr.BadJSON("Invalid event: %v", err)
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, mxerr.BadJSON("Invalid event: %v", err)
	}
	if pdu.RoomID().String() != roomID {
		return nil, mxerr.BadJSON("The room ID in the request path must match the room ID in the invite event JSON")
	}
	if pdu.EventID() != eventID {
		return nil, mxerr.BadJSON("Event ID in body (%s) does not match that in request path", pdu.EventID())
	}
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return nil, mxerr.InvalidParam("The event was not an m.room.member invite event")
	}
	if m, err := pdu.Membership(); err != nil || m != spec.Invite {
		return nil, mxerr.InvalidParam("The event was not an m.room.member invite event")
	}
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return nil, mxerr.InvalidParam("The invite event was not from the server sending it")
	}
	invitee := *pdu.StateKey()
	if !f.isLocalUser(invitee) {
		return nil, mxerr.InvalidParam("The invite event must be for this server")
	}
	if _, err := f.users.QueryProfile(ctx, invitee); errors.Is(err, userapi.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown user %s", invitee)
	} else if err != nil {
		return nil, err
	}
	if known {
		m, err := f.rooms.QueryMembership(ctx, roomID, invitee)
		if err != nil {
			return nil, err
		}
		switch m.Membership {
		case spec.Ban:
			return nil, mxerr.Forbidden("%s is banned from the room", invitee)
		case spec.Join:
			return nil, mxerr.Forbidden("%s is already in the room", invitee)
		}
	}
	if err := f.checkInvitePermission(ctx, invitee, string(pdu.SenderID())); err != nil {
		return nil, err
	}
	signed := pdu.Sign(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey)
	if err := f.verifySignatures(ctx, signed); err != nil {
		return nil, err
	}
	stripped, err := f.checkInviteRoomState(ctx, verImpl, roomID, roomState)
	if err != nil {
		return nil, err
	}
	if _, err := f.input.Input(context.WithoutCancel(ctx), &rsapi.InputMessage{RoomID: roomID, OutOfBand: &rsapi.OutOfBandInput{
		RoomVersion: string(version), Event: signed.JSON(), StrippedState: stripped,
	}}); err != nil {
		return nil, inputFailure(err)
	}
	if known {
		f.inviteIntoDAG(context.WithoutCancel(ctx), origin, info, signed)
	}
	f.log.Info("remote invite", slog.String("room_id", roomID), slog.String("event_id", signed.EventID()),
		slog.String("origin", string(origin)))
	return map[string]json.RawMessage{"event": signed.JSON()}, nil
}

// inviteIntoDAG puts the invite to a room this server is in into the
// room's DAG at once, when its prev and auth events are here, as the
// inviting server's /send will do later: the invitee may accept as soon as
// the invite shows in their sync, and a join this server makes is built on
// its own state of the room, which must hold the invite by then. Failures
// are only logged: the /send brings the event anyway.
func (f *FederationAPI) inviteIntoDAG(ctx context.Context, origin spec.ServerName, info *rsapi.RoomInfo, pdu gomatrixserverlib.PDU) {
	unlock := f.roomLocks.lock(info.RoomID)
	defer unlock()
	in, err := f.newIntake(origin, info)
	if err == nil {
		prev, auth := pdu.PrevEventIDs(), pdu.AuthEventIDs()
		if err = in.kinds(ctx, append(append(slices.Clone(prev), auth...), pdu.EventID())); err == nil {
			// The prev events in the DAG here, the auth events stored (the
			// state a join over federation brought is stored as outliers).
			missing := slices.ContainsFunc(prev, func(id string) bool { return !in.inDAG(id) }) ||
				slices.ContainsFunc(auth, func(id string) bool { return !in.stored(id) || in.rejected(id) })
			if in.inDAG(pdu.EventID()) || missing {
				return // there already, or /send fills the gap first
			}
			err = in.input(ctx, &rsapi.InputMessage{RoomID: info.RoomID, Events: []json.RawMessage{pdu.JSON()}})[pdu.EventID()]
		}
	}
	if err != nil {
		f.log.Info("invite left for the inviting server's /send", slog.String("room_id", info.RoomID),
			slog.String("event_id", pdu.EventID()), slog.String("error", err.Error()))
	}
}

// checkInviteRoomState checks the invite_room_state of an invite, as the
// spec has it since v1.16 (MSC4311): it must hold the room's create event,
// and each entry must be an event of the room in the room's format,
// correctly signed. The spec has servers apply it to rooms of version 12
// and later (400 M_INVALID_PARAM); in earlier versions, which older
// servers invite to with stripped events, a failure is only logged and the
// state kept as sent.
func (f *FederationAPI) checkInviteRoomState(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, state []json.RawMessage) ([]json.RawMessage, error) {
	strict := verImpl.DomainlessRoomIDs()
	fail := func(format string, args ...any) ([]json.RawMessage, error) {
		if strict {
			return nil, mxerr.InvalidParam("invite_room_state: "+format, args...)
		}
		f.log.Info("invite with an invalid invite_room_state", slog.String("room_id", roomID),
			slog.String("problem", fmt.Sprintf(format, args...)))
		return state, nil
	}
	hasCreate := false
	for _, raw := range state {
		ev, err := verImpl.NewEventFromUntrustedJSON(raw)
		if err != nil {
			return fail("an entry is not an event of the room's version: %v", err)
		}
		if ev.RoomID().String() != roomID {
			return fail("event %s is not in room %s", ev.EventID(), roomID)
		}
		if ev.StateKey() == nil {
			return fail("event %s is not a state event", ev.EventID())
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, f.keyring, userIDForSender); err != nil {
			return fail("event %s is not correctly signed: %v", ev.EventID(), err)
		}
		if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
			hasCreate = true
		}
	}
	if !hasCreate {
		return fail("the room's create event is missing")
	}
	return state, nil
}

// checkInvitePermission refuses an invite that the invitee's invite
// permission (invite_permission.md, MSC4155) blocks with 403
// M_INVITE_BLOCKED; one it ignores is accepted, and /sync hides it.
func (f *FederationAPI) checkInvitePermission(ctx context.Context, invitee, inviter string) error {
	cfg, err := invitefilter.Load(ctx, func(ctx context.Context, typ string) ([]byte, error) {
		b, err := f.users.QueryAccountData(ctx, invitee, "", typ)
		if errors.Is(err, userapi.ErrNotFound) {
			return nil, nil
		}
		return b, err
	})
	if err != nil {
		return err
	}
	if cfg.Decide(inviter) == invitefilter.Block {
		return mxerr.New(mxerr.CodeInviteBlocked, "%s does not accept invites from %s", invitee, inviter)
	}
	return nil
}
