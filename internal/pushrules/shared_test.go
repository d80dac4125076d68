package pushrules

import (
	"fmt"
	"testing"
)

// EvaluateShared gives what Evaluate gives, for every kind of event the
// default rules tell apart.
func TestEvaluateSharedMatchesEvaluate(t *testing.T) {
	users := []struct{ id, name string }{{"@alice:x", "Alice"}, {"@bob:x", "bob"}, {"@carol:y", ""}}
	events := []string{
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
	for _, members := range []int{2, 10} {
		for _, pl := range []int64{0, 100} {
			room := &RoomContext{MemberCount: members, SenderPowerLevel: pl}
			for i, js := range events {
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
