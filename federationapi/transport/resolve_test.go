package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func resolve(t *testing.T, tr *Transport, name string) ([]Target, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return tr.Resolve(ctx, spec.ServerName(name))
}

func target(ap, host, tlsName string) Target {
	return Target{Addr: netip.MustParseAddrPort(ap), Host: host, ServerName: tlsName}
}

func TestResolveIPLiterals(t *testing.T) {
	e := newEnv(t)
	tr := e.transport(nil)
	for _, tc := range []struct {
		name string
		want Target
	}{
		{"127.0.0.2:1234", target("127.0.0.2:1234", "127.0.0.2:1234", "127.0.0.2")},
		{"127.0.0.2", target("127.0.0.2:8448", "127.0.0.2", "127.0.0.2")},
		{"[::1]:1234", target("[::1]:1234", "[::1]:1234", "::1")},
		{"[::1]", target("[::1]:8448", "[::1]", "::1")},
		{"[2001:db8::1]:443", target("[2001:db8::1]:443", "[2001:db8::1]:443", "2001:db8::1")},
	} {
		got, err := resolve(t, tr, tc.name)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !slices.Equal(got, []Target{tc.want}) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := e.lookup.lookups(); n != 0 {
		t.Errorf("IP literals made %d DNS lookups", n)
	}
	for _, bad := range []string{"", "hs1.test:abc", "[::1", "a b.test", "hs1.test/x", "::1"} {
		if _, err := resolve(t, tr, bad); !errors.Is(err, ErrInvalidServerName) {
			t.Errorf("%q: err = %v, want ErrInvalidServerName", bad, err)
		}
	}
}

// TestResolve runs the spec's steps on names whose DNS and well-known the
// case sets up, checking targets in order, Host header and certificate name.
func TestResolve(t *testing.T) {
	srv := func(target string, port uint16, prio uint16) net.SRV {
		return net.SRV{Target: target, Port: port, Priority: prio}
	}
	for _, tc := range []struct {
		name    string
		setup   func(e *env)
		server  string
		want    []Target
		wantErr string
	}{{
		name: "explicit port, A records",
		setup: func(e *env) {
			e.dns.SetHost("hs1.test", addr("127.0.0.3"), addr("127.0.0.4"))
		},
		server: "hs1.test:1234",
		want:   []Target{target("127.0.0.3:1234", "hs1.test:1234", "hs1.test"), target("127.0.0.4:1234", "hs1.test:1234", "hs1.test")},
	}, {
		name:    "explicit port, no such host",
		server:  "nowhere.test:1234",
		wantErr: "no such host",
	}, {
		name: "explicit port skips well-known and SRV",
		setup: func(e *env) {
			e.delegate("hs1.test", "elsewhere.test:99")
			e.dns.SetHost("hs1.test", addr("127.0.0.3"))
			e.dns.SetSRV("_matrix-fed._tcp.hs1.test", srv("srv.test", 7000, 0))
		},
		server: "hs1.test:1234",
		want:   []Target{target("127.0.0.3:1234", "hs1.test:1234", "hs1.test")},
	}, {
		name: "well-known to IP literal",
		setup: func(e *env) {
			e.delegate("hs2.test", "192.0.2.7")
		},
		server: "hs2.test",
		want:   []Target{target("192.0.2.7:8448", "192.0.2.7", "192.0.2.7")},
	}, {
		name: "well-known to IPv6 literal with port",
		setup: func(e *env) {
			e.delegate("hs2.test", "[2001:db8::7]:9000")
		},
		server: "hs2.test",
		want:   []Target{target("[2001:db8::7]:9000", "[2001:db8::7]:9000", "2001:db8::7")},
	}, {
		name: "well-known to name with port",
		setup: func(e *env) {
			e.delegate("hs2.test", "fed.hs2.test:9000")
			e.dns.SetHost("fed.hs2.test", addr("127.0.0.5"))
			e.dns.SetSRV("_matrix-fed._tcp.fed.hs2.test", srv("srv.test", 7000, 0)) // ignored: port given
		},
		server: "hs2.test",
		want:   []Target{target("127.0.0.5:9000", "fed.hs2.test:9000", "fed.hs2.test")},
	}, {
		name: "well-known to name with _matrix-fed SRV",
		setup: func(e *env) {
			e.delegate("hs3.test", "fed.hs3.test")
			e.dns.SetSRV("_matrix-fed._tcp.fed.hs3.test", srv("b.test.", 7001, 20), srv("a.test.", 7000, 10))
			e.dns.SetSRV("_matrix._tcp.fed.hs3.test", srv("legacy.test", 7002, 0))
			e.dns.SetSRV("_matrix-fed._tcp.hs3.test", srv("original.test", 7003, 0))
			e.dns.SetHost("a.test", addr("127.0.0.6"))
			e.dns.SetHost("b.test", addr("127.0.0.7"))
			e.dns.SetHost("legacy.test", addr("127.0.0.8"))
		},
		server: "hs3.test",
		want:   []Target{target("127.0.0.6:7000", "fed.hs3.test", "fed.hs3.test"), target("127.0.0.7:7001", "fed.hs3.test", "fed.hs3.test")},
	}, {
		name: "well-known to name with only _matrix SRV",
		setup: func(e *env) {
			e.delegate("hs3.test", "fed.hs3.test")
			e.dns.SetSRV("_matrix._tcp.fed.hs3.test", srv("legacy.test", 7002, 0))
			e.dns.SetHost("legacy.test", addr("127.0.0.8"))
		},
		server: "hs3.test",
		want:   []Target{target("127.0.0.8:7002", "fed.hs3.test", "fed.hs3.test")},
	}, {
		name: "well-known to name without SRV",
		setup: func(e *env) {
			e.delegate("hs3.test", "fed.hs3.test")
			e.dns.SetHost("fed.hs3.test", addr("127.0.0.5"))
		},
		server: "hs3.test",
		want:   []Target{target("127.0.0.5:8448", "fed.hs3.test", "fed.hs3.test")},
	}, {
		name: "no well-known, _matrix-fed preferred to _matrix",
		setup: func(e *env) {
			e.dns.SetSRV("_matrix-fed._tcp.hs4.test", srv("new.test", 7000, 0))
			e.dns.SetSRV("_matrix._tcp.hs4.test", srv("old.test", 7001, 0))
			e.dns.SetHost("new.test", addr("127.0.0.6"))
			e.dns.SetHost("old.test", addr("127.0.0.7"))
			e.dns.SetHost("hs4.test", addr("127.0.0.9")) // well-known server answers 404
		},
		server: "hs4.test",
		want:   []Target{target("127.0.0.6:7000", "hs4.test", "hs4.test")},
	}, {
		name: "no well-known, only _matrix",
		setup: func(e *env) {
			e.dns.SetSRV("_matrix._tcp.hs4.test", srv("old.test", 7001, 0))
			e.dns.SetHost("old.test", addr("127.0.0.7"))
		},
		server: "hs4.test",
		want:   []Target{target("127.0.0.7:7001", "hs4.test", "hs4.test")},
	}, {
		name: "no well-known, no SRV: port 8448",
		setup: func(e *env) {
			e.dns.SetHost("hs4.test", addr("127.0.0.7"))
		},
		server: "hs4.test",
		want:   []Target{target("127.0.0.7:8448", "hs4.test", "hs4.test")},
	}, {
		name: "SRV targets that do not resolve are skipped",
		setup: func(e *env) {
			e.dns.SetSRV("_matrix-fed._tcp.hs4.test", srv("gone.test", 7000, 0), srv("new.test", 7001, 1))
			e.dns.SetHost("new.test", addr("127.0.0.6"))
		},
		server: "hs4.test",
		want:   []Target{target("127.0.0.6:7001", "hs4.test", "hs4.test")},
	}, {
		name: "SRV of \".\" means no service",
		setup: func(e *env) {
			e.dns.SetSRV("_matrix-fed._tcp.hs4.test", srv(".", 0, 0))
			e.dns.SetHost("hs4.test", addr("127.0.0.7"))
		},
		server:  "hs4.test",
		wantErr: "no service",
	}, {
		name:    "nothing at all",
		server:  "void.test",
		wantErr: "no such host",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			got, err := resolve(t, e.transport(nil), tc.server)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

// failingResolver fails SRV lookups the way a broken DNS server does.
type failingResolver struct{ Resolver }

func (failingResolver) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", nil, &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true}
}

// TestResolveDNSFailureFallsBack: a failed SRV lookup (a DNS server that
// answers SRV questions with errors, as container networks without an
// upstream resolver do) goes on to port 8448 instead of failing.
func TestResolveDNSFailureFallsBack(t *testing.T) {
	e := newEnv(t)
	e.dns.SetHost("hs4.test", addr("127.0.0.7"))
	tr := e.transport(func(o *Options) { o.Resolver = failingResolver{e.dns} })
	targets, err := resolve(t, tr, "hs4.test")
	if err != nil || len(targets) != 1 || targets[0].Addr.Port() != 8448 || targets[0].ServerName != "hs4.test" {
		t.Fatalf("targets %+v, err %v", targets, err)
	}
}

// TestResolveCaching: well-known outcomes are cached by their headers
// within [5m, 48h], 24h±10% without headers, failures 1h±10%; a
// resolution never outlives the well-known it used (else a well-known
// fetch could not happen before the resolution expires). Check times avoid
// the jitter windows.
func TestResolveCaching(t *testing.T) {
	e := newEnv(t)
	e.dns.SetHost("fed.test", addr("127.0.0.5"))
	e.delegate("default.test", "fed.test:9000")
	e.delegate("short.test", "fed.test:9000", "Cache-Control: max-age=600")
	e.delegate("tiny.test", "fed.test:9000", "Cache-Control: public, max-age=10")
	e.delegate("huge.test", "fed.test:9000", "Cache-Control: max-age=9999999")
	// An absolute time: 3h on the first fetch, in the past (so 5m) later.
	e.delegate("expires.test", "fed.test:9000", "Expires: "+e.clock.Now().Add(3*time.Hour).Format(http.TimeFormat))
	e.delegate("nostore.test", "fed.test:9000", "Cache-Control: no-store")
	e.dns.SetHost("broken.test", addr(wellKnownIP)) // 404
	tr := e.transport(nil)

	names := []string{"default.test", "short.test", "tiny.test", "huge.test", "expires.test", "nostore.test", "broken.test"}
	fetches := map[string]int{}
	var now time.Duration
	for _, step := range []struct {
		at      time.Duration
		refetch []string
	}{
		{0, names},
		{0, nil},
		{4 * time.Minute, nil},
		{6 * time.Minute, []string{"tiny.test", "nostore.test"}}, // raised to the 5m minimum
		{11 * time.Minute, []string{"short.test", "tiny.test", "nostore.test"}},
		{50 * time.Minute, []string{"short.test", "tiny.test", "nostore.test"}},
		{67 * time.Minute, []string{"short.test", "tiny.test", "nostore.test", "broken.test"}},
		{185 * time.Minute, []string{"short.test", "tiny.test", "nostore.test", "broken.test", "expires.test"}},
		{21 * time.Hour, []string{"short.test", "tiny.test", "nostore.test", "broken.test", "expires.test"}},
		{27 * time.Hour, []string{"short.test", "tiny.test", "nostore.test", "broken.test", "expires.test", "default.test"}},
		{48*time.Hour + 30*time.Minute, []string{"short.test", "tiny.test", "nostore.test", "broken.test", "expires.test", "huge.test"}},
	} {
		e.clock.Advance(step.at - now)
		now = step.at
		for _, n := range step.refetch {
			fetches[n]++
		}
		for _, n := range names {
			if _, err := resolve(t, tr, n); err != nil && n != "broken.test" {
				t.Fatalf("at %v: %s: %v", now, n, err)
			}
		}
		for _, n := range names {
			if got := e.wellKnownHits(n); got != fetches[n] {
				t.Errorf("at %v: %s fetched %d times, want %d", now, n, got, fetches[n])
			}
		}
	}
}

// TestResolveTTL: a resolution without well-known is reused for
// ResolveTTL, then looked up again.
func TestResolveTTL(t *testing.T) {
	e := newEnv(t)
	e.dns.SetHost("hs1.test", addr("127.0.0.3"))
	tr := e.transport(nil)
	want := []Target{target("127.0.0.3:1234", "hs1.test:1234", "hs1.test")}
	for _, step := range []struct {
		advance time.Duration
		lookups int
		addr    string
	}{
		{0, 1, "127.0.0.3"},
		{59 * time.Minute, 1, "127.0.0.3"},
		{2 * time.Minute, 2, "127.0.0.4"}, // 61m: the new address is seen
	} {
		e.clock.Advance(step.advance)
		got, err := resolve(t, tr, "hs1.test:1234")
		if err != nil {
			t.Fatal(err)
		}
		e.dns.SetHost("hs1.test", addr("127.0.0.4")) // the host moves
		want[0].Addr = netip.AddrPortFrom(addr(step.addr), 1234)
		if !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
		if n := e.lookup.lookups(); n != step.lookups {
			t.Errorf("%d lookups, want %d", n, step.lookups)
		}
	}
}

// TestConcurrentResolutionsShareOne: many callers resolving one name at
// once cause one well-known fetch.
func TestConcurrentResolutionsShareOne(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	e.dns.SetHost("fed.test", addr("127.0.0.5"))
	e.setWellKnown("slow.test", func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write([]byte(`{"m.server":"fed.test:9000"}`))
	})
	tr := e.transport(nil)
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := resolve(t, tr, "slow.test")
			errs <- err
		}()
	}
	// Wait until the fetch is in progress, then let it finish.
	deadline := time.Now().Add(10 * time.Second)
	for e.wellKnownHits("slow.test") == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for range 10 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := e.wellKnownHits("slow.test"); n != 1 {
		t.Errorf("%d well-known fetches, want 1", n)
	}
}
