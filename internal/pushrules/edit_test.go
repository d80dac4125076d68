package pushrules

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// put adds a rule or fails the test.
func put(t *testing.T, u *UserRules, kind, id, body, before, after string) {
	t.Helper()
	if err := u.Put(alice, kind, id, json.RawMessage(body), before, after); err != nil {
		t.Fatalf("Put %s %s: %v", kind, id, err)
	}
}

// roundTrip stores and reloads u as the user API does.
func roundTrip(t *testing.T, u *UserRules) *UserRules {
	t.Helper()
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	var out UserRules
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("reload %s: %v", b, err)
	}
	return &out
}

const notify = `{"actions":["notify"]}`

func TestMergeOrder(t *testing.T) {
	u := &UserRules{}
	put(t, u, KindOverride, "o1", `{"actions":[],"conditions":[]}`, "", "")
	put(t, u, KindContent, "c1", `{"actions":["notify"],"pattern":"cake"}`, "", "")
	put(t, u, KindRoom, "!r:x", notify, "", "")
	put(t, u, KindSender, "@s:x", notify, "", "")
	put(t, u, KindUnderride, "u1", `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"type","pattern":"x"}]}`, "", "")
	f := false
	u.Defaults = map[string]DefaultOverride{
		".m.rule.master":  {Enabled: ptrBool(true)},
		".m.rule.message": {Enabled: &f, Actions: []json.RawMessage{json.RawMessage(`"dont_notify"`)}},
	}
	u = roundTrip(t, u)
	rs := u.Merge(alice)
	if got := ruleIDs(rs.Override)[:3]; !reflect.DeepEqual(got, []string{".m.rule.master", "o1", ".m.rule.suppress_notices"}) {
		t.Errorf("override: %q", got)
	}
	if got := ruleIDs(rs.Content); !reflect.DeepEqual(got, []string{"c1", ".m.rule.contains_user_name"}) {
		t.Errorf("content: %q", got)
	}
	if got := ruleIDs(rs.Underride); got[0] != "u1" || got[1] != ".m.rule.call" {
		t.Errorf("underride: %q", got)
	}
	if !rs.Override[0].Enabled {
		t.Error("master override not applied")
	}
	msg := rs.Underride[findRule(rs.Underride, ".m.rule.message")]
	if msg.Enabled || string(msg.Actions[0]) != `"dont_notify"` || !msg.Default {
		t.Errorf("message override not applied: %+v", msg)
	}
	b, _ := json.Marshal(rs)
	for _, want := range []string{
		`{"rule_id":"o1","default":false,"enabled":true,"conditions":[],"actions":[]}`,
		`{"rule_id":"!r:x","default":false,"enabled":true,"actions":["notify"]}`,
		`{"rule_id":"c1","default":false,"enabled":true,"pattern":"cake","actions":["notify"]}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("merged JSON lacks %s:\n%s", want, b)
		}
	}

	// The result shares nothing with the stored rules.
	rs.Override[1].RuleID = "changed"
	rs.Room[0].Actions[0][1] = 'X'
	*rs.Content[0].Pattern = "pie"
	rs.Underride[0].Conditions[0].Key = "k"
	if u.Override[0].RuleID != "o1" || string(u.Room[0].Actions[0]) != `"notify"` ||
		*u.Content[0].Pattern != "cake" || u.Underride[0].Conditions[0].Key != "type" {
		t.Error("Merge aliases the stored rules")
	}

	// A user who changed nothing: every kind a list, never null.
	var empty *UserRules
	b, _ = json.Marshal(empty.Merge(alice))
	if !strings.Contains(string(b), `"room":[]`) || !strings.Contains(string(b), `"sender":[]`) {
		t.Errorf("empty kinds: %s", b)
	}
}

func ptrBool(b bool) *bool { return &b }

func TestPutOrdering(t *testing.T) {
	tests := []struct {
		name string
		ops  func(t *testing.T, u *UserRules)
		want []string
	}{
		{"new rules first", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
		}, []string{"!b:x", "!a:x"}},
		{"before", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!c:x", notify, "!a:x", "")
		}, []string{"!b:x", "!c:x", "!a:x"}},
		{"after", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!c:x", notify, "", "!b:x")
		}, []string{"!b:x", "!c:x", "!a:x"}},
		{"after the last", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!c:x", notify, "", "!a:x")
		}, []string{"!b:x", "!a:x", "!c:x"}},
		{"before wins over after", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!c:x", notify, "!a:x", "!b:x")
		}, []string{"!b:x", "!c:x", "!a:x"}},
		{"replace keeps place", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!a:x", `{"actions":[]}`, "", "")
		}, []string{"!b:x", "!a:x"}},
		{"replace with before moves", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!a:x", notify, "!b:x", "")
		}, []string{"!a:x", "!b:x"}},
		{"replace relative to itself", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!a:x", notify, "", "")
			put(t, u, KindRoom, "!b:x", notify, "", "")
			put(t, u, KindRoom, "!a:x", notify, "!a:x", "")
		}, []string{"!b:x", "!a:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &UserRules{}
			tt.ops(t, u)
			if got := ruleIDs(u.Merge(alice).Room); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPutKeepsEnabled(t *testing.T) {
	u := &UserRules{}
	put(t, u, KindContent, "k", `{"actions":["notify"],"pattern":"a"}`, "", "")
	if err := u.SetEnabled(alice, KindContent, "k", false); err != nil {
		t.Fatal(err)
	}
	put(t, u, KindContent, "k", `{"actions":[],"pattern":"b"}`, "", "")
	r, err := u.Get(alice, KindContent, "k")
	if err != nil {
		t.Fatal(err)
	}
	if r.Enabled || *r.Pattern != "b" || len(r.Actions) != 0 {
		t.Errorf("replaced rule: %+v", r)
	}
}

func TestPutErrors(t *testing.T) {
	cond := func(c string) string { return `{"actions":["notify"],"conditions":[` + c + `]}` }
	tests := []struct {
		kind, id, body, before, after string
		want                          error
	}{
		{"bogus", "x", notify, "", "", ErrInvalid},
		{KindRoom, "", notify, "", "", ErrInvalid},
		{KindOverride, "a/b", cond(""), "", "", ErrInvalid},
		{KindRoom, `#fo\o:example.com`, notify, "", "", ErrInvalid},
		{KindOverride, ".m.rule.master", cond(""), "", "", ErrInvalid},
		{KindOverride, ".mine", cond(""), "", "", ErrInvalid},
		{KindRoom, "!r:x", `[]`, "", "", ErrBadJSON},
		{KindRoom, "!r:x", `"x"`, "", "", ErrBadJSON},
		{KindRoom, "!r:x", `{}`, "", "", ErrBadJSON},
		{KindRoom, "!r:x", `{"actions":"notify"}`, "", "", ErrBadJSON},
		{KindRoom, "!r:x", `{"actions":["not_an_action"]}`, "", "", ErrInvalid},
		{KindRoom, "!r:x", `{"actions":[{"value":1}]}`, "", "", ErrInvalid},
		{KindRoom, "!r:x", `{"actions":[{"set_tweak":1}]}`, "", "", ErrInvalid},
		{KindRoom, "!r:x", `{"actions":[3]}`, "", "", ErrInvalid},
		{KindRoom, "!r:x", `{"actions":[null]}`, "", "", ErrInvalid},
		{KindRoom, "not-a-room", notify, "", "", ErrInvalid},
		{KindSender, "bob", notify, "", "", ErrInvalid},
		{KindContent, "c", notify, "", "", ErrBadJSON},
		{KindContent, "c", `{"actions":[],"pattern":5}`, "", "", ErrBadJSON},
		{KindOverride, "o", notify, "", "", ErrBadJSON},
		{KindUnderride, "o", `{"actions":[],"conditions":{}}`, "", "", ErrBadJSON},
		{KindOverride, "o", cond(`"x"`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":1}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_match","key":"type"}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_match","key":1,"pattern":"x"}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_match","key":"","pattern":"x"}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"event_property_is","key":"a"}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_property_is","key":"a","value":{}}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_property_contains","key":"a","value":[1]}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"event_property_is","key":"a","value":1.5}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"event_property_is","key":"a","value":9007199254740992}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"room_member_count"}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"room_member_count","is":2}`), "", "", ErrBadJSON},
		{KindOverride, "o", cond(`{"kind":"room_member_count","is":"=2"}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"room_member_count","is":">"}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"room_member_count","is":"<=-1"}`), "", "", ErrInvalid},
		{KindOverride, "o", cond(`{"kind":"sender_notification_permission"}`), "", "", ErrBadJSON},
		{KindRoom, "!r:x", notify, "!missing:x", "", ErrInvalid},
		{KindRoom, "!r:x", notify, "", "!missing:x", ErrInvalid},
		{KindRoom, "!r:x", notify, "!r:x", "", ErrInvalid},
		{KindOverride, "o", cond(""), ".m.rule.master", "", ErrInvalid},
		{KindUnderride, "o", cond(""), "", ".m.rule.message", ErrInvalid},
		{KindContent, "c", `{"actions":[],"pattern":"x"}`, "o", "", ErrInvalid}, // o is an override rule
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.id+" "+tt.body, func(t *testing.T) {
			u := &UserRules{}
			put(t, u, KindOverride, "o", `{"actions":[],"conditions":[]}`, "", "")
			before := roundTrip(t, u)
			err := u.Put(alice, tt.kind, tt.id, json.RawMessage(tt.body), tt.before, tt.after)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, ": ") || len(msg) < 20 {
				t.Errorf("unhelpful message %q", msg)
			}
			if !reflect.DeepEqual(roundTrip(t, u), before) {
				t.Error("a failed Put changed the rules")
			}
		})
	}
}

func TestPutAcceptsConditions(t *testing.T) {
	conds := `[
		{"kind":"event_match","key":"content.body","pattern":"*cake*"},
		{"kind":"event_property_is","key":"content.m\\.federate","value":null},
		{"kind":"event_property_contains","key":"content.tags","value":-9007199254740991},
		{"kind":"event_property_is","key":"content.b","value":false},
		{"kind":"room_member_count","is":">=10"},
		{"kind":"room_member_count","is":"3"},
		{"kind":"sender_notification_permission","key":"room"},
		{"kind":"contains_display_name"},
		{"kind":"org.matrix.msc3931.room_version_supports","feature":"x","key":7}
	]`
	u := &UserRules{}
	put(t, u, KindOverride, "all", `{"actions":["notify",{"set_tweak":"sound","value":"x"},{"set_tweak":"highlight","value":false},"dont_notify","coalesce",{"set_tweak":"custom","value":{"a":1}}],"conditions":`+conds+`}`, "", "")
	u = roundTrip(t, u)
	r, err := u.Get(alice, KindOverride, "all")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r.Conditions)
	var want any
	_ = json.Unmarshal([]byte(conds), &want)
	if !reflect.DeepEqual(decodeAny(t, b), want) {
		t.Errorf("conditions read back as\n%s", b)
	}
	if len(r.Actions) != 6 {
		t.Errorf("actions: %s", r.Actions)
	}
}

func TestDelete(t *testing.T) {
	u := &UserRules{}
	put(t, u, KindRoom, "!a:x", notify, "", "")
	put(t, u, KindRoom, "!b:x", notify, "", "")
	if err := u.Delete(alice, KindRoom, "!a:x"); err != nil {
		t.Fatal(err)
	}
	if got := ruleIDs(u.Room); !reflect.DeepEqual(got, []string{"!b:x"}) {
		t.Errorf("after delete: %q", got)
	}
	for _, tt := range []struct{ kind, id string }{
		{KindRoom, "!a:x"},
		{KindSender, "!b:x"},
		{KindOverride, ".m.rule.master"},
		{KindContent, ".m.rule.contains_user_name"},
		{"bogus", "!b:x"},
	} {
		if err := u.Delete(alice, tt.kind, tt.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete %s %s: %v", tt.kind, tt.id, err)
		}
	}
}

func TestSetEnabledAndActions(t *testing.T) {
	u := &UserRules{}
	put(t, u, KindSender, "@bob:example.com", notify, "", "")
	if err := u.SetEnabled(alice, KindOverride, ".m.rule.master", true); err != nil {
		t.Fatal(err)
	}
	if err := u.SetActions(alice, KindUnderride, ".m.rule.message", []json.RawMessage{}); err != nil {
		t.Fatal(err)
	}
	if err := u.SetActions(alice, KindContent, ".m.rule.contains_user_name", []json.RawMessage{json.RawMessage(`"dont_notify"`)}); err != nil {
		t.Fatal(err)
	}
	if err := u.SetEnabled(alice, KindSender, "@bob:example.com", false); err != nil {
		t.Fatal(err)
	}
	if err := u.SetActions(alice, KindSender, "@bob:example.com", []json.RawMessage{json.RawMessage(`{"set_tweak":"sound","value":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	u = roundTrip(t, u)
	check := func(kind, id string, enabled bool, actions string) {
		t.Helper()
		r, err := u.Get(alice, kind, id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r.Actions)
		if r.Enabled != enabled || string(b) != actions {
			t.Errorf("%s: enabled %v actions %s", id, r.Enabled, b)
		}
	}
	check(KindOverride, ".m.rule.master", true, `[]`)
	check(KindUnderride, ".m.rule.message", true, `[]`)
	check(KindContent, ".m.rule.contains_user_name", true, `["dont_notify"]`)
	check(KindSender, "@bob:example.com", false, `[{"set_tweak":"sound","value":"x"}]`)

	errs := []struct {
		err  error
		want error
	}{
		{u.SetEnabled(alice, KindOverride, ".not.a.default.rule", true), ErrNotFound},
		{u.SetEnabled(alice, KindUnderride, ".m.rule.master", true), ErrNotFound},
		{u.SetEnabled(alice, KindSender, "@nobody:x", true), ErrNotFound},
		{u.SetEnabled(alice, "bogus", ".m.rule.master", true), ErrInvalid},
		{u.SetActions(alice, KindOverride, ".not.a.default.rule", nil), ErrNotFound},
		{u.SetActions(alice, KindSender, "@nobody:x", nil), ErrNotFound},
		{u.SetActions(alice, KindOverride, ".m.rule.master", []json.RawMessage{json.RawMessage(`"bogus"`)}), ErrInvalid},
		{u.SetActions(alice, "bogus", ".m.rule.master", nil), ErrInvalid},
	}
	for i, e := range errs {
		if !errors.Is(e.err, e.want) {
			t.Errorf("%d: got %v, want %v", i, e.err, e.want)
		}
	}
	if _, err := u.Get(alice, KindOverride, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if _, err := u.Get(alice, "bogus", ".m.rule.master"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get bad kind: %v", err)
	}
}

func TestCopyRoom(t *testing.T) {
	const old, nu = "!old:x", "!new:x"
	u := &UserRules{}
	put(t, u, KindRoom, old, `{"actions":["dont_notify"]}`, "", "")
	put(t, u, KindRoom, "!other:x", notify, "", "")
	put(t, u, KindOverride, "mute "+old, `{"actions":[],"conditions":[{"kind":"event_match","key":"room_id","pattern":"`+old+`"}]}`, "", "")
	put(t, u, KindOverride, "loud", `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"room_id","pattern":"`+old+`"},{"kind":"event_match","key":"type","pattern":"m.room.message"}]}`, "", "")
	put(t, u, KindUnderride, "off", `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"room_id","pattern":"`+old+`"}]}`, "", "")
	put(t, u, KindUnderride, "unrelated", `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"room_id","pattern":"!other:x"}]}`, "", "")
	if err := u.SetEnabled(alice, KindUnderride, "off", false); err != nil {
		t.Fatal(err)
	}
	if !u.CopyRoom(old, nu) {
		t.Fatal("CopyRoom changed nothing")
	}
	if got := ruleIDs(u.Room); !reflect.DeepEqual(got, []string{nu, "!other:x", old}) {
		t.Errorf("room: %q", got)
	}
	if string(u.Room[0].Actions[0]) != `"dont_notify"` || !u.Room[0].Enabled {
		t.Errorf("room copy: %+v", u.Room[0])
	}
	if got, want := ruleIDs(u.Override), []string{nu, "mute " + nu, "loud", "mute " + old}; !reflect.DeepEqual(got, want) {
		t.Errorf("override: %q, want %q", got, want)
	}
	if c := u.Override[0].Conditions; *c[0].Pattern != nu || *c[1].Pattern != "m.room.message" {
		t.Errorf("copied conditions: %+v", c)
	}
	if *u.Override[3].Conditions[0].Pattern != old {
		t.Error("the original rule changed")
	}
	if got := ruleIDs(u.Underride); !reflect.DeepEqual(got, []string{"unrelated", "off"}) {
		t.Errorf("underride (disabled rules are not copied): %q", got)
	}
	// Again: nothing to do.
	before := roundTrip(t, u)
	if u.CopyRoom(old, nu) || !reflect.DeepEqual(roundTrip(t, u), before) {
		t.Error("a second CopyRoom changed the rules")
	}
	if (&UserRules{}).CopyRoom(old, nu) {
		t.Error("CopyRoom of nothing reported a change")
	}
	// Two rules with the same new ID get distinct IDs.
	u = &UserRules{}
	put(t, u, KindOverride, "a", `{"actions":[],"conditions":[{"kind":"event_match","key":"room_id","pattern":"`+old+`"}]}`, "", "")
	put(t, u, KindOverride, "b", `{"actions":[],"conditions":[{"kind":"event_match","key":"room_id","pattern":"`+old+`"},{"kind":"contains_display_name"}]}`, "", "")
	u.CopyRoom(old, nu)
	if got := ruleIDs(u.Override); !reflect.DeepEqual(got, []string{nu, nu + "-2", "b", "a"}) {
		t.Errorf("ids: %q", got)
	}
}
