package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// resolveRoom turns a {roomIdOrAlias} (or {roomId}) into a known room ID.
func (c *ClientAPI) resolveRoom(ctx context.Context, r *http.Request) (string, error) {
	vars := httputil.Vars(r)
	target := vars["roomIdOrAlias"]
	if target == "" {
		target = vars["roomId"]
	}
	roomID := target
	if strings.HasPrefix(target, "#") {
		if err := validAlias(target); err != nil {
			return "", err
		}
		id, err := c.queryAlias(ctx, target)
		if errors.Is(err, rsapi.ErrAliasNotFound) {
			return "", mxerr.NotFound("Room alias %s not found", target)
		}
		if err != nil {
			return "", err
		}
		roomID = id
	} else if _, err := spec.NewRoomID(target); err != nil {
		return "", mxerr.InvalidParam("%q is neither a room ID nor a room alias", target)
	}
	if _, err := c.roomInfo(ctx, roomID); err != nil {
		return "", err
	}
	return roomID, nil
}

// joinTarget resolves the {roomIdOrAlias} of a join or knock: a room this
// server is in (its ID), or, with federation, one it is not in (remote
// set: joined or knocked on through other servers).
func (c *ClientAPI) joinTarget(ctx context.Context, r *http.Request) (string, *roomTarget, error) {
	if c.fed == nil {
		roomID, err := c.resolveRoom(ctx, r)
		return roomID, nil, err
	}
	t, err := c.resolveTarget(ctx, r)
	if err != nil {
		return "", nil, err
	}
	if in, err := c.serverInRoom(ctx, t.roomID); err != nil {
		return "", nil, err
	} else if !in {
		return "", t, nil
	}
	if _, err := c.roomInfo(ctx, t.roomID); err != nil {
		return "", nil, err
	}
	return t.roomID, nil, nil
}

type membershipRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// target reads the body of invite, kick, ban and unban.
func targetRequest(r *http.Request) (*membershipRequest, error) {
	var req membershipRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, mxerr.MissingParam("Missing user_id")
	}
	if _, err := spec.NewUserID(req.UserID, true); err != nil {
		return nil, mxerr.InvalidParam("%q is not a valid user ID", req.UserID)
	}
	return &req, nil
}

// setMembership sends target's new membership as sender.
func (c *ClientAPI) setMembership(ctx context.Context, roomID, sender, target, membership, reason string, extra map[string]any) (string, error) {
	content, err := c.memberContent(ctx, target, membership, reason)
	if err != nil {
		return "", err
	}
	for k, v := range extra {
		content[k] = v
	}
	return c.send(ctx, roomID, rsapi.ProtoEvent{Sender: sender, Type: spec.MRoomMember, StateKey: strPtr(target), Content: jsonObject(content)},
		rsapi.LocalInput{SkipUnchangedState: membership == rsapi.Join})
}

// POST /_matrix/client/v3/join/{roomIdOrAlias} and /rooms/{roomId}/join
func (c *ClientAPI) postJoin(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	b, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Reason           string          `json:"reason"`
		ThirdPartySigned json.RawMessage `json:"third_party_signed"`
	}
	custom := map[string]json.RawMessage{}
	if len(b) > 0 {
		if err := httputil.UnmarshalObject(b, &body); err != nil {
			return nil, err
		}
		if err := httputil.UnmarshalObject(b, &custom); err != nil {
			return nil, err
		}
	}
	if len(body.ThirdPartySigned) > 0 {
		return nil, mxerr.InvalidParam("Third-party invites are not supported")
	}
	roomID, remote, err := c.joinTarget(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := c.limitJoin(ctx, roomID, dev.UserID, remote != nil); err != nil {
		return nil, err
	}
	extra := joinContent(custom)
	if remote != nil {
		return c.remoteJoin(ctx, r, remote, body.Reason, extra)
	}
	if dev.IsGuest {
		ga, err := c.currentEvent(ctx, roomID, spec.MRoomGuestAccess, "")
		if err != nil {
			return nil, err
		}
		var content struct {
			GuestAccess string `json:"guest_access"`
		}
		if ga != nil {
			_ = json.Unmarshal(ga.Content(), &content)
		}
		if content.GuestAccess != "can_join" {
			return nil, mxerr.GuestAccessForbidden("Guests may not join this room")
		}
	}
	authorised, servers, err := c.restrictedJoin(ctx, roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if len(servers) > 0 {
		if c.fed == nil {
			return nil, mxerr.Forbidden("No member of this server can authorise the join")
		}
		// As Synapse, through the servers that can authorise it only.
		return c.joinThrough(ctx, roomID, servers, body.Reason, extra)
	}
	maps.Copy(extra, authorised)
	if _, err := c.setMembership(ctx, roomID, dev.UserID, dev.UserID, rsapi.Join, body.Reason, extra); err != nil {
		return nil, err
	}
	c.copyPushRulesAfterJoin(ctx, dev.UserID, roomID)
	return map[string]string{"room_id": roomID}, nil
}

// authorisedViaKey is the member content field naming the local user who
// authorises a restricted join; the server alone sets it.
const authorisedViaKey = "join_authorised_via_users_server"

// joinContent is the custom content of a join request's body, which the
// member event keeps (as Synapse; a displayname or avatar_url there is a
// per-room profile): all but the fields the server sets itself.
func joinContent(body map[string]json.RawMessage) map[string]any {
	out := make(map[string]any, len(body))
	for k, v := range body {
		switch k {
		case "membership", "reason", "third_party_signed", authorisedViaKey:
			continue
		}
		out[k] = v
	}
	return out
}

// restrictedJoin decides how a user joins a room this server is in whose
// join rule is restricted (or knock_restricted), as Synapse does. Users
// already invited or joined, and rooms of versions without such rules,
// need nothing. Otherwise a joined member who may invite must authorise
// the join (join_authorised_via_users_server): when no user of this server
// may, the join must go through the servers of those who may (remote, best
// first; 403 M_FORBIDDEN when the room has none). When one may, the user
// must be joined to one of the rooms the rule allows (403 M_FORBIDDEN),
// and extra names the local member of the highest power level among them.
//
// Only the create event, the join rules and the user's membership are read
// for the joins of other rooms: the whole state (every member) only when
// the rule is restricted.
func (c *ClientAPI) restrictedJoin(ctx context.Context, roomID, userID string) (extra map[string]any, remote []string, err error) {
	state, err := c.rooms.QueryCurrentState(ctx, roomID, rsapi.StateKeyTuple{EventType: spec.MRoomCreate},
		rsapi.StateKeyTuple{EventType: spec.MRoomJoinRules}, rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: userID})
	if err != nil {
		return nil, nil, err
	}
	var joinRule string
	var allowed []string
	var create gomatrixserverlib.PDU
	for _, p := range state {
		switch {
		case p.Type() == spec.MRoomCreate && p.StateKeyEquals(""):
			create = p
		case p.Type() == spec.MRoomJoinRules && p.StateKeyEquals(""):
			joinRule, allowed = rsapi.RestrictedJoinRule(p.Content())
		case p.Type() == spec.MRoomMember && p.StateKeyEquals(userID):
			if m, _ := p.Membership(); m == rsapi.Join || m == rsapi.Invite {
				return nil, nil, nil
			}
		}
	}
	if create == nil || (joinRule != spec.Restricted && joinRule != spec.KnockRestricted) {
		return nil, nil, nil
	}
	if verImpl, err := gomatrixserverlib.GetRoomVersion(create.Version()); err != nil || verImpl.CheckRestrictedJoinsAllowed() != nil {
		return nil, nil, nil
	}
	if state, err = c.rooms.QueryCurrentState(ctx, roomID); err != nil {
		return nil, nil, err
	}
	pl, err := rsapi.PowerLevelsFromState(state)
	if err != nil {
		return nil, nil, err
	}
	inviters := pl.Inviters(state)
	var via string
	for _, u := range inviters {
		if uid, err := spec.NewUserID(u, true); err == nil && string(uid.Domain()) == c.cfg.ServerName {
			via = u
			break
		}
	}
	if via == "" {
		for _, u := range inviters {
			if _, d, err := gomatrixserverlib.SplitID('@', u); err == nil && !slices.Contains(remote, string(d)) {
				remote = append(remote, string(d))
			}
		}
		if len(remote) == 0 {
			return nil, nil, mxerr.Forbidden("No member of the room can authorise the join")
		}
		return nil, remote, nil
	}
	for _, a := range allowed {
		am, err := c.rooms.QueryMembership(ctx, a, userID)
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return nil, nil, err
		}
		if am != nil && am.Membership == rsapi.Join {
			return map[string]any{authorisedViaKey: via}, nil, nil
		}
	}
	if joinRule == spec.KnockRestricted {
		return nil, nil, mxerr.Forbidden("You are not in a room that grants access: knock instead")
	}
	return nil, nil, mxerr.Forbidden("You do not belong to any of the required rooms/spaces to join this room.")
}

// POST /_matrix/client/v3/knock/{roomIdOrAlias}
func (c *ClientAPI) postKnock(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var body struct {
		Reason string `json:"reason"`
	}
	if err := httputil.DecodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	roomID, remote, err := c.joinTarget(r.Context(), r)
	if err != nil {
		return nil, err
	}
	if remote != nil {
		return c.remoteKnock(r.Context(), r, remote, body.Reason)
	}
	if _, err := c.setMembership(r.Context(), roomID, dev.UserID, dev.UserID, rsapi.Knock, body.Reason, nil); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/leave
func (c *ClientAPI) postLeave(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var body struct {
		Reason string `json:"reason"`
	}
	if err := httputil.DecodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	roomID, err := c.resolveRoom(r.Context(), r)
	if err != nil {
		return nil, err
	}
	// The auth rules tolerate leave after leave (Synapse once sent such
	// events); a client that is not in the room gets a refusal instead.
	m, err := c.rooms.QueryMembership(r.Context(), roomID, dev.UserID)
	if err != nil {
		return nil, err
	}
	if m.Membership != rsapi.Join && m.Membership != rsapi.Invite && m.Membership != rsapi.Knock {
		return nil, mxerr.Forbidden("You are not in the room")
	}
	if c.fed != nil && m.Membership != rsapi.Join {
		// An invite or knock of a room this server is not in ends
		// through the room's servers.
		if in, err := c.serverInRoom(r.Context(), roomID); err != nil {
			return nil, err
		} else if !in {
			if err := c.remoteLeave(r.Context(), roomID, dev.UserID, body.Reason); err != nil {
				return nil, err
			}
			return struct{}{}, nil
		}
	}
	if _, err := c.setMembership(r.Context(), roomID, dev.UserID, dev.UserID, rsapi.Leave, body.Reason, nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/forget: the user's history of a
// room they left goes out of their reach (/sync, /messages, state) until
// they are a member again; a room they were never in has nothing to forget.
func (c *ClientAPI) postForget(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	err = c.rooms.ForgetRoom(r.Context(), httputil.DeviceFrom(r.Context()).UserID, roomID)
	if errors.Is(err, rsapi.ErrNotAllowed) {
		return nil, mxerr.Unknown("You have not left the room").WithStatus(http.StatusBadRequest)
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/invite
func (c *ClientAPI) postInvite(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	req, err := targetRequest(r)
	if err != nil {
		return nil, err
	}
	roomID, err := c.resolveRoom(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := c.limitInvite(r.Context(), roomID, dev.UserID, req.UserID); err != nil {
		return nil, err
	}
	if c.remoteUser(req.UserID) {
		if err := c.remoteInvite(ctx, roomID, dev.UserID, req.UserID, req.Reason, nil); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
	if _, err := c.queryAccount(ctx, req.UserID); errors.Is(err, userapi.ErrNotFound) {
		return nil, mxerr.NotFound("Unknown user %s", req.UserID)
	} else if err != nil {
		return nil, err
	}
	if err := c.checkInvitePermission(ctx, req.UserID, dev.UserID); err != nil {
		return nil, err
	}
	if _, err := c.setMembership(ctx, roomID, dev.UserID, req.UserID, rsapi.Invite, req.Reason, nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/kick
func (c *ClientAPI) postKick(r *http.Request) (any, error) {
	return c.moderate(r, rsapi.Leave, []string{rsapi.Join, rsapi.Invite, rsapi.Knock}, mxerr.CodeForbidden, "The user is not in the room")
}

// POST /_matrix/client/v3/rooms/{roomId}/ban
func (c *ClientAPI) postBan(r *http.Request) (any, error) {
	return c.moderate(r, rsapi.Ban, nil, "", "")
}

// POST /_matrix/client/v3/rooms/{roomId}/unban
func (c *ClientAPI) postUnban(r *http.Request) (any, error) {
	return c.moderate(r, rsapi.Leave, []string{rsapi.Ban}, mxerr.CodeBadState, "The user is not banned")
}

// moderate sets another user's membership, when their current membership
// is one of from (any, when from is empty).
func (c *ClientAPI) moderate(r *http.Request, membership string, from []string, code, msg string) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	req, err := targetRequest(r)
	if err != nil {
		return nil, err
	}
	roomID, err := c.resolveRoom(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(from) > 0 {
		m, err := c.rooms.QueryMembership(ctx, roomID, req.UserID)
		if err != nil {
			return nil, err
		}
		ok := false
		for _, f := range from {
			ok = ok || m.Membership == f
		}
		if !ok {
			return nil, mxerr.New(code, "%s", msg).WithStatus(http.StatusForbidden)
		}
	}
	if _, err := c.setMembership(ctx, roomID, dev.UserID, req.UserID, membership, req.Reason, nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// limitJoin applies the join rate limits (Synapse's rc_joins): a join
// through another server counts as remote, one into a room this server is
// in as local; joining a room the user is already in changes nothing and is
// not limited.
func (c *ClientAPI) limitJoin(ctx context.Context, roomID, userID string, remote bool) error {
	limiter := c.limits(ctx)
	if limiter == nil {
		return nil
	}
	if remote {
		return limiter.Limit(RateJoinRemote, userID)
	}
	if ok, _ := limiter.Check(RateJoinLocal, userID); !ok {
		if m, err := c.rooms.QueryMembership(ctx, roomID, userID); err == nil && m.Membership == rsapi.Join {
			return nil
		}
	}
	return limiter.Limit(RateJoinLocal, userID)
}

// limitInvite applies the invite rate limits (Synapse's rc_invites): per
// room, per invitee and per inviter. Each is checked before any is taken, so
// that a refused invite costs nothing; an exempt inviter is not limited.
func (c *ClientAPI) limitInvite(ctx context.Context, roomID, inviter, invitee string) error {
	return c.limitInvites(ctx, roomID, inviter, []string{invitee})
}

// limitInvites is limitInvite for the invitees of one request (createRoom's
// invite list, with no room yet: roomID ""): the inviter's bucket must hold
// one token per invitee.
func (c *ClientAPI) limitInvites(ctx context.Context, roomID, inviter string, invitees []string) error {
	limiter := c.limits(ctx)
	if limiter == nil || limiter.Exempt(inviter) || len(invitees) == 0 {
		return nil
	}
	type check struct {
		class, key string
		n          int
	}
	checks := []check{{RateInviteIssuer, inviter, len(invitees)}}
	if roomID != "" {
		checks = append(checks, check{RateInviteRoom, roomID, len(invitees)})
	}
	for _, u := range invitees {
		checks = append(checks, check{RateInviteUser, u, 1})
	}
	for _, ch := range checks {
		if ok, wait := limiter.CheckN(ch.class, ch.key, ch.n); !ok {
			return mxerr.LimitExceeded(wait)
		}
	}
	for _, ch := range checks {
		for range ch.n {
			limiter.Take(ch.class, ch.key)
		}
	}
	return nil
}
