package httputil

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// Strict input. encoding/json turns a lone UTF-16 surrogate escape ("\ud800")
// into U+FFFD, keeps the last of duplicate keys, and passes NUL through; a
// client's content would be silently changed (or two different requests would
// become one). The checks here refuse such input once, for every route.

// checkStrictJSON reports the first problem in b, which json.Valid accepted:
// a duplicate key in an object (M_BAD_JSON), a \u escape of a lone surrogate
// (M_NOT_JSON: the text is not Unicode), or, unless allowNUL, a NUL character
// in a string (M_BAD_JSON). It does not allocate for objects without escaped
// keys of up to smallObject keys.
func checkStrictJSON(b []byte, allowNUL bool) error {
	type frame struct {
		obj       bool
		expectKey bool
		start     int                 // the object's first key in keys
		set       map[string]struct{} // its keys, once it has many
	}
	var stackBuf [16]frame
	var keysBuf [32][]byte
	stack, keys := stackBuf[:0], keysBuf[:0]
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{':
			stack = append(stack, frame{obj: true, expectKey: true, start: len(keys)})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			if f := stack[len(stack)-1]; f.obj {
				keys = keys[:f.start]
			}
			stack = stack[:len(stack)-1]
		case ',':
			if top := len(stack) - 1; top >= 0 && stack[top].obj {
				stack[top].expectKey = true
			}
		case ':':
			stack[len(stack)-1].expectKey = false
		case '"':
			end, escaped, err := scanString(b, i+1, allowNUL)
			if err != nil {
				return err
			}
			if top := len(stack) - 1; top >= 0 && stack[top].obj && stack[top].expectKey {
				key := b[i+1 : end]
				if escaped {
					var s string
					if json.Unmarshal(b[i:end+1], &s) != nil {
						return mxerr.NotJSON("Content not JSON")
					}
					key = []byte(s)
				}
				f := &stack[top]
				if f.set == nil && len(keys)-f.start < smallObject {
					for _, k := range keys[f.start:] {
						if bytes.Equal(k, key) {
							return mxerr.BadJSON("Duplicate key %q in a JSON object", truncate(string(key), 64))
						}
					}
					keys = append(keys, key)
				} else {
					if f.set == nil {
						f.set = make(map[string]struct{}, 2*smallObject)
						for _, k := range keys[f.start:] {
							f.set[string(k)] = struct{}{}
						}
						keys = keys[:f.start]
					}
					if _, dup := f.set[string(key)]; dup {
						return mxerr.BadJSON("Duplicate key %q in a JSON object", truncate(string(key), 64))
					}
					f.set[string(key)] = struct{}{}
				}
			}
			i = end
		}
	}
	return nil
}

// smallObject is how many keys an object's duplicate check compares one by
// one before it switches to a map.
const smallObject = 16

// scanString scans the JSON string whose contents start at b[i] (after the
// opening quote) and returns the index of the closing quote and whether the
// string has escapes.
func scanString(b []byte, i int, allowNUL bool) (end int, escaped bool, err error) {
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i, escaped, nil
		case '\\':
			escaped = true
			i++
			if b[i] != 'u' {
				continue
			}
			r := hex4(b[i+1 : i+5])
			i += 4
			switch {
			case r == 0 && !allowNUL:
				return 0, false, mxerr.BadJSON("JSON strings must not contain NUL (\\u0000)")
			case r >= 0xDC00 && r <= 0xDFFF:
				return 0, false, mxerr.NotJSON("Content not JSON: lone UTF-16 surrogate \\u%04x", r)
			case r >= 0xD800 && r <= 0xDBFF:
				// A high surrogate must be followed by an escaped low one.
				if i+6 >= len(b) || b[i+1] != '\\' || b[i+2] != 'u' {
					return 0, false, mxerr.NotJSON("Content not JSON: lone UTF-16 surrogate \\u%04x", r)
				}
				if lo := hex4(b[i+3 : i+7]); lo < 0xDC00 || lo > 0xDFFF {
					return 0, false, mxerr.NotJSON("Content not JSON: lone UTF-16 surrogate \\u%04x", r)
				}
				i += 6
			}
		}
	}
	return 0, false, mxerr.NotJSON("Content not JSON")
}

// hex4 decodes four hex digits (json.Valid has checked them).
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// checkParams refuses a request whose path variables or query string are not
// well-formed: bad percent-encoding, invalid UTF-8 or NUL once unescaped (400
// M_INVALID_PARAM). Without it "%FF%FE" and "%C0%AF" both become "\ufffd\ufffd"
// where the value is re-encoded as JSON, and two transaction IDs collide.
func checkParams(r *http.Request) error {
	for name, v := range mux.Vars(r) {
		u, err := url.PathUnescape(v)
		if err != nil {
			return mxerr.InvalidParam("Path parameter %s is not valid percent-encoding", name)
		}
		if err := checkText(u); err != nil {
			return mxerr.InvalidParam("Path parameter %s %s", name, err.Error())
		}
		if n, ok := maxVarBytes[name]; ok && len(u) > n {
			return mxerr.InvalidParam("Path parameter %s is longer than %d bytes", name, n)
		}
	}
	// ParseQuery returns what it could parse with its first error; only bad
	// escapes are refused (r.URL.Query() would drop them silently).
	q, err := url.ParseQuery(r.URL.RawQuery)
	var escErr url.EscapeError
	if errors.As(err, &escErr) {
		return mxerr.InvalidParam("Query string is not valid percent-encoding")
	}
	for k, vs := range q {
		if err := checkText(k); err != nil {
			return mxerr.InvalidParam("Query parameter name %s", err.Error())
		}
		for _, v := range vs {
			if err := checkText(v); err != nil {
				return mxerr.InvalidParam("Query parameter %s %s", truncate(k, 64), err.Error())
			}
		}
	}
	return nil
}

// MaxIDBytes is the spec's limit on the length of identifiers (room, user
// and event IDs, aliases); Synapse and Myelin apply it to device IDs,
// transaction IDs, event types and state keys too.
const MaxIDBytes = 255

// maxVarBytes bounds the path variables of that name on every route, once
// here: an over-long room ID is 400 before a join tries to reach its server.
var maxVarBytes = map[string]int{
	"roomId": MaxIDBytes, "roomIdOrAlias": MaxIDBytes, "roomAlias": MaxIDBytes, "userId": MaxIDBytes,
	"eventId": MaxIDBytes, "deviceId": MaxIDBytes, "txnId": MaxIDBytes, "eventType": MaxIDBytes,
	"stateKey": MaxIDBytes, "type": MaxIDBytes,
}

type textError string

func (e textError) Error() string { return string(e) }

// checkText reports whether s is valid UTF-8 without NUL.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return textError("is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return textError("contains NUL")
	}
	return nil
}
