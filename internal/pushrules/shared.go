package pushrules

import (
	"encoding/json"
	"sync"
)

// Most users never change a rule: their rules are the server defaults,
// which differ from user to user only in a few rules that name the user
// (.m.rule.invite_for_me, .m.rule.is_user_mention, the legacy
// .m.rule.contains_user_name) or read the user's display name
// (.m.rule.contains_display_name). For an event in a room of many such
// users, the other rules are evaluated once (NewEventEval), and each
// user's evaluation (EvaluateShared) checks only the rules of their own
// that come before the first of those that matched.

// template is the server-default rules compiled for nobody, with the
// rules that differ between users marked.
type template struct {
	c        *Compiled
	specific []bool // by rule index: the rule depends on the user
}

var (
	templateOnce sync.Once
	defaultsTmpl *template
)

func defaultTemplate() *template {
	templateOnce.Do(func() {
		a, b := Compile("", Defaults("@a:a.invalid")), Compile("", Defaults("@b:b.invalid"))
		t := &template{c: a, specific: make([]bool, len(a.rules))}
		ra, rb := Defaults("@a:a.invalid"), Defaults("@b:b.invalid")
		differs := map[string]bool{}
		for _, kind := range Kinds {
			ka, kb := *ra.kind(kind), *rb.kind(kind)
			for i := range ka {
				ja, _ := json.Marshal(ka[i])
				jb, _ := json.Marshal(kb[i])
				if string(ja) != string(jb) {
					differs[ka[i].RuleID] = true
				}
			}
		}
		if len(a.rules) != len(b.rules) {
			return // cannot happen: then nothing is shared
		}
		for i := range a.rules {
			r := &a.rules[i]
			t.specific[i] = differs[r.res.RuleID]
			for _, c := range r.conds {
				if c.op == opDisplayName {
					t.specific[i] = true
				}
			}
		}
		defaultsTmpl = t
	})
	return defaultsTmpl
}

// CompileDefaults is Compile(userID, Defaults(userID)) for a user who
// changed no rule: it keeps only the rules that differ between users
// (the others are the template's), so that EvaluateShared shares the
// work of the common ones and a user costs little memory.
func CompileDefaults(userID string) *Compiled {
	full := Compile(userID, Defaults(userID))
	t := defaultTemplate()
	if t == nil || len(t.c.rules) != len(full.rules) {
		return full
	}
	c := &Compiled{userID: userID, defaults: true}
	for i := range full.rules {
		if t.specific[i] {
			c.rules = append(c.rules, full.rules[i])
			c.specIdx = append(c.specIdx, i)
		}
	}
	return c
}

// EventEval is an event with the server-default rules that name no user
// evaluated against it once, for EvaluateShared.
type EventEval struct {
	ev    *Event
	room  *RoomContext
	first int // index of the first common rule that matched (len: none)
	res   Result
	ok    bool
}

// NewEventEval evaluates the common server-default rules against an
// event in a room.
func NewEventEval(ev *Event, room *RoomContext) *EventEval {
	ee := &EventEval{ev: ev, room: room}
	t := defaultTemplate()
	if t == nil {
		return ee
	}
	ee.first = len(t.c.rules)
	for i := range t.c.rules {
		r := &t.c.rules[i]
		if t.specific[i] || (r.legacy && ev.hasMentions) {
			continue
		}
		if r.matches(ev, room, "") {
			ee.first, ee.res, ee.ok = i, r.res, true
			break
		}
	}
	return ee
}

// EvaluateShared is c.Evaluate(ee's event and room, displayName), sharing
// ee's work when c is a CompileDefaults ruleset.
func (c *Compiled) EvaluateShared(ee *EventEval, displayName string) (Result, bool) {
	if c == nil || !c.defaults {
		return c.Evaluate(ee.ev, ee.room, displayName)
	}
	if c.userID != "" && ee.ev.str(slotSender) == c.userID {
		return Result{}, false
	}
	for j, i := range c.specIdx {
		if i >= ee.first {
			break
		}
		r := &c.rules[j]
		if r.legacy && ee.ev.hasMentions {
			continue
		}
		if r.matches(ee.ev, ee.room, displayName) {
			return r.res, true
		}
	}
	return ee.res, ee.ok
}
