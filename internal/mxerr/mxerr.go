// Package mxerr is the Matrix error type and the one table that maps Matrix
// error codes to HTTP statuses.
//
// Handlers return a *Error for every failure the client caused or must see;
// any other error reaching the HTTP layer becomes a 500 M_UNKNOWN whose cause
// is logged once and never sent.
package mxerr

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"time"
)

// Matrix error codes used by Myelin. Names follow the specification.
const (
	CodeBadJSON                = "M_BAD_JSON"
	CodeBadState               = "M_BAD_STATE"
	CodeExclusive              = "M_EXCLUSIVE"
	CodeForbidden              = "M_FORBIDDEN"
	CodeGuestAccessForbidden   = "M_GUEST_ACCESS_FORBIDDEN"
	CodeIncompatibleRoomVer    = "M_INCOMPATIBLE_ROOM_VERSION"
	CodeInvalidParam           = "M_INVALID_PARAM"
	CodeInviteBlocked          = "M_INVITE_BLOCKED"
	CodeInvalidRoomState       = "M_INVALID_ROOM_STATE"
	CodeInvalidSignature       = "M_INVALID_SIGNATURE"
	CodeInvalidUsername        = "M_INVALID_USERNAME"
	CodeKeyTooLarge            = "M_KEY_TOO_LARGE"
	CodeLimitExceeded          = "M_LIMIT_EXCEEDED"
	CodeMissingParam           = "M_MISSING_PARAM"
	CodeMissingToken           = "M_MISSING_TOKEN"
	CodeNotFound               = "M_NOT_FOUND"
	CodeNotJSON                = "M_NOT_JSON"
	CodeProfileTooLarge        = "M_PROFILE_TOO_LARGE"
	CodeRoomInUse              = "M_ROOM_IN_USE"
	CodeThreepidDenied         = "M_THREEPID_DENIED"
	CodeTooLarge               = "M_TOO_LARGE"
	CodeUnauthorized           = "M_UNAUTHORIZED"
	CodeUnknown                = "M_UNKNOWN"
	CodeUnknownToken           = "M_UNKNOWN_TOKEN"
	CodeUnrecognized           = "M_UNRECOGNIZED"
	CodeUnsupportedRoomVersion = "M_UNSUPPORTED_ROOM_VERSION"
	CodeUserDeactivated        = "M_USER_DEACTIVATED"
	CodeUserInUse              = "M_USER_IN_USE"
	CodeWeakPassword           = "M_WEAK_PASSWORD"
)

// statusByCode is the one mapping of Matrix error codes to HTTP statuses.
// Codes missing here are 400s; an *Error may override the status when the
// specification asks for a different one on a particular endpoint.
var statusByCode = map[string]int{
	CodeForbidden:            http.StatusForbidden,
	CodeGuestAccessForbidden: http.StatusForbidden,
	CodeInviteBlocked:        http.StatusForbidden,
	CodeThreepidDenied:       http.StatusForbidden,
	CodeUserDeactivated:      http.StatusForbidden,
	CodeNotFound:             http.StatusNotFound,
	CodeUnrecognized:         http.StatusNotFound,
	CodeMissingToken:         http.StatusUnauthorized,
	CodeUnknownToken:         http.StatusUnauthorized,
	CodeUnauthorized:         http.StatusUnauthorized,
	CodeLimitExceeded:        http.StatusTooManyRequests,
	CodeTooLarge:             http.StatusRequestEntityTooLarge,
	CodeUnknown:              http.StatusInternalServerError,
}

// Error is a Matrix standard error response. It marshals to
// {"errcode", "error", ...Extra}. An empty Code omits errcode and error, which
// the User-Interactive Authentication 401 response needs.
type Error struct {
	Code    string
	Message string
	// Status overrides the status derived from Code when non-zero.
	Status int
	// Extra holds additional top-level response fields (retry_after_ms,
	// soft_logout, the UIA flows...).
	Extra map[string]any
	// Header holds additional response headers (Retry-After).
	Header http.Header
}

// New returns an error with the given code and formatted message.
func New(code, format string, args ...any) *Error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Message: msg}
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d", e.HTTPStatus())
	}
	return e.Code + ": " + e.Message
}

// HTTPStatus is the response status for the error.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// WithStatus returns a copy of e sent with the given HTTP status.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// With returns a copy of e with an additional top-level response field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = maps.Clone(e.Extra)
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra[key] = value
	return &c
}

// MarshalJSON writes the standard error response body.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, len(e.Extra)+2)
	maps.Copy(body, e.Extra)
	if e.Code != "" {
		body["errcode"] = e.Code
		body["error"] = e.Message
	}
	return json.Marshal(body)
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Is reports whether err carries the given Matrix error code.
func Is(err error, code string) bool {
	e, ok := As(err)
	return ok && e.Code == code
}

// Constructors for the common errors.

func BadJSON(format string, args ...any) *Error      { return New(CodeBadJSON, format, args...) }
func NotJSON(format string, args ...any) *Error      { return New(CodeNotJSON, format, args...) }
func Forbidden(format string, args ...any) *Error    { return New(CodeForbidden, format, args...) }
func NotFound(format string, args ...any) *Error     { return New(CodeNotFound, format, args...) }
func MissingParam(format string, args ...any) *Error { return New(CodeMissingParam, format, args...) }
func InvalidParam(format string, args ...any) *Error { return New(CodeInvalidParam, format, args...) }
func Unknown(format string, args ...any) *Error      { return New(CodeUnknown, format, args...) }
func TooLarge(format string, args ...any) *Error     { return New(CodeTooLarge, format, args...) }
func MissingToken(format string, args ...any) *Error { return New(CodeMissingToken, format, args...) }
func UserInUse(format string, args ...any) *Error    { return New(CodeUserInUse, format, args...) }
func InvalidUsername(format string, args ...any) *Error {
	return New(CodeInvalidUsername, format, args...)
}
func GuestAccessForbidden(format string, args ...any) *Error {
	return New(CodeGuestAccessForbidden, format, args...)
}

// UnknownToken is a 401 M_UNKNOWN_TOKEN; softLogout tells the client it may
// keep its local state and log in again with the same device.
func UnknownToken(softLogout bool, format string, args ...any) *Error {
	e := New(CodeUnknownToken, format, args...)
	if softLogout {
		e = e.With("soft_logout", true)
	}
	return e
}

// Unrecognized is 404 M_UNRECOGNIZED for an endpoint the server does not have.
func Unrecognized(format string, args ...any) *Error {
	return New(CodeUnrecognized, format, args...)
}

// LimitExceeded is 429 M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After
// header (whole seconds, rounded up).
func LimitExceeded(retryAfter time.Duration) *Error {
	ms := retryAfter.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	secs := (ms + 999) / 1000
	e := New(CodeLimitExceeded, "Too many requests").With("retry_after_ms", ms)
	e.Header = http.Header{"Retry-After": []string{strconv.FormatInt(secs, 10)}}
	return e
}
