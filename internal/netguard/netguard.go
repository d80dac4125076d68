// Package netguard is the outbound address policy: which IP addresses the
// server may open connections to on behalf of remote input (federation
// destinations, well-known lookups, URL previews).
//
// The policy is checked when a connection is dialled, after DNS resolution,
// through [Guard.Control] installed as a net.Dialer's ControlContext. Checking
// names before resolving them is not enough: a name can resolve to a public
// address when checked and to 127.0.0.1 when dialled (DNS rebinding).
//
// The private ranges are Synapse's default ip_range_blacklist plus
// 0.0.0.0/8, 240.0.0.0/4 (which includes broadcast), the RFC 9637
// documentation range, and IPv6 forms that embed an IPv4 address
// (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4, Teredo), which are judged
// by the address they embed.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrBlocked is wrapped by the error Control returns for a refused address.
// net.Dialer wraps it in a *net.OpError; errors.Is finds it.
var ErrBlocked = errors.New("netguard: address not permitted")

// privateV4 are IPv4 ranges no request from remote input should reach.
var privateV4 = prefixes(
	"0.0.0.0/8",       // "this network"; 0.0.0.0 reaches the local host on Linux
	"10.0.0.0/8",      // RFC 1918
	"100.64.0.0/10",   // carrier-grade NAT
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local (and cloud metadata services)
	"172.16.0.0/12",   // RFC 1918
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // TEST-NET-1
	"192.88.99.0/24",  // former 6to4 relay anycast
	"192.168.0.0/16",  // RFC 1918
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // TEST-NET-2
	"203.0.113.0/24",  // TEST-NET-3
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, including 255.255.255.255 broadcast
)

// privateV6 are IPv6 ranges no request from remote input should reach.
// Ranges embedding an IPv4 address are handled by embeddedV4 instead.
var privateV6 = prefixes(
	"::/128",         // unspecified
	"::1/128",        // loopback
	"100::/64",       // discard-only
	"2001:db8::/32",  // documentation
	"3fff::/20",      // documentation (RFC 9637)
	"64:ff9b:1::/48", // local-use NAT64 (RFC 8215)
	"fc00::/7",       // unique local
	"fe80::/10",      // link-local
	"fec0::/10",      // site-local (deprecated)
	"ff00::/8",       // multicast
)

var (
	v4Compatible = netip.MustParsePrefix("::/96")           // deprecated ::a.b.c.d
	v4Translated = netip.MustParsePrefix("::ffff:0:0:0/96") // SIIT ::ffff:0:a.b.c.d
	nat64        = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64 prefix
	sixToFour    = netip.MustParsePrefix("2002::/16")       // 6to4: 2002:AABB:CCDD::
	teredo       = netip.MustParsePrefix("2001::/32")       // Teredo: client address XORed in the last 32 bits
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// IsPrivate reports whether ip is an address that must not be reached from
// remote input: loopback, private, link-local, unique-local, CGNAT,
// documentation, benchmarking, multicast, broadcast, reserved or
// unspecified, in IPv4 or any IPv6 form embedding such an IPv4 address. A nil
// or malformed ip is private (fail closed).
func IsPrivate(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return true
	}
	return IsPrivateAddr(a)
}

// IsPrivateAddr is IsPrivate for a netip.Addr. The zero Addr is private.
func IsPrivateAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return inAny(a, privateV4)
	}
	if inAny(a, privateV6) {
		return true
	}
	if v4, ok := embeddedV4(a); ok {
		return IsPrivateAddr(v4)
	}
	return false
}

// embeddedV4 returns the IPv4 address an IPv6 address stands for, if it is
// in one of the ranges that carry one.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case v4Compatible.Contains(a), v4Translated.Contains(a), nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case teredo.Contains(a):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Guard is an outbound address policy. The zero Guard refuses every private
// address and permits every other one.
type Guard struct {
	// AllowPrivate permits private addresses (tests, closed deployments).
	AllowPrivate bool
	// Allow lists ranges that are always permitted, even if private or in
	// Deny (Synapse's ip_range_whitelist).
	Allow []netip.Prefix
	// Deny lists extra ranges to refuse beyond the private ones
	// (Synapse's ip_range_blacklist additions). Deny applies even when
	// AllowPrivate is set.
	Deny []netip.Prefix
}

// Permits reports whether a connection to a is allowed.
func (g *Guard) Permits(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	if inAny(a, g.Allow) {
		return true
	}
	if inAny(a, g.Deny) {
		return false
	}
	return g.AllowPrivate || !IsPrivateAddr(a)
}

// Control is a net.Dialer ControlContext that refuses connections to
// addresses the guard does not permit. address is the resolved "ip:port"
// being dialled; anything that is not a TCP or UDP IP address is refused.
// The returned error wraps ErrBlocked.
func (g *Guard) Control(_ context.Context, network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return fmt.Errorf("%w: network %q", ErrBlocked, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrBlocked, address)
	}
	if !g.Permits(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrBlocked, ap.Addr())
	}
	return nil
}
