package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// The user directory (POST /user_directory/search) finds the users who
// share a room with the searcher or are in a public room, by user ID or
// display name, as Synapse's does by default. What it shows of a local
// user is their global profile (from the user API's profile updates), never
// a name they took in one room; of another server's user, the profile of
// their latest join this server saw.

// noteDirectory keeps the directory current with state rows that took
// effect: joins bring users (and, for other servers' users, their
// profile), join rules make rooms public or not.
func (s *SyncAPI) noteDirectory(ctx context.Context, tx *sqlutil.Tx, roomID string, rows []*storage.StateRow) error {
	var local, remote []storage.DirectoryUser
	for _, r := range rows {
		switch {
		case r.Type == spec.MRoomJoinRules && r.StateKey == "":
			if err := storage.SetPublicRoom(ctx, tx, roomID, gjson.GetBytes(r.JSON, "content.join_rule").Str == spec.Public); err != nil {
				return err
			}
		case r.Type == spec.MRoomMember && r.Membership == spec.Join:
			u := storage.DirectoryUser{UserID: r.StateKey}
			if v := gjson.GetBytes(r.JSON, "content.displayname"); v.Type == gjson.String {
				u.DisplayName = &v.Str
			}
			if v := gjson.GetBytes(r.JSON, "content.avatar_url"); v.Type == gjson.String {
				u.AvatarURL = &v.Str
			}
			if s.isLocal(r.StateKey) {
				local = append(local, u)
			} else {
				remote = append(remote, u)
			}
		}
	}
	if err := storage.UpsertDirectoryUsers(ctx, tx, local, false); err != nil {
		return err
	}
	return storage.UpsertDirectoryUsers(ctx, tx, remote, true)
}

// onProfileUpdate puts a local user's new display name or avatar in the
// directory.
func (s *SyncAPI) onProfileUpdate(ctx context.Context, m *bus.Msg) error {
	var u userapi.ProfileUpdate
	if err := json.Unmarshal(m.Data, &u); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable profile update: %w", err))
	}
	var value *string
	var str string
	if len(u.Value) > 0 && json.Unmarshal(u.Value, &str) == nil {
		value = &str
	}
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.SetDirectoryField(ctx, tx, u.UserID, u.Key, value); err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, userOutputConsumer, m.Seq)
	})
	if err == nil {
		s.applied.userOutput.Store(m.Seq)
	}
	return err
}

const (
	defaultDirectoryLimit = 10
	maxDirectoryLimit     = 500
)

// POST /_matrix/client/v3/user_directory/search
func (s *SyncAPI) postUserDirectorySearch(r *http.Request) (any, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, mxerr.MissingParam("Missing search_term")
	}
	limit := defaultDirectoryLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, mxerr.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, maxDirectoryLimit)
	}
	users, err := storage.SearchUserDirectory(r.Context(), s.store.DB(), httputil.DeviceFrom(r.Context()).UserID, *req.SearchTerm, limit+1)
	if err != nil {
		return nil, err
	}
	type result struct {
		UserID      string  `json:"user_id"`
		DisplayName *string `json:"display_name,omitempty"`
		AvatarURL   *string `json:"avatar_url,omitempty"`
	}
	results := make([]result, 0, min(len(users), limit))
	for i, u := range users {
		if i == limit {
			break
		}
		results = append(results, result{UserID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL})
	}
	return map[string]any{"results": results, "limited": len(users) > limit}, nil
}
