package federationapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestInboundAuth(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		n := newNode(t, db, "local.test", func(c *Config) { c.DomainDenylist = []string{"evil.test"} })
		remote := newFakeServer(t, "remote.test")
		evil := newFakeServer(t, "evil.test")
		ghost := newFakeServer(t, "ghost.test") // unreachable: its key cannot be fetched
		n.net.route("remote.test", remote.url).route("evil.test", evil.url)
		const echo = "/_matrix/federation/v1/test/echo"
		content := map[string]any{"hello": "world"}

		// Accepted: POST with a body, GET without; the handler sees the
		// origin and the body, the access log the origin.
		r := do(t, remote.request(t, n.url, "POST", "local.test", echo+"?x=1", content))
		if r.status != 200 || r.body["origin"] != "remote.test" || r.body["body"] != `{"hello":"world"}` {
			t.Fatalf("signed POST: %d %s", r.status, r.raw)
		}
		if !strings.Contains(n.logs.String(), "origin=remote.test") {
			t.Errorf("the request log lacks the origin:\n%s", n.logs.String())
		}
		r = do(t, remote.request(t, n.url, "GET", "local.test", echo, nil))
		if r.status != 200 || r.body["origin"] != "remote.test" || r.body["body"] != "" {
			t.Fatalf("signed GET: %d %s", r.status, r.raw)
		}

		// Header variants the specification allows: any case, spaces
		// around commas, unquoted values with colons, no destination
		// (servers before v1.3), unknown parameters, another scheme too.
		sig := func(req *http.Request) string {
			return regexp.MustCompile(`sig="([^"]+)"`).FindStringSubmatch(req.Header.Get("Authorization"))[1]
		}
		for _, h := range []func(sig string) string{
			func(s string) string {
				return `x-matrix  ORIGIN=remote.test , Key = "ed25519:fake" ,sig="` + s + `",	destination="local.test", extra="a,b\"c"`
			},
			func(s string) string { return `X-Matrix origin="remote.test",key=ed25519:fake,sig=` + s },
		} {
			req := remote.request(t, n.url, "POST", "local.test", echo, content)
			req.Header.Set("Authorization", h(sig(req)))
			req.Header.Add("Authorization", "Bearer whatever")
			if r := do(t, req); r.status != 200 || r.body["origin"] != "remote.test" {
				t.Fatalf("header %q: %d %s", req.Header.Get("Authorization"), r.status, r.raw)
			}
		}

		refused := []struct {
			name   string
			req    func() *http.Request
			status int
			code   string
		}{
			{"no header", func() *http.Request {
				req := remote.request(t, n.url, "GET", "local.test", echo, nil)
				req.Header.Del("Authorization")
				return req
			}, 401, "M_UNAUTHORIZED"},
			{"another scheme only", func() *http.Request {
				req := remote.request(t, n.url, "GET", "local.test", echo, nil)
				req.Header.Set("Authorization", "Bearer abc")
				return req
			}, 401, "M_UNAUTHORIZED"},
			{"malformed header", func() *http.Request {
				req := remote.request(t, n.url, "GET", "local.test", echo, nil)
				req.Header.Set("Authorization", `X-Matrix origin="remote.test",key="ed25519:fake"`)
				return req
			}, 400, "M_UNAUTHORIZED"},
			{"invalid origin", func() *http.Request {
				req := remote.request(t, n.url, "GET", "local.test", echo, nil)
				req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), `origin="remote.test"`, `origin="bad name"`, 1))
				return req
			}, 400, "M_UNAUTHORIZED"},
			{"tampered body", func() *http.Request {
				req := remote.request(t, n.url, "POST", "local.test", echo, content)
				req.Body = io.NopCloser(strings.NewReader(`{"hello":"earth"}`))
				req.ContentLength = -1
				return req
			}, 401, "M_UNAUTHORIZED"},
			{"tampered path", func() *http.Request {
				req := remote.request(t, n.url, "GET", "local.test", echo, nil)
				req.URL.RawQuery = "x=2"
				return req
			}, 401, "M_UNAUTHORIZED"},
			{"signed with another key", func() *http.Request {
				_, other, _ := ed25519.GenerateKey(nil)
				impostor := &fakeServer{name: remote.name, keyID: remote.keyID, priv: other}
				return impostor.request(t, n.url, "GET", "local.test", echo, nil)
			}, 401, "M_UNAUTHORIZED"},
			{"wrong destination", func() *http.Request {
				return remote.request(t, n.url, "GET", "other.test", echo, nil)
			}, 401, "M_UNAUTHORIZED"},
			{"unknown server", func() *http.Request {
				return ghost.request(t, n.url, "GET", "local.test", echo, nil)
			}, 401, "M_UNAUTHORIZED"},
			{"denied origin", func() *http.Request {
				return evil.request(t, n.url, "GET", "local.test", echo, nil)
			}, 403, "M_FORBIDDEN"},
			{"body not JSON", func() *http.Request {
				req := remote.request(t, n.url, "POST", "local.test", echo, content)
				req.Body = io.NopCloser(strings.NewReader(`{"hello":`))
				req.ContentLength = -1
				return req
			}, 400, "M_NOT_JSON"},
			{"body over the route's cap", func() *http.Request {
				return remote.request(t, n.url, "POST", "local.test", "/_matrix/federation/v1/test/small",
					map[string]string{"pad": strings.Repeat("x", 200)})
			}, 413, "M_TOO_LARGE"},
		}
		for _, c := range refused {
			r := do(t, c.req())
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("%s: got %d %s, want %d %s", c.name, r.status, r.raw, c.status, c.code)
			}
		}

		// An allowlist refuses everyone else.
		n2 := newNode(t, sqltest.Open(t, db.Dialect), "local.test", func(c *Config) { c.DomainAllowlist = []string{"remote.test"} })
		n2.net.route("remote.test", remote.url).route("evil.test", evil.url)
		if r := do(t, remote.request(t, n2.url, "GET", "local.test", echo, nil)); r.status != 200 {
			t.Errorf("allowed origin: %d %s", r.status, r.raw)
		}
		if r := do(t, evil.request(t, n2.url, "GET", "local.test", echo, nil)); r.status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Errorf("origin not on the allowlist: %d %s", r.status, r.raw)
		}
	})
}

func TestOutgoing(t *testing.T) {
	ctx := context.Background()
	db := sqltest.Open(t, sqlutil.SQLite)
	a := newNode(t, db, "a.test", func(c *Config) { c.DomainDenylist = []string{"evil.test"} })
	b := newNode(t, sqltest.Open(t, sqlutil.SQLite), "b.test", nil)
	evil := newFakeServer(t, "evil.test")
	a.net.route("b.test", b.url).route("evil.test", evil.url).route("a.test", a.url)
	b.net.route("a.test", a.url)

	// Allowed: unsigned and signed requests between two Myelin servers
	// (b fetches a's key from a to check the signature).
	v, err := a.f.keyClient.GetVersion(ctx, "b.test")
	if err != nil || v.Server.Name != "Myelin" {
		t.Fatalf("version of b: %+v, %v", v, err)
	}
	p, err := a.f.client.LookupProfile(ctx, "a.test", "b.test", "@u:b.test", "displayname")
	if err != nil || p.DisplayName != "a.test" {
		t.Fatalf("signed request to b: %+v, %v", p, err)
	}

	// Denied destinations and this server itself fail with ErrDenied
	// before any request.
	for _, dest := range []spec.ServerName{"evil.test", "EVIL.test:8448", "a.test"} {
		if _, err := a.f.keyClient.GetVersion(ctx, dest); !errors.Is(err, fedapi.ErrDenied) {
			t.Errorf("GetVersion(%s): %v, want ErrDenied", dest, err)
		}
		if _, err := a.f.client.LookupProfile(ctx, "a.test", dest, "@u:x", ""); !errors.Is(err, fedapi.ErrDenied) {
			t.Errorf("LookupProfile(%s): %v, want ErrDenied", dest, err)
		}
		if _, err := a.f.keyClient.GetServerKeys(ctx, dest); !errors.Is(err, fedapi.ErrDenied) {
			t.Errorf("GetServerKeys(%s): %v, want ErrDenied", dest, err)
		}
	}
	if evil.hits.Load() != 0 {
		t.Fatal("a request reached a denied server")
	}

	// An allowlist denies the others.
	c := newNode(t, sqltest.Open(t, sqlutil.SQLite), "c.test", func(c *Config) { c.DomainAllowlist = []string{"b.test"} })
	c.net.route("b.test", b.url).route("evil.test", evil.url)
	if _, err := c.f.keyClient.GetVersion(ctx, "b.test"); err != nil {
		t.Errorf("allowed: %v", err)
	}
	if _, err := c.f.keyClient.GetVersion(ctx, "evil.test"); !errors.Is(err, fedapi.ErrDenied) {
		t.Errorf("not on the allowlist: %v, want ErrDenied", err)
	}

	// Without a transport nothing is dialled.
	d := newNode(t, sqltest.Open(t, sqlutil.SQLite), "d.test", func(c *Config) { c.Transport = nil })
	if _, err := d.f.keyClient.GetVersion(ctx, "b.test"); !errors.Is(err, errNoTransport) {
		t.Errorf("no transport: %v", err)
	}
}

func TestDomainPolicy(t *testing.T) {
	p := newDomainPolicy(nil, []string{"Evil.test", "bad.test:8448", "[::1]"})
	for name, want := range map[spec.ServerName]bool{
		"evil.test": false, "EVIL.TEST": false, "evil.test:443": false, "bad.test:8448": false,
		"bad.test": true, "bad.test:443": true, "good.test": true, "[::1]:8448": false, "sub.evil.test": true,
	} {
		if got := p.allowed(name); got != want {
			t.Errorf("deny list: allowed(%s) = %v, want %v", name, got, want)
		}
	}
	p = newDomainPolicy([]string{"good.test"}, []string{"good.test:666"})
	for name, want := range map[spec.ServerName]bool{
		"good.test": true, "good.test:8448": true, "good.test:666": false, "other.test": false,
	} {
		if got := p.allowed(name); got != want {
			t.Errorf("allow list: allowed(%s) = %v, want %v", name, got, want)
		}
	}
}

func TestParseXMatrix(t *testing.T) {
	for _, c := range []struct {
		h      string
		xm     bool
		ok     bool
		origin string
		dest   string
		key    string
		sig    string
	}{
		{`X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"`, true, true, "a.test", "b.test", "ed25519:1", "c2ln"},
		{`X-Matrix origin=a.test,key=ed25519:1,sig=c2ln`, true, true, "a.test", "", "ed25519:1", "c2ln"},
		{"x-matrix   Origin = \"a.test:8448\" ,\tKEY=\"ed25519:1\" , sig=\"c2\\ln\" ,", true, true, "a.test:8448", "", "ed25519:1", "c2ln"},
		{`X-Matrix origin="[::1]:8448",key="ed25519:1",sig="x",unknown="q,\"uo\"te"`, true, true, "[::1]:8448", "", "ed25519:1", "x"},
		{`X-Matrix origin="a.test",origin="b.test",key="ed25519:1",sig="x"`, true, true, "a.test", "", "ed25519:1", "x"},
		{`Bearer abc`, false, false, "", "", "", ""},
		{`X-Matrixorigin="a.test"`, false, false, "", "", "", ""},
		{`X-Matrix`, true, false, "", "", "", ""},
		{`X-Matrix origin="a.test",key="ed25519:1"`, true, false, "", "", "", ""},
		{`X-Matrix origin="a.test",key="ed25519:1",sig="x`, true, false, "", "", "", ""},
		{`X-Matrix origin="a.test" junk,key="ed25519:1",sig="x"`, true, false, "", "", "", ""},
		{`X-Matrix origin=a test,key="ed25519:1",sig="x"`, true, false, "", "", "", ""},
		{`X-Matrix origin="not a name",key="ed25519:1",sig="x"`, true, false, "", "", "", ""},
		{`X-Matrix origin="a.test",key="ed25519:1,2",sig="x"`, true, false, "", "", "", ""},
		{`X-Matrix origin,key="ed25519:1",sig="x"`, true, false, "", "", "", ""},
	} {
		a, xm, err := parseXMatrix(c.h)
		if xm != c.xm || (err == nil) != c.ok && xm {
			t.Errorf("%q: X-Matrix %v, err %v; want %v, ok %v", c.h, xm, err, c.xm, c.ok)
			continue
		}
		if c.ok && (string(a.Origin) != c.origin || string(a.Destination) != c.dest || string(a.Key) != c.key || a.Sig != c.sig) {
			t.Errorf("%q: got %+v", c.h, a)
		}
	}
}

func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="a.test",destination="b.test",key="ed25519:1",sig="c2ln"`)
	f.Add(`X-Matrix origin=a.test,key=ed25519:1,sig=c2ln`)
	f.Add("x-matrix  Origin = \"a\\\"b\" ,\tKEY=k , sig=\"s\" ,")
	f.Fuzz(func(t *testing.T, h string) {
		a, xm, err := parseXMatrix(h)
		if !xm || err != nil {
			return
		}
		if a.Origin == "" || a.Key == "" || a.Sig == "" {
			t.Fatalf("%q: accepted without origin, key or sig: %+v", h, a)
		}
		// What is accepted survives the re-encoding authenticate does.
		for _, v := range []string{string(a.Key), a.Sig} {
			if bytes.ContainsAny([]byte(v), "\",\\ \t") {
				t.Fatalf("%q: unsafe value %q", h, v)
			}
		}
	})
}
