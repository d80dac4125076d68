package transport

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

func TestStaticResolver(t *testing.T) {
	ctx := context.Background()
	r := NewStaticResolver()
	r.SetHost("HS1.test.", netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1"))
	r.SetSRV("_matrix-fed._tcp.hs1.test",
		net.SRV{Target: "c.test.", Port: 3, Priority: 20},
		net.SRV{Target: "a.test.", Port: 1, Priority: 10},
		net.SRV{Target: "b.test.", Port: 2, Priority: 10},
	)

	ips, err := r.LookupIPAddr(ctx, "hs1.TEST")
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 2 || ips[0].String() != "127.0.0.2" || ips[1].String() != "::1" {
		t.Errorf("addresses %v", ips)
	}
	if ips, err := r.LookupIPAddr(ctx, "192.0.2.1"); err != nil || len(ips) != 1 || ips[0].String() != "192.0.2.1" {
		t.Errorf("IP literal: %v %v", ips, err)
	}

	cname, recs, err := r.LookupSRV(ctx, "matrix-fed", "tcp", "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	if cname != "_matrix-fed._tcp.hs1.test." {
		t.Errorf("cname %q", cname)
	}
	var order []string
	for _, rec := range recs {
		order = append(order, rec.Target)
	}
	if len(order) != 3 || order[0] != "a.test." || order[1] != "b.test." || order[2] != "c.test." {
		t.Errorf("SRV order %v, want by priority, then as given", order)
	}
	recs[0].Port = 999 // callers cannot change the table
	if _, again, _ := r.LookupSRV(ctx, "", "", "_matrix-fed._tcp.hs1.test"); again[0].Port != 1 {
		t.Error("a returned record aliases the table")
	}

	for _, lookup := range []func() error{
		func() error { _, err := r.LookupIPAddr(ctx, "nowhere.test"); return err },
		func() error { _, _, err := r.LookupSRV(ctx, "matrix", "tcp", "hs1.test"); return err },
	} {
		err := lookup()
		if !isNotFound(err) {
			t.Errorf("missing record: err = %v, want a not-found *net.DNSError", err)
		}
	}

	r.SetHost("hs1.test")
	if _, err := r.LookupIPAddr(ctx, "hs1.test"); !isNotFound(err) {
		t.Errorf("removed host: err = %v", err)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := r.LookupSRV(cancelled, "matrix-fed", "tcp", "hs1.test"); err != context.Canceled {
		t.Errorf("cancelled context: err = %v", err)
	}
}
