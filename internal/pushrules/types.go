// Package pushrules is the push rules of the Matrix push module: the rule
// and ruleset types, the server-default rules, validation of rules set
// through the client API, the edits the API makes to a user's rules, and
// the evaluation of an event against a user's rules.
//
// It imports no component: the user API stores and edits rules with it,
// the sync API evaluates events with it.
package pushrules

import (
	"bytes"
	"encoding/json"
	"slices"
)

// Kinds of rule, in the order they are checked (after .m.rule.master).
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists the kinds in evaluation order.
var Kinds = []string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// Condition is one condition of an override or underride rule.
type Condition struct {
	Kind string `json:"kind"`
	// Key is the dot-separated property path (event_match,
	// event_property_is, event_property_contains) or the power level key
	// (sender_notification_permission).
	Key string `json:"key,omitempty"`
	// Pattern is the glob of event_match (it can be "", as in
	// .m.rule.tombstone's state_key condition).
	Pattern *string `json:"pattern,omitempty"`
	// Value is the value of event_property_is and
	// event_property_contains (it can be JSON null).
	Value json.RawMessage `json:"value,omitempty"`
	// Is is the comparison of room_member_count ("2", ">=10").
	Is string `json:"is,omitempty"`

	// extra keeps the members this struct has no field for (or whose
	// type does not fit the field), so that a condition of a kind this
	// server does not know reads back as the client set it.
	extra map[string]json.RawMessage
}

// Rule is a push rule as the client API shows it.
type Rule struct {
	RuleID  string `json:"rule_id"`
	Default bool   `json:"default"`
	Enabled bool   `json:"enabled"`
	// Conditions of override and underride rules (always present for
	// them, possibly empty); absent for the other kinds.
	Conditions []Condition `json:"conditions,omitempty"`
	// Pattern of content rules.
	Pattern *string `json:"pattern,omitempty"`
	// Actions as the user set them: "notify", {"set_tweak": ...}, and the
	// historical "dont_notify" and "coalesce", which are kept (clients
	// read them back) but ignored when evaluating.
	Actions []json.RawMessage `json:"actions"`
}

// Ruleset is the rules of one scope ("global"), each kind in priority
// order.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// DefaultOverride is what a user changed of a server-default rule.
// Actions nil means unchanged; an empty non-nil slice (stored as [])
// means the user set no actions, so the tag has no omitempty.
type DefaultOverride struct {
	Enabled *bool             `json:"enabled,omitempty"`
	Actions []json.RawMessage `json:"actions"`
}

// UserRules is what is stored for a user: the user's own rules, each kind
// in priority order, and the changes to server-default rules. The zero
// value is a user who changed nothing.
type UserRules struct {
	Override  []Rule                     `json:"override,omitempty"`
	Content   []Rule                     `json:"content,omitempty"`
	Room      []Rule                     `json:"room,omitempty"`
	Sender    []Rule                     `json:"sender,omitempty"`
	Underride []Rule                     `json:"underride,omitempty"`
	Defaults  map[string]DefaultOverride `json:"defaults,omitempty"`
}

// ruleJSON is Rule as it is written: conditions are present whenever the
// slice is non-nil (an empty list as []), which the omitempty of Rule's
// tag cannot express.
type ruleJSON struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions *[]Condition      `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
}

// MarshalJSON writes the rule as the client API shows it: "conditions"
// when the rule has a (possibly empty) condition list, that is for
// override and underride rules, and "actions" always a list.
func (r Rule) MarshalJSON() ([]byte, error) {
	out := ruleJSON{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Pattern: r.Pattern, Actions: r.Actions}
	if r.Conditions != nil {
		out.Conditions = &r.Conditions
	}
	if out.Actions == nil {
		out.Actions = []json.RawMessage{}
	}
	return json.Marshal(out)
}

// conditionFields is Condition without its methods, for the standard
// encoding of the fields it has.
type conditionFields Condition

// MarshalJSON writes the condition's fields and any members kept from a
// condition of a kind this server does not know.
func (c Condition) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(conditionFields(c))
	if err != nil || len(c.extra) == 0 {
		return b, err
	}
	keys := make([]string, 0, len(c.extra))
	for k := range c.extra {
		if !c.hasField(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var buf bytes.Buffer
	buf.Write(b[:len(b)-1]) // without the closing brace
	for _, k := range keys {
		kb, _ := json.Marshal(k)
		buf.WriteByte(',')
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(c.extra[k])
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// hasField reports whether the member name is written from one of the
// condition's fields.
func (c *Condition) hasField(name string) bool {
	switch name {
	case "kind":
		return true
	case "key":
		return c.Key != ""
	case "pattern":
		return c.Pattern != nil
	case "value":
		return len(c.Value) != 0
	case "is":
		return c.Is != ""
	}
	return false
}

// UnmarshalJSON reads a condition leniently, as stored rules must always
// load: a member whose type does not fit its field is kept as it is, with
// the members of unknown condition kinds (such a condition never matches).
// Only a value that is not an object (or null) fails.
func (c *Condition) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = conditionFromObject(m)
	return nil
}

// conditionFromObject builds a condition from the members of its JSON
// object, keeping what does not fit a field in extra.
func conditionFromObject(m map[string]json.RawMessage) Condition {
	var c Condition
	for k, v := range m {
		var s string
		isString := json.Unmarshal(v, &s) == nil && len(v) > 0 && v[0] == '"'
		switch {
		case k == "kind" && isString:
			c.Kind = s
		case k == "key" && isString && s != "":
			c.Key = s
		case k == "pattern" && isString:
			c.Pattern = &s
		case k == "is" && isString && s != "":
			c.Is = s
		case k == "value":
			c.Value = slices.Clone(v)
		default:
			if c.extra == nil {
				c.extra = make(map[string]json.RawMessage)
			}
			c.extra[k] = slices.Clone(v)
		}
	}
	return c
}

// clone returns a copy of c that shares no memory with it but the
// immutable extra members.
func (c Condition) clone() Condition {
	if c.Pattern != nil {
		p := *c.Pattern
		c.Pattern = &p
	}
	if c.Value != nil {
		c.Value = slices.Clone(c.Value)
	}
	return c
}

// clone returns a deep copy of r.
func (r Rule) clone() Rule {
	if r.Conditions != nil {
		cs := make([]Condition, len(r.Conditions))
		for i, c := range r.Conditions {
			cs[i] = c.clone()
		}
		r.Conditions = cs
	}
	if r.Pattern != nil {
		p := *r.Pattern
		r.Pattern = &p
	}
	r.Actions = cloneActions(r.Actions)
	return r
}

// cloneActions copies an action list (nil stays nil).
func cloneActions(actions []json.RawMessage) []json.RawMessage {
	if actions == nil {
		return nil
	}
	out := make([]json.RawMessage, len(actions))
	for i, a := range actions {
		out[i] = slices.Clone(a)
	}
	return out
}

// equalConditions reports whether two condition lists are the same
// (compared by their JSON).
func equalConditions(a, b []Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, err1 := json.Marshal(a[i])
		y, err2 := json.Marshal(b[i])
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}
