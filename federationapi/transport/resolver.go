package transport

import (
	"cmp"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Resolver is the DNS the transport uses: SRV records for server discovery
// and A/AAAA (with CNAMEs followed) for addresses. net.DefaultResolver
// satisfies it. A name that does not exist, or has no records of the asked
// type, must fail with a *net.DNSError whose IsNotFound is true; any other
// error is a lookup failure, which fails the resolution rather than falling
// through to the next step.
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

var _ Resolver = net.DefaultResolver

// StaticResolver is a Resolver answering from tables, for tests and
// setup/testserver, which give names such as hs1.test to servers on
// 127.0.0.x. Names are compared case-insensitively, ignoring a trailing dot.
// Unknown names fail like DNS does: a *net.DNSError with IsNotFound set. It is
// safe for concurrent use, including changes while in use.
type StaticResolver struct {
	mu    sync.RWMutex
	hosts map[string][]netip.Addr
	srv   map[string][]net.SRV
}

// NewStaticResolver returns a StaticResolver with no records.
func NewStaticResolver() *StaticResolver {
	return &StaticResolver{hosts: map[string][]netip.Addr{}, srv: map[string][]net.SRV{}}
}

// SetHost sets the addresses of host, replacing earlier ones; with no
// addresses the host is removed.
func (r *StaticResolver) SetHost(host string, addrs ...netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(addrs) == 0 {
		delete(r.hosts, canonical(host))
		return
	}
	r.hosts[canonical(host)] = slices.Clone(addrs)
}

// SetSRV sets the SRV records of a full record name such as
// "_matrix-fed._tcp.hs1.test", replacing earlier ones; with no records the
// name is removed. Lookups return them sorted by priority, in the given order
// within one priority (no weighted shuffle, so tests are deterministic).
func (r *StaticResolver) SetSRV(name string, records ...net.SRV) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(records) == 0 {
		delete(r.srv, canonical(name))
		return
	}
	recs := slices.Clone(records)
	slices.SortStableFunc(recs, func(a, b net.SRV) int { return cmp.Compare(a.Priority, b.Priority) })
	r.srv[canonical(name)] = recs
}

// LookupSRV implements Resolver. As with net.Resolver, an empty service and
// proto look up name itself.
func (r *StaticResolver) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	target := name
	if service != "" || proto != "" {
		target = "_" + service + "._" + proto + "." + name
	}
	r.mu.RLock()
	recs := r.srv[canonical(target)]
	r.mu.RUnlock()
	if len(recs) == 0 {
		return "", nil, notFound(target)
	}
	out := make([]*net.SRV, len(recs))
	for i := range recs {
		rec := recs[i]
		out[i] = &rec
	}
	return canonical(target) + ".", out, nil
}

// LookupIPAddr implements Resolver. An IP literal resolves to itself.
func (r *StaticResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []net.IPAddr{{IP: a.AsSlice(), Zone: a.Zone()}}, nil
	}
	r.mu.RLock()
	addrs := r.hosts[canonical(host)]
	r.mu.RUnlock()
	if len(addrs) == 0 {
		return nil, notFound(host)
	}
	out := make([]net.IPAddr, len(addrs))
	for i, a := range addrs {
		out[i] = net.IPAddr{IP: a.AsSlice(), Zone: a.Zone()}
	}
	return out, nil
}

func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// isNotFound reports whether err is a DNS answer that the name or record
// does not exist (as opposed to a failed lookup).
func isNotFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}
