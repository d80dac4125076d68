package httputil

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// ReadBody reads the whole request body. The server has already capped it
// (see Server); a body over the cap is 413 M_TOO_LARGE.
func ReadBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, mxerr.TooLarge("Request body too large (limit %d bytes)", tooBig.Limit)
		}
		return nil, mxerr.NotJSON("Could not read request body")
	}
	return b, nil
}

// DecodeJSON reads the request body, which must be a JSON object, into v.
// Invalid JSON is 400 M_NOT_JSON; valid JSON that is not an object or does not
// fit v is 400 M_BAD_JSON; an oversized body is 413 M_TOO_LARGE.
func DecodeJSON(r *http.Request, v any) error {
	b, err := ReadBody(r)
	if err != nil {
		return err
	}
	return UnmarshalObject(b, v)
}

// ValidJSON reports whether b is one JSON value in valid UTF-8. encoding/json
// alone accepts invalid UTF-8 in strings (and silently replaces it), which
// JSON (RFC 8259) and Matrix's canonical JSON forbid.
func ValidJSON(b []byte) bool {
	return utf8.Valid(b) && json.Valid(b)
}

// DecodeOptionalJSON is DecodeJSON for a body that may be empty (DELETE
// requests and some POSTs often have none): an empty body leaves v as it is.
func DecodeOptionalJSON(r *http.Request, v any) error {
	b, err := ReadBody(r)
	if err != nil || len(b) == 0 {
		return err
	}
	return UnmarshalObject(b, v)
}

// UnmarshalObject decodes b, which must be a JSON object, into v with the
// error mapping of DecodeJSON. Besides invalid JSON and UTF-8, it refuses
// what encoding/json would silently change: lone surrogate escapes (M_NOT_JSON),
// duplicate keys and NUL in strings (M_BAD_JSON).
func UnmarshalObject(b []byte, v any) error {
	return unmarshalObject(b, v, false)
}

// UnmarshalRemoteObject is UnmarshalObject for bodies from other servers,
// which may carry NUL in event content (Synapse accepts it), so that one such
// event does not make a whole transaction unreadable.
func UnmarshalRemoteObject(b []byte, v any) error {
	return unmarshalObject(b, v, true)
}

func unmarshalObject(b []byte, v any, allowNUL bool) error {
	if !ValidJSON(b) {
		return mxerr.NotJSON("Content not JSON")
	}
	if err := checkStrictJSON(b, allowNUL); err != nil {
		return err
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return mxerr.BadJSON("Content must be a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return mxerr.BadJSON("Field %q has the wrong type: expected %s", typeErr.Field, typeErr.Type)
		}
		return mxerr.BadJSON("Malformed JSON: %v", err)
	}
	return nil
}
