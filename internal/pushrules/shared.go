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
	// common, for a rule that depends on the user: by condition, whether
	// the condition is the same for every user (see mayMatch).
	common [][]bool
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
		t.common = make([][]bool, len(a.rules))
		for i := range a.rules {
			r := &a.rules[i]
			t.specific[i] = differs[r.res.RuleID]
			for _, c := range r.conds {
				if c.op == opDisplayName {
					t.specific[i] = true
				}
			}
			if !t.specific[i] || len(r.conds) != len(b.rules[i].conds) {
				continue
			}
			t.common[i] = make([]bool, len(r.conds))
			for k := range r.conds {
				t.common[i][k] = r.conds[k].op != opDisplayName && sameCond(&r.conds[k], &b.rules[i].conds[k])
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

// sameCond reports whether two compiled conditions are the same.
func sameCond(x, y *cond) bool {
	return x.op == y.op && x.word == y.word && x.cmp == y.cmp && x.slot == y.slot && x.key == y.key && x.glob == y.glob &&
		x.val.equal(&y.val) && x.n == y.n
}

// mayMatch reports whether the template's rule i, which depends on the
// user, can match the event for some user: false when one of the
// conditions shared by every user fails, or when the event lacks the
// property that the user's own condition (their ID, name or display name)
// would be compared with.
func (t *template) mayMatch(i int, ev *Event, room *RoomContext) bool {
	r := &t.c.rules[i]
	if r.legacy && ev.hasMentions {
		return false
	}
	switch r.special {
	case ruleContent:
		v := ev.lookup(slotBody, "")
		return v != nil && v.kind == valString
	case ruleRoom, ruleSender:
		return true
	}
	for k := range r.conds {
		c := &r.conds[k]
		if t.common[i] != nil && t.common[i][k] {
			if !c.holds(ev, room, "") {
				return false
			}
			continue
		}
		var v *value
		switch c.op {
		case opMatch, opIs, opContains:
			v = ev.lookup(c.slot, c.key)
		case opDisplayName:
			v = ev.lookup(slotBody, "")
		default:
			continue
		}
		switch {
		case v == nil:
			return false
		case (c.op == opMatch || c.op == opDisplayName) && v.kind != valString:
			return false
		case c.op == opIs && v.kind == valArray:
			return false
		case c.op == opContains && (v.kind != valArray || len(v.arr) == 0):
			return false
		}
	}
	return true
}

// EventEval is an event with the server-default rules that name no user
// evaluated against it once, for EvaluateShared.
type EventEval struct {
	ev    *Event
	room  *RoomContext
	first int // index of the first common rule that matched (len: none)
	res   Result
	ok    bool
	// uniform: no rule that depends on the user can match before first.
	uniform bool
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
	ee.uniform = true
	for i := 0; i < ee.first && ee.uniform; i++ {
		if t.specific[i] && t.mayMatch(i, ev, room) {
			ee.uniform = false
		}
	}
	return ee
}

// Uniform reports whether every user with the server-default rules
// (CompileDefaults) other than the event's sender gets the same result,
// Result, whatever their ID and display name: for a membership change
// other than an invite, for instance, .m.rule.member_event decides for
// all of them. A room's members can then be evaluated without a rule
// each.
func (ee *EventEval) Uniform() bool { return ee.uniform }

// Result is what EvaluateShared gives every user with the server-default
// rules other than the sender when Uniform holds.
func (ee *EventEval) Result() (Result, bool) { return ee.res, ee.ok }

// Defaults reports whether c is a CompileDefaults ruleset: the server
// defaults of a user who changed no rule.
func (c *Compiled) Defaults() bool { return c != nil && c.defaults }

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
