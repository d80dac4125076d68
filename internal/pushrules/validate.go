package pushrules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// maxSafeInt is the largest integer canonical JSON allows (2^53-1).
const maxSafeInt = 1<<53 - 1

// ruleBody is the body of PUT /pushrules/global/{kind}/{ruleId}, each
// member kept raw so that its type can be checked.
type ruleBody struct {
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions"`
	Pattern    json.RawMessage `json:"pattern"`
}

// parseRule checks the body of a PUT of a rule of kind and returns the
// rule it describes (enabled, not default). Wrong JSON types and missing
// members are ErrBadJSON, bad values ErrInvalid.
func parseRule(kind, ruleID string, body json.RawMessage) (Rule, error) {
	var b ruleBody
	if !isObject(body) {
		return Rule{}, fmt.Errorf("%w: the body must be a JSON object", ErrBadJSON)
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Rule{}, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	r := Rule{RuleID: ruleID, Enabled: true}
	if isAbsent(b.Actions) {
		return Rule{}, fmt.Errorf("%w: missing actions", ErrBadJSON)
	}
	var acts []json.RawMessage
	if !isArray(b.Actions) || json.Unmarshal(b.Actions, &acts) != nil {
		return Rule{}, fmt.Errorf("%w: actions must be an array", ErrBadJSON)
	}
	if err := checkActions(acts); err != nil {
		return Rule{}, err
	}
	r.Actions = cloneActions(acts)
	switch kind {
	case KindOverride, KindUnderride:
		conds, err := parseConditions(b.Conditions)
		if err != nil {
			return Rule{}, err
		}
		r.Conditions = conds
	case KindContent:
		var p string
		if isAbsent(b.Pattern) {
			return Rule{}, fmt.Errorf("%w: a content rule needs a pattern", ErrBadJSON)
		}
		if !isString(b.Pattern) || json.Unmarshal(b.Pattern, &p) != nil {
			return Rule{}, fmt.Errorf("%w: pattern must be a string", ErrBadJSON)
		}
		r.Pattern = &p
	case KindRoom:
		if !strings.HasPrefix(ruleID, "!") && !strings.HasPrefix(ruleID, "#") {
			return Rule{}, fmt.Errorf("%w: the rule ID of a room rule must be a room ID", ErrInvalid)
		}
	case KindSender:
		if !strings.HasPrefix(ruleID, "@") || !strings.Contains(ruleID, ":") {
			return Rule{}, fmt.Errorf("%w: the rule ID of a sender rule must be a user ID", ErrInvalid)
		}
	}
	return r, nil
}

// checkActions checks an action list: "notify", the historical
// "dont_notify" and "coalesce", and {"set_tweak": name, "value"?: any}.
func checkActions(acts []json.RawMessage) error {
	for _, a := range acts {
		a = bytes.TrimSpace(a)
		switch {
		case isString(a):
			var s string
			_ = json.Unmarshal(a, &s)
			if s != "notify" && s != "dont_notify" && s != "coalesce" {
				return fmt.Errorf("%w: unrecognised action %q", ErrInvalid, s)
			}
		case isObject(a):
			var m map[string]json.RawMessage
			if err := json.Unmarshal(a, &m); err != nil {
				return fmt.Errorf("%w: unrecognised action %s", ErrInvalid, a)
			}
			tweak, ok := m["set_tweak"]
			if !ok {
				return fmt.Errorf("%w: unrecognised action %s", ErrInvalid, a)
			}
			if !isString(tweak) {
				return fmt.Errorf("%w: set_tweak must be a string", ErrInvalid)
			}
		default:
			return fmt.Errorf("%w: unrecognised action %s", ErrInvalid, a)
		}
	}
	return nil
}

// parseConditions checks the conditions of an override or underride rule.
// Conditions of kinds this server does not know are kept as they are
// (they never match).
func parseConditions(raw json.RawMessage) ([]Condition, error) {
	if isAbsent(raw) {
		return nil, fmt.Errorf("%w: missing conditions", ErrBadJSON)
	}
	var list []json.RawMessage
	if !isArray(raw) || json.Unmarshal(raw, &list) != nil {
		return nil, fmt.Errorf("%w: conditions must be an array", ErrBadJSON)
	}
	out := make([]Condition, 0, len(list))
	for i, c := range list {
		var m map[string]json.RawMessage
		if !isObject(c) || json.Unmarshal(c, &m) != nil {
			return nil, fmt.Errorf("%w: condition %d is not an object", ErrBadJSON, i)
		}
		cond := conditionFromObject(m)
		if err := checkCondition(m); err != nil {
			return nil, fmt.Errorf("%w (condition %d)", err, i)
		}
		out = append(out, cond)
	}
	return out, nil
}

// checkCondition checks the members of one condition object.
func checkCondition(m map[string]json.RawMessage) error {
	kind, ok := m["kind"]
	if !ok {
		return fmt.Errorf("%w: condition without kind", ErrBadJSON)
	}
	if !isString(kind) {
		return fmt.Errorf("%w: kind must be a string", ErrBadJSON)
	}
	var k string
	_ = json.Unmarshal(kind, &k)
	switch k {
	case kindEventMatch:
		if err := needString(m, "key", true); err != nil {
			return err
		}
		return needString(m, "pattern", false)
	case kindPropertyIs, kindPropContains:
		if err := needString(m, "key", true); err != nil {
			return err
		}
		v, ok := m["value"]
		if !ok {
			return fmt.Errorf("%w: %s needs a value", ErrBadJSON, k)
		}
		if isObject(v) || isArray(v) {
			return fmt.Errorf("%w: value must be a string, an integer, a boolean or null", ErrBadJSON)
		}
		if _, ok := parseScalar(v); !ok {
			return fmt.Errorf("%w: value must be a string, an integer in [-(2^53)+1, 2^53-1], a boolean or null", ErrInvalid)
		}
	case kindMemberCount:
		if err := needString(m, "is", false); err != nil {
			return err
		}
		var is string
		_ = json.Unmarshal(m["is"], &is)
		if _, _, ok := parseMemberCount(is); !ok {
			return fmt.Errorf("%w: is must be a number optionally prefixed by ==, <, >, >= or <=", ErrInvalid)
		}
	case kindSenderNotifPL:
		return needString(m, "key", true)
	}
	return nil
}

// needString checks that m has a string member name (non-empty when
// nonEmpty).
func needString(m map[string]json.RawMessage, name string, nonEmpty bool) error {
	v, ok := m[name]
	if !ok {
		return fmt.Errorf("%w: missing %s", ErrBadJSON, name)
	}
	var s string
	if !isString(v) || json.Unmarshal(v, &s) != nil {
		return fmt.Errorf("%w: %s must be a string", ErrBadJSON, name)
	}
	if nonEmpty && s == "" {
		return fmt.Errorf("%w: %s must not be empty", ErrInvalid, name)
	}
	return nil
}

// Comparisons of room_member_count.
const (
	cmpEQ uint8 = iota
	cmpLT
	cmpGT
	cmpGE
	cmpLE
)

// parseMemberCount parses the is of room_member_count:
// ^(==|<|>|>=|<=)?[0-9]+$.
func parseMemberCount(is string) (op uint8, n int64, ok bool) {
	switch {
	case strings.HasPrefix(is, "=="):
		op, is = cmpEQ, is[2:]
	case strings.HasPrefix(is, ">="):
		op, is = cmpGE, is[2:]
	case strings.HasPrefix(is, "<="):
		op, is = cmpLE, is[2:]
	case strings.HasPrefix(is, "<"):
		op, is = cmpLT, is[1:]
	case strings.HasPrefix(is, ">"):
		op, is = cmpGT, is[1:]
	}
	if is == "" {
		return 0, 0, false
	}
	for i := 0; i < len(is); i++ {
		if is[i] < '0' || is[i] > '9' {
			return 0, 0, false
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	return op, n, err == nil
}

// parseScalar parses a non-compound canonical JSON value: a string, an
// integer in ±(2^53-1), a boolean or null.
func parseScalar(raw json.RawMessage) (scalar, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return scalar{}, false
	}
	switch raw[0] {
	case '"':
		if len(raw) >= 2 && raw[len(raw)-1] == '"' && plainString(raw[1:len(raw)-1]) {
			return scalar{kind: valString, s: string(raw[1 : len(raw)-1])}, true
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return scalar{}, false
		}
		return scalar{kind: valString, s: s}, true
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return scalar{}, false
		}
		return scalar{kind: valBool, b: b}, true
	case 'n':
		if string(raw) != "null" {
			return scalar{}, false
		}
		return scalar{kind: valNull}, true
	}
	i, ok := parseInt(string(raw))
	return scalar{kind: valInt, i: i}, ok
}

// parseInt parses a JSON number that is an integer literal (no fraction,
// no exponent) in ±(2^53-1).
func parseInt(s string) (int64, bool) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil || i > maxSafeInt || i < -maxSafeInt {
		return 0, false
	}
	return i, true
}

func isObject(b []byte) bool { b = bytes.TrimSpace(b); return len(b) > 0 && b[0] == '{' }
func isArray(b []byte) bool  { b = bytes.TrimSpace(b); return len(b) > 0 && b[0] == '[' }
func isString(b []byte) bool { b = bytes.TrimSpace(b); return len(b) > 0 && b[0] == '"' }

// isAbsent reports whether a member was absent (or null).
func isAbsent(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}

// plainString reports whether the inside of a JSON string literal needs
// no unquoting (no escapes, no control characters, ASCII).
func plainString(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c == '"' || c < 0x20 || c >= 0x80 {
			return false
		}
	}
	return true
}
