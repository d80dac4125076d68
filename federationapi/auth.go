package federationapi

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// MaxTransactionBytes is the body cap for PUT /send (pass
// httputil.MaxBody(MaxTransactionBytes) to handle): Synapse's limit, 200
// times the 64 KiB PDU size limit (50 PDUs, 100 EDUs and some slack).
const MaxTransactionBytes = 200 * 65536

// fedHandler serves an authenticated federation request: origin is the
// server that signed it, body the request body (empty, or valid JSON).
// Like httputil.HandlerFunc it returns a body or an error (*mxerr.Error for
// Matrix errors).
type fedHandler func(r *http.Request, origin spec.ServerName, body []byte) (any, error)

// handle registers h for a /_matrix/federation route behind request
// authentication (authenticate). opts are the route's httputil options
// (MaxBody for large bodies); the server's own auth modes do not apply.
func (f *FederationAPI) handle(srv *httputil.Server, method, path string, h fedHandler, opts ...httputil.Option) {
	srv.Handle(method, path, func(r *http.Request) (any, error) {
		origin, body, err := f.authenticate(r)
		if err != nil {
			return nil, err
		}
		if f.queues != nil {
			f.queues.contacted(origin) // it is up: what waits for it goes now
		}
		return h(r, origin, body)
	}, opts...)
}

// authenticate checks the X-Matrix signature of an incoming request and
// returns its origin and body. Failures, as Synapse answers them:
//   - body over the route's cap: 413 M_TOO_LARGE; body not JSON: 400 M_NOT_JSON;
//   - no X-Matrix Authorization header: 401 M_UNAUTHORIZED;
//   - a malformed one (missing origin, key or sig, invalid origin, several
//     origins): 400 M_UNAUTHORIZED;
//   - a destination that is not this server: 401 M_UNAUTHORIZED;
//   - an origin the domain allow/deny lists refuse: 403 M_FORBIDDEN;
//   - a bad signature, or a key that is unknown, expired or cannot be
//     fetched: 401 M_UNAUTHORIZED;
//   - the key database failing: a plain error (500).
//
// The origin is added to the request's log fields.
func (f *FederationAPI) authenticate(r *http.Request) (spec.ServerName, []byte, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return "", nil, err
	}
	var auths []xMatrixAuth
	for _, h := range r.Header.Values("Authorization") {
		a, isXMatrix, err := parseXMatrix(h)
		if !isXMatrix {
			continue
		}
		if err != nil {
			return "", nil, unauthorized(http.StatusBadRequest, "Malformed Authorization header")
		}
		if len(auths) > 0 && a.Origin != auths[0].Origin {
			return "", nil, unauthorized(http.StatusBadRequest, "Malformed Authorization header: several origins")
		}
		auths = append(auths, a)
	}
	if len(auths) == 0 {
		return "", nil, unauthorized(http.StatusUnauthorized, "Missing Authorization headers")
	}
	origin := auths[0].Origin
	for _, a := range auths {
		if a.Destination != "" && !f.isLocal(a.Destination) {
			return "", nil, unauthorized(http.StatusUnauthorized, "Destination mismatch in auth header")
		}
	}
	if !f.policy.allowed(origin) {
		return "", nil, mxerr.Forbidden("Federation denied with %s.", origin)
	}
	if len(body) > 0 && !httputil.ValidJSON(body) {
		return "", nil, mxerr.NotJSON("Content not JSON.")
	}

	// gomatrixserverlib's header parser is simpler than RFC 9110: hand
	// it the parsed values in the one form it reads, and a Content-Type
	// it accepts (neither is covered by the signature).
	vr := r.Clone(r.Context())
	vr.Body = io.NopCloser(bytes.NewReader(body))
	vr.Header.Del("Authorization")
	for _, a := range auths {
		h := fmt.Sprintf(`X-Matrix origin="%s",key="%s",sig="%s"`, a.Origin, a.Key, a.Sig)
		if a.Destination != "" {
			h += fmt.Sprintf(`,destination="%s"`, a.Destination)
		}
		vr.Header.Add("Authorization", h)
	}
	if len(body) > 0 {
		vr.Header.Set("Content-Type", "application/json")
	}
	_, res := fclient.VerifyHTTPRequest(vr, time.Now(), f.cfg.ServerName, nil, f.keyring)
	switch {
	case res.Code == http.StatusOK:
	case res.Code >= 500:
		return "", nil, fmt.Errorf("federationapi: authenticating a request from %s: %v", origin, res.JSON)
	default:
		httputil.Logger(r.Context()).Info("federation request refused",
			slog.String("origin", string(origin)), slog.Int("status", res.Code))
		return "", nil, unauthorized(http.StatusUnauthorized, "Invalid request signature")
	}
	httputil.AddLogAttrs(r.Context(), "origin", string(origin))
	return origin, body, nil
}

func unauthorized(status int, msg string) *mxerr.Error {
	return mxerr.New(mxerr.CodeUnauthorized, "%s", msg).WithStatus(status)
}

// xMatrixAuth is a parsed "Authorization: X-Matrix ..." header.
type xMatrixAuth struct {
	Origin      spec.ServerName
	Destination spec.ServerName // "" when absent (servers before v1.3)
	Key         gomatrixserverlib.KeyID
	Sig         string
}

// parseXMatrix parses an Authorization header value as the specification
// describes it (RFC 9110 section 11.4 credentials): the X-Matrix scheme
// (any case), one or more spaces, then comma-separated name=value
// parameters with optional spaces and tabs around the commas, names in any
// case, values quoted (with backslash escapes) or not (colons allowed
// unquoted), unknown parameters ignored. isXMatrix is false for another
// scheme; err is set for an X-Matrix header that is malformed or lacks
// origin, key or sig, or whose origin is not a valid server name.
func parseXMatrix(h string) (a xMatrixAuth, isXMatrix bool, err error) {
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "X-Matrix") {
		return a, false, nil
	}
	params := map[string]string{}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			break
		}
		i := strings.IndexAny(s, "= \t,")
		if i <= 0 {
			return a, true, fmt.Errorf("parameter without a value")
		}
		name := strings.ToLower(s[:i])
		s = strings.TrimLeft(s[i:], " \t")
		if !strings.HasPrefix(s, "=") {
			return a, true, fmt.Errorf("parameter %q without a value", name)
		}
		s = strings.TrimLeft(s[1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			j, closed := 1, false
			for j < len(s) {
				c := s[j]
				if c == '\\' && j+1 < len(s) {
					b.WriteByte(s[j+1])
					j += 2
					continue
				}
				j++
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return a, true, fmt.Errorf("unterminated quoted value of %q", name)
			}
			val = b.String()
			s = strings.TrimLeft(s[j:], " \t")
			if s != "" && s[0] != ',' {
				return a, true, fmt.Errorf("garbage after the value of %q", name)
			}
		} else {
			j := strings.IndexByte(s, ',')
			if j < 0 {
				j = len(s)
			}
			val = strings.TrimRight(s[:j], " \t")
			s = s[j:]
			if strings.ContainsAny(val, "\" \t\\") {
				return a, true, fmt.Errorf("invalid unquoted value of %q", name)
			}
		}
		if _, dup := params[name]; !dup {
			params[name] = val
		}
	}
	a.Origin = spec.ServerName(params["origin"])
	a.Destination = spec.ServerName(params["destination"])
	a.Key = gomatrixserverlib.KeyID(params["key"])
	a.Sig = params["sig"]
	if a.Origin == "" || a.Key == "" || a.Sig == "" {
		return a, true, fmt.Errorf("origin, key and sig are required")
	}
	if _, _, ok := spec.ParseAndValidateServerName(a.Origin); !ok {
		return a, true, fmt.Errorf("invalid origin %q", a.Origin)
	}
	// The values are handed on in a quoted header without escapes (a
	// destination is handed on only when it is this server's name).
	for _, v := range []string{string(a.Key), a.Sig} {
		if strings.ContainsAny(v, "\",\\ \t") {
			return a, true, fmt.Errorf("invalid characters in %q", v)
		}
	}
	return a, true, nil
}

// GET /_matrix/federation/v1/version: the implementation's name and
// version (unauthenticated).
func (f *FederationAPI) serveVersion(r *http.Request) (any, error) {
	return map[string]any{"server": map[string]string{"name": implName, "version": serverVersion()}}, nil
}
