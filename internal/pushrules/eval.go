package pushrules

import (
	"bytes"
	"encoding/json"
)

// RoomContext is what conditions beyond the event need, per event.
type RoomContext struct {
	// MemberCount is the number of joined members (room_member_count).
	MemberCount int
	// SenderPowerLevel is the power level of the event's sender.
	SenderPowerLevel int64
	// NotificationLevels is the "notifications" of the room's power
	// levels (sender_notification_permission); a key it lacks (or a nil
	// map) needs 50, as Synapse reads the spec's default {"room": 50}.
	NotificationLevels map[string]int64
}

// Result is the outcome of an evaluation.
type Result struct {
	// Kind and RuleID name the rule that matched.
	Kind, RuleID string
	// Actions are the rule's actions as stored (shared: not to be
	// modified).
	Actions []json.RawMessage
	// Notify is whether the actions have "notify" ("dont_notify" and
	// "coalesce" are ignored).
	Notify bool
	// Highlight is whether a highlight tweak is set without a value or
	// to true.
	Highlight bool
	// Tweaks maps each tweak set with a value (and highlight, when set,
	// true if it has no value) to its value; nil when there are none.
	// Shared: not to be modified.
	Tweaks map[string]json.RawMessage
}

// Operations of compiled conditions.
const (
	opNever uint8 = iota // an unknown or malformed condition
	opMatch
	opIs
	opContains
	opDisplayName
	opMemberCount
	opSenderPerm
)

// cond is a compiled condition.
type cond struct {
	op   uint8
	word bool  // event_match on content.body
	cmp  uint8 // room_member_count comparison
	slot int   // slot of key, or -1
	key  string
	glob *glob
	val  scalar
	n    int64
}

// Special conditions of the kinds that have none.
const (
	ruleConditions uint8 = iota
	ruleContent
	ruleRoom
	ruleSender
)

// crule is a compiled enabled rule.
type crule struct {
	special uint8
	legacy  bool // skipped when the event has m.mentions
	conds   []cond
	glob    *glob  // content rules
	id      string // room and sender rules
	res     Result
}

// Compiled is a user's effective ruleset prepared for evaluation: the
// enabled rules in order, patterns compiled, results precomputed. It is
// immutable and safe for concurrent use.
type Compiled struct {
	userID string
	rules  []crule
	// defaults: from CompileDefaults; rules are then only the rules
	// that differ between users, at specIdx in the template.
	defaults bool
	specIdx  []int
}

// Compile prepares rs, the effective ruleset of userID (as Merge returns
// it), for evaluation. Disabled rules and rules with a condition that can
// never hold (an unknown kind, a malformed one) are left out.
func Compile(userID string, rs Ruleset) *Compiled {
	c := &Compiled{userID: userID}
	n := 0
	for _, kind := range Kinds {
		n += len(*rs.kind(kind))
	}
	c.rules = make([]crule, 0, n)
	for _, kind := range Kinds {
		for i := range *rs.kind(kind) {
			r := &(*rs.kind(kind))[i]
			if !r.Enabled {
				continue
			}
			cr, ok := compileRule(kind, r)
			if ok {
				c.rules = append(c.rules, cr)
			}
		}
	}
	return c
}

// compileRule compiles one rule; false when it can never match.
func compileRule(kind string, r *Rule) (crule, bool) {
	cr := crule{res: result(kind, r)}
	switch kind {
	case KindContent:
		if r.Pattern == nil {
			return cr, false
		}
		cr.special, cr.glob = ruleContent, sharedGlobs.get(*r.Pattern, compileGlob)
		cr.legacy = r.RuleID == ruleContainsUserName
		return cr, true
	case KindRoom:
		cr.special, cr.id = ruleRoom, r.RuleID
		return cr, true
	case KindSender:
		cr.special, cr.id = ruleSender, r.RuleID
		return cr, true
	}
	cr.legacy = kind == KindOverride && (r.RuleID == ruleContainsDisplayName || r.RuleID == ruleRoomNotif)
	cr.conds = make([]cond, 0, len(r.Conditions))
	for i := range r.Conditions {
		cd := compileCondition(&r.Conditions[i])
		if cd.op == opNever {
			return cr, false
		}
		cr.conds = append(cr.conds, cd)
	}
	return cr, true
}

// compileCondition compiles one condition (opNever when it cannot hold).
func compileCondition(c *Condition) cond {
	cd := cond{slot: -1}
	keyed := func() bool {
		if c.Key == "" {
			return false
		}
		cd.key = canonicalKey(c.Key)
		cd.slot = slotKey(cd.key)
		return true
	}
	switch c.Kind {
	case kindEventMatch:
		if c.Pattern != nil && keyed() {
			cd.op, cd.glob, cd.word = opMatch, sharedGlobs.get(*c.Pattern, compileGlob), cd.key == "content.body"
		}
	case kindPropertyIs, kindPropContains:
		if v, ok := parseScalar(c.Value); ok && keyed() {
			cd.op, cd.val = opIs, v
			if c.Kind == kindPropContains {
				cd.op = opContains
			}
		}
	case kindDisplayName:
		cd.op = opDisplayName
	case kindMemberCount:
		if op, n, ok := parseMemberCount(c.Is); ok {
			cd.op, cd.cmp, cd.n = opMemberCount, op, n
		}
	case kindSenderNotifPL:
		if c.Key != "" {
			cd.op, cd.key = opSenderPerm, c.Key
		}
	}
	return cd
}

// outcome is what a list of actions does.
type outcome struct {
	notify, highlight bool
	tweaks            map[string]json.RawMessage
}

// sharedOutcomes caches outcomes by their actions (joined by NUL).
var sharedOutcomes = newMemo[outcome](1024)

// result precomputes the outcome of a rule's actions.
func result(kind string, r *Rule) Result {
	var buf [256]byte
	key := buf[:0]
	for _, a := range r.Actions {
		key = append(key, a...)
		key = append(key, 0)
	}
	o := sharedOutcomes.getBytes(key, func() outcome { return actionsOutcome(r.Actions) })
	return Result{Kind: kind, RuleID: r.RuleID, Actions: r.Actions, Notify: o.notify, Highlight: o.highlight, Tweaks: o.tweaks}
}

// actionsOutcome works out what actions do.
func actionsOutcome(acts []json.RawMessage) outcome {
	var o outcome
	for _, a := range acts {
		a = bytes.TrimSpace(a)
		if string(a) == `"notify"` {
			o.notify = true
			continue
		}
		if !isObject(a) {
			continue
		}
		var t struct {
			SetTweak *string         `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == nil {
			continue
		}
		v := t.Value
		if *t.SetTweak == "highlight" {
			if len(v) == 0 {
				v = json.RawMessage("true")
			}
			o.highlight = string(bytes.TrimSpace(v)) == "true"
		}
		if len(v) == 0 {
			continue
		}
		if o.tweaks == nil {
			o.tweaks = make(map[string]json.RawMessage)
		}
		o.tweaks[*t.SetTweak] = v
	}
	return o
}

// Evaluate runs the event through the rules: override, content, room,
// sender, underride, each in priority order; the first enabled rule that
// matches gives the result. displayName is the user's display name in the
// room (contains_display_name; "" never matches). room may be nil (no
// members, no power: sender_notification_permission fails). As the spec
// requires, an event the user sent themselves matches nothing, and as in
// Synapse the legacy mention rules are skipped when the event's content
// has "m.mentions". false when no rule matched.
func (c *Compiled) Evaluate(ev *Event, room *RoomContext, displayName string) (Result, bool) {
	if c == nil || ev == nil {
		return Result{}, false
	}
	if c.defaults {
		return c.EvaluateShared(NewEventEval(ev, room), displayName)
	}
	if c.userID != "" && ev.str(slotSender) == c.userID {
		return Result{}, false
	}
	for i := range c.rules {
		r := &c.rules[i]
		if r.legacy && ev.hasMentions {
			continue
		}
		if r.matches(ev, room, displayName) {
			return r.res, true
		}
	}
	return Result{}, false
}

// matches reports whether the rule matches the event.
func (r *crule) matches(ev *Event, room *RoomContext, displayName string) bool {
	switch r.special {
	case ruleContent:
		v := ev.lookup(slotBody, "")
		return v != nil && v.kind == valString && r.glob.matchWord(v.lower)
	case ruleRoom:
		return ev.str(slotRoomID) == r.id
	case ruleSender:
		return ev.str(slotSender) == r.id
	}
	for i := range r.conds {
		if !r.conds[i].holds(ev, room, displayName) {
			return false
		}
	}
	return true
}

// holds reports whether the condition holds for the event.
func (c *cond) holds(ev *Event, room *RoomContext, displayName string) bool {
	switch c.op {
	case opMatch:
		v := ev.lookup(c.slot, c.key)
		if v == nil || v.kind != valString {
			return false
		}
		if c.word {
			return c.glob.matchWord(v.lower)
		}
		return c.glob.matchWhole(v.lower)
	case opIs:
		v := ev.lookup(c.slot, c.key)
		return v != nil && v.kind != valArray && v.scalar.equal(&c.val)
	case opContains:
		v := ev.lookup(c.slot, c.key)
		if v == nil || v.kind != valArray {
			return false
		}
		for i := range v.arr {
			if v.arr[i].equal(&c.val) {
				return true
			}
		}
		return false
	case opDisplayName:
		v := ev.lookup(slotBody, "")
		return v != nil && v.kind == valString && containsWordFold(v.lower, displayName)
	case opMemberCount:
		n := int64(0)
		if room != nil {
			n = int64(room.MemberCount)
		}
		switch c.cmp {
		case cmpLT:
			return n < c.n
		case cmpGT:
			return n > c.n
		case cmpGE:
			return n >= c.n
		case cmpLE:
			return n <= c.n
		}
		return n == c.n
	case opSenderPerm:
		if room == nil {
			return false
		}
		need, ok := room.NotificationLevels[c.key]
		if !ok {
			need = 50
		}
		return room.SenderPowerLevel >= need
	}
	return false
}
