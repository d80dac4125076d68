// Package transport is the http.RoundTripper for outgoing federation
// requests. gomatrixserverlib's fclient builds requests for
// matrix://<server name>/<path>; Transport resolves the server name as the
// spec's "Resolving server names" says (IP literal, explicit port,
// /.well-known/matrix/server delegation, _matrix-fed._tcp and deprecated
// _matrix._tcp SRV records, port 8448), and sends the request over verified
// TLS with the Host header and certificate name the spec requires.
//
// Install it with fclient.WithTransport(transport.New(...)), which replaces
// fclient's own resolver. Unlike that one, Transport expires what it caches
// (well-known by the response's cache headers within Synapse's bounds, DNS
// after Options.ResolveTTL), fetches well-known through the same guarded
// dialer and root pool as federation itself, refuses private addresses at
// dial time (so DNS rebinding cannot reach them), and takes its DNS from a
// Resolver that tests replace with a StaticResolver.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/lru"
	"github.com/myelin-chat/myelin/internal/netguard"
)

// Defaults for Options fields left zero.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultWellKnownTimeout = 10 * time.Second
	// DefaultResolveTTL is how long a resolution (SRV and address lookups)
	// is reused. Go does not expose DNS TTLs; an hour bounds staleness,
	// and a destination unreachable at every cached target is resolved
	// again at once anyway.
	DefaultResolveTTL = time.Hour
	// DefaultCacheSize bounds the number of server names (and, separately,
	// well-known hosts) whose results are cached.
	DefaultCacheSize = 10000
)

const (
	// poolIdleTimeout drops a per-certificate-name connection pool unused
	// this long.
	poolIdleTimeout = 10 * time.Minute
	// idleConnTimeout closes a kept-alive connection idle this long.
	idleConnTimeout = 90 * time.Second
	// maxIdleConnsPerHost keeps this many idle connections per address.
	maxIdleConnsPerHost = 4
	// tlsHandshakeTimeout bounds the TLS handshake after the TCP connect.
	tlsHandshakeTimeout = 10 * time.Second
)

// Options configure a Transport. The zero value is usable: system DNS and
// roots, private addresses refused.
type Options struct {
	// Resolver answers DNS queries; nil means net.DefaultResolver.
	Resolver Resolver
	// RootCAs verify servers' certificates; nil means the system roots.
	// Use tlsutil.CertPool to add CAs.
	RootCAs *x509.CertPool
	// AllowPrivate permits connections to private addresses (loopback,
	// RFC 1918, ...), which are refused by default. Tests and closed
	// federations set it.
	AllowPrivate bool
	// AllowNetworks are always permitted; DenyNetworks are refused even
	// with AllowPrivate (see netguard.Guard).
	AllowNetworks []netip.Prefix
	DenyNetworks  []netip.Prefix
	// Logger receives debug logs of resolutions and failed attempts; nil
	// discards them.
	Logger *slog.Logger
	// UserAgent is sent on well-known requests (fclient sets its own on
	// federation requests).
	UserAgent string

	// DialTimeout bounds each TCP connect (default 5s).
	DialTimeout time.Duration
	// WellKnownTimeout bounds a well-known fetch, redirects included
	// (default 10s).
	WellKnownTimeout time.Duration
	// ResolveTTL is how long a resolution is cached when its well-known
	// outcome does not expire sooner (default 1h).
	ResolveTTL time.Duration
	// CacheSize bounds the resolution and well-known caches (entries,
	// default 10000 each).
	CacheSize int

	// WellKnownPort replaces port 443 in well-known fetches, for tests,
	// whose servers cannot listen on 443. Zero means 443.
	WellKnownPort int
	// Now is the clock for cache expiry; nil means time.Now. Tests move it.
	Now func() time.Time
}

// Transport is an http.RoundTripper for matrix:// federation URLs. It is
// safe for concurrent use.
type Transport struct {
	resolver         Resolver
	roots            *x509.CertPool
	dialer           *net.Dialer
	log              *slog.Logger
	userAgent        string
	now              func() time.Time
	resolveTTL       time.Duration
	resolveTimeout   time.Duration
	wellKnownTimeout time.Duration
	wellKnownPort    int
	sessions         tls.ClientSessionCache

	resolutions     *lru.Cache[spec.ServerName, resolution]
	wellKnowns      *lru.Cache[string, wellKnown]
	wellKnownClient *http.Client

	mu        sync.Mutex
	flights   map[spec.ServerName]*flight
	pools     map[string]*pool // by certificate name
	lastSweep time.Time
}

// pool is the connection pool for one certificate name. http.Transport
// fixes the TLS server name per transport and keys connections by address,
// so each certificate name gets its own: a connection verified for one name
// is never reused for another at the same address.
type pool struct {
	tr       *http.Transport
	lastUsed atomic.Int64 // unix nanoseconds
}

// New returns a Transport for o.
func New(o Options) *Transport {
	t := &Transport{
		resolver:         o.Resolver,
		roots:            o.RootCAs,
		log:              o.Logger,
		userAgent:        o.UserAgent,
		now:              o.Now,
		resolveTTL:       o.ResolveTTL,
		wellKnownTimeout: o.WellKnownTimeout,
		wellKnownPort:    o.WellKnownPort,
		sessions:         tls.NewLRUClientSessionCache(0),
		flights:          map[spec.ServerName]*flight{},
		pools:            map[string]*pool{},
	}
	if t.resolver == nil {
		t.resolver = net.DefaultResolver
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.resolveTTL <= 0 {
		t.resolveTTL = DefaultResolveTTL
	}
	if t.wellKnownTimeout <= 0 {
		t.wellKnownTimeout = DefaultWellKnownTimeout
	}
	// A resolution is one well-known fetch plus a few DNS lookups.
	t.resolveTimeout = t.wellKnownTimeout + 20*time.Second
	dialTimeout := o.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	size := o.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	t.resolutions = lru.New[spec.ServerName, resolution](size, nil)
	t.wellKnowns = lru.New[string, wellKnown](size, nil)

	guard := &netguard.Guard{AllowPrivate: o.AllowPrivate, Allow: o.AllowNetworks, Deny: o.DenyNetworks}
	t.dialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, ControlContext: guard.Control}

	t.wellKnownClient = &http.Client{
		Transport: &http.Transport{
			DialContext:         t.dialWellKnown,
			TLSClientConfig:     t.tlsConfig(""),
			TLSHandshakeTimeout: tlsHandshakeTimeout,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     idleConnTimeout,
		},
		CheckRedirect: checkRedirect,
	}
	return t
}

// tlsConfig verifies against the transport's roots for serverName (empty:
// the URL's host).
func (t *Transport) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{
		ServerName:         serverName,
		RootCAs:            t.roots,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: t.sessions,
	}
}

// RoundTrip sends a matrix:// (or matrix-federation://) request to the
// server named by its URL host. It tries each resolved target in order
// until one answers; if none does and the targets came from the cache, it
// resolves once more and tries the new targets. A request with a body that
// cannot be replayed (no GetBody) gets one attempt. It fails for another
// scheme, an invalid server name, a failed resolution, or when every target
// fails (the error lists each attempt); an HTTP error status is a response,
// not an error.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Scheme {
	case "matrix", "matrix-federation":
	default:
		closeBody(req)
		return nil, fmt.Errorf("federation: unsupported URL scheme %q", req.URL.Scheme)
	}
	ctx := req.Context()
	name := spec.ServerName(req.URL.Host)
	bodyUsed := false
	var errs []error
	for retried := false; ; retried = true {
		targets, cached, err := t.resolveCached(ctx, name)
		if err != nil {
			closeBody(req)
			return nil, fmt.Errorf("federation: resolving %s: %w", name, errors.Join(append(errs, err)...))
		}
		for _, tg := range targets {
			body, err := replayBody(req, &bodyUsed)
			if err != nil {
				return nil, fmt.Errorf("federation: %s: %w", name, errors.Join(append(errs, err)...))
			}
			out := req.Clone(ctx)
			out.URL.Scheme = "https"
			out.URL.Host = tg.Addr.String()
			out.Host = tg.Host
			out.Body = body
			resp, err := t.poolFor(tg.ServerName).RoundTrip(out)
			if err == nil {
				return resp, nil
			}
			t.log.Debug("federation: attempt failed", "server", name, "target", tg.String(), "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", tg.Addr, err))
			if ctx.Err() != nil {
				return nil, fmt.Errorf("federation: %s: %w", name, errors.Join(errs...))
			}
		}
		t.forget(name)
		if retried || !cached {
			break
		}
	}
	closeBody(req)
	return nil, fmt.Errorf("federation: %s unreachable: %w", name, errors.Join(errs...))
}

// replayBody returns the body for the next attempt: the request's own the
// first time, a fresh copy from GetBody after that.
func replayBody(req *http.Request, used *bool) (io.ReadCloser, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, nil
	}
	if !*used {
		*used = true
		return req.Body, nil
	}
	if req.GetBody == nil {
		return nil, errors.New("request body cannot be replayed for another attempt")
	}
	return req.GetBody()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// poolFor returns the connection pool for a certificate name, creating it
// if needed, and now and then drops pools that have gone unused.
func (t *Transport) poolFor(serverName string) *http.Transport {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) > time.Minute {
		t.lastSweep = now
		for name, p := range t.pools {
			if now.Sub(time.Unix(0, p.lastUsed.Load())) > poolIdleTimeout {
				p.tr.CloseIdleConnections()
				delete(t.pools, name)
			}
		}
	}
	p, ok := t.pools[serverName]
	if !ok {
		p = &pool{tr: &http.Transport{
			DialContext:           t.dialer.DialContext,
			TLSClientConfig:       t.tlsConfig(serverName),
			TLSHandshakeTimeout:   tlsHandshakeTimeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   maxIdleConnsPerHost,
			IdleConnTimeout:       idleConnTimeout,
			ExpectContinueTimeout: time.Second,
		}}
		t.pools[serverName] = p
	}
	p.lastUsed.Store(now.UnixNano())
	return p.tr
}

// CloseIdleConnections closes every idle connection, federation and
// well-known. It does not interrupt requests in progress.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	pools := make([]*pool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.tr.CloseIdleConnections()
	}
	t.wellKnownClient.CloseIdleConnections()
}
