package clientapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

func TestFederationError(t *testing.T) {
	re := func(status int, code string) error {
		return fmt.Errorf("wrapped: %w", &fedapi.RemoteError{Server: "a.test", Status: status, Code: code, Message: "msg"})
	}
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{re(403, "M_FORBIDDEN"), 403, "M_FORBIDDEN"},
		{re(404, "M_NOT_FOUND"), 404, "M_NOT_FOUND"},
		{re(400, "M_UNABLE_TO_AUTHORISE_JOIN"), 400, "M_UNABLE_TO_AUTHORISE_JOIN"},
		{re(429, "M_LIMIT_EXCEEDED"), 429, "M_LIMIT_EXCEEDED"},
		{re(401, "M_UNAUTHORIZED"), 502, "M_UNKNOWN"},
		{re(404, "M_UNRECOGNIZED"), 502, "M_UNKNOWN"},
		{re(500, "M_UNKNOWN"), 502, "M_UNKNOWN"},
		{re(400, ""), 502, "M_UNKNOWN"},
		{fmt.Errorf("%w: x", fedapi.ErrNoServer), 502, "M_UNKNOWN"},
		{fmt.Errorf("%w: x", fedapi.ErrDenied), 403, "M_FORBIDDEN"},
		{fedapi.ErrDisabled, 403, "M_FORBIDDEN"},
		{fmt.Errorf("%w: not in room", rsapi.ErrNotAllowed), 403, "M_FORBIDDEN"},
		{rsapi.ErrRoomNotFound, 404, "M_NOT_FOUND"},
	} {
		e, ok := mxerr.As(federationError(tc.err, "Join"))
		if !ok || e.HTTPStatus() != tc.status || e.Code != tc.code {
			t.Errorf("federationError(%v) = %v, want %d %s", tc.err, e, tc.status, tc.code)
		}
	}
	plain := errors.New("disk on fire")
	if federationError(plain, "Join") != plain || federationError(nil, "Join") != nil {
		t.Error("other errors are not passed through")
	}
	if e, _ := mxerr.As(federationError(fmt.Errorf("%w: the sender is not in the room", rsapi.ErrNotAllowed), "Invite")); e.Message != "the sender is not in the room" {
		t.Errorf("refusal message %q", e.Message)
	}
	if e, _ := mxerr.As(aliasError(re(404, "M_NOT_FOUND"), "#a:a.test")); e.HTTPStatus() != http.StatusNotFound {
		t.Errorf("alias not found: %v", e)
	}
	if e, _ := mxerr.As(aliasError(re(500, "M_UNKNOWN"), "#a:a.test")); e.HTTPStatus() != http.StatusBadGateway {
		t.Errorf("alias server error: %v", e)
	}
}
