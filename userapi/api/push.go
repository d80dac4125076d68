package api

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/internal/pushrules"
)

// Pusher is a pusher as POST /pushers/set takes it and GET /pushers lists
// it. DeviceID is the device whose access token created it: the pusher
// goes with that device.
type Pusher struct {
	UserID            string          `json:"user_id"`
	DeviceID          string          `json:"device_id"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	PushKey           string          `json:"pushkey"`
	Data              json.RawMessage `json:"data"`
	CreatedTS         int64           `json:"created_ts"`
}

// PushRulesAPI manages push rules. Every change is announced as the
// global account data m.push_rules (content {"global": ruleset}).
//
// The edits fail with errors wrapping pushrules.ErrNotFound,
// pushrules.ErrInvalid or pushrules.ErrBadJSON.
type PushRulesAPI interface {
	// QueryPushRules returns the user's effective global ruleset.
	QueryPushRules(ctx context.Context, userID string) (*pushrules.Ruleset, error)
	PutPushRule(ctx context.Context, userID, kind, ruleID string, body json.RawMessage, before, after string) error
	DeletePushRule(ctx context.Context, userID, kind, ruleID string) error
	SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error
	SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error
	// CopyRoomPushRules copies the user's rules of oldRoomID to newRoomID
	// (a room upgrade); nothing happens when there are none.
	CopyRoomPushRules(ctx context.Context, userID, oldRoomID, newRoomID string) error
}

// PushersAPI manages pushers. Every change is announced on UserOutput
// (SubjectPushers).
type PushersAPI interface {
	// SetPusher creates or replaces the user's pusher with p's app ID and
	// push key; without appendPusher it also deletes the pushers of other
	// users with the same app ID and push key.
	SetPusher(ctx context.Context, p Pusher, appendPusher bool) error
	// DeletePusher deletes a pusher; an unknown one is no error.
	DeletePusher(ctx context.Context, userID, appID, pushKey string) error
	// QueryPushers lists the pushers of each user (users without pushers
	// are absent from the map).
	QueryPushers(ctx context.Context, userIDs []string) (map[string][]Pusher, error)
}

// SubjectPushers carries PushersUpdate.
const SubjectPushers = "UserOutput.pushers"

// PushersUpdate: the pushers of a user changed.
type PushersUpdate struct {
	V      int    `json:"v"`
	UserID string `json:"user_id"`
}
