package transport

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeJSON(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

// TestWellKnownInvalidFallsBack: every kind of unusable well-known leads to
// step 4 (SRV records of the server name itself), and without SRV records
// to step 6 (the server name on port 8448).
func TestWellKnownInvalidFallsBack(t *testing.T) {
	// Valid JSON even when cut at the limit, so only the limit refuses it.
	big := `{"m.server":"fed.test:9000"}` + strings.Repeat(" ", 50*1024)
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		opts func(*Options)
	}{
		{"404", http.NotFound, nil},
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) }, nil},
		{"invalid JSON", writeJSON(`{"m.server":`), nil},
		{"JSON array", writeJSON(`["m.server"]`), nil},
		{"no m.server", writeJSON(`{"server":"fed.test:9000"}`), nil},
		{"m.server not a string", writeJSON(`{"m.server":9000}`), nil},
		{"m.server not a server name", writeJSON(`{"m.server":"https://fed.test:9000/"}`), nil},
		{"m.server empty", writeJSON(`{"m.server":""}`), nil},
		{"larger than 50KiB", writeJSON(big), nil},
		{"redirect loop", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/.well-known/matrix/server" {
				http.Redirect(w, r, "/loop", http.StatusFound)
				return
			}
			http.Redirect(w, r, "/.well-known/matrix/server", http.StatusFound)
		}, nil},
		{"endless redirects", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.Path+"x", http.StatusTemporaryRedirect)
		}, nil},
		{"redirect to http", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://bad.test/.well-known/matrix/server", http.StatusMovedPermanently)
		}, nil},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, func(o *Options) { o.WellKnownTimeout = 200 * time.Millisecond }},
		{"untrusted certificate", writeJSON(`{"m.server":"fed.test:9000"}`),
			func(o *Options) { o.RootCAs = nil }}, // system roots: the test CA is unknown
		{"private address refused", writeJSON(`{"m.server":"fed.test:9000"}`),
			func(o *Options) { o.AllowPrivate = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.dns.SetHost("fed.test", addr("127.0.0.5"))
			e.setWellKnown("bad.test", tc.h)
			e.setWellKnown("nosrv.test", tc.h)
			e.dns.SetSRV("_matrix-fed._tcp.bad.test", net.SRV{Target: "srv.test", Port: 7000})
			e.dns.SetHost("srv.test", addr("127.0.0.6"))
			tr := e.transport(tc.opts)

			got, err := resolve(t, tr, "bad.test")
			if err != nil {
				t.Fatal(err)
			}
			if want := []Target{target("127.0.0.6:7000", "bad.test", "bad.test")}; !slices.Equal(got, want) {
				t.Errorf("with SRV: got %v, want %v", got, want)
			}
			got, err = resolve(t, tr, "nosrv.test")
			if err != nil {
				t.Fatal(err)
			}
			if want := []Target{target(wellKnownIP+":8448", "nosrv.test", "nosrv.test")}; !slices.Equal(got, want) {
				t.Errorf("without SRV: got %v, want %v", got, want)
			}
		})
	}
}

// TestWellKnownRedirects: redirects are followed, relative or to another
// host (resolved through the same Resolver and guard).
func TestWellKnownRedirects(t *testing.T) {
	e := newEnv(t)
	e.dns.SetHost("fed.test", addr("127.0.0.5"))
	e.setWellKnown("rel.test", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			writeJSON(`{"m.server":"fed.test:9001"}`)(w, r)
			return
		}
		http.Redirect(w, r, "/moved", http.StatusMovedPermanently)
	})
	e.setWellKnown("abs.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://other.test/.well-known/matrix/server", http.StatusTemporaryRedirect)
	})
	e.delegate("other.test", "fed.test:9002")
	tr := e.transport(nil)
	for name, want := range map[string]Target{
		"rel.test": target("127.0.0.5:9001", "fed.test:9001", "fed.test"),
		"abs.test": target("127.0.0.5:9002", "fed.test:9002", "fed.test"),
	} {
		got, err := resolve(t, tr, name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []Target{want}) {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	if n := e.wellKnownHits("other.test"); n != 1 {
		t.Errorf("other.test served %d requests, want 1", n)
	}
}

// TestWellKnownDown: a temporary failure (5xx, network) of a host that
// recently had a valid well-known is retried after 2 minutes, not an hour,
// and a permanent one (404) waits the hour.
func TestWellKnownDown(t *testing.T) {
	e := newEnv(t)
	e.dns.SetHost("fed.test", addr("127.0.0.5"))
	e.dns.SetSRV("_matrix-fed._tcp.flaky.test", net.SRV{Target: "srv.test", Port: 7000})
	e.dns.SetHost("srv.test", addr("127.0.0.6"))
	e.delegate("flaky.test", "fed.test:9000", "Cache-Control: max-age=600")
	tr := e.transport(nil)
	delegated := []Target{target("127.0.0.5:9000", "fed.test:9000", "fed.test")}
	fallback := []Target{target("127.0.0.6:7000", "flaky.test", "flaky.test")}

	for _, step := range []struct {
		advance time.Duration
		set     http.HandlerFunc
		hits    int
		want    []Target
	}{
		{0, nil, 1, delegated},
		{11 * time.Minute, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }, 2, fallback},
		{time.Minute, nil, 2, fallback},                                             // 12m: failure cached
		{2 * time.Minute, nil, 3, fallback},                                         // 14m: 2 minutes passed
		{3 * time.Minute, http.NotFound, 4, fallback},                               // 17m: a 404 is not temporary
		{30 * time.Minute, nil, 4, fallback},                                        // 47m: cached for an hour
		{40 * time.Minute, writeJSON(`{"m.server":"fed.test:9000"}`), 5, delegated}, // 87m: past 1h+10%
	} {
		e.clock.Advance(step.advance)
		if step.set != nil {
			e.setWellKnown("flaky.test", step.set)
		}
		got, err := resolve(t, tr, "flaky.test")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("got %v, want %v", got, step.want)
		}
		if n := e.wellKnownHits("flaky.test"); n != step.hits {
			t.Errorf("%d fetches, want %d", n, step.hits)
		}
	}
}

func TestCachePeriod(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	in := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		name    string
		headers map[string][]string
		want    time.Duration
		ok      bool
	}{
		{"none", nil, 0, false},
		{"max-age", map[string][]string{"Cache-Control": {"max-age=600"}}, 600 * time.Second, true},
		{"max-age among others", map[string][]string{"Cache-Control": {"public, max-age=60, must-revalidate"}}, time.Minute, true},
		{"upper case", map[string][]string{"Cache-Control": {"MAX-AGE=60"}}, time.Minute, true},
		{"quoted", map[string][]string{"Cache-Control": {`max-age="60"`}}, time.Minute, true},
		{"no-store", map[string][]string{"Cache-Control": {"no-store, max-age=600"}}, 0, true},
		{"bad max-age", map[string][]string{"Cache-Control": {"max-age=soon"}}, 0, false},
		{"negative max-age", map[string][]string{"Cache-Control": {"max-age=-1"}}, 0, false},
		{"huge max-age", map[string][]string{"Cache-Control": {"max-age=999999999999999999"}}, 48 * time.Hour, true},
		{"expires", map[string][]string{"Expires": {in(time.Hour)}}, time.Hour, true},
		{"expires past", map[string][]string{"Expires": {in(-time.Hour)}}, 0, true},
		{"expires invalid", map[string][]string{"Expires": {"0"}}, 0, true},
		{"max-age beats expires", map[string][]string{"Cache-Control": {"max-age=60"}, "Expires": {in(time.Hour)}}, time.Minute, true},
		{"bad max-age then expires", map[string][]string{"Cache-Control": {"max-age=x"}, "Expires": {in(time.Hour)}}, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, vs := range tc.headers {
				for _, v := range vs {
					h.Add(k, v)
				}
			}
			got, ok := cachePeriod(h, now)
			if got != tc.want || ok != tc.ok {
				t.Errorf("got (%v, %v), want (%v, %v)", got, ok, tc.want, tc.ok)
			}
		})
	}
}
