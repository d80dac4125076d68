package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/pushrules"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Push rules: /pushrules. Only the "global" scope exists. Where the spec
// is silent this follows Synapse: an unknown scope, or an unknown kind in
// a GET, is 400 M_UNRECOGNIZED; GET /pushrules/global/{kind}/ lists one
// kind; "enabled" may also be sent as a bare boolean.

// pushRuleError maps the rule engine's errors to Matrix errors.
func pushRuleError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pushrules.ErrNotFound):
		return mxerr.NotFound("%s", err.Error())
	case errors.Is(err, pushrules.ErrInvalid):
		return mxerr.InvalidParam("%s", err.Error())
	case errors.Is(err, pushrules.ErrBadJSON):
		return mxerr.BadJSON("%s", err.Error())
	}
	return err
}

// pushRuleScope checks the {scope} of a route.
func pushRuleScope(r *http.Request) error {
	if s := httputil.Vars(r)["scope"]; s != "global" {
		return mxerr.Unrecognized("Unknown push rule scope %q: only global is supported", s).WithStatus(http.StatusBadRequest)
	}
	return nil
}

// rulesOfKind returns the rules of one kind of a ruleset (nil, false for
// an unknown kind).
func rulesOfKind(rs *pushrules.Ruleset, kind string) ([]pushrules.Rule, bool) {
	switch kind {
	case pushrules.KindOverride:
		return rs.Override, true
	case pushrules.KindContent:
		return rs.Content, true
	case pushrules.KindRoom:
		return rs.Room, true
	case pushrules.KindSender:
		return rs.Sender, true
	case pushrules.KindUnderride:
		return rs.Underride, true
	}
	return nil, false
}

// pushRuleTarget checks the scope and returns the user, kind and rule ID
// of a rule route. knownKind refuses an unknown kind as a GET does.
func pushRuleTarget(r *http.Request, knownKind bool) (userID, kind, ruleID string, err error) {
	if err := pushRuleScope(r); err != nil {
		return "", "", "", err
	}
	vars := httputil.Vars(r)
	kind, ruleID = vars["kind"], vars["ruleId"]
	if knownKind && !slices.Contains(pushrules.Kinds, kind) {
		return "", "", "", mxerr.Unrecognized("Unknown push rule kind %q", kind).WithStatus(http.StatusBadRequest)
	}
	return httputil.DeviceFrom(r.Context()).UserID, kind, ruleID, nil
}

// GET /_matrix/client/v3/pushrules/ (also without the trailing slash)
func (c *ClientAPI) getPushRules(r *http.Request) (any, error) {
	rs, err := c.users.QueryPushRules(r.Context(), httputil.DeviceFrom(r.Context()).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rs}, nil
}

// GET /_matrix/client/v3/pushrules/{scope}/ (also without the trailing slash)
func (c *ClientAPI) getPushRulesScope(r *http.Request) (any, error) {
	if err := pushRuleScope(r); err != nil {
		return nil, err
	}
	return c.users.QueryPushRules(r.Context(), httputil.DeviceFrom(r.Context()).UserID)
}

// GET /_matrix/client/v3/pushrules/{scope}/{kind}/ (Synapse's extension)
func (c *ClientAPI) getPushRulesKind(r *http.Request) (any, error) {
	rules, _, _, err := c.pushRulesOfKind(r, true)
	return rules, err
}

// pushRulesOfKind returns the rules of the route's kind in the caller's
// effective ruleset, and the route's kind and rule ID. An unknown kind is
// a 400 with knownKind, or has no rules.
func (c *ClientAPI) pushRulesOfKind(r *http.Request, knownKind bool) (rules []pushrules.Rule, kind, ruleID string, err error) {
	userID, kind, ruleID, err := pushRuleTarget(r, knownKind)
	if err != nil {
		return nil, "", "", err
	}
	rs, err := c.users.QueryPushRules(r.Context(), userID)
	if err != nil {
		return nil, "", "", err
	}
	rules, _ = rulesOfKind(rs, kind)
	return rules, kind, ruleID, nil
}

// findPushRule returns one rule of the user's effective ruleset.
func (c *ClientAPI) findPushRule(r *http.Request) (*pushrules.Rule, error) {
	// A rule of a kind this server does not have (such as MSC4306's
	// postcontent) does not exist: 404, as clients probing for it expect.
	rules, kind, ruleID, err := c.pushRulesOfKind(r, false)
	if err != nil {
		return nil, err
	}
	for i := range rules {
		if rules[i].RuleID == ruleID {
			return &rules[i], nil
		}
	}
	return nil, mxerr.NotFound("No %s push rule %q", kind, ruleID)
}

// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
func (c *ClientAPI) getPushRule(r *http.Request) (any, error) {
	return c.findPushRule(r)
}

// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled
func (c *ClientAPI) getPushRuleEnabled(r *http.Request) (any, error) {
	rule, err := c.findPushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions
func (c *ClientAPI) getPushRuleActions(r *http.Request) (any, error) {
	rule, err := c.findPushRule(r)
	if err != nil {
		return nil, err
	}
	actions := rule.Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	return map[string]any{"actions": actions}, nil
}

// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
func (c *ClientAPI) putPushRule(r *http.Request) (any, error) {
	userID, kind, ruleID, err := pushRuleTarget(r, false)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(pushrules.Kinds, kind) {
		return nil, mxerr.InvalidParam("Unknown push rule kind %q", kind)
	}
	if strings.ContainsAny(ruleID, `/\`) {
		return nil, mxerr.InvalidParam("A rule ID may not contain slashes")
	}
	if strings.HasPrefix(ruleID, ".") {
		return nil, mxerr.InvalidParam("Rule IDs starting with '.' are reserved for server-default rules")
	}
	var body json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	err = c.users.PutPushRule(r.Context(), userID, kind, ruleID, body, q.Get("before"), q.Get("after"))
	return struct{}{}, pushRuleError(err)
}

// DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
func (c *ClientAPI) deletePushRule(r *http.Request) (any, error) {
	userID, kind, ruleID, err := pushRuleTarget(r, false)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(pushrules.Kinds, kind) {
		return nil, mxerr.NotFound("No %s push rule %q", kind, ruleID)
	}
	return struct{}{}, pushRuleError(c.users.DeletePushRule(r.Context(), userID, kind, ruleID))
}

// pushRuleAttr reads the body of PUT .../enabled and .../actions: an
// object with the field key (or, for enabled, a bare boolean, which
// Synapse accepts from older clients).
func pushRuleAttr(r *http.Request, key string) (json.RawMessage, error) {
	b, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if t := strings.TrimSpace(string(b)); key == "enabled" && (t == "true" || t == "false") {
		return json.RawMessage(t), nil
	}
	var m map[string]json.RawMessage
	if err := httputil.UnmarshalObject(b, &m); err != nil {
		return nil, err
	}
	v, ok := m[key]
	if !ok {
		return nil, mxerr.MissingParam("Missing %s", key)
	}
	return v, nil
}

// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled
func (c *ClientAPI) putPushRuleEnabled(r *http.Request) (any, error) {
	userID, kind, ruleID, err := pushRuleTarget(r, false)
	if err != nil {
		return nil, err
	}
	v, err := pushRuleAttr(r, "enabled")
	if err != nil {
		return nil, err
	}
	var enabled *bool
	if err := json.Unmarshal(v, &enabled); err != nil || enabled == nil {
		return nil, mxerr.BadJSON("enabled must be a boolean")
	}
	if !slices.Contains(pushrules.Kinds, kind) {
		return nil, mxerr.NotFound("No %s push rule %q", kind, ruleID)
	}
	return struct{}{}, pushRuleError(c.users.SetPushRuleEnabled(r.Context(), userID, kind, ruleID, *enabled))
}

// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions
func (c *ClientAPI) putPushRuleActions(r *http.Request) (any, error) {
	userID, kind, ruleID, err := pushRuleTarget(r, false)
	if err != nil {
		return nil, err
	}
	v, err := pushRuleAttr(r, "actions")
	if err != nil {
		return nil, err
	}
	var actions []json.RawMessage
	if err := json.Unmarshal(v, &actions); err != nil || actions == nil {
		return nil, mxerr.BadJSON("actions must be an array")
	}
	if !slices.Contains(pushrules.Kinds, kind) {
		return nil, mxerr.NotFound("No %s push rule %q", kind, ruleID)
	}
	return struct{}{}, pushRuleError(c.users.SetPushRuleActions(r.Context(), userID, kind, ruleID, actions))
}

// copyPushRulesAfterJoin gives a local user who joined a room that
// replaces another (its m.room.create names a predecessor: a room upgrade,
// by /upgrade or by hand) their push rules of the old room, as Synapse
// does. A failure is logged: the join stands.
func (c *ClientAPI) copyPushRulesAfterJoin(ctx context.Context, userID, roomID string) {
	create, err := c.currentEvent(ctx, roomID, spec.MRoomCreate, "")
	if err != nil || create == nil {
		if err != nil {
			c.log.Warn("push rules of an upgraded room: reading the create event failed", "room_id", roomID, "error", err.Error())
		}
		return
	}
	var content struct {
		Predecessor json.RawMessage `json:"predecessor"`
	}
	_ = json.Unmarshal(create.Content(), &content)
	c.copyPushRules(ctx, userID, predecessorRoom(content.Predecessor), roomID)
}

// predecessorRoom is the room_id of an m.room.create predecessor ("" when
// there is none or it is malformed).
func predecessorRoom(predecessor json.RawMessage) string {
	var p struct {
		RoomID string `json:"room_id"`
	}
	if json.Unmarshal(predecessor, &p) != nil {
		return ""
	}
	if _, err := spec.NewRoomID(p.RoomID); err != nil {
		return ""
	}
	return p.RoomID
}

// copyPushRules copies a user's push rules of oldID to newID (nothing
// when oldID is "").
func (c *ClientAPI) copyPushRules(ctx context.Context, userID, oldID, newID string) {
	if oldID == "" || oldID == newID {
		return
	}
	if err := c.users.CopyRoomPushRules(ctx, userID, oldID, newID); err != nil {
		c.log.Warn("copying push rules to an upgraded room failed", "room_id", newID, "predecessor", oldID, "error", err.Error())
	}
}

// Pushers: /pushers.

// Bounds of the spec on a pusher's identity.
const (
	maxAppIDChars    = 64
	maxPushKeyBytes  = 512
	pushGatewayPath  = "/_matrix/push/v1/notify"
	pushFormatIDOnly = "event_id_only"
)

// pusherResponse is a pusher as GET /pushers lists it.
type pusherResponse struct {
	AppDisplayName    string          `json:"app_display_name"`
	AppID             string          `json:"app_id"`
	Data              json.RawMessage `json:"data"`
	DeviceDisplayName string          `json:"device_display_name"`
	Kind              string          `json:"kind"`
	Lang              string          `json:"lang"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	PushKey           string          `json:"pushkey"`
}

// GET /_matrix/client/v3/pushers
func (c *ClientAPI) getPushers(r *http.Request) (any, error) {
	userID := httputil.DeviceFrom(r.Context()).UserID
	byUser, err := c.users.QueryPushers(r.Context(), []string{userID})
	if err != nil {
		return nil, err
	}
	out := []pusherResponse{}
	for _, p := range byUser[userID] {
		out = append(out, pusherResponse{
			AppDisplayName: p.AppDisplayName, AppID: p.AppID, Data: p.Data, DeviceDisplayName: p.DeviceDisplayName,
			Kind: p.Kind, Lang: p.Lang, ProfileTag: p.ProfileTag, PushKey: p.PushKey,
		})
	}
	return map[string]any{"pushers": out}, nil
}

// pusherFields reads the fields of a POST /pushers/set body.
type pusherFields map[string]json.RawMessage

// present reports whether a field is set to something other than null.
func (f pusherFields) present(key string) bool {
	v, ok := f[key]
	return ok && string(v) != "null"
}

// str returns a string field ("" when absent).
func (f pusherFields) str(key string) (string, error) {
	if !f.present(key) {
		return "", nil
	}
	var s string
	if json.Unmarshal(f[key], &s) != nil {
		return "", mxerr.BadJSON("%s must be a string", key)
	}
	return s, nil
}

// missing lists the absent fields of keys.
func (f pusherFields) missing(keys ...string) error {
	var absent []string
	for _, k := range keys {
		if !f.present(k) {
			absent = append(absent, k)
		}
	}
	if len(absent) > 0 {
		return mxerr.MissingParam("Missing parameters: %s", strings.Join(absent, ", "))
	}
	return nil
}

// POST /_matrix/client/v3/pushers/set
func (c *ClientAPI) postPushersSet(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	var f pusherFields
	if err := httputil.DecodeJSON(r, &f); err != nil {
		return nil, err
	}
	if kind, ok := f["kind"]; ok && string(kind) == "null" {
		// kind null deletes the pusher.
		if err := f.missing("app_id", "pushkey"); err != nil {
			return nil, err
		}
		appID, err := f.str("app_id")
		if err != nil {
			return nil, err
		}
		pushKey, err := f.str("pushkey")
		if err != nil {
			return nil, err
		}
		return struct{}{}, c.users.DeletePusher(ctx, dev.UserID, appID, pushKey)
	}
	if err := f.missing("kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang", "data"); err != nil {
		return nil, err
	}
	p := userapi.Pusher{UserID: dev.UserID, DeviceID: dev.DeviceID}
	for _, field := range []struct {
		key string
		dst *string
	}{
		{"kind", &p.Kind}, {"app_id", &p.AppID}, {"app_display_name", &p.AppDisplayName},
		{"device_display_name", &p.DeviceDisplayName}, {"pushkey", &p.PushKey}, {"lang", &p.Lang}, {"profile_tag", &p.ProfileTag},
	} {
		v, err := f.str(field.key)
		if err != nil {
			return nil, err
		}
		*field.dst = v
	}
	var appendPusher bool
	if f.present("append") && json.Unmarshal(f["append"], &appendPusher) != nil {
		return nil, mxerr.BadJSON("append must be a boolean")
	}
	data := f["data"]
	var dataObj map[string]json.RawMessage
	if t := strings.TrimSpace(string(data)); !strings.HasPrefix(t, "{") || json.Unmarshal(data, &dataObj) != nil {
		return nil, mxerr.BadJSON("data must be an object")
	}
	p.Data = data
	if err := checkPusher(&p, pusherFields(dataObj)); err != nil {
		return nil, err
	}
	return struct{}{}, c.users.SetPusher(ctx, p, appendPusher)
}

// checkPusher validates a pusher to set: its identity's bounds, its kind
// (only http: this server sends no email) and an http pusher's data.
func checkPusher(p *userapi.Pusher, data pusherFields) error {
	switch {
	case p.AppID == "":
		return mxerr.InvalidParam("app_id must not be empty")
	case utf8.RuneCountInString(p.AppID) > maxAppIDChars:
		return mxerr.InvalidParam("app_id is longer than %d characters", maxAppIDChars)
	case p.PushKey == "":
		return mxerr.InvalidParam("pushkey must not be empty")
	case len(p.PushKey) > maxPushKeyBytes:
		return mxerr.InvalidParam("pushkey is longer than %d bytes", maxPushKeyBytes)
	}
	switch p.Kind {
	case "http":
	case "email":
		return mxerr.InvalidParam("Email pushers are not supported: this server does not send email notifications")
	default:
		return mxerr.InvalidParam("Unknown pusher kind %q: only http is supported", p.Kind)
	}
	if !data.present("url") {
		return mxerr.MissingParam("data.url is required for an http pusher")
	}
	raw, err := data.str("url")
	if err != nil {
		return mxerr.InvalidParam("data.url must be a string")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return mxerr.InvalidParam("data.url must be an absolute http or https URL")
	}
	if u.Path != pushGatewayPath {
		return mxerr.InvalidParam("data.url must have the path %s", pushGatewayPath)
	}
	if data.present("format") {
		if format, err := data.str("format"); err != nil || format != pushFormatIDOnly {
			return mxerr.InvalidParam("data.format must be %q when set", pushFormatIDOnly)
		}
	}
	return nil
}
