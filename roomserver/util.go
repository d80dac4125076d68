package roomserver

import (
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
)

// gjsonContent returns a reader of string fields of an event's content.
func gjsonContent(p gomatrixserverlib.PDU) func(string) string {
	content := p.Content()
	return func(key string) string {
		v := gjson.GetBytes(content, gjsonEscape(key))
		if v.Type != gjson.String {
			return ""
		}
		return v.Str
	}
}

// gjsonEscape escapes a key for a gjson path.
func gjsonEscape(key string) string {
	out := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '.', '*', '?', '\\', '|', '#', '@', '!':
			out = append(out, '\\')
		}
		out = append(out, key[i])
	}
	return string(out)
}

// redactsOf returns the target of a redaction: the top-level "redacts" of
// room versions 1-10, content.redacts of 11 and later.
func redactsOf(p gomatrixserverlib.PDU) string {
	if id := p.Redacts(); id != "" {
		return id
	}
	return gjsonContent(p)("redacts")
}
