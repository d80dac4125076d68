package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// upgradeCopiedState is the state an upgrade carries over (Synapse's list).
var upgradeCopiedState = []string{
	spec.MRoomJoinRules, spec.MRoomName, "m.room.topic", spec.MRoomHistoryVisibility, spec.MRoomGuestAccess,
	"m.room.avatar", "m.room.encryption", "m.room.server_acl",
}

// POST /_matrix/client/v3/rooms/{roomId}/upgrade
func (c *ClientAPI) postUpgrade(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	oldID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		NewVersion         string   `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == "" {
		return nil, mxerr.MissingParam("Missing new_version")
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(body.NewVersion))
	if err != nil || !rsapi.SupportedRoomVersion(verImpl.Version()) {
		return nil, mxerr.New(mxerr.CodeUnsupportedRoomVersion, "Room version %s is not supported", body.NewVersion)
	}
	for _, u := range body.AdditionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, mxerr.InvalidParam("%q is not a valid user ID", u)
		}
	}
	if _, err := c.roomInfo(ctx, oldID); err != nil {
		return nil, err
	}
	if m, err := c.rooms.QueryMembership(ctx, oldID, dev.UserID); err != nil {
		return nil, err
	} else if m.Membership != rsapi.Join {
		return nil, mxerr.Forbidden("You are not in the room")
	}
	pl, err := c.powerLevels(ctx, oldID)
	if err != nil {
		return nil, err
	}
	if pl.UserLevel(dev.UserID) < pl.EventLevel("m.room.tombstone", true) {
		return nil, mxerr.Forbidden("You don't have permission to upgrade the room")
	}
	oldState, err := c.rooms.QueryCurrentState(ctx, oldID)
	if err != nil {
		return nil, err
	}
	latest, err := c.rooms.QueryLatestEvents(ctx, oldID)
	if err != nil {
		return nil, err
	}
	events, err := c.upgradeEvents(ctx, dev.UserID, oldID, latest, verImpl, body.AdditionalCreators, oldState)
	if err != nil {
		return nil, err
	}
	res, err := c.submit(ctx, "", &rsapi.LocalInput{CreateVersion: body.NewVersion, Events: events})
	if err != nil {
		return nil, err
	}
	newID := res.RoomID
	c.copyPushRules(ctx, dev.UserID, oldID, newID)

	tombstone := rsapi.ProtoEvent{Sender: dev.UserID, Type: "m.room.tombstone", StateKey: strPtr(""),
		Content: jsonObject(map[string]any{"body": "This room has been replaced", "replacement_room": newID})}
	if _, err := c.send(ctx, oldID, tombstone, rsapi.LocalInput{}); err != nil {
		return nil, err
	}
	c.moveAliases(ctx, dev.UserID, oldID, newID, oldState)
	c.restrictOldRoom(ctx, dev.UserID, oldID, oldState)
	if published, err := c.rooms.QueryPublished(ctx, oldID); err == nil && published {
		if err := c.rooms.SetPublished(ctx, newID, true); err != nil {
			return nil, err
		}
		if err := c.rooms.SetPublished(ctx, oldID, false); err != nil {
			return nil, err
		}
	}
	c.log.Info("upgraded room", "room_id", oldID, "replacement_room", newID, "room_version", body.NewVersion)
	return map[string]string{"replacement_room": newID}, nil
}

// upgradeEvents builds the new room: its create event pointing back at the
// old room, the upgrader's join, the copied state and power levels, and
// the bans.
func (c *ClientAPI) upgradeEvents(ctx context.Context, upgrader, oldID string, latest []string, verImpl gomatrixserverlib.IRoomVersion,
	additional []string, oldState []gomatrixserverlib.PDU) ([]rsapi.ProtoEvent, error) {
	byKey := map[string]gomatrixserverlib.PDU{}
	for _, p := range oldState {
		if p.StateKeyEquals("") {
			byKey[p.Type()] = p
		}
	}
	create := map[string]any{}
	if old := byKey[spec.MRoomCreate]; old != nil {
		var oc map[string]any
		_ = json.Unmarshal(old.Content(), &oc)
		for _, k := range []string{"type", "m.federate"} {
			if v, ok := oc[k]; ok {
				create[k] = v
			}
		}
	}
	create["room_version"] = string(verImpl.Version())
	predecessor := map[string]any{"room_id": oldID}
	if !verImpl.PrivilegedCreators() && len(latest) > 0 {
		predecessor["event_id"] = latest[0]
	}
	create["predecessor"] = predecessor
	creators := map[string]bool{upgrader: verImpl.PrivilegedCreators()}
	if verImpl.CreatorInCreateEvent() {
		create["creator"] = upgrader
	}
	if verImpl.PrivilegedCreators() && len(additional) > 0 {
		create["additional_creators"] = additional
		for _, u := range additional {
			creators[u] = true
		}
	}
	ev := func(typ, stateKey string, content json.RawMessage) rsapi.ProtoEvent {
		return rsapi.ProtoEvent{Sender: upgrader, Type: typ, StateKey: strPtr(stateKey), Content: content}
	}
	join, err := c.memberContent(ctx, upgrader, rsapi.Join, "")
	if err != nil {
		return nil, err
	}
	events := []rsapi.ProtoEvent{ev(spec.MRoomCreate, "", jsonObject(create)), ev(spec.MRoomMember, upgrader, jsonObject(join))}

	// The old power levels, without the creators of the new room where
	// they are privileged. The upgrader may lack the power to send the
	// copied state: then they hold it until the real levels are set last.
	var plContent map[string]any
	if p := byKey[spec.MRoomPowerLevels]; p != nil {
		_ = json.Unmarshal(p.Content(), &plContent)
	}
	if plContent == nil {
		plContent = map[string]any{}
	}
	integerLevels(plContent)
	users, _ := plContent["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	for u, privileged := range creators {
		if privileged {
			delete(users, u)
		}
	}
	plContent["users"] = users
	final := jsonObject(plContent)
	temporary := false
	if !creators[upgrader] {
		needed := neededPower(plContent)
		if lvl, ok := users[upgrader].(float64); !ok || lvl < needed {
			boosted := map[string]any{}
			for k, v := range users {
				boosted[k] = v
			}
			boosted[upgrader] = needed
			tmp := map[string]any{}
			for k, v := range plContent {
				tmp[k] = v
			}
			tmp["users"] = boosted
			events = append(events, ev(spec.MRoomPowerLevels, "", jsonObject(tmp)))
			temporary = true
		}
	}
	if !temporary {
		events = append(events, ev(spec.MRoomPowerLevels, "", final))
	}
	for _, typ := range upgradeCopiedState {
		if p := byKey[typ]; p != nil {
			events = append(events, ev(typ, "", json.RawMessage(p.Content())))
		}
	}
	for _, p := range oldState {
		if m, _ := p.Membership(); p.Type() == spec.MRoomMember && m == rsapi.Ban {
			events = append(events, ev(spec.MRoomMember, *p.StateKey(), jsonObject(map[string]any{"membership": rsapi.Ban})))
		}
	}
	if temporary {
		events = append(events, ev(spec.MRoomPowerLevels, "", final))
	}
	return events, nil
}

// integerLevels turns the levels of power levels content given as strings
// of integers (which room versions before 10 accept) into numbers, as
// Synapse does when it copies power levels into an upgraded room: room
// versions 10 and later take only integers.
func integerLevels(pl map[string]any) {
	number := func(v any) any {
		if s, ok := v.(string); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
				return float64(n)
			}
		}
		return v
	}
	for k, v := range pl {
		if m, ok := v.(map[string]any); ok {
			for k1, v1 := range m {
				m[k1] = number(v1)
			}
		} else {
			pl[k] = number(v)
		}
	}
}

// neededPower is the level that lets the upgrader send everything an
// upgrade copies: the power levels, the copied state and the bans.
func neededPower(pl map[string]any) float64 {
	level := func(v any, def float64) float64 {
		if f, ok := v.(float64); ok {
			return f
		}
		return def
	}
	needed := max(100, level(pl["state_default"], 50), level(pl["ban"], 50))
	events, _ := pl["events"].(map[string]any)
	for _, typ := range append([]string{spec.MRoomPowerLevels}, upgradeCopiedState...) {
		needed = max(needed, level(events[typ], 0))
	}
	return needed
}

// moveAliases points the old room's local aliases at the new room and
// moves the canonical alias over.
func (c *ClientAPI) moveAliases(ctx context.Context, userID, oldID, newID string, oldState []gomatrixserverlib.PDU) {
	aliases, err := c.rooms.QueryAliasesForRoom(ctx, oldID)
	if err != nil {
		c.log.Warn("upgrade: listing aliases failed", "room_id", oldID, "error", err.Error())
		return
	}
	for _, a := range aliases {
		_, creator, err := c.rooms.RemoveAlias(ctx, a)
		if err == nil {
			err = c.rooms.SetAlias(ctx, a, newID, creator)
		}
		if err != nil && !errors.Is(err, rsapi.ErrAliasNotFound) {
			c.log.Warn("upgrade: moving an alias failed", "alias", a, "error", err.Error())
		}
	}
	for _, p := range oldState {
		if p.Type() != spec.MRoomCanonicalAlias || !p.StateKeyEquals("") {
			continue
		}
		if _, err := c.send(ctx, newID, rsapi.ProtoEvent{Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: strPtr(""), Content: json.RawMessage(p.Content())}, rsapi.LocalInput{}); err != nil {
			c.log.Info("upgrade: could not copy the canonical alias", "room_id", newID, "error", err.Error())
		}
		if _, err := c.send(ctx, oldID, rsapi.ProtoEvent{Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: strPtr(""), Content: json.RawMessage(`{}`)}, rsapi.LocalInput{}); err != nil {
			c.log.Info("upgrade: could not clear the old canonical alias", "room_id", oldID, "error", err.Error())
		}
	}
}

// restrictOldRoom stops ordinary members from talking or inviting in the
// old room, as Synapse does.
func (c *ClientAPI) restrictOldRoom(ctx context.Context, userID, oldID string, oldState []gomatrixserverlib.PDU) {
	for _, p := range oldState {
		if p.Type() != spec.MRoomPowerLevels || !p.StateKeyEquals("") {
			continue
		}
		var content map[string]any
		if json.Unmarshal(p.Content(), &content) != nil {
			return
		}
		usersDefault, _ := content["users_default"].(float64)
		restricted := max(50, usersDefault+1)
		changed := false
		for _, k := range []string{"events_default", "invite"} {
			if cur, _ := content[k].(float64); cur < restricted {
				content[k] = restricted
				changed = true
			}
		}
		if !changed {
			return
		}
		if _, err := c.send(ctx, oldID, rsapi.ProtoEvent{Sender: userID, Type: spec.MRoomPowerLevels, StateKey: strPtr(""), Content: jsonObject(content)}, rsapi.LocalInput{}); err != nil {
			c.log.Info("upgrade: could not restrict the old room", "room_id", oldID, "error", err.Error())
		}
	}
}
