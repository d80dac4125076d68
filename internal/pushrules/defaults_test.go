package pushrules

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const alice = "@alice:example.org"

// specRules are definitions copied from the Matrix spec v1.19 (push
// module, "Predefined Rules"); "[the user's Matrix ID]" stands for the
// user.
var specRules = map[string]string{
	".m.rule.master": `{
		"rule_id": ".m.rule.master", "default": true, "enabled": false,
		"conditions": [], "actions": []}`,
	".m.rule.suppress_notices": `{
		"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
		"actions": []}`,
	".m.rule.invite_for_me": `{
		"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
		"conditions": [
			{"key": "type", "kind": "event_match", "pattern": "m.room.member"},
			{"key": "content.membership", "kind": "event_match", "pattern": "invite"},
			{"key": "state_key", "kind": "event_match", "pattern": "[the user's Matrix ID]"}
		],
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
	".m.rule.is_user_mention": `{
		"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
		"conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "[the user's Matrix ID]"}],
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}`,
	".m.rule.is_room_mention": `{
		"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
		"conditions": [
			{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
			{"kind": "sender_notification_permission", "key": "room"}
		],
		"actions": ["notify", {"set_tweak": "highlight"}]}`,
	".m.rule.tombstone": `{
		"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
		"conditions": [
			{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
			{"kind": "event_match", "key": "state_key", "pattern": ""}
		],
		"actions": ["notify", {"set_tweak": "highlight"}]}`,
	".m.rule.room.server_acl": `{
		"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
		"conditions": [
			{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
			{"kind": "event_match", "key": "state_key", "pattern": ""}
		],
		"actions": []}`,
	".m.rule.suppress_edits": `{
		"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
		"conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
		"actions": []}`,
	".m.rule.call": `{
		"rule_id": ".m.rule.call", "default": true, "enabled": true,
		"conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}],
		"actions": ["notify", {"set_tweak": "sound", "value": "ring"}]}`,
	".m.rule.encrypted_room_one_to_one": `{
		"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
		"conditions": [
			{"kind": "room_member_count", "is": "2"},
			{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}
		],
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
	".m.rule.message": `{
		"rule_id": ".m.rule.message", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
		"actions": ["notify"]}`,
	".m.rule.encrypted": `{
		"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
		"actions": ["notify"]}`,
	// Rules no longer in the spec that Synapse ships (spec v1.16 and
	// Complement's TestPollsLocalPushRules).
	".m.rule.contains_user_name": `{
		"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
		"pattern": "alice",
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}`,
	".m.rule.roomnotif": `{
		"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
		"conditions": [
			{"kind": "event_match", "key": "content.body", "pattern": "@room"},
			{"kind": "sender_notification_permission", "key": "room"}
		],
		"actions": ["notify", {"set_tweak": "highlight"}]}`,
	".org.matrix.msc3930.rule.poll_response": `{
		"rule_id": ".org.matrix.msc3930.rule.poll_response", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.response"}],
		"actions": []}`,
	".org.matrix.msc3930.rule.poll_start_one_to_one": `{
		"rule_id": ".org.matrix.msc3930.rule.poll_start_one_to_one", "default": true, "enabled": true,
		"conditions": [
			{"kind": "room_member_count", "is": "2"},
			{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.start"}
		],
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
	".org.matrix.msc3930.rule.poll_end_one_to_one": `{
		"rule_id": ".org.matrix.msc3930.rule.poll_end_one_to_one", "default": true, "enabled": true,
		"conditions": [
			{"kind": "room_member_count", "is": "2"},
			{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.end"}
		],
		"actions": ["notify", {"set_tweak": "sound", "value": "default"}]}`,
	".org.matrix.msc3930.rule.poll_start": `{
		"rule_id": ".org.matrix.msc3930.rule.poll_start", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.start"}],
		"actions": ["notify"]}`,
	".org.matrix.msc3930.rule.poll_end": `{
		"rule_id": ".org.matrix.msc3930.rule.poll_end", "default": true, "enabled": true,
		"conditions": [{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.end"}],
		"actions": ["notify"]}`,
}

// decodeAny decodes JSON for a comparison that ignores member order.
func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// ruleIDs lists the IDs of rules.
func ruleIDs(rules []Rule) []string {
	ids := make([]string, len(rules))
	for i, r := range rules {
		ids[i] = r.RuleID
	}
	return ids
}

func TestDefaultsMatchSpec(t *testing.T) {
	d := Defaults(alice)
	byID := map[string]Rule{}
	for _, kind := range Kinds {
		for _, r := range *d.kind(kind) {
			byID[r.RuleID] = r
		}
	}
	for id, want := range specRules {
		t.Run(id, func(t *testing.T) {
			r, ok := byID[id]
			if !ok {
				t.Fatalf("no default rule %s", id)
			}
			got, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			want = strings.ReplaceAll(want, "[the user's Matrix ID]", alice)
			if !reflect.DeepEqual(decodeAny(t, got), decodeAny(t, []byte(want))) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestDefaultsOrderAndShape(t *testing.T) {
	d := Defaults(alice)
	wantOverride := []string{
		".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention",
		".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
		".m.rule.suppress_edits", ".org.matrix.msc3930.rule.poll_response",
	}
	wantUnderride := []string{
		".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.message", ".m.rule.encrypted", ".im.vector.jitsi",
		".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_start",
		".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end",
	}
	if got := ruleIDs(d.Override); !reflect.DeepEqual(got, wantOverride) {
		t.Errorf("override order\n got %q\nwant %q", got, wantOverride)
	}
	if got := ruleIDs(d.Underride); !reflect.DeepEqual(got, wantUnderride) {
		t.Errorf("underride order\n got %q\nwant %q", got, wantUnderride)
	}
	if got := ruleIDs(d.Content); !reflect.DeepEqual(got, []string{".m.rule.contains_user_name"}) {
		t.Errorf("content: %q", got)
	}
	if d.Room == nil || d.Sender == nil || len(d.Room)+len(d.Sender) != 0 {
		t.Errorf("room/sender: %v %v", d.Room, d.Sender)
	}
	b, _ := json.Marshal(d)
	var shape map[string][]map[string]any
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	for kind, rules := range shape {
		for _, r := range rules {
			_, hasConds := r["conditions"]
			_, hasPattern := r["pattern"]
			wantConds := kind == KindOverride || kind == KindUnderride
			if hasConds != wantConds || hasPattern != (kind == KindContent) {
				t.Errorf("%s %v: conditions %v pattern %v", kind, r["rule_id"], hasConds, hasPattern)
			}
			if r["default"] != true {
				t.Errorf("%v not default", r["rule_id"])
			}
			if _, ok := r["actions"].([]any); !ok {
				t.Errorf("%v: actions %v", r["rule_id"], r["actions"])
			}
		}
	}
}

func TestDefaultsNameTheUser(t *testing.T) {
	for _, user := range []string{"@bob:example.com", "@carol.x:host:8448"} {
		d := Defaults(user)
		b, _ := json.Marshal(d)
		if !strings.Contains(string(b), `{"kind":"event_match","key":"state_key","pattern":"`+user+`"}`) {
			t.Errorf("%s: invite_for_me does not name the user", user)
		}
		if !strings.Contains(string(b), `"value":"`+user+`"`) {
			t.Errorf("%s: is_user_mention does not name the user", user)
		}
		if got, want := *d.Content[0].Pattern, localpart(user); got != want || strings.ContainsAny(got, "@:") {
			t.Errorf("%s: contains_user_name pattern %q, want %q", user, got, want)
		}
	}
	// Each call returns fresh rules.
	a, b := Defaults(alice), Defaults(alice)
	a.Override[2].Actions[0] = json.RawMessage(`"coalesce"`)
	*a.Content[0].Pattern = "x"
	if string(b.Override[2].Actions[0]) == `"coalesce"` || *b.Content[0].Pattern != "alice" {
		t.Error("Defaults shares memory between calls")
	}
}
