package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestIsPrivate(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		private bool
	}{
		// IPv4 private and special ranges.
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.0.0.1", true},
		{"10.255.255.255", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"169.254.169.254", true},
		{"192.0.0.170", true},
		{"192.0.2.1", true},
		{"192.88.99.1", true},
		{"198.18.0.1", true},
		{"198.19.255.255", true},
		{"198.51.100.7", true},
		{"203.0.113.9", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"240.0.0.1", true},
		{"255.255.255.255", true},
		// IPv4 public, including neighbours of private ranges.
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"9.255.255.255", false},
		{"11.0.0.0", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"126.255.255.255", false},
		{"128.0.0.0", false},
		{"172.15.255.255", false},
		{"172.32.0.0", false},
		{"192.167.255.255", false},
		{"192.169.0.0", false},
		{"198.17.255.255", false},
		{"198.20.0.0", false},
		{"223.255.255.255", false},
		// IPv6 special ranges.
		{"::", true},
		{"::1", true},
		{"fe80::1", true},
		{"febf::1", true},
		{"fec0::1", true},
		{"fc00::1", true},
		{"fd12:3456::1", true},
		{"ff02::1", true},
		{"2001:db8::1", true},
		{"3fff::1", true},
		{"100::1", true},
		{"64:ff9b:1::1", true},
		// IPv6 forms of IPv4 addresses are judged by the IPv4 address.
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.1.2.3", true},
		{"::ffff:8.8.8.8", false},
		{"::127.0.0.1", true},
		{"::8.8.8.8", false},
		{"::ffff:0:192.168.0.1", true},
		{"::ffff:0:8.8.8.8", false},
		{"64:ff9b::7f00:1", true},
		{"64:ff9b::a9fe:a9fe", true},
		{"64:ff9b::808:808", false},
		{"2002:7f00:1::", true},
		{"2002:c0a8:101::1", true},
		{"2002:808:808::1", false},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", true},  // Teredo, client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", false}, // Teredo, client 8.8.8.8
		// IPv6 public.
		{"2606:4700:4700::1111", false},
		{"2a00:1450:4001:80b::200e", false},
		{"fbff:ffff::1", false},
		{"fe00::1", false},
	} {
		ip := net.ParseIP(tc.ip)
		if ip == nil {
			t.Fatalf("bad test address %q", tc.ip)
		}
		if got := IsPrivate(ip); got != tc.private {
			t.Errorf("IsPrivate(%s) = %v, want %v", tc.ip, got, tc.private)
		}
		if got := IsPrivate(ip.To16()); got != tc.private {
			t.Errorf("IsPrivate(%s as 16 bytes) = %v, want %v", tc.ip, got, tc.private)
		}
	}
	if !IsPrivate(nil) || !IsPrivate(net.IP{1, 2, 3}) {
		t.Error("a nil or malformed IP must count as private")
	}
	if !IsPrivateAddr(netip.MustParseAddr("fe80::1%eth0")) {
		t.Error("a zoned link-local address must be private")
	}
}

func TestGuardPermits(t *testing.T) {
	allow := netip.MustParsePrefix("10.1.0.0/16")
	deny := netip.MustParsePrefix("8.8.8.0/24")
	for _, tc := range []struct {
		name  string
		guard Guard
		ip    string
		want  bool
	}{
		{"zero guard refuses loopback", Guard{}, "127.0.0.1", false},
		{"zero guard refuses mapped loopback", Guard{}, "::ffff:127.0.0.1", false},
		{"zero guard permits public", Guard{}, "8.8.8.8", true},
		{"AllowPrivate permits loopback", Guard{AllowPrivate: true}, "127.0.0.1", true},
		{"Allow punches a hole", Guard{Allow: []netip.Prefix{allow}}, "10.1.2.3", true},
		{"Allow is narrow", Guard{Allow: []netip.Prefix{allow}}, "10.2.0.1", false},
		{"Allow matches mapped form", Guard{Allow: []netip.Prefix{allow}}, "::ffff:10.1.2.3", true},
		{"Deny refuses public", Guard{Deny: []netip.Prefix{deny}}, "8.8.8.8", false},
		{"Deny applies with AllowPrivate", Guard{AllowPrivate: true, Deny: []netip.Prefix{deny}}, "8.8.8.8", false},
		{"Allow beats Deny", Guard{Allow: []netip.Prefix{netip.MustParsePrefix("8.8.8.8/32")}, Deny: []netip.Prefix{deny}}, "8.8.8.8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.guard.Permits(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Errorf("Permits(%s) = %v, want %v", tc.ip, got, tc.want)
			}
		})
	}
	if (&Guard{AllowPrivate: true}).Permits(netip.Addr{}) {
		t.Error("the zero Addr must never be permitted")
	}
}

func TestControl(t *testing.T) {
	g := &Guard{}
	for _, tc := range []struct {
		network, address string
		ok               bool
	}{
		{"tcp4", "8.8.8.8:443", true},
		{"tcp6", "[2606:4700:4700::1111]:443", true},
		{"tcp4", "127.0.0.1:443", false},
		{"tcp6", "[::1]:443", false},
		{"tcp6", "[fe80::1%eth0]:443", false},
		{"tcp", "example.com:443", false},
		{"unix", "/run/x.sock", false},
	} {
		err := g.Control(context.Background(), tc.network, tc.address, nil)
		if (err == nil) != tc.ok {
			t.Errorf("Control(%s, %s) = %v, want ok=%v", tc.network, tc.address, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBlocked) {
			t.Errorf("Control(%s, %s) error %v does not wrap ErrBlocked", tc.network, tc.address, err)
		}
	}
}

// TestDialRefused dials a real loopback listener through a guarded
// net.Dialer: refused by default, connected with AllowPrivate.
func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := context.Background()

	d := &net.Dialer{Timeout: 5 * time.Second, ControlContext: (&Guard{}).Control}
	_, err = d.DialContext(ctx, "tcp", ln.Addr().String())
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial to loopback: err = %v, want ErrBlocked", err)
	}

	d.ControlContext = (&Guard{AllowPrivate: true}).Control
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial with AllowPrivate: %v", err)
	}
	c.Close()
}
