package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/userapi/api"
)

var profileKeyPattern = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// Limits on profile fields, as Synapse has them.
const (
	maxProfileKeyBytes    = 255
	maxDisplayNameLength  = 256
	maxAvatarURLLength    = 1000
	profileCodeTooLarge   = "M_PROFILE_TOO_LARGE"
	profileCodeKeyTooLong = "M_KEY_TOO_LARGE"
)

// profileUser parses the {userId} of a profile route and reports whether
// the user is another server's (remote profiles come over federation;
// without federation they are not found).
func (c *ClientAPI) profileUser(r *http.Request) (string, bool, error) {
	uid, err := spec.NewUserID(httputil.Vars(r)["userId"], true)
	if err != nil {
		return "", false, mxerr.InvalidParam("Invalid user ID")
	}
	if c.isRemote(uid.Domain()) {
		if c.fed == nil {
			return "", false, mxerr.NotFound("Profile not found")
		}
		return uid.String(), true, nil
	}
	return uid.String(), false, nil
}

// GET /_matrix/client/v3/profile/{userId}
func (c *ClientAPI) getProfile(r *http.Request) (any, error) {
	userID, remote, err := c.profileUser(r)
	if err != nil {
		return nil, err
	}
	if remote {
		return c.remoteProfile(r.Context(), userID, "")
	}
	p, err := c.queryProfile(r.Context(), userID)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("Profile not found")
	}
	return p, err
}

// GET /_matrix/client/v3/profile/{userId}/{keyName}
func (c *ClientAPI) getProfileField(r *http.Request) (any, error) {
	userID, remote, err := c.profileUser(r)
	if err != nil {
		return nil, err
	}
	key := httputil.Vars(r)["keyName"]
	if err := checkProfileKey(key); err != nil {
		return nil, err
	}
	if remote {
		return c.remoteProfile(r.Context(), userID, key)
	}
	p, err := c.queryProfile(r.Context(), userID)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	v, ok := p[key]
	if !ok {
		return nil, mxerr.NotFound("Profile field %s is not set", key)
	}
	return map[string]json.RawMessage{key: v}, nil
}

// ownProfileKey checks that the caller edits their own profile and that the
// key is one clients may set.
func (c *ClientAPI) ownProfileKey(r *http.Request) (string, string, error) {
	dev := httputil.DeviceFrom(r.Context())
	vars := httputil.Vars(r)
	if vars["userId"] != dev.UserID {
		return "", "", mxerr.Forbidden("Cannot change the profile of another user")
	}
	key := vars["keyName"]
	if err := checkProfileKey(key); err != nil {
		return "", "", err
	}
	return dev.UserID, key, nil
}

// checkProfileKey checks a {keyName} against the spec's grammar.
func checkProfileKey(key string) error {
	if len(key) > maxProfileKeyBytes {
		return mxerr.New(profileCodeKeyTooLong, "Profile keys are at most %d bytes", maxProfileKeyBytes)
	}
	if !profileKeyPattern.MatchString(key) {
		return mxerr.InvalidParam("Invalid profile key %q", key)
	}
	return nil
}

// PUT /_matrix/client/v3/profile/{userId}/{keyName}
func (c *ClientAPI) putProfileField(r *http.Request) (any, error) {
	userID, key, err := c.ownProfileKey(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	value, ok := body[key]
	if !ok {
		return nil, mxerr.MissingParam("Missing key %s", key)
	}
	switch key {
	case "displayname", "avatar_url", "m.tz":
		var sp *string
		if err := json.Unmarshal(value, &sp); err != nil || sp == nil {
			return nil, mxerr.BadJSON("%s must be a string", key)
		}
		s := *sp
		switch {
		case key == "displayname" && utf8.RuneCountInString(s) > maxDisplayNameLength:
			return nil, mxerr.InvalidParam("Display name is too long (%d characters at most)", maxDisplayNameLength)
		case key == "avatar_url" && len(s) > maxAvatarURLLength:
			return nil, mxerr.InvalidParam("Avatar URL is too long (%d characters at most)", maxAvatarURLLength)
		}
		if s == "" && key != "m.tz" {
			// Clients clear their name or avatar by setting it empty.
			if err := c.users.DeleteProfileField(r.Context(), userID, key); err != nil {
				return nil, err
			}
			c.propagateProfile(r.Context(), userID, key)
			return struct{}{}, nil
		}
	}
	err = c.users.SetProfileField(r.Context(), userID, key, value)
	if errors.Is(err, api.ErrProfileTooLarge) {
		return nil, mxerr.New(profileCodeTooLarge, "The profile would exceed %d bytes", api.MaxProfileBytes)
	}
	if err != nil {
		return nil, err
	}
	c.propagateProfile(r.Context(), userID, key)
	return struct{}{}, nil
}

// propagateProfile updates the user's member events in the rooms they are
// in after a change of display name or avatar, as Synapse does. A room
// that refuses the update is logged and skipped.
func (c *ClientAPI) propagateProfile(ctx context.Context, userID, key string) {
	if key != "displayname" && key != "avatar_url" {
		return
	}
	rooms, err := c.rooms.QueryRoomsForUser(ctx, userID, rsapi.Join)
	if err != nil {
		c.log.Warn("profile propagation: listing rooms failed", "user_id", userID, "error", err.Error())
		return
	}
	// The new member content is the join with the profile, as Synapse
	// rebuilds it.
	content, err := c.memberContent(ctx, userID, rsapi.Join, "")
	if err != nil {
		return
	}
	for _, m := range rooms {
		if _, err := c.send(ctx, m.RoomID, rsapi.ProtoEvent{Sender: userID, Type: spec.MRoomMember, StateKey: strPtr(userID), Content: jsonObject(content)},
			rsapi.LocalInput{SkipUnchangedState: true}); err != nil {
			c.log.Info("profile propagation: room refused the update", "room_id", m.RoomID, "user_id", userID, "error", err.Error())
		}
	}
}

// DELETE /_matrix/client/v3/profile/{userId}/{keyName}
func (c *ClientAPI) deleteProfileField(r *http.Request) (any, error) {
	userID, key, err := c.ownProfileKey(r)
	if err != nil {
		return nil, err
	}
	if err := c.users.DeleteProfileField(r.Context(), userID, key); err != nil {
		return nil, err
	}
	c.propagateProfile(r.Context(), userID, key)
	return struct{}{}, nil
}
