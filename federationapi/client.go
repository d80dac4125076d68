package federationapi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
)

// federationTimeout bounds one outgoing federation request (send_join of a
// large room takes a while); callers bound theirs further with contexts.
const federationTimeout = 5 * time.Minute

// keyFetchTimeout bounds one outgoing key request.
const keyFetchTimeout = 30 * time.Second

// Bounds of the answers of other servers, as Synapse's: 100 MiB, and 500
// MiB for what carries a room's whole state (send_join, /state). A longer
// answer fails with errResponseTooLarge when read past the bound.
const (
	maxResponseBytes      = 100 << 20
	maxStateResponseBytes = 500 << 20
)

var errResponseTooLarge = errors.New("federationapi: the server's answer is too large")

// responseLimit is the bound of the answer to a request for path.
func responseLimit(path string) int64 {
	if strings.HasPrefix(path, "/_matrix/federation/v1/send_join/") || strings.HasPrefix(path, "/_matrix/federation/v2/send_join/") ||
		strings.HasPrefix(path, "/_matrix/federation/v1/state/") {
		return maxStateResponseBytes
	}
	return maxResponseBytes
}

// limitedBody fails reads past a bound.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 {
			return 0, err
		}
		return 0, errResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// implName and serverVersion are what GET /_matrix/federation/v1/version
// answers and what outgoing requests carry as User-Agent.
const implName = "Myelin"

func serverVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// domainPolicy applies the domain allow and deny lists to server names.
// An entry matches a server name equal to it (ignoring case) and, when the
// entry has no port, that host on any port.
type domainPolicy struct {
	allow map[string]bool // nil: every server not denied
	deny  map[string]bool
}

func newDomainPolicy(allow, deny []string) domainPolicy {
	set := func(l []string) map[string]bool {
		if len(l) == 0 {
			return nil
		}
		m := make(map[string]bool, len(l))
		for _, s := range l {
			m[strings.ToLower(strings.TrimSpace(s))] = true
		}
		return m
	}
	return domainPolicy{allow: set(allow), deny: set(deny)}
}

func matchDomain(set map[string]bool, name spec.ServerName) bool {
	n := strings.ToLower(string(name))
	if set[n] {
		return true
	}
	if host, _, err := net.SplitHostPort(n); err == nil {
		return set[host] || set["["+host+"]"]
	}
	return false
}

// allowed reports whether this server federates with name.
func (p domainPolicy) allowed(name spec.ServerName) bool {
	if matchDomain(p.deny, name) {
		return false
	}
	return p.allow == nil || matchDomain(p.allow, name)
}

// guardTransport refuses requests to this server itself and to servers the
// domain lists deny, before they reach the network.
type guardTransport struct {
	next   http.RoundTripper
	self   spec.ServerName
	policy domainPolicy
	// limit bounds the answer to a request for a path (responseLimit).
	limit func(path string) int64
}

func (t *guardTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	dest := spec.ServerName(r.URL.Host)
	var err error
	switch {
	case strings.EqualFold(string(dest), string(t.self)):
		err = fmt.Errorf("%w: %s is this server", fedapi.ErrDenied, dest)
	case !t.policy.allowed(dest):
		err = fmt.Errorf("%w: %s", fedapi.ErrDenied, dest)
	}
	if err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.limit(r.URL.Path)}
	return resp, nil
}

// errNoTransport is what every outgoing request fails with when the
// component was built without a Config.Transport.
var errNoTransport = errors.New("federationapi: no transport configured for outgoing federation requests")

type noTransport struct{}

func (noTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return nil, errNoTransport
}

// transport returns the http.RoundTripper of every outgoing request:
// Config.Transport (server discovery, TLS, the address guard) behind the
// domain allow/deny lists, which fail requests to denied servers (and to
// this server itself) with an error wrapping api.ErrDenied. Without a
// Config.Transport, the result refuses to dial anything: federation
// without the transport package's guards is not safe to run, so there is
// deliberately no http.DefaultTransport fallback.
func (f *FederationAPI) transport() http.RoundTripper {
	next := f.cfg.Transport
	if next == nil {
		next = noTransport{}
	}
	return &guardTransport{next: next, self: f.cfg.ServerName, policy: f.policy, limit: responseLimit}
}

// newClients builds the signed federation client (requests as this
// server, with its signing key) and the unsigned client that fetches keys,
// both over f.transport().
func (f *FederationAPI) newClients() (fclient.FederationClient, *fclient.Client) {
	ua := fclient.WithUserAgent(implName + "/" + serverVersion())
	rt := fclient.WithTransport(f.transport())
	fed := fclient.NewFederationClient([]*fclient.SigningIdentity{{
		ServerName: f.cfg.ServerName,
		KeyID:      f.cfg.KeyID,
		PrivateKey: f.cfg.PrivateKey,
	}}, rt, ua, fclient.WithTimeout(federationTimeout))
	keys := fclient.NewClient(rt, ua, fclient.WithTimeout(keyFetchTimeout))
	return fed, keys
}
