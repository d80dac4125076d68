package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// remoteProfileTimeout bounds the profile lookup that adds a remote
// invitee's name and avatar to an invite (best effort, as Synapse).
const remoteProfileTimeout = 5 * time.Second

// isRemote reports whether a server name is another server's.
func (c *ClientAPI) isRemote(server spec.ServerName) bool {
	return !strings.EqualFold(string(server), c.cfg.ServerName)
}

// remoteUser reports whether userID (valid) belongs to another server.
func (c *ClientAPI) remoteUser(userID string) bool {
	uid, err := spec.NewUserID(userID, true)
	return err == nil && c.isRemote(uid.Domain())
}

// federationError turns what the federation API failed with into the
// client's error, as Synapse answers:
//   - a Matrix error a remote server answered with a 4xx status passes
//     through with its status and code (403 stays 403, 404 stays 404),
//     except 401 (the remote refused this server, not the client's token)
//     and unknown endpoints, which are 502s;
//   - no answer, a 5xx or an answer that is not a Matrix error: 502
//     M_UNKNOWN, as Synapse's "Failed to ... via any server" and "Can't
//     connect to server" (the client cannot fix it; it may retry later);
//   - a server the domain lists deny: 403 M_FORBIDDEN;
//   - the room's refusals (roomserver ErrNotAllowed, ErrRoomNotFound):
//     403 and 404.
func federationError(err error, what string) error {
	if err == nil {
		return nil
	}
	var re *fedapi.RemoteError
	switch {
	case errors.As(err, &re):
		if re.Code != "" && re.Status >= 400 && re.Status < 500 && re.Status != http.StatusUnauthorized && re.Code != mxerr.CodeUnrecognized {
			msg := re.Message
			if msg == "" {
				msg = what + ": " + re.Server + " refused"
			}
			return mxerr.New(re.Code, "%s", msg).WithStatus(re.Status)
		}
		return mxerr.Unknown("%s: %s answered with an error (%d %s)", what, re.Server, re.Status, re.Code).WithStatus(http.StatusBadGateway)
	case errors.Is(err, fedapi.ErrDenied):
		return mxerr.Forbidden("%s: this server does not federate with that server", what)
	case errors.Is(err, fedapi.ErrDisabled):
		return mxerr.Forbidden("%s: this server does not federate", what)
	case errors.Is(err, fedapi.ErrNoServer):
		return mxerr.Unknown("%s: no server could be reached", what).WithStatus(http.StatusBadGateway)
	case errors.Is(err, rsapi.ErrNotAllowed):
		return mxerr.Forbidden("%s", strings.TrimPrefix(err.Error(), rsapi.ErrNotAllowed.Error()+": "))
	case errors.Is(err, rsapi.ErrRoomNotFound):
		return mxerr.NotFound("%s: unknown room", what)
	}
	return err
}

// serverInRoom reports whether this server takes part in a room: it has
// the room's state and one of its users is joined (or nobody is, as in a
// local room everyone left, where the local auth rules decide). A room
// known only by an invite or knock, or whose every local user left while
// other servers stayed (a stale state), is joined over federation.
func (c *ClientAPI) serverInRoom(ctx context.Context, roomID string) (bool, error) {
	info, err := c.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return false, nil
	}
	if err != nil || !info.HasState {
		return false, err
	}
	servers, err := c.rooms.QueryJoinedServers(ctx, roomID)
	if err != nil {
		return false, err
	}
	return len(servers) == 0 || slices.ContainsFunc(servers, func(s string) bool { return !c.isRemote(spec.ServerName(s)) }), nil
}

// roomTarget is the room a join or knock names, with the servers the
// alias's server suggested.
type roomTarget struct {
	roomID  string
	servers []string
}

// resolveTarget turns {roomIdOrAlias} into a room ID without requiring
// the room to be known here: another server's alias is looked up over
// federation.
func (c *ClientAPI) resolveTarget(ctx context.Context, r *http.Request) (*roomTarget, error) {
	vars := httputil.Vars(r)
	target := vars["roomIdOrAlias"]
	if target == "" {
		target = vars["roomId"]
	}
	if !strings.HasPrefix(target, "#") {
		if _, err := spec.NewRoomID(target); err != nil {
			return nil, mxerr.InvalidParam("%q is neither a room ID nor a room alias", target)
		}
		return &roomTarget{roomID: target}, nil
	}
	if err := validAlias(target); err != nil {
		return nil, err
	}
	id, err := c.queryAlias(ctx, target)
	if err == nil {
		return &roomTarget{roomID: id}, nil
	}
	if !errors.Is(err, rsapi.ErrAliasNotFound) {
		return nil, err
	}
	_, server, _ := gomatrixserverlib.SplitID('#', target)
	if c.fed == nil || !c.isRemote(server) {
		return nil, mxerr.NotFound("Room alias %s not found", target)
	}
	id, servers, err := c.fed.QueryRoomAlias(ctx, target)
	if err != nil {
		return nil, aliasError(err, target)
	}
	return &roomTarget{roomID: id, servers: servers}, nil
}

// aliasError is the client's error for a failed remote alias lookup: not
// found stays 404, anything else is a 502 (as Synapse's "Unable to
// communicate with remote server").
func aliasError(err error, alias string) error {
	var re *fedapi.RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return mxerr.NotFound("Room alias %s not found", alias)
	}
	if errors.Is(err, fedapi.ErrDenied) {
		return federationError(err, "alias lookup")
	}
	if errors.As(err, &re) || errors.Is(err, fedapi.ErrNoServer) {
		return mxerr.Unknown("Unable to communicate with the server of %s", alias).WithStatus(http.StatusBadGateway)
	}
	return err
}

// viaServers are the via (and deprecated server_name) query parameters.
func viaServers(r *http.Request) []string {
	q := r.URL.Query()
	return append(slices.Clone(q["via"]), q["server_name"]...)
}

// roomServers adds, after the given servers, those a join or knock may
// also go through: the inviter's server when the user holds an invite
// (as Synapse), and, only when no server is given, the servers of a stale
// state of the room and the room ID's server (room versions before 12).
// Servers the client names are the whole list otherwise, as with Synapse:
// a restricted join that none of them can authorise must fail rather than
// go through a server the client left out.
func (c *ClientAPI) roomServers(ctx context.Context, roomID, userID string, servers []string) []string {
	out := slices.Clone(servers)
	if m, err := c.rooms.QueryMembership(ctx, roomID, userID); err == nil && m.Membership == rsapi.Invite && m.EventID != "" {
		if evs, err := c.rooms.QueryEvents(ctx, []string{m.EventID}); err == nil && len(evs) == 1 {
			if _, d, err := gomatrixserverlib.SplitID('@', string(evs[0].SenderID())); err == nil {
				out = append(out, string(d))
			}
		}
	}
	if slices.ContainsFunc(servers, func(s string) bool { return c.isRemote(spec.ServerName(s)) }) {
		return slices.DeleteFunc(out, func(s string) bool { return !c.isRemote(spec.ServerName(s)) })
	}
	if joined, err := c.rooms.QueryJoinedServers(ctx, roomID); err == nil {
		out = append(out, joined...)
	}
	if rid, err := spec.NewRoomID(roomID); err == nil && strings.Contains(roomID, ":") {
		out = append(out, string(rid.Domain()))
	}
	return slices.DeleteFunc(out, func(s string) bool { return !c.isRemote(spec.ServerName(s)) })
}

// remoteJoin joins a room this server is not in through other servers.
func (c *ClientAPI) remoteJoin(ctx context.Context, r *http.Request, t *roomTarget, reason string, extra map[string]any) (any, error) {
	dev := httputil.DeviceFrom(ctx)
	if dev.IsGuest {
		return nil, mxerr.GuestAccessForbidden("Guests may not join rooms of other servers")
	}
	servers := c.roomServers(ctx, t.roomID, dev.UserID, append(viaServers(r), t.servers...))
	if len(servers) == 0 {
		return nil, mxerr.NotFound("No known servers to join room %s through", t.roomID)
	}
	return c.joinThrough(ctx, t.roomID, servers, reason, extra)
}

// joinThrough joins a room through the given servers, with the custom
// content of the join request (extra).
func (c *ClientAPI) joinThrough(ctx context.Context, roomID string, servers []string, reason string, extra map[string]any) (any, error) {
	dev := httputil.DeviceFrom(ctx)
	content, err := c.memberContent(ctx, dev.UserID, rsapi.Join, reason)
	if err != nil {
		return nil, err
	}
	maps.Copy(content, extra)
	roomID, err = c.fed.PerformJoin(ctx, &fedapi.JoinRequest{RoomID: roomID, UserID: dev.UserID, Servers: servers, Content: content})
	if err != nil {
		return nil, federationError(err, "Join")
	}
	c.copyPushRulesAfterJoin(ctx, dev.UserID, roomID)
	return map[string]string{"room_id": roomID}, nil
}

// remoteKnock knocks on a room this server is not in through other
// servers.
func (c *ClientAPI) remoteKnock(ctx context.Context, r *http.Request, t *roomTarget, reason string) (any, error) {
	dev := httputil.DeviceFrom(ctx)
	servers := c.roomServers(ctx, t.roomID, dev.UserID, append(viaServers(r), t.servers...))
	if len(servers) == 0 {
		return nil, mxerr.NotFound("No known servers to knock on room %s through", t.roomID)
	}
	content, err := c.memberContent(ctx, dev.UserID, rsapi.Knock, reason)
	if err != nil {
		return nil, err
	}
	if err := c.fed.PerformKnock(ctx, &fedapi.MembershipRequest{RoomID: t.roomID, UserID: dev.UserID, Servers: servers, Content: content}); err != nil {
		return nil, federationError(err, "Knock")
	}
	return map[string]string{"room_id": t.roomID}, nil
}

// remoteLeave rejects an invite or withdraws a knock in a room this
// server is not in: through the inviter's server and the room ID's (the
// federation API falls back to a local leave when none takes it).
func (c *ClientAPI) remoteLeave(ctx context.Context, roomID, userID, reason string) error {
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	servers := c.roomServers(ctx, roomID, userID, nil)
	return federationError(c.fed.PerformLeave(ctx, &fedapi.MembershipRequest{RoomID: roomID, UserID: userID, Servers: servers, Content: content}), "Leave")
}

// remoteInvite invites a user of another server: the invite carries the
// invitee's profile when their server answers quickly (as Synapse).
func (c *ClientAPI) remoteInvite(ctx context.Context, roomID, sender, invitee, reason string, extra map[string]any) error {
	if c.fed == nil {
		return c.checkLocalTarget(invitee)
	}
	content := map[string]any{"membership": rsapi.Invite}
	if reason != "" {
		content["reason"] = reason
	}
	pctx, cancel := context.WithTimeout(ctx, remoteProfileTimeout)
	if p, err := c.fed.QueryProfile(pctx, invitee, ""); err == nil {
		for _, k := range []string{"displayname", "avatar_url"} {
			var s string
			if v, ok := p[k]; ok && json.Unmarshal(v, &s) == nil && s != "" {
				content[k] = s
			}
		}
	}
	cancel()
	for k, v := range extra {
		content[k] = v
	}
	_, err := c.fed.PerformInvite(ctx, &fedapi.InviteRequest{RoomID: roomID, Sender: sender, Invitee: invitee, Content: content})
	return federationError(err, "Invite")
}

// remoteProfile fetches a user's profile (or one field of it) from their
// server: a missing user or field is a 404, a refusal a 403, anything
// else a 502 (as Synapse: other codes are not allowed on this endpoint).
func (c *ClientAPI) remoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	p, err := c.fed.QueryProfile(ctx, userID, field)
	if err == nil {
		return p, nil
	}
	var re *fedapi.RemoteError
	switch {
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		if field != "" {
			return nil, mxerr.NotFound("Profile field %s is not set", field)
		}
		return nil, mxerr.NotFound("Profile not found")
	case errors.As(err, &re) && re.Status == http.StatusForbidden:
		return nil, mxerr.Forbidden("The server of %s refused to share the profile", userID)
	case errors.Is(err, fedapi.ErrDenied):
		return nil, federationError(err, "Profile lookup")
	case errors.As(err, &re) || errors.Is(err, fedapi.ErrNoServer):
		return nil, mxerr.Unknown("Failed to fetch the profile of %s", userID).WithStatus(http.StatusBadGateway)
	}
	return nil, err
}
