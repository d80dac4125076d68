package pushrules

import (
	"errors"
	"strings"

	"github.com/tidwall/gjson"
)

// Types of the flattened values of an event.
const (
	valString uint8 = iota + 1
	valInt
	valBool
	valNull
	valArray
)

// scalar is a non-compound canonical JSON value.
type scalar struct {
	kind uint8
	s    string
	i    int64
	b    bool
}

// equal reports whether two scalars are the same JSON value (strings
// compared exactly).
func (a *scalar) equal(b *scalar) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case valString:
		return a.s == b.s
	case valInt:
		return a.i == b.i
	case valBool:
		return a.b == b.b
	}
	return true
}

// value is one flattened property of an event.
type value struct {
	scalar
	lower string   // strings: s in lower case, for event_match
	arr   []scalar // arrays: their non-compound elements
}

// Properties of an event with a slot of their own, so that the default
// rules look them up without hashing (keys in their escaped form).
const (
	slotType = iota
	slotSender
	slotRoomID
	slotStateKey
	slotBody
	slotMsgtype
	slotMembership
	slotMentionIDs
	slotMentionRoom
	slotRelType
	numSlots
)

// slotKey returns the slot of a canonical key, or -1.
func slotKey(key string) int {
	switch key {
	case "type":
		return slotType
	case "sender":
		return slotSender
	case "room_id":
		return slotRoomID
	case "state_key":
		return slotStateKey
	case "content.body":
		return slotBody
	case "content.msgtype":
		return slotMsgtype
	case "content.membership":
		return slotMembership
	case `content.m\.mentions.user_ids`:
		return slotMentionIDs
	case `content.m\.mentions.room`:
		return slotMentionRoom
	case `content.m\.relates_to.rel_type`:
		return slotRelType
	}
	return -1
}

// Event is an event prepared once for evaluation against the rules of
// every user it concerns: its string, integer, boolean and null
// properties flattened by their dot-separated path (keys escaped as the
// spec says: content.m\.mentions.user_ids), strings also lower-cased, and
// arrays kept for event_property_contains. An Event is immutable and safe
// for concurrent use.
type Event struct {
	vals        []value
	index       map[string]int32 // canonical key → index in vals
	slots       [numSlots]int32  // index in vals, or -1
	hasMentions bool             // content has "m.mentions" (of any type)
}

// NewEvent prepares an event, in client or federation format, for
// evaluation. It fails when eventJSON is not a JSON object.
func NewEvent(eventJSON []byte) (*Event, error) {
	if !gjson.ValidBytes(eventJSON) {
		return nil, errors.New("pushrules: the event is not valid JSON")
	}
	top := gjson.ParseBytes(eventJSON)
	if !top.IsObject() {
		return nil, errors.New("pushrules: the event is not a JSON object")
	}
	ev := &Event{index: make(map[string]int32, 16), vals: make([]value, 0, 16)}
	for i := range ev.slots {
		ev.slots[i] = -1
	}
	ev.hasMentions = top.Get("content").Get(`m\.mentions`).Exists()
	ev.flatten(top, nil)
	return ev, nil
}

// flatten records the scalar and array leaves of an object under their
// dot-separated paths (prefix is the object's own path). A name that
// repeats keeps its last value, as decoding into a map would.
func (ev *Event) flatten(obj gjson.Result, prefix []byte) {
	obj.ForEach(func(k, v gjson.Result) bool {
		path := make([]byte, 0, len(prefix)+len(k.Str)+8)
		path = append(path, prefix...)
		if len(prefix) > 0 {
			path = append(path, '.')
		}
		path = appendEscaped(path, k.Str)
		switch {
		case v.IsObject():
			ev.flatten(v, path)
		case v.IsArray():
			val := value{scalar: scalar{kind: valArray}}
			v.ForEach(func(_, e gjson.Result) bool {
				if s, ok := toScalar(e); ok {
					val.arr = append(val.arr, s)
				}
				return true
			})
			ev.add(string(path), val)
		default:
			if s, ok := toScalar(v); ok {
				val := value{scalar: s}
				if s.kind == valString {
					val.lower = strings.ToLower(s.s)
				}
				ev.add(string(path), val)
			}
		}
		return true
	})
}

// add records one flattened property.
func (ev *Event) add(key string, v value) {
	i := int32(len(ev.vals))
	ev.vals = append(ev.vals, v)
	ev.index[key] = i
	if s := slotKey(key); s >= 0 {
		ev.slots[s] = i
	}
}

// toScalar converts a JSON value to a scalar: floats, integers beyond
// ±(2^53-1), objects and arrays are not scalars.
func toScalar(v gjson.Result) (scalar, bool) {
	switch v.Type {
	case gjson.String:
		return scalar{kind: valString, s: v.Str}, true
	case gjson.True, gjson.False:
		return scalar{kind: valBool, b: v.Type == gjson.True}, true
	case gjson.Null:
		return scalar{kind: valNull}, true
	case gjson.Number:
		if i, ok := parseInt(v.Raw); ok {
			return scalar{kind: valInt, i: i}, true
		}
	}
	return scalar{}, false
}

// lookup returns the property at a slot (or, when slot < 0, key), nil
// when the event has none.
func (ev *Event) lookup(slot int, key string) *value {
	if slot >= 0 {
		if i := ev.slots[slot]; i >= 0 {
			return &ev.vals[i]
		}
		return nil
	}
	if i, ok := ev.index[key]; ok {
		return &ev.vals[i]
	}
	return nil
}

// str returns the string property at a slot ("" when absent or not a
// string).
func (ev *Event) str(slot int) string {
	if v := ev.lookup(slot, ""); v != nil && v.kind == valString {
		return v.s
	}
	return ""
}

// appendEscaped appends a property name escaped for a dot-separated path:
// a backslash or a dot gets a backslash before it.
func appendEscaped(b []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '\\' || c == '.' {
			b = append(b, '\\')
		}
		b = append(b, name[i])
	}
	return b
}

// splitPath splits a dot-separated property path into property names:
// "\." is a dot and "\\" a backslash within a name; any other backslash
// is itself.
func splitPath(path string) []string {
	var names []string
	var cur []byte
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '\\' && i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\'):
			cur = append(cur, path[i+1])
			i++
		case c == '.':
			names = append(names, string(cur))
			cur = cur[:0]
		default:
			cur = append(cur, c)
		}
	}
	return append(names, string(cur))
}

// canonicalKey rewrites a rule's property path in the escaping NewEvent
// uses, so that content.m\xfoo (a name with a backslash the rule did not
// escape) finds the property "m\xfoo".
func canonicalKey(path string) string {
	if isCanonical(path) {
		return path
	}
	var b []byte
	for i, name := range splitPath(path) {
		if i > 0 {
			b = append(b, '.')
		}
		b = appendEscaped(b, name)
	}
	return string(b)
}

// isCanonical reports whether every backslash of path escapes a dot or a
// backslash, so that splitting and escaping again gives path back.
func isCanonical(path string) bool {
	for i := 0; i < len(path); i++ {
		if path[i] == '\\' {
			if i+1 == len(path) || (path[i+1] != '.' && path[i+1] != '\\') {
				return false
			}
			i++
		}
	}
	return true
}
