package federationapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

func TestRemoteError(t *testing.T) {
	he := gomatrix.HTTPError{Code: 403, Contents: []byte(`{"errcode":"M_FORBIDDEN","error":"banned"}`)}
	var re *fedapi.RemoteError
	if err := remoteError("a.test", fmt.Errorf("wrapped: %w", he)); !errors.As(err, &re) ||
		*re != (fedapi.RemoteError{Server: "a.test", Status: 403, Code: "M_FORBIDDEN", Message: "banned"}) {
		t.Fatalf("HTTP error: %#v", err)
	}
	if err := remoteError("a.test", gomatrix.HTTPError{Code: 502, Contents: []byte("<html>")}); !errors.As(err, &re) || re.Status != 502 || re.Code != "" {
		t.Fatalf("non-JSON HTTP error: %#v", err)
	}
	if err := remoteError("a.test", errors.New("dial tcp: connection refused")); !errors.Is(err, fedapi.ErrNoServer) {
		t.Fatalf("network error: %v", err)
	}
	if err := remoteError("a.test", fmt.Errorf("%w: a.test", fedapi.ErrDenied)); !errors.Is(err, fedapi.ErrDenied) || errors.Is(err, fedapi.ErrNoServer) {
		t.Fatalf("denied: %v", err)
	}
	if remoteError("a.test", nil) != nil {
		t.Fatal("nil error")
	}
}

func TestFailover(t *testing.T) {
	re := func(status int, code string) error {
		return &fedapi.RemoteError{Server: "a.test", Status: status, Code: code}
	}
	for _, tc := range []struct {
		err        error
		join, want bool
	}{
		{re(500, "M_UNKNOWN"), false, true},
		{re(403, "M_FORBIDDEN"), true, false},
		{re(400, "M_BAD_JSON"), true, false},
		{re(404, "M_NOT_FOUND"), true, true},
		{re(404, "M_UNRECOGNIZED"), false, true},
		{re(405, ""), false, true},
		{re(400, "M_UNABLE_TO_AUTHORISE_JOIN"), true, true},
		{re(400, "M_UNABLE_TO_AUTHORISE_JOIN"), false, false},
		{re(400, "M_INCOMPATIBLE_ROOM_VERSION"), true, false},
		{re(418, ""), true, true},
		{fmt.Errorf("%w: x", fedapi.ErrNoServer), true, true},
		{context.Canceled, true, false},
	} {
		if got := failover(tc.join)(tc.err); got != tc.want {
			t.Errorf("failover(join=%v)(%v) = %v", tc.join, tc.err, got)
		}
	}
}

func TestTryServers(t *testing.T) {
	f := &FederationAPI{cfg: Config{ServerName: "me.test"}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if got := f.candidates([]string{"a.test", "me.test", "A.test", "", "bad name", "b.test:8448", "a.test"}); !slices.Equal(got, []spec.ServerName{"a.test", "b.test:8448"}) {
		t.Fatalf("candidates %v", got)
	}
	ctx := context.Background()
	answers := map[spec.ServerName]error{}
	var tried []spec.ServerName
	try := func(s spec.ServerName) error {
		tried = append(tried, s)
		return answers[s]
	}
	run := func(servers ...spec.ServerName) error {
		tried = nil
		return f.tryServers(ctx, "join", servers, failover(true), try)
	}
	if err := run(); !errors.Is(err, fedapi.ErrNoServer) {
		t.Fatalf("no servers: %v", err)
	}
	// Unreachable, then a refusal every server would repeat: stop there.
	answers["a.test"] = fmt.Errorf("%w: down", fedapi.ErrNoServer)
	answers["b.test"] = &fedapi.RemoteError{Server: "b.test", Status: 403, Code: "M_FORBIDDEN"}
	var re *fedapi.RemoteError
	if err := run("a.test", "b.test", "c.test"); !errors.As(err, &re) || re.Code != "M_FORBIDDEN" || !slices.Equal(tried, []spec.ServerName{"a.test", "b.test"}) {
		t.Fatalf("refusal: %v after %v", err, tried)
	}
	// Every server answered with an error another might not: the last one.
	answers["a.test"] = &fedapi.RemoteError{Server: "a.test", Status: 404, Code: "M_NOT_FOUND"}
	answers["b.test"] = &fedapi.RemoteError{Server: "b.test", Status: 400, Code: "M_UNABLE_TO_AUTHORISE_JOIN"}
	if err := run("a.test", "b.test"); !errors.As(err, &re) || re.Server != "b.test" {
		t.Fatalf("all answered: %v", err)
	}
	// Some could not be reached: ErrNoServer.
	answers["b.test"] = &fedapi.RemoteError{Server: "b.test", Status: 503, Code: "M_UNKNOWN"}
	if err := run("a.test", "b.test"); !errors.Is(err, fedapi.ErrNoServer) {
		t.Fatalf("a 5xx: %v", err)
	}
	// All denied by the domain lists.
	answers["a.test"] = fmt.Errorf("%w: a.test", fedapi.ErrDenied)
	if err := run("a.test"); !errors.Is(err, fedapi.ErrDenied) {
		t.Fatalf("denied: %v", err)
	}
	// A failure after a server accepted ends the attempt.
	answers["a.test"] = &stopError{errors.New("storage broke")}
	if err := run("a.test", "c.test"); err == nil || err.Error() != "storage broke" || len(tried) != 1 {
		t.Fatalf("stop: %v after %v", err, tried)
	}
	// Success on the second server.
	answers["a.test"] = fmt.Errorf("%w: down", fedapi.ErrNoServer)
	if err := run("a.test", "c.test"); err != nil || len(tried) != 2 {
		t.Fatalf("second server: %v after %v", err, tried)
	}
}

func TestStableVersions(t *testing.T) {
	vs := rsapi.SupportedRoomVersions()
	if len(vs) != 12 || !slices.Contains(vs, "12") || !slices.Contains(vs, "1") {
		t.Fatalf("stable versions %v", vs)
	}
	for _, v := range []string{"org.matrix.msc4014", "org.matrix.msc4242.12", "13"} {
		if _, err := roomVersion("a.test", gomatrixserverlib.RoomVersion(v)); err == nil {
			t.Fatalf("room version %s was accepted", v)
		}
	}
	if v, err := roomVersion("a.test", ""); err != nil || v.Version() != "1" {
		t.Fatalf("no room version: %v %v", v, err)
	}
}
