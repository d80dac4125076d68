package pushrules

import (
	"encoding/json"
	"strings"
)

// IDs of server-default rules the code treats specially.
const (
	ruleMaster              = ".m.rule.master"
	ruleContainsDisplayName = ".m.rule.contains_display_name"
	ruleContainsUserName    = ".m.rule.contains_user_name"
	ruleRoomNotif           = ".m.rule.roomnotif"
)

// Condition kinds.
const (
	kindEventMatch    = "event_match"
	kindPropertyIs    = "event_property_is"
	kindPropContains  = "event_property_contains"
	kindDisplayName   = "contains_display_name"
	kindMemberCount   = "room_member_count"
	kindSenderNotifPL = "sender_notification_permission"
)

// Actions and values of the server-default rules (copied into each rule,
// never handed out).
var (
	actNotify       = json.RawMessage(`"notify"`)
	actSoundDefault = json.RawMessage(`{"set_tweak":"sound","value":"default"}`)
	actSoundRing    = json.RawMessage(`{"set_tweak":"sound","value":"ring"}`)
	actHighlight    = json.RawMessage(`{"set_tweak":"highlight"}`)
	valueTrue       = json.RawMessage(`true`)
)

// Defaults returns the server-default rules for userID, each kind in
// priority order: those of the Matrix spec v1.19 with the content the spec
// gives, and, as Synapse still ships them, the legacy mention rules
// .m.rule.contains_display_name, .m.rule.roomnotif and
// .m.rule.contains_user_name (skipped when an event has "m.mentions"),
// Element's .im.vector.jitsi and the MSC3930 poll rules. Every call
// returns new slices.
func Defaults(userID string) Ruleset {
	return Ruleset{
		Override: []Rule{
			{RuleID: ruleMaster, Default: true, Enabled: false, Conditions: []Condition{}, Actions: actions()},
			defaultRule(".m.rule.suppress_notices", []Condition{match("content.msgtype", "m.notice")}),
			defaultRule(".m.rule.invite_for_me", []Condition{
				match("type", "m.room.member"),
				match("content.membership", "invite"),
				match("state_key", userID),
			}, actNotify, actSoundDefault),
			defaultRule(".m.rule.member_event", []Condition{match("type", "m.room.member")}),
			defaultRule(".m.rule.is_user_mention", []Condition{
				property(kindPropContains, `content.m\.mentions.user_ids`, jsonString(userID)),
			}, actNotify, actSoundDefault, actHighlight),
			defaultRule(ruleContainsDisplayName, []Condition{{Kind: kindDisplayName}},
				actNotify, actSoundDefault, actHighlight),
			defaultRule(".m.rule.is_room_mention", []Condition{
				property(kindPropertyIs, `content.m\.mentions.room`, valueTrue),
				{Kind: kindSenderNotifPL, Key: "room"},
			}, actNotify, actHighlight),
			defaultRule(ruleRoomNotif, []Condition{
				match("content.body", "@room"),
				{Kind: kindSenderNotifPL, Key: "room"},
			}, actNotify, actHighlight),
			defaultRule(".m.rule.tombstone", []Condition{
				match("type", "m.room.tombstone"),
				match("state_key", ""),
			}, actNotify, actHighlight),
			defaultRule(".m.rule.reaction", []Condition{match("type", "m.reaction")}),
			defaultRule(".m.rule.room.server_acl", []Condition{
				match("type", "m.room.server_acl"),
				match("state_key", ""),
			}),
			defaultRule(".m.rule.suppress_edits", []Condition{
				property(kindPropertyIs, `content.m\.relates_to.rel_type`, jsonString("m.replace")),
			}),
			defaultRule(".org.matrix.msc3930.rule.poll_response", []Condition{
				match("type", "org.matrix.msc3381.poll.response"),
			}),
		},
		Content: []Rule{{
			RuleID:  ruleContainsUserName,
			Default: true,
			Enabled: true,
			Pattern: ptr(localpart(userID)),
			Actions: actions(actNotify, actSoundDefault, actHighlight),
		}},
		Room:   []Rule{},
		Sender: []Rule{},
		Underride: []Rule{
			defaultRule(".m.rule.call", []Condition{match("type", "m.call.invite")}, actNotify, actSoundRing),
			defaultRule(".m.rule.encrypted_room_one_to_one", []Condition{
				memberCount("2"),
				match("type", "m.room.encrypted"),
			}, actNotify, actSoundDefault),
			defaultRule(".m.rule.room_one_to_one", []Condition{
				memberCount("2"),
				match("type", "m.room.message"),
			}, actNotify, actSoundDefault),
			defaultRule(".m.rule.message", []Condition{match("type", "m.room.message")}, actNotify),
			defaultRule(".m.rule.encrypted", []Condition{match("type", "m.room.encrypted")}, actNotify),
			defaultRule(".im.vector.jitsi", []Condition{
				match("type", "im.vector.modular.widgets"),
				match("content.type", "jitsi"),
				match("state_key", "*"),
			}, actNotify),
			defaultRule(".org.matrix.msc3930.rule.poll_start_one_to_one", []Condition{
				memberCount("2"),
				match("type", "org.matrix.msc3381.poll.start"),
			}, actNotify, actSoundDefault),
			defaultRule(".org.matrix.msc3930.rule.poll_start", []Condition{
				match("type", "org.matrix.msc3381.poll.start"),
			}, actNotify),
			defaultRule(".org.matrix.msc3930.rule.poll_end_one_to_one", []Condition{
				memberCount("2"),
				match("type", "org.matrix.msc3381.poll.end"),
			}, actNotify, actSoundDefault),
			defaultRule(".org.matrix.msc3930.rule.poll_end", []Condition{
				match("type", "org.matrix.msc3381.poll.end"),
			}, actNotify),
		},
	}
}

// defaultRule is an enabled server-default override or underride rule.
func defaultRule(id string, conds []Condition, acts ...json.RawMessage) Rule {
	return Rule{RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions(acts...)}
}

// actions copies acts into a new, never nil, action list.
func actions(acts ...json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, len(acts))
	for i, a := range acts {
		out[i] = append(json.RawMessage(nil), a...)
	}
	return out
}

func match(key, pattern string) Condition {
	return Condition{Kind: kindEventMatch, Key: key, Pattern: ptr(pattern)}
}

func property(kind, key string, value json.RawMessage) Condition {
	return Condition{Kind: kind, Key: key, Value: append(json.RawMessage(nil), value...)}
}

func memberCount(is string) Condition { return Condition{Kind: kindMemberCount, Is: is} }

func ptr(s string) *string { return &s }

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// localpart returns the localpart of a user ID ("@alice:example.org" →
// "alice").
func localpart(userID string) string {
	s := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	return s
}

// defaultKind returns the kind of the server-default rule ruleID, or ""
// when there is no such rule.
func defaultKind(userID, ruleID string) string {
	if !strings.HasPrefix(ruleID, ".") {
		return ""
	}
	d := Defaults(userID)
	for _, kind := range Kinds {
		for _, r := range *d.kind(kind) {
			if r.RuleID == ruleID {
				return kind
			}
		}
	}
	return ""
}

// kind returns a pointer to the rules of one kind ("" kinds: nil).
func (rs *Ruleset) kind(kind string) *[]Rule {
	switch kind {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	case KindUnderride:
		return &rs.Underride
	}
	return nil
}
