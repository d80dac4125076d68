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
	"github.com/myelin-chat/myelin/internal/invitefilter"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// DefaultRoomVersion is the version of rooms created without one.
const DefaultRoomVersion = gomatrixserverlib.RoomVersionV11

type initialStateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type createRoomRequest struct {
	Visibility                string              `json:"visibility"`
	RoomAliasName             string              `json:"room_alias_name"`
	Name                      *string             `json:"name"`
	Topic                     *string             `json:"topic"`
	Invite                    []string            `json:"invite"`
	Invite3PID                []json.RawMessage   `json:"invite_3pid"`
	RoomVersion               string              `json:"room_version"`
	CreationContent           map[string]any      `json:"creation_content"`
	InitialState              []initialStateEvent `json:"initial_state"`
	Preset                    string              `json:"preset"`
	IsDirect                  bool                `json:"is_direct"`
	PowerLevelContentOverride map[string]any      `json:"power_level_content_override"`
}

// preset is what a createRoom preset sets (Synapse's table).
type preset struct {
	joinRule, historyVisibility string
	guestCanJoin                bool
	invitees100                 bool // invitees get the creator's power
	invite                      int  // power level needed to invite
}

var presets = map[string]preset{
	"private_chat":         {joinRule: "invite", historyVisibility: "shared", guestCanJoin: true, invite: 0},
	"trusted_private_chat": {joinRule: "invite", historyVisibility: "shared", guestCanJoin: true, invitees100: true, invite: 0},
	"public_chat":          {joinRule: "public", historyVisibility: "shared", invite: 50},
}

// POST /_matrix/client/v3/createRoom
func (c *ClientAPI) postCreateRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	if ok, wait := c.limits(ctx).Check(RateRoomCreation, dev.UserID); !ok {
		return nil, mxerr.LimitExceeded(wait)
	}
	var req createRoomRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	version := DefaultRoomVersion
	if req.RoomVersion != "" {
		version = gomatrixserverlib.RoomVersion(req.RoomVersion)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !rsapi.SupportedRoomVersion(verImpl.Version()) {
		return nil, mxerr.New(mxerr.CodeUnsupportedRoomVersion, "Room version %s is not supported", version)
	}
	if len(req.Invite3PID) > 0 {
		return nil, mxerr.InvalidParam("invite_3pid is not supported: this server has no identity server")
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, mxerr.InvalidParam("visibility must be public or private")
	}
	presetName := req.Preset
	if presetName == "" {
		presetName = "private_chat"
		if req.Visibility == "public" {
			presetName = "public_chat"
		}
	}
	pre, ok := presets[presetName]
	if !ok {
		return nil, mxerr.InvalidParam("Unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, mxerr.InvalidParam("%q is not a valid user ID", u)
		}
		if c.fed == nil {
			if err := c.checkLocalTarget(u); err != nil {
				return nil, err
			}
		}
	}
	// The invite list counts against the invite limits, checked before
	// anything is created.
	if err := c.limitInvites(ctx, "", dev.UserID, req.Invite); err != nil {
		return nil, err
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + c.cfg.ServerName
		if strings.ContainsAny(req.RoomAliasName, ":# \t\n") || validAlias(alias) != nil {
			return nil, mxerr.InvalidParam("Invalid room_alias_name")
		}
		if err := c.checkAliasWritable(ctx, dev.UserID, alias); err != nil {
			return nil, err
		}
		if _, err := c.rooms.QueryAlias(ctx, alias); err == nil {
			return nil, mxerr.New(mxerr.CodeRoomInUse, "Room alias %s is already in use", alias)
		} else if !errors.Is(err, rsapi.ErrAliasNotFound) {
			return nil, err
		}
	}
	for _, st := range req.InitialState {
		if st.Type == "" {
			return nil, mxerr.BadJSON("initial_state events need a type")
		}
		if len(st.Content) == 0 || st.Content[0] != '{' {
			return nil, mxerr.BadJSON("initial_state content must be an object")
		}
		if st.Type == spec.MRoomCreate {
			return nil, mxerr.New(mxerr.CodeInvalidRoomState, "initial_state cannot contain m.room.create")
		}
	}

	events, err := c.creationEvents(ctx, dev.UserID, verImpl, &req, pre, alias)
	if err != nil {
		return nil, err
	}
	res, err := c.submit(ctx, "", &rsapi.LocalInput{CreateVersion: string(version), Events: events})
	if err == nil {
		// Rooms created count, not refused requests.
		c.limits(ctx).Take(RateRoomCreation, dev.UserID)
	}
	if err != nil {
		var me *mxerr.Error
		if errors.As(err, &me) && me.Code == mxerr.CodeForbidden {
			// An initial state or override the auth rules refuse.
			return nil, mxerr.New(mxerr.CodeInvalidRoomState, "%s", me.Message)
		}
		return nil, err
	}
	// A room created as the successor of another (a manual upgrade) gets
	// the creator's push rules of the old room.
	if p, ok := req.CreationContent["predecessor"]; ok {
		c.copyPushRules(ctx, dev.UserID, predecessorRoom(jsonObject(p)), res.RoomID)
	}
	if alias != "" {
		if err := c.rooms.SetAlias(ctx, alias, res.RoomID, dev.UserID); err != nil {
			return nil, err
		}
	}
	if req.Visibility == "public" {
		if err := c.rooms.SetPublished(ctx, res.RoomID, true); err != nil {
			return nil, err
		}
	}
	// Users of other servers are invited once the room exists; a failure
	// is logged rather than failing a request whose room was created (a
	// client would retry and create another).
	for _, u := range req.Invite {
		if !c.remoteUser(u) {
			continue
		}
		var extra map[string]any
		if req.IsDirect {
			extra = map[string]any{"is_direct": true}
		}
		if err := c.remoteInvite(ctx, res.RoomID, dev.UserID, u, "", extra); err != nil {
			c.log.Info("could not invite a remote user to a new room", "room_id", res.RoomID, "invitee", u, "error", err.Error())
		}
	}
	c.log.Info("created room", "room_id", res.RoomID, "user_id", dev.UserID, "room_version", version)
	return map[string]string{"room_id": res.RoomID}, nil
}

// creationEvents lists the events of a new room in the order the spec
// requires: create, the creator's join, power levels, canonical alias,
// preset, initial state, name and topic, invites.
func (c *ClientAPI) creationEvents(ctx context.Context, creator string, verImpl gomatrixserverlib.IRoomVersion, req *createRoomRequest, pre preset, alias string) ([]rsapi.ProtoEvent, error) {
	ev := func(typ, stateKey string, content any) rsapi.ProtoEvent {
		return rsapi.ProtoEvent{Sender: creator, Type: typ, StateKey: strPtr(stateKey), Content: jsonObject(content)}
	}
	create := map[string]any{}
	maps.Copy(create, req.CreationContent)
	create["room_version"] = string(verImpl.Version())
	if verImpl.CreatorInCreateEvent() {
		create["creator"] = creator
	} else {
		delete(create, "creator")
	}
	if verImpl.PrivilegedCreators() && pre.invitees100 && len(req.Invite) > 0 {
		extra, _ := create["additional_creators"].([]any)
		for _, u := range req.Invite {
			if u != creator && !slices.Contains(extra, any(u)) {
				extra = append(extra, u)
			}
		}
		create["additional_creators"] = extra
	}
	events := []rsapi.ProtoEvent{ev(spec.MRoomCreate, "", create)}

	join, err := c.memberContent(ctx, creator, rsapi.Join, "")
	if err != nil {
		return nil, err
	}
	events = append(events, ev(spec.MRoomMember, creator, join))

	initial := map[gomatrixserverlib.StateKeyTuple]json.RawMessage{}
	for _, st := range req.InitialState {
		initial[gomatrixserverlib.StateKeyTuple{EventType: st.Type, StateKey: st.StateKey}] = st.Content
	}
	plKey := gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomPowerLevels}
	if content, ok := initial[plKey]; ok {
		events = append(events, rsapi.ProtoEvent{Sender: creator, Type: spec.MRoomPowerLevels, StateKey: strPtr(""), Content: content})
	} else {
		events = append(events, ev(spec.MRoomPowerLevels, "", defaultPowerLevels(creator, verImpl, req, pre)))
	}
	if alias != "" {
		events = append(events, ev(spec.MRoomCanonicalAlias, "", map[string]any{"alias": alias}))
	}
	presetState := []struct {
		typ     string
		content map[string]any
	}{
		{spec.MRoomJoinRules, map[string]any{"join_rule": pre.joinRule}},
		{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": pre.historyVisibility}},
	}
	if pre.guestCanJoin {
		presetState = append(presetState, struct {
			typ     string
			content map[string]any
		}{spec.MRoomGuestAccess, map[string]any{"guest_access": "can_join"}})
	}
	for _, p := range presetState {
		if _, ok := initial[gomatrixserverlib.StateKeyTuple{EventType: p.typ}]; !ok {
			events = append(events, ev(p.typ, "", p.content))
		}
	}
	for _, st := range req.InitialState {
		k := gomatrixserverlib.StateKeyTuple{EventType: st.Type, StateKey: st.StateKey}
		if k == plKey || (req.Name != nil && k.EventType == spec.MRoomName && k.StateKey == "") || (req.Topic != nil && k.EventType == "m.room.topic" && k.StateKey == "") {
			continue
		}
		events = append(events, rsapi.ProtoEvent{Sender: creator, Type: st.Type, StateKey: strPtr(st.StateKey), Content: st.Content})
	}
	if req.Name != nil {
		events = append(events, ev(spec.MRoomName, "", map[string]any{"name": *req.Name}))
	}
	if req.Topic != nil {
		events = append(events, ev("m.room.topic", "", topicContent(*req.Topic)))
	}
	for _, u := range req.Invite {
		if c.remoteUser(u) {
			continue // invited over federation once the room exists
		}
		// An invitee who blocks the creator's invites is left out; the
		// room is made for the others (invite_permission.md).
		if a, err := c.inviteAction(ctx, u, creator); err != nil {
			return nil, err
		} else if a == invitefilter.Block {
			c.log.Info("invite blocked by the invitee", "invitee", u, "user_id", creator)
			continue
		}
		content, err := c.memberContent(ctx, u, rsapi.Invite, "")
		if err != nil {
			return nil, err
		}
		if req.IsDirect {
			content["is_direct"] = true
		}
		events = append(events, ev(spec.MRoomMember, u, content))
	}
	return events, nil
}

// topicContent is an m.room.topic with its m.topic text block (v1.15).
func topicContent(topic string) map[string]any {
	return map[string]any{
		"topic":   topic,
		"m.topic": map[string]any{"m.text": []map[string]string{{"body": topic, "mimetype": "text/plain"}}},
	}
}

// defaultPowerLevels are Synapse's defaults, with the preset's changes and
// the request's override on top. In room versions that privilege creators
// the creator is not listed, and tombstones need more than state_default.
func defaultPowerLevels(creator string, verImpl gomatrixserverlib.IRoomVersion, req *createRoomRequest, pre preset) map[string]any {
	users := map[string]any{}
	tombstone := 100
	if verImpl.PrivilegedCreators() {
		tombstone = 150
	} else {
		users[creator] = 100
		if pre.invitees100 {
			for _, u := range req.Invite {
				users[u] = 100
			}
		}
	}
	pl := map[string]any{
		"users":         users,
		"users_default": 0,
		"events": map[string]any{
			spec.MRoomName:              50,
			spec.MRoomPowerLevels:       100,
			spec.MRoomHistoryVisibility: 100,
			spec.MRoomCanonicalAlias:    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          tombstone,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         pre.invite,
		"historical":     100,
	}
	maps.Copy(pl, req.PowerLevelContentOverride)
	return pl
}

// memberContent is the content of a membership event: joins, invites and
// knocks carry the target's profile, as Synapse does.
func (c *ClientAPI) memberContent(ctx context.Context, userID, membership, reason string) (map[string]any, error) {
	content := map[string]any{"membership": membership}
	if reason != "" {
		content["reason"] = reason
	}
	if membership != rsapi.Join && membership != rsapi.Invite && membership != rsapi.Knock {
		return content, nil
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil || string(uid.Domain()) != c.cfg.ServerName {
		return content, nil
	}
	profile, err := c.users.QueryProfile(ctx, userID)
	if err != nil {
		return content, nil // an unknown local user simply has no profile
	}
	for _, k := range []string{"displayname", "avatar_url"} {
		if v, ok := profile[k]; ok {
			var s string
			if json.Unmarshal(v, &s) == nil {
				content[k] = s
			}
		}
	}
	return content, nil
}

// checkLocalTarget refuses users of other servers when federation is off,
// rather than pretending to reach them.
func (c *ClientAPI) checkLocalTarget(userID string) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return mxerr.InvalidParam("%q is not a valid user ID", userID)
	}
	if string(uid.Domain()) != c.cfg.ServerName {
		return mxerr.Forbidden("Cannot reach %s: this server does not federate", uid.Domain())
	}
	return nil
}
