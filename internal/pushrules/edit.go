package pushrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Sentinel errors of the rule edits; the returned errors wrap one of them
// with a message fit for the client.
var (
	ErrNotFound = errors.New("no such push rule")   // M_NOT_FOUND, 404
	ErrInvalid  = errors.New("invalid push rule")   // M_INVALID_PARAM, 400
	ErrBadJSON  = errors.New("malformed push rule") // M_BAD_JSON, 400
)

// Merge returns the user's effective ruleset as GET /pushrules/ shows it,
// in Synapse's order: .m.rule.master, the user's override rules, the other
// server-default overrides; in each other kind the user's rules before the
// server-default ones. Server-default rules carry the user's changes
// (enabled, actions). Override and underride rules always have a
// condition list, the others none. The slices are never nil and share no
// memory with u.
func (u *UserRules) Merge(userID string) Ruleset {
	d := Defaults(userID)
	var own UserRules
	if u != nil {
		own = *u
	}
	apply := func(rules []Rule) []Rule {
		for i := range rules {
			if o, ok := own.Defaults[rules[i].RuleID]; ok {
				if o.Enabled != nil {
					rules[i].Enabled = *o.Enabled
				}
				if o.Actions != nil {
					rules[i].Actions = cloneActions(o.Actions)
				}
			}
		}
		return rules
	}
	out := Ruleset{
		Override:  make([]Rule, 0, len(d.Override)+len(own.Override)),
		Content:   make([]Rule, 0, len(d.Content)+len(own.Content)),
		Room:      make([]Rule, 0, len(own.Room)),
		Sender:    make([]Rule, 0, len(own.Sender)),
		Underride: make([]Rule, 0, len(d.Underride)+len(own.Underride)),
	}
	out.Override = append(out.Override, apply(d.Override[:1])...)
	out.Override = appendOwn(out.Override, KindOverride, own.Override)
	out.Override = append(out.Override, apply(d.Override[1:])...)
	out.Content = append(appendOwn(out.Content, KindContent, own.Content), apply(d.Content)...)
	out.Room = appendOwn(out.Room, KindRoom, own.Room)
	out.Sender = appendOwn(out.Sender, KindSender, own.Sender)
	out.Underride = append(appendOwn(out.Underride, KindUnderride, own.Underride), apply(d.Underride)...)
	return out
}

// appendOwn appends copies of a user's rules of kind, in the shape the
// client API shows.
func appendOwn(dst []Rule, kind string, rules []Rule) []Rule {
	for _, r := range rules {
		r = r.clone()
		r.Default = false
		switch kind {
		case KindOverride, KindUnderride:
			if r.Conditions == nil {
				r.Conditions = []Condition{}
			}
			r.Pattern = nil
		case KindContent:
			r.Conditions = nil
		default:
			r.Conditions, r.Pattern = nil, nil
		}
		if r.Actions == nil {
			r.Actions = []json.RawMessage{}
		}
		dst = append(dst, r)
	}
	return dst
}

// own returns a pointer to the user's rules of kind (nil for an unknown
// kind).
func (u *UserRules) own(kind string) *[]Rule {
	switch kind {
	case KindOverride:
		return &u.Override
	case KindContent:
		return &u.Content
	case KindRoom:
		return &u.Room
	case KindSender:
		return &u.Sender
	case KindUnderride:
		return &u.Underride
	}
	return nil
}

// checkKind checks a kind of a route that, as in Synapse, answers 400 for
// an unknown kind.
func checkKind(kind string) error {
	if !slices.Contains(Kinds, kind) {
		return fmt.Errorf("%w: unknown rule kind %q", ErrInvalid, kind)
	}
	return nil
}

// findRule returns the index of ruleID in rules, or -1.
func findRule(rules []Rule, ruleID string) int {
	return slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID })
}

// Get returns one rule of the user's effective ruleset (as Merge shows
// it). It fails with ErrInvalid for an unknown kind and ErrNotFound for an
// unknown rule.
func (u *UserRules) Get(userID, kind, ruleID string) (*Rule, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	rs := u.Merge(userID)
	rules := *rs.kind(kind)
	if i := findRule(rules, ruleID); i >= 0 {
		return &rules[i], nil
	}
	return nil, fmt.Errorf("%w: no %s rule %q", ErrNotFound, kind, ruleID)
}

// Put adds or replaces a user rule from the body of PUT
// /pushrules/global/{kind}/{ruleId} ({actions, conditions, pattern}).
//
// A new rule is enabled; a replaced one keeps its enabled state (as
// Synapse keeps its push_rules_enable row) and its place. before or after
// (before wins when both are given) names a user rule of the same kind to
// put the rule just before or after; a new rule without them goes first,
// as the most important of its kind.
//
// It fails with ErrInvalid for an unknown kind, an empty rule ID or one
// with a slash or backslash, a rule ID starting with "." (reserved for
// server-default rules), a room or sender rule whose ID is not a room or
// user ID, bad actions or conditions, or a before/after rule that is a
// server-default rule or does not exist (400, as the spec and Synapse
// answer); with ErrBadJSON for a body of the wrong shape.
func (u *UserRules) Put(userID, kind, ruleID string, body json.RawMessage, before, after string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := checkNewRuleID(ruleID); err != nil {
		return err
	}
	rule, err := parseRule(kind, ruleID, body)
	if err != nil {
		return err
	}
	anchor := before
	if anchor == "" {
		anchor = after
	}
	rules := u.own(kind)
	cur := findRule(*rules, ruleID)
	if cur >= 0 {
		rule.Enabled = (*rules)[cur].Enabled
	}
	if anchor != "" {
		if strings.HasPrefix(anchor, ".") {
			return fmt.Errorf("%w: a rule cannot be placed relative to the server-default rule %q", ErrInvalid, anchor)
		}
		if findRule(*rules, anchor) < 0 {
			return fmt.Errorf("%w: before/after rule not found: %s", ErrInvalid, anchor)
		}
	}
	if anchor != "" && anchor != ruleID {
		if cur >= 0 {
			*rules = slices.Delete(*rules, cur, cur+1)
		}
		at := findRule(*rules, anchor)
		if before == "" {
			at++
		}
		*rules = slices.Insert(*rules, at, rule)
		return nil
	}
	if cur >= 0 {
		(*rules)[cur] = rule
		return nil
	}
	*rules = slices.Insert(*rules, 0, rule)
	return nil
}

// checkNewRuleID checks the rule ID of a PUT.
func checkNewRuleID(ruleID string) error {
	switch {
	case ruleID == "":
		return fmt.Errorf("%w: empty rule ID", ErrInvalid)
	case strings.ContainsAny(ruleID, `/\`):
		return fmt.Errorf("%w: rule_id may not contain slashes", ErrInvalid)
	case strings.HasPrefix(ruleID, "."):
		return fmt.Errorf("%w: cannot add new rule_ids that start with '.'", ErrInvalid)
	}
	return nil
}

// Delete removes a user rule. It fails with ErrNotFound for an unknown
// kind or rule, and, as in Synapse, for a server-default rule (which
// cannot be deleted).
func (u *UserRules) Delete(userID, kind, ruleID string) error {
	rules := u.own(kind)
	if rules == nil {
		return fmt.Errorf("%w: unknown rule kind %q", ErrNotFound, kind)
	}
	i := findRule(*rules, ruleID)
	if i < 0 {
		if defaultKind(userID, ruleID) == kind {
			return fmt.Errorf("%w: server-default rule %q cannot be deleted", ErrNotFound, ruleID)
		}
		return fmt.Errorf("%w: no %s rule %q", ErrNotFound, kind, ruleID)
	}
	*rules = slices.Delete(*rules, i, i+1)
	return nil
}

// SetEnabled enables or disables a rule, the user's own or a
// server-default one. It fails with ErrInvalid for an unknown kind and
// ErrNotFound for an unknown rule.
func (u *UserRules) SetEnabled(userID, kind, ruleID string, enabled bool) error {
	return u.setAttr(userID, kind, ruleID, func(r *Rule) { r.Enabled = enabled }, func(o *DefaultOverride) {
		o.Enabled = &enabled
	})
}

// SetActions replaces a rule's actions, the user's own or a
// server-default one. It fails with ErrInvalid for an unknown kind or bad
// actions and ErrNotFound for an unknown rule.
func (u *UserRules) SetActions(userID, kind, ruleID string, actions []json.RawMessage) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := checkActions(actions); err != nil {
		return err
	}
	acts := cloneActions(actions)
	if acts == nil {
		acts = []json.RawMessage{}
	}
	return u.setAttr(userID, kind, ruleID, func(r *Rule) { r.Actions = acts }, func(o *DefaultOverride) {
		o.Actions = acts
	})
}

// setAttr changes a user rule with own or a server-default rule's
// override with def.
func (u *UserRules) setAttr(userID, kind, ruleID string, own func(*Rule), def func(*DefaultOverride)) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if strings.HasPrefix(ruleID, ".") {
		if defaultKind(userID, ruleID) != kind {
			return fmt.Errorf("%w: no server-default %s rule %q", ErrNotFound, kind, ruleID)
		}
		if u.Defaults == nil {
			u.Defaults = make(map[string]DefaultOverride)
		}
		o := u.Defaults[ruleID]
		def(&o)
		u.Defaults[ruleID] = o
		return nil
	}
	rules := u.own(kind)
	i := findRule(*rules, ruleID)
	if i < 0 {
		return fmt.Errorf("%w: no %s rule %q", ErrNotFound, kind, ruleID)
	}
	own(&(*rules)[i])
	return nil
}

// CopyRoom copies the user's rules of a room to its successor after an
// upgrade, as Synapse's copy_push_rules_from_room_to_room does: every
// enabled user rule of the old room (the room rule oldRoomID, override and
// underride rules with an event_match on room_id oldRoomID) gets a copy
// for newRoomID with the same actions, first in its kind. A copy's rule
// ID is newRoomID for the room rule; for the others the old ID with
// oldRoomID replaced by newRoomID, or newRoomID, made unique with a
// numeric suffix. A rule the new room already has (same ID for the room
// rule, same conditions for the others) is not copied again. It reports
// whether anything changed.
func (u *UserRules) CopyRoom(oldRoomID, newRoomID string) bool {
	if oldRoomID == "" || newRoomID == "" || oldRoomID == newRoomID {
		return false
	}
	changed := false
	if i := findRule(u.Room, oldRoomID); i >= 0 && u.Room[i].Enabled && findRule(u.Room, newRoomID) < 0 {
		r := u.Room[i].clone()
		r.RuleID = newRoomID
		u.Room = slices.Insert(u.Room, 0, r)
		changed = true
	}
	for _, kind := range []string{KindOverride, KindUnderride} {
		rules := u.own(kind)
		var copies []Rule
		for _, r := range *rules {
			if !r.Enabled || !mentionsRoom(r.Conditions, oldRoomID) {
				continue
			}
			c := r.clone()
			for i := range c.Conditions {
				if cd := &c.Conditions[i]; cd.Key == "room_id" && cd.Pattern != nil && *cd.Pattern == oldRoomID {
					*cd.Pattern = newRoomID
				}
			}
			if slices.ContainsFunc(*rules, func(o Rule) bool { return equalConditions(o.Conditions, c.Conditions) }) ||
				slices.ContainsFunc(copies, func(o Rule) bool { return equalConditions(o.Conditions, c.Conditions) }) {
				continue
			}
			c.RuleID = uniqueID(copyID(r.RuleID, oldRoomID, newRoomID), *rules, copies)
			copies = append(copies, c)
		}
		if len(copies) > 0 {
			*rules = slices.Insert(*rules, 0, copies...)
			changed = true
		}
	}
	return changed
}

// mentionsRoom reports whether conditions have an event_match on room_id
// with pattern roomID.
func mentionsRoom(conds []Condition, roomID string) bool {
	return slices.ContainsFunc(conds, func(c Condition) bool {
		return c.Kind == kindEventMatch && c.Key == "room_id" && c.Pattern != nil && *c.Pattern == roomID
	})
}

// copyID is the ID of the copy of rule ruleID for the new room.
func copyID(ruleID, oldRoomID, newRoomID string) string {
	if strings.Contains(ruleID, oldRoomID) {
		return strings.ReplaceAll(ruleID, oldRoomID, newRoomID)
	}
	return newRoomID
}

// uniqueID returns id, or id with a suffix "-2", "-3"..., so that no rule
// of the lists has it.
func uniqueID(id string, lists ...[]Rule) string {
	taken := func(s string) bool {
		for _, l := range lists {
			if findRule(l, s) >= 0 {
				return true
			}
		}
		return false
	}
	cand := id
	for n := 2; taken(cand); n++ {
		cand = id + "-" + strconv.Itoa(n)
	}
	return cand
}
