package pushrules

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// event builds an event from its content and other top-level fields.
func event(t testing.TB, typ, sender, content string, extra ...string) *Event {
	t.Helper()
	s := fmt.Sprintf(`{"type":%q,"sender":%q,"room_id":"!room:example.org","event_id":"$e","content":%s`, typ, sender, content)
	for _, e := range extra {
		s += "," + e
	}
	ev, err := NewEvent([]byte(s + "}"))
	if err != nil {
		t.Fatalf("NewEvent: %v", err)
	}
	return ev
}

func TestNewEventFlattens(t *testing.T) {
	ev, err := NewEvent([]byte(`{
		"type": "m.room.create", "state_key": "", "room_id": "!r:x", "sender": "@bob:x",
		"content": {
			"m.federate": true, "creator": "@bob:x", "n": 42, "f": 1.5, "big": 9007199254740992,
			"neg": -9007199254740991, "nul": null, "e": {}, "deep": {"a": {"b": "c"}},
			"m\\foo": "backslash", "alt_aliases": ["#a:x", 1, true, null, 2.5, {"x": 1}, ["y"]],
			"Mixed": "HeLLo"
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		want string // the value as canonical-ish text, "" when absent
	}{
		{"type", `"m.room.create"`},
		{"state_key", `""`},
		{`content.m\.federate`, "true"},
		{`content.n`, "42"},
		{`content.f`, ""},   // floats are not canonical JSON
		{`content.big`, ""}, // beyond 2^53-1
		{`content.neg`, "-9007199254740991"},
		{`content.nul`, "null"},
		{`content.e`, ""},
		{`content.deep.a.b`, `"c"`},
		{`content.deep.a`, ""},
		{`content.m\\foo`, `"backslash"`},
		{`content.alt_aliases`, `["#a:x",1,true,null]`},
		{`content.Mixed`, `"HeLLo"`},
		{`content.mixed`, ""},
	}
	for _, tt := range tests {
		v := ev.lookup(slotKey(tt.key), tt.key)
		if got := describe(v); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.key, got, tt.want)
		}
	}
	if v := ev.lookup(-1, "content.Mixed"); v.lower != "hello" {
		t.Errorf("lower: %q", v.lower)
	}
	for _, bad := range []string{``, `[]`, `null`, `"x"`, `{"a":1} {}`, `{"a":`} {
		if _, err := NewEvent([]byte(bad)); err == nil {
			t.Errorf("NewEvent(%s) succeeded", bad)
		}
	}
}

// describe writes a flattened value as JSON text.
func describe(v *value) string {
	if v == nil {
		return ""
	}
	one := func(s scalar) string {
		switch s.kind {
		case valString:
			b, _ := json.Marshal(s.s)
			return string(b)
		case valInt:
			return fmt.Sprint(s.i)
		case valBool:
			return fmt.Sprint(s.b)
		}
		return "null"
	}
	if v.kind == valArray {
		parts := make([]string, len(v.arr))
		for i, e := range v.arr {
			parts[i] = one(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return one(v.scalar)
}

func TestCanonicalKey(t *testing.T) {
	for in, want := range map[string]string{
		"content.body":                 `content.body`,
		`content.m\.relates_to`:        `content.m\.relates_to`,
		`content.m\\foo`:               `content.m\\foo`,
		`content.m\xfoo`:               `content.m\\xfoo`,
		`content.a\`:                   `content.a\\`,
		`content.m\.mentions.user_ids`: `content.m\.mentions.user_ids`,
	} {
		if got := canonicalKey(in); got != want {
			t.Errorf("canonicalKey(%s) = %s, want %s", in, got, want)
		}
	}
	// A rule naming the property m\xfoo without escaping its backslash
	// still finds it.
	ev := event(t, "m.x", "@b:x", `{"m\\xfoo": "yes"}`)
	c := compileCondition(&Condition{Kind: kindEventMatch, Key: `content.m\xfoo`, Pattern: ptr("yes")})
	if !c.holds(ev, nil, "") {
		t.Error(`content.m\xfoo did not match`)
	}
}

// conditionCase is one condition against one event.
type conditionCase struct {
	name    string
	cond    string
	content string
	room    *RoomContext
	want    bool
}

func TestConditions(t *testing.T) {
	pl := &RoomContext{MemberCount: 5, SenderPowerLevel: 50}
	tests := []conditionCase{
		{"topic lunc?*", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"topic":"Lunch plans"}`, nil, true},
		{"topic lunc?* not lunc", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, `{"topic":"lunc"}`, nil, false},
		{"topic null", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, `{"topic":null}`, nil, false},
		{"absent with *", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, `{}`, nil, false},
		{"number with *", `{"kind":"event_match","key":"content.n","pattern":"*"}`, `{"n":1}`, nil, false},
		{"body word", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, `{"body":"An exciting triple-whammy"}`, nil, true},
		{"non-body whole", `{"kind":"event_match","key":"content.topic","pattern":"ex*ple"}`, `{"topic":"An exciting triple-whammy"}`, nil, false},
		{"escaped key", `{"kind":"event_match","key":"content.m\\.relates_to.rel_type","pattern":"m.thread"}`, `{"m.relates_to":{"rel_type":"m.thread"}}`, nil, true},
		{"unescaped dot is a path", `{"kind":"event_match","key":"content.m.relates_to.rel_type","pattern":"m.thread"}`, `{"m.relates_to":{"rel_type":"m.thread"}}`, nil, false},
		{"federate true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"m.federate":true}`, nil, true},
		{"federate string", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"m.federate":"true"}`, nil, false},
		{"federate 1", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, `{"m.federate":1}`, nil, false},
		{"is null", `{"kind":"event_property_is","key":"content.x","value":null}`, `{"x":null}`, nil, true},
		{"is null absent", `{"kind":"event_property_is","key":"content.x","value":null}`, `{}`, nil, false},
		{"is int", `{"kind":"event_property_is","key":"content.x","value":-7}`, `{"x":-7}`, nil, true},
		{"is int vs float", `{"kind":"event_property_is","key":"content.x","value":7}`, `{"x":7.0}`, nil, false},
		{"is string case", `{"kind":"event_property_is","key":"content.x","value":"Abc"}`, `{"x":"abc"}`, nil, false},
		{"is escaped string", `{"kind":"event_property_is","key":"content.x","value":"caf\u00e9 \"q\""}`, `{"x":"café \"q\""}`, nil, true},
		{"is array", `{"kind":"event_property_is","key":"content.x","value":"a"}`, `{"x":["a"]}`, nil, false},
		{"contains", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}`, `{"alt_aliases":["#somewhere:example.org","#myroom:example.com"]}`, nil, true},
		{"contains partial", `{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}`, `{"alt_aliases":["#myroom:example.com"]}`, nil, false},
		{"contains not array", `{"kind":"event_property_contains","key":"content.x","value":"a"}`, `{"x":"a"}`, nil, false},
		{"contains null", `{"kind":"event_property_contains","key":"content.x","value":null}`, `{"x":[1,null]}`, nil, true},
		{"contains bool", `{"kind":"event_property_contains","key":"content.x","value":false}`, `{"x":[0,"false"]}`, nil, false},
		{"contains int", `{"kind":"event_property_contains","key":"content.x","value":3}`, `{"x":[1,3]}`, nil, true},
		{"count ==", `{"kind":"room_member_count","is":"5"}`, `{}`, pl, true},
		{"count == prefix", `{"kind":"room_member_count","is":"==4"}`, `{}`, pl, false},
		{"count <", `{"kind":"room_member_count","is":"<6"}`, `{}`, pl, true},
		{"count < equal", `{"kind":"room_member_count","is":"<5"}`, `{}`, pl, false},
		{"count >", `{"kind":"room_member_count","is":">4"}`, `{}`, pl, true},
		{"count >=", `{"kind":"room_member_count","is":">=5"}`, `{}`, pl, true},
		{"count <=", `{"kind":"room_member_count","is":"<=4"}`, `{}`, pl, false},
		{"count malformed", `{"kind":"room_member_count","is":"five"}`, `{}`, pl, false},
		{"count no room", `{"kind":"room_member_count","is":"0"}`, `{}`, nil, true},
		{"permission default 50", `{"kind":"sender_notification_permission","key":"room"}`, `{}`, pl, true},
		{"permission raised", `{"kind":"sender_notification_permission","key":"room"}`, `{}`, &RoomContext{SenderPowerLevel: 50, NotificationLevels: map[string]int64{"room": 51}}, false},
		{"permission lowered", `{"kind":"sender_notification_permission","key":"room"}`, `{}`, &RoomContext{NotificationLevels: map[string]int64{"room": 0}}, true},
		{"permission other key", `{"kind":"sender_notification_permission","key":"other"}`, `{}`, &RoomContext{SenderPowerLevel: 49, NotificationLevels: map[string]int64{"room": 0}}, false},
		{"permission no room", `{"kind":"sender_notification_permission","key":"room"}`, `{}`, nil, false},
		{"display name", `{"kind":"contains_display_name"}`, `{"body":"Hey ALICE Cooper!"}`, nil, true},
		{"display name in word", `{"kind":"contains_display_name"}`, `{"body":"Hey AlicE Coopers"}`, nil, false},
		{"display name no body", `{"kind":"contains_display_name"}`, `{"body":5}`, nil, false},
		{"unknown kind", `{"kind":"org.example.whatever"}`, `{}`, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Condition
			if err := json.Unmarshal([]byte(tt.cond), &c); err != nil {
				t.Fatal(err)
			}
			ev := event(t, "m.room.message", "@bob:x", tt.content)
			rs := Ruleset{Override: []Rule{{RuleID: "r", Enabled: true, Conditions: []Condition{c}, Actions: actions(actNotify)}}}
			_, got := Compile(alice, rs).Evaluate(ev, tt.room, "Alice Cooper")
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	// An empty display name never matches.
	ev := event(t, "m.room.message", "@bob:x", `{"body":"anything"}`)
	if c := compileCondition(&Condition{Kind: kindDisplayName}); c.holds(ev, nil, "") {
		t.Error("empty display name matched")
	}
}

// evalDefaults evaluates an event against alice's default rules.
func evalDefaults(t testing.TB, u *UserRules, ev *Event, room *RoomContext) (Result, bool) {
	t.Helper()
	return Compile(alice, u.Merge(alice)).Evaluate(ev, room, "Alice Liddell")
}

func TestEvaluateDefaults(t *testing.T) {
	group := &RoomContext{MemberCount: 10, SenderPowerLevel: 100}
	dm := &RoomContext{MemberCount: 2}
	tests := []struct {
		name              string
		ev                *Event
		room              *RoomContext
		rule              string // "" : no match
		notify, highlight bool
		tweaks            string
	}{
		{"message", event(t, "m.room.message", "@bob:x", `{"msgtype":"m.text","body":"hello"}`), group, ".m.rule.message", true, false, ""},
		{"dm message", event(t, "m.room.message", "@bob:x", `{"msgtype":"m.text","body":"hello"}`), dm, ".m.rule.room_one_to_one", true, false, `{"sound":"default"}`},
		{"notice", event(t, "m.room.message", "@bob:x", `{"msgtype":"m.notice","body":"hello alice"}`), group, ".m.rule.suppress_notices", false, false, ""},
		{"encrypted", event(t, "m.room.encrypted", "@bob:x", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"x"}`), group, ".m.rule.encrypted", true, false, ""},
		{"encrypted dm", event(t, "m.room.encrypted", "@bob:x", `{"ciphertext":"x"}`), dm, ".m.rule.encrypted_room_one_to_one", true, false, `{"sound":"default"}`},
		{"user name", event(t, "m.room.message", "@bob:x", `{"body":"ping alice?"}`), group, ".m.rule.contains_user_name", true, true, `{"highlight":true,"sound":"default"}`},
		{"display name", event(t, "m.room.message", "@bob:x", `{"body":"hi ALICE liddell!"}`), group, ".m.rule.contains_display_name", true, true, `{"highlight":true,"sound":"default"}`},
		{"@room", event(t, "m.room.message", "@bob:x", `{"body":"@room lunch"}`), group, ".m.rule.roomnotif", true, true, `{"highlight":true}`},
		{"@room without power", event(t, "m.room.message", "@bob:x", `{"body":"@room lunch"}`), &RoomContext{MemberCount: 10}, ".m.rule.message", true, false, ""},
		{"mention", event(t, "m.room.message", "@bob:x", `{"body":"x","m.mentions":{"user_ids":["@alice:example.org"]}}`), group, ".m.rule.is_user_mention", true, true, `{"highlight":true,"sound":"default"}`},
		{"room mention", event(t, "m.room.message", "@bob:x", `{"body":"x","m.mentions":{"room":true}}`), group, ".m.rule.is_room_mention", true, true, `{"highlight":true}`},
		{"legacy skipped with m.mentions", event(t, "m.room.message", "@bob:x", `{"body":"alice Alice @room","m.mentions":{}}`), group, ".m.rule.message", true, false, ""},
		{"edit", event(t, "m.room.message", "@bob:x", `{"body":"* hi","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`), group, ".m.rule.suppress_edits", false, false, ""},
		{"edit with mention", event(t, "m.room.message", "@bob:x", `{"body":"* hi","m.mentions":{"user_ids":["@alice:example.org"]},"m.relates_to":{"rel_type":"m.replace"}}`), group, ".m.rule.is_user_mention", true, true, `{"highlight":true,"sound":"default"}`},
		{"invite", event(t, "m.room.member", "@bob:x", `{"membership":"invite"}`, `"state_key":"@alice:example.org"`), group, ".m.rule.invite_for_me", true, false, `{"sound":"default"}`},
		{"other invite", event(t, "m.room.member", "@bob:x", `{"membership":"invite"}`, `"state_key":"@carol:example.org"`), group, ".m.rule.member_event", false, false, ""},
		{"tombstone", event(t, "m.room.tombstone", "@bob:x", `{"body":"gone"}`, `"state_key":""`), group, ".m.rule.tombstone", true, true, `{"highlight":true}`},
		{"tombstone not state", event(t, "m.room.tombstone", "@bob:x", `{}`), group, "", false, false, ""},
		{"reaction", event(t, "m.reaction", "@bob:x", `{}`), group, ".m.rule.reaction", false, false, ""},
		{"call", event(t, "m.call.invite", "@bob:x", `{}`), group, ".m.rule.call", true, false, `{"sound":"ring"}`},
		{"poll start dm", event(t, "org.matrix.msc3381.poll.start", "@bob:x", `{}`), dm, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, false, `{"sound":"default"}`},
		{"poll start", event(t, "org.matrix.msc3381.poll.start", "@bob:x", `{}`), group, ".org.matrix.msc3930.rule.poll_start", true, false, ""},
		{"poll end dm", event(t, "org.matrix.msc3381.poll.end", "@bob:x", `{}`), dm, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, false, `{"sound":"default"}`},
		{"poll response", event(t, "org.matrix.msc3381.poll.response", "@bob:x", `{}`), dm, ".org.matrix.msc3930.rule.poll_response", false, false, ""},
		{"jitsi", event(t, "im.vector.modular.widgets", "@bob:x", `{"type":"jitsi"}`, `"state_key":"w"`), group, ".im.vector.jitsi", true, false, ""},
		{"unmatched", event(t, "m.room.topic", "@bob:x", `{"topic":"x"}`, `"state_key":""`), group, "", false, false, ""},
		{"own message", event(t, "m.room.message", alice, `{"body":"alice"}`), group, "", false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, ok := evalDefaults(t, nil, tt.ev, tt.room)
			if tt.rule == "" {
				if ok {
					t.Fatalf("matched %s", res.RuleID)
				}
				return
			}
			if !ok || res.RuleID != tt.rule {
				t.Fatalf("matched %v %q, want %s", ok, res.RuleID, tt.rule)
			}
			tweaks := ""
			if res.Tweaks != nil {
				b, _ := json.Marshal(res.Tweaks)
				tweaks = string(b)
			}
			if res.Notify != tt.notify || res.Highlight != tt.highlight || tweaks != tt.tweaks {
				t.Errorf("notify %v highlight %v tweaks %s", res.Notify, res.Highlight, tweaks)
			}
		})
	}
}

func TestEvaluateUserRules(t *testing.T) {
	msg := event(t, "m.room.message", "@bob:x", `{"msgtype":"m.text","body":"cake time"}`)
	group := &RoomContext{MemberCount: 10}
	tests := []struct {
		name  string
		setup func(t *testing.T, u *UserRules)
		rule  string
		kind  string
		notif bool
	}{
		{"master suppresses everything", func(t *testing.T, u *UserRules) {
			put(t, u, KindOverride, "loud", `{"actions":["notify"],"conditions":[]}`, "", "")
			_ = u.SetEnabled(alice, KindOverride, ".m.rule.master", true)
		}, ".m.rule.master", KindOverride, false},
		{"content rule", func(t *testing.T, u *UserRules) {
			put(t, u, KindContent, "cake", `{"actions":["notify",{"set_tweak":"highlight"}],"pattern":"CAKE"}`, "", "")
		}, "cake", KindContent, true},
		{"content rule word boundary", func(t *testing.T, u *UserRules) {
			put(t, u, KindContent, "cak", `{"actions":["dont_notify"],"pattern":"cak"}`, "", "")
		}, ".m.rule.message", KindUnderride, true},
		{"room rule", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!room:example.org", `{"actions":["dont_notify"]}`, "", "")
		}, "!room:example.org", KindRoom, false},
		{"other room", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!other:example.org", `{"actions":["dont_notify"]}`, "", "")
		}, ".m.rule.message", KindUnderride, true},
		{"sender rule", func(t *testing.T, u *UserRules) {
			put(t, u, KindSender, "@bob:x", `{"actions":["coalesce"]}`, "", "")
		}, "@bob:x", KindSender, false},
		{"content before room", func(t *testing.T, u *UserRules) {
			put(t, u, KindRoom, "!room:example.org", `{"actions":[]}`, "", "")
			put(t, u, KindContent, "time", `{"actions":["notify"],"pattern":"time"}`, "", "")
		}, "time", KindContent, true},
		{"disabled rule skipped", func(t *testing.T, u *UserRules) {
			put(t, u, KindSender, "@bob:x", `{"actions":[]}`, "", "")
			_ = u.SetEnabled(alice, KindSender, "@bob:x", false)
		}, ".m.rule.message", KindUnderride, true},
		{"disabled default skipped", func(t *testing.T, u *UserRules) {
			_ = u.SetEnabled(alice, KindUnderride, ".m.rule.message", false)
		}, "", "", false},
		{"default actions changed", func(t *testing.T, u *UserRules) {
			_ = u.SetActions(alice, KindUnderride, ".m.rule.message", []json.RawMessage{})
		}, ".m.rule.message", KindUnderride, false},
		{"unknown condition never matches", func(t *testing.T, u *UserRules) {
			put(t, u, KindOverride, "x", `{"actions":["dont_notify"],"conditions":[{"kind":"org.example.x"}]}`, "", "")
		}, ".m.rule.message", KindUnderride, true},
		{"user override before defaults", func(t *testing.T, u *UserRules) {
			put(t, u, KindOverride, "all", `{"actions":[],"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.*"}]}`, "", "")
		}, "all", KindOverride, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &UserRules{}
			tt.setup(t, u)
			res, ok := evalDefaults(t, u, msg, group)
			if tt.rule == "" {
				if ok {
					t.Fatalf("matched %s", res.RuleID)
				}
				return
			}
			if !ok || res.RuleID != tt.rule || res.Kind != tt.kind || res.Notify != tt.notif {
				t.Errorf("got %v %+v", ok, res)
			}
		})
	}
}

func TestResultTweaks(t *testing.T) {
	r := Rule{RuleID: "r", Actions: []json.RawMessage{
		json.RawMessage(`"dont_notify"`), json.RawMessage(`{"set_tweak":"sound"}`),
		json.RawMessage(`{"set_tweak":"highlight","value":false}`), json.RawMessage(`{"set_tweak":"x","value":[1]}`),
	}}
	res := result(KindOverride, &r)
	b, _ := json.Marshal(res.Tweaks)
	if res.Notify || res.Highlight || string(b) != `{"highlight":false,"x":[1]}` {
		t.Errorf("%+v %s", res, b)
	}
}

func FuzzNewEvent(f *testing.F) {
	f.Add([]byte(`{"type":"m.room.message","sender":"@b:x","content":{"body":"hi alice","m.mentions":{"user_ids":["@alice:example.org"]}}}`))
	f.Add([]byte(`{"content":{"a.b":{"c\\d":[1,null,"x",{"y":2}]},"n":-0,"f":1e5}}`))
	f.Add([]byte(`{"type":5,"sender":null,"content":"x"}`))
	rules := Compile(alice, (*UserRules)(nil).Merge(alice))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := NewEvent(b)
		if err != nil {
			return
		}
		rules.Evaluate(ev, &RoomContext{MemberCount: 2}, "Alice")
		rules.Evaluate(ev, nil, "")
	})
}

// benchMessage is a typical message in a group room.
const benchMessage = `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!abc:example.org",
	"event_id":"$ev","origin_server_ts":1700000000000,"unsigned":{"age":12},
	"content":{"msgtype":"m.text","body":"Shall we meet for lunch at the usual place around noon?",
	"format":"org.matrix.custom.html","formatted_body":"Shall we meet for <b>lunch</b>?"}}`

func BenchmarkEvaluateDefaults(b *testing.B) {
	c := Compile(alice, (*UserRules)(nil).Merge(alice))
	ev, err := NewEvent([]byte(benchMessage))
	if err != nil {
		b.Fatal(err)
	}
	room := &RoomContext{MemberCount: 1000, SenderPowerLevel: 0}
	if res, ok := c.Evaluate(ev, room, "Alice Liddell"); !ok || res.RuleID != ".m.rule.message" {
		b.Fatalf("matched %v %s", ok, res.RuleID)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Evaluate(ev, room, "Alice Liddell")
	}
}

func BenchmarkNewEvent(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEvent([]byte(benchMessage)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileDefaults(b *testing.B) {
	rs := (*UserRules)(nil).Merge(alice)
	b.ReportAllocs()
	for b.Loop() {
		Compile(alice, rs)
	}
}

// TestConcurrentUse compiles and evaluates from several goroutines, as
// the sync API does (run with -race).
func TestConcurrentUse(t *testing.T) {
	ev := event(t, "m.room.message", "@bob:x", `{"body":"hello alice"}`)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("@user%d:example.org", i%3)
			c := Compile(user, (*UserRules)(nil).Merge(user))
			for range 100 {
				if _, ok := c.Evaluate(ev, &RoomContext{MemberCount: 3}, "Alice"); !ok {
					t.Error("no match")
					return
				}
			}
		}()
	}
	wg.Wait()
}
