package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// defaultPort is the federation port when neither the server name, the
// well-known delegation nor an SRV record gives one.
const defaultPort = 8448

// ErrInvalidServerName is returned for a server name that does not match
// the spec's grammar.
var ErrInvalidServerName = errors.New("federation: invalid server name")

// Target is one place to send a request for a server name: the address to
// connect to, the Host header to send, and the name the server's
// certificate must be valid for (sent as SNI unless it is an IP address).
type Target struct {
	Addr       netip.AddrPort
	Host       string
	ServerName string
}

func (tg Target) String() string {
	return fmt.Sprintf("%s (host %s, tls %s)", tg.Addr, tg.Host, tg.ServerName)
}

// resolution is a cached Resolve result.
type resolution struct {
	targets []Target
	expires time.Time
}

// flight is a resolution in progress that concurrent callers share.
type flight struct {
	done    chan struct{}
	targets []Target
	err     error
}

// Resolve returns the targets for serverName in the order to try them,
// following the spec's "Resolving server names", from the cache when a
// previous resolution has not expired. It fails for an invalid server name,
// when a DNS lookup fails other than with "not found", when no address is
// found, or when ctx ends.
func (t *Transport) Resolve(ctx context.Context, serverName spec.ServerName) ([]Target, error) {
	targets, _, err := t.resolveCached(ctx, serverName)
	return slices.Clone(targets), err
}

// resolveCached is Resolve, also saying whether the result came from the
// cache. Concurrent callers for one name share one resolution, which runs on
// its own deadline so that one caller giving up does not fail the others.
func (t *Transport) resolveCached(ctx context.Context, name spec.ServerName) ([]Target, bool, error) {
	if host, _, ok := spec.ParseAndValidateServerName(name); !ok || isIPHost(host) {
		targets, _, err := t.resolve(ctx, name) // no lookups to share or cache
		return targets, false, err
	}
	if r, ok := t.resolutions.Get(name); ok && t.now().Before(r.expires) {
		return r.targets, true, nil
	}
	t.mu.Lock()
	f, ok := t.flights[name]
	if !ok {
		f = &flight{done: make(chan struct{})}
		t.flights[name] = f
		go func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.resolveTimeout)
			targets, expires, err := t.resolve(rctx, name)
			cancel()
			if err == nil && !expires.IsZero() {
				t.resolutions.Put(name, resolution{targets: targets, expires: expires})
			}
			if err == nil {
				t.log.Debug("federation: resolved", "server", name, "targets", targets)
			}
			t.mu.Lock()
			delete(t.flights, name)
			t.mu.Unlock()
			f.targets, f.err = targets, err
			close(f.done)
		}()
	}
	t.mu.Unlock()
	select {
	case <-f.done:
		return f.targets, false, f.err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// forget drops the cached resolution of name.
func (t *Transport) forget(name spec.ServerName) {
	t.resolutions.Remove(name)
}

// resolve runs the spec's algorithm. expires is when the result should be
// looked up again; zero means it involved no lookups and needs no caching.
func (t *Transport) resolve(ctx context.Context, name spec.ServerName) (targets []Target, expires time.Time, err error) {
	host, port, ok := spec.ParseAndValidateServerName(name)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("%w: %q", ErrInvalidServerName, name)
	}

	// 1. An IP literal, with its port or 8448. The certificate must be for
	// the IP; the Host header is the server name.
	if ip, isIP := parseIPHost(host); isIP {
		return []Target{{Addr: netip.AddrPortFrom(ip, portOr(port)), Host: string(name), ServerName: ip.String()}}, time.Time{}, nil
	}

	expires = t.now().Add(t.resolveTTL)

	// 2. A hostname with an explicit port: its addresses, that port; Host
	// is the server name, the certificate for the hostname.
	if port != -1 {
		targets, err = t.addressTargets(ctx, host, uint16(port), string(name), host)
		return targets, expires, err
	}

	// 3. The well-known delegation, if valid.
	wk := t.lookupWellKnown(ctx, host)
	if wk.expires.Before(expires) {
		expires = wk.expires
	}
	if wk.server != "" {
		dhost, dport, _ := spec.ParseAndValidateServerName(wk.server)
		// 3.1 An IP literal: the Host header is the delegated name as given.
		if ip, isIP := parseIPHost(dhost); isIP {
			return []Target{{Addr: netip.AddrPortFrom(ip, portOr(dport)), Host: string(wk.server), ServerName: ip.String()}}, expires, nil
		}
		// 3.2 A hostname with a port: Host is "<hostname>:<port>".
		if dport != -1 {
			targets, err = t.addressTargets(ctx, dhost, uint16(dport), string(wk.server), dhost)
			return targets, expires, err
		}
		// 3.3-3.5 SRV records or port 8448 for the delegated hostname.
		targets, err = t.srvTargets(ctx, dhost)
		return targets, expires, err
	}

	// 4-6. SRV records or port 8448 for the hostname itself.
	targets, err = t.srvTargets(ctx, host)
	return targets, expires, err
}

// srvTargets implements steps 3.3-3.5 and 4-6 for hostname: the targets of
// _matrix-fed._tcp.<hostname>, else of the deprecated _matrix._tcp, else
// hostname:8448. In every case the Host header and certificate name are
// hostname, never the SRV target.
func (t *Transport) srvTargets(ctx context.Context, hostname string) ([]Target, error) {
	records, err := t.lookupSRV(ctx, hostname)
	if err != nil {
		return nil, err
	}
	if len(records) == 0 {
		return t.addressTargets(ctx, hostname, defaultPort, hostname, hostname)
	}
	var targets []Target
	var errs []error
	for _, rec := range records {
		tt, err := t.addressTargets(ctx, strings.TrimSuffix(rec.Target, "."), rec.Port, hostname, hostname)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		targets = append(targets, tt...)
	}
	if len(targets) == 0 {
		return nil, errors.Join(errs...)
	}
	return targets, nil
}

// lookupSRV returns the _matrix-fed._tcp records of hostname, else its
// _matrix._tcp records, else none. A lookup failure other than "not found"
// fails, as does an explicit "no service" record (a lone target of ".",
// RFC 2782).
func (t *Transport) lookupSRV(ctx context.Context, hostname string) ([]*net.SRV, error) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := t.resolver.LookupSRV(ctx, service, "tcp", hostname)
		if err != nil {
			// Not found, or a DNS server that fails SRV questions (as
			// container networks without an upstream resolver do): go on
			// to the next step, as gomatrixserverlib does, rather than
			// leave the server unreachable.
			if !isNotFound(err) {
				t.log.Debug("SRV lookup failed; going on without it", "service", "_"+service+"._tcp."+hostname, "error", err.Error())
			}
			continue
		}
		if len(records) == 0 {
			continue
		}
		if len(records) == 1 && (records[0].Target == "." || records[0].Target == "") {
			return nil, fmt.Errorf("federation: _%s._tcp.%s says there is no service", service, hostname)
		}
		return records, nil
	}
	return nil, nil
}

// addressTargets resolves host's addresses (A/AAAA, following CNAMEs) into
// targets on port with the given Host header and certificate name.
func (t *Transport) addressTargets(ctx context.Context, host string, port uint16, hostHeader, tlsName string) ([]Target, error) {
	ips, err := t.lookupIPs(ctx, host)
	if err != nil {
		return nil, err
	}
	targets := make([]Target, len(ips))
	for i, ip := range ips {
		targets[i] = Target{Addr: netip.AddrPortFrom(ip, port), Host: hostHeader, ServerName: tlsName}
	}
	return targets, nil
}

// lookupIPs resolves host through the Resolver; an IP literal is itself.
func (t *Transport) lookupIPs(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, isIP := parseIPHost(host); isIP {
		return []netip.Addr{ip}, nil
	}
	addrs, err := t.resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("federation: looking up %s: %w", host, err)
	}
	var ips []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip.Unmap().WithZone(a.Zone))
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("federation: looking up %s: %w", host, notFound(host))
	}
	return ips, nil
}

func isIPHost(host string) bool {
	_, ok := parseIPHost(host)
	return ok
}

// parseIPHost parses an IP literal host, IPv6 in brackets or not.
func parseIPHost(host string) (netip.Addr, bool) {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func portOr(port int) uint16 {
	if port == -1 {
		return defaultPort
	}
	return uint16(port)
}
