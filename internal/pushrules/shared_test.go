package pushrules

import (
	"fmt"
	"slices"
	"testing"
)

// sharedEvents are events of every kind the default rules tell apart.
var sharedEvents = []string{
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"hello"}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"hi alice and Bob"}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":["@carol:y"]}}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"alice","m.mentions":{}}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"@room","m.mentions":{"room":true}}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"@room hey"}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.notice","body":"alice"}}`,
	`{"type":"m.room.encrypted","sender":"@dave:x","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`,
	`{"type":"m.room.member","sender":"@dave:x","state_key":"@bob:x","content":{"membership":"invite"}}`,
	`{"type":"m.room.member","sender":"@dave:x","state_key":"@bob:x","content":{"membership":"join"}}`,
	`{"type":"m.room.tombstone","sender":"@dave:x","state_key":"","content":{"replacement_room":"!r:x"}}`,
	`{"type":"m.reaction","sender":"@dave:x","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"x"}}}`,
	`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"* alice","m.relates_to":{"rel_type":"m.replace","event_id":"$e"}}}`,
	`{"type":"m.call.invite","sender":"@dave:x","content":{}}`,
	`{"type":"org.matrix.msc3381.poll.start","sender":"@dave:x","content":{}}`,
	`{"type":"m.room.message","sender":"@alice:x","content":{"msgtype":"m.text","body":"me"}}`,
}

// EvaluateShared gives what Evaluate gives, for every kind of event the
// default rules tell apart.
func TestEvaluateSharedMatchesEvaluate(t *testing.T) {
	users := []struct{ id, name string }{{"@alice:x", "Alice"}, {"@bob:x", "bob"}, {"@carol:y", ""}}
	for _, members := range []int{2, 10} {
		for _, pl := range []int64{0, 100} {
			room := &RoomContext{MemberCount: members, SenderPowerLevel: pl}
			for i, js := range sharedEvents {
				ev, err := NewEvent([]byte(js))
				if err != nil {
					t.Fatal(err)
				}
				ee := NewEventEval(ev, room)
				for _, u := range users {
					c := CompileDefaults(u.id)
					if !c.defaults {
						t.Fatal("CompileDefaults did not mark the ruleset")
					}
					want, wok := Compile(u.id, Defaults(u.id)).Evaluate(ev, room, u.name)
					got, gok := c.EvaluateShared(ee, u.name)
					if gok != wok || got.RuleID != want.RuleID || got.Kind != want.Kind || got.Notify != want.Notify || got.Highlight != want.Highlight ||
						fmt.Sprint(got.Tweaks) != fmt.Sprint(want.Tweaks) {
						t.Errorf("event %d, %s, %d members, PL %d: shared %s %v, direct %s %v", i, u.id, members, pl, got.RuleID, gok, want.RuleID, wok)
					}
				}
			}
		}
	}
}

// TestEventEvalUniform: when an event's evaluation is uniform, every user
// with the default rules gets its Result, whatever their ID and display
// name, those the event names included; membership changes but invites
// are uniform, messages with a body are not.
func TestEventEvalUniform(t *testing.T) {
	users := []struct{ id, name string }{{"@alice:x", "Alice"}, {"@bob:x", "bob"}, {"@carol:y", ""}, {"@zed:z", "zed"}, {"@e:x", "e"}}
	extra := []string{
		`{"type":"m.room.member","sender":"@bob:x","state_key":"@bob:x","content":{"membership":"leave"}}`,
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@alice:x","content":{"membership":"ban","reason":"alice"}}`,
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@dave:x","content":{"membership":"join","displayname":"Alice","m.mentions":{"user_ids":["@alice:x"]}}}`,
		`{"type":"m.room.topic","sender":"@dave:x","state_key":"","content":{"topic":"alice"}}`,
		`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":[]}}}`,
	}
	for _, members := range []int{2, 10} {
		room := &RoomContext{MemberCount: members, SenderPowerLevel: 50}
		for i, js := range append(slices.Clone(sharedEvents), extra...) {
			ev, err := NewEvent([]byte(js))
			if err != nil {
				t.Fatal(err)
			}
			ee := NewEventEval(ev, room)
			if !ee.Uniform() {
				continue
			}
			want, wok := ee.Result()
			for _, u := range users {
				if u.id == ev.str(slotSender) {
					continue
				}
				got, gok := Compile(u.id, Defaults(u.id)).Evaluate(ev, room, u.name)
				if gok != wok || got.RuleID != want.RuleID || got.Notify != want.Notify || got.Highlight != want.Highlight {
					t.Errorf("event %d is uniform (%s %v) but %s gets %s %v", i, want.RuleID, wok, u.id, got.RuleID, gok)
				}
			}
		}
	}
	room := &RoomContext{MemberCount: 10}
	for js, want := range map[string]bool{
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@dave:x","content":{"membership":"join"}}`:                   true,
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@dave:x","content":{"membership":"join","displayname":"x"}}`: true,
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@bob:x","content":{"membership":"leave"}}`:                   true,
		`{"type":"m.room.member","sender":"@dave:x","state_key":"@bob:x","content":{"membership":"invite"}}`:                  false,
		`{"type":"m.room.encrypted","sender":"@dave:x","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`:                       true,
		`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.text","body":"hello"}}`:                          false,
		`{"type":"m.room.message","sender":"@dave:x","content":{"msgtype":"m.notice","body":"hello"}}`:                        true,
	} {
		ev, err := NewEvent([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		if got := NewEventEval(ev, room).Uniform(); got != want {
			t.Errorf("Uniform(%s) = %v, want %v", js, got, want)
		}
	}
}

func BenchmarkEvaluateShared(b *testing.B) {
	ev, _ := NewEvent([]byte(`{"type":"m.room.message","sender":"@dave:x","room_id":"!r:x","content":{"msgtype":"m.text","body":"hello everyone, message 1"}}`))
	room := &RoomContext{MemberCount: 1000}
	c := CompileDefaults("@alice:x")
	ee := NewEventEval(ev, room)
	b.ReportAllocs()
	for b.Loop() {
		c.EvaluateShared(ee, "Alice")
	}
}
