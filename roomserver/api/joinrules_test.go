package api

import (
	"slices"
	"testing"
)

func TestRestrictedJoinRule(t *testing.T) {
	const space = "!space:example.org"
	for _, c := range []struct {
		content string
		rule    string
		allowed []string
	}{
		{`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"` + space + `"}]}`, "restricted", []string{space}},
		{`{"join_rule":"knock_restricted","allow":["invalid",{"type":"m.room_membership","room_id":"` + space + `"}]}`, "knock_restricted", []string{space}},
		{`{"join_rule":"restricted","allow":["invalid"]}`, "restricted", nil},
		{`{"join_rule":"restricted","allow":"invalid"}`, "restricted", nil},
		{`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":5},{"type":"m.room_membership","room_id":"no room"},{"room_id":"` + space + `"},{"type":"m.other","room_id":"` + space + `"}]}`, "restricted", nil},
		{`{"join_rule":"restricted"}`, "restricted", nil},
		{`{"join_rule":7}`, "", nil},
	} {
		rule, allowed := RestrictedJoinRule([]byte(c.content))
		if rule != c.rule || !slices.Equal(allowed, c.allowed) {
			t.Errorf("%s: %q %v, want %q %v", c.content, rule, allowed, c.rule, c.allowed)
		}
	}
}
