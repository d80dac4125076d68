package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Well-known cache lifetimes, Synapse's (synapse/http/federation/
// well_known_resolver.py), which follow the spec's recommendations.
const (
	// wellKnownDefaultTTL is used when a valid response has no cache
	// headers (spec: "the recommended sensible default is 24 hours"),
	// jittered by ±wellKnownJitter so restarts do not refetch in a herd.
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownJitter     = 0.1
	// wellKnownMinTTL and wellKnownMaxTTL bound a period taken from the
	// response's headers (spec: "a maximum cache time ... 48 hours").
	wellKnownMinTTL = 5 * time.Minute
	wellKnownMaxTTL = 48 * time.Hour
	// wellKnownFailureTTL is how long a failed or invalid response is
	// remembered (spec: "errors are recommended to be cached for up to an
	// hour").
	wellKnownFailureTTL = time.Hour
	// wellKnownDownTTL replaces wellKnownFailureTTL for a temporary failure
	// (network error, 5xx, 429) of a host that served a valid well-known
	// less than wellKnownRememberValid ago: it is probably down briefly,
	// and its delegation should not be ignored for an hour.
	wellKnownDownTTL       = 2 * time.Minute
	wellKnownRememberValid = 2 * time.Hour
	// wellKnownMaxSize limits the response body.
	wellKnownMaxSize = 50 * 1024
	// wellKnownMaxRedirects limits redirects followed.
	wellKnownMaxRedirects = 10
)

// wellKnown is a cached outcome of GET https://<host>/.well-known/matrix/server.
type wellKnown struct {
	server  spec.ServerName // the m.server delegation; empty after a failure
	err     error           // why there is no delegation
	expires time.Time
	// validUntil is when the last valid response for the host expired (or
	// will), carried across failures to pick wellKnownDownTTL.
	validUntil time.Time
}

// wellKnownFailure is a failed fetch; temporary failures are the ones worth
// retrying soon.
type wellKnownFailure struct {
	err       error
	temporary bool
}

func (f *wellKnownFailure) Error() string { return f.err.Error() }
func (f *wellKnownFailure) Unwrap() error { return f.err }

// lookupWellKnown returns the cached well-known outcome for host, fetching
// it if absent or expired.
func (t *Transport) lookupWellKnown(ctx context.Context, host string) wellKnown {
	now := t.now()
	prev, havePrev := t.wellKnowns.Get(host)
	if havePrev && now.Before(prev.expires) {
		return prev
	}
	server, ttl, err := t.fetchWellKnown(ctx, host)
	now = t.now()
	var wk wellKnown
	if err == nil {
		wk = wellKnown{server: server, expires: now.Add(ttl)}
		wk.validUntil = wk.expires
	} else {
		ttl := jitter(wellKnownFailureTTL)
		var f *wellKnownFailure
		if havePrev && errors.As(err, &f) && f.temporary && now.Sub(prev.validUntil) < wellKnownRememberValid {
			ttl = wellKnownDownTTL
		}
		wk = wellKnown{err: err, expires: now.Add(ttl)}
		if havePrev {
			wk.validUntil = prev.validUntil
		}
		t.log.Debug("federation: no usable well-known", "host", host, "error", err, "retry_after", ttl)
	}
	if ctx.Err() == nil { // a cancelled fetch says nothing about the host
		t.wellKnowns.Put(host, wk)
	}
	return wk
}

// fetchWellKnown fetches and validates https://<host>/.well-known/matrix/server,
// returning the delegated server name and how long to cache it. Any failure
// is a *wellKnownFailure.
func (t *Transport) fetchWellKnown(ctx context.Context, host string) (spec.ServerName, time.Duration, error) {
	fail := func(temporary bool, format string, args ...any) (spec.ServerName, time.Duration, error) {
		return "", 0, &wellKnownFailure{err: fmt.Errorf(format, args...), temporary: temporary}
	}
	ctx, cancel := context.WithTimeout(ctx, t.wellKnownTimeout)
	defer cancel()
	u := "https://" + host + "/.well-known/matrix/server"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fail(false, "well-known: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if t.userAgent != "" {
		req.Header.Set("User-Agent", t.userAgent)
	}
	resp, err := t.wellKnownClient.Do(req)
	if err != nil {
		return fail(true, "well-known: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		temporary := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return fail(temporary, "well-known: %s returned HTTP %d", resp.Request.URL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxSize+1))
	if err != nil {
		return fail(true, "well-known: reading %s: %w", resp.Request.URL, err)
	}
	if len(body) > wellKnownMaxSize {
		return fail(false, "well-known: %s is larger than %d bytes", resp.Request.URL, wellKnownMaxSize)
	}
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fail(false, "well-known: %s: invalid JSON: %w", resp.Request.URL, err)
	}
	if doc.Server == nil {
		return fail(false, "well-known: %s has no m.server", resp.Request.URL)
	}
	server := spec.ServerName(*doc.Server)
	if _, _, ok := spec.ParseAndValidateServerName(server); !ok {
		return fail(false, "well-known: %s: m.server %q is not a server name", resp.Request.URL, server)
	}
	ttl, ok := cachePeriod(resp.Header, t.now())
	if !ok {
		ttl = jitter(wellKnownDefaultTTL)
	} else {
		ttl = min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
	}
	return server, ttl, nil
}

// checkRedirect follows https redirects only, at most wellKnownMaxRedirects,
// and never to a URL already visited (a loop).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= wellKnownMaxRedirects {
		return fmt.Errorf("stopped after %d redirects", len(via))
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to non-https URL %s", req.URL)
	}
	for _, v := range via {
		if v.URL.String() == req.URL.String() {
			return fmt.Errorf("redirect loop at %s", req.URL)
		}
	}
	return nil
}

// cachePeriod reads how long a response may be cached from its headers, as
// Synapse does: Cache-Control no-store is 0, then max-age, then Expires (an
// unparseable Expires is 0, per RFC 9111). ok is false without any of them.
func cachePeriod(h http.Header, now time.Time) (d time.Duration, ok bool) {
	for _, v := range h.Values("Cache-Control") {
		for _, dir := range strings.Split(v, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(dir), "=")
			if strings.EqualFold(name, "no-store") {
				return 0, true
			}
			if strings.EqualFold(name, "max-age") {
				if secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && secs >= 0 {
					// Cap before multiplying so huge values cannot overflow.
					return time.Duration(min(secs, int64(wellKnownMaxTTL/time.Second))) * time.Second, true
				}
			}
		}
	}
	if v := h.Values("Expires"); len(v) > 0 {
		exp, err := http.ParseTime(v[len(v)-1])
		if err != nil {
			return 0, true
		}
		return max(exp.Sub(now), 0), true
	}
	return 0, false
}

func jitter(d time.Duration) time.Duration {
	f := 1 - wellKnownJitter + 2*wellKnownJitter*rand.Float64()
	return time.Duration(float64(d) * f)
}

// dialWellKnown is the well-known client's DialContext: it resolves the
// host through the transport's Resolver and dials each address through the
// guarded dialer. Port 443 becomes Options.WellKnownPort when that is set.
func (t *Transport) dialWellKnown(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port == "443" && t.wellKnownPort != 0 {
		port = strconv.Itoa(t.wellKnownPort)
	}
	ips, err := t.lookupIPs(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		c, err := t.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
