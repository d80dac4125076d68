package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/netguard"
	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// checkEcho fails unless the request reached server by with the Host
// header and SNI the spec requires, over HTTP/2.
func checkEcho(t *testing.T, got echo, by, host, sni string) {
	t.Helper()
	if got.By != by || got.Host != host || got.SNI != sni {
		t.Errorf("answered by %q with Host %q SNI %q, want %q, %q, %q", got.By, got.Host, got.SNI, by, host, sni)
	}
	if got.Proto != "HTTP/2.0" {
		t.Errorf("protocol %s, want HTTP/2.0", got.Proto)
	}
}

// TestRequestIPLiteral: step 1. No SNI is sent for an IP (RFC 6066); the
// certificate is checked against its IP SAN.
func TestRequestIPLiteral(t *testing.T) {
	e := newEnv(t)
	fs := e.startServer("127.0.0.2", "ip", []string{"127.0.0.2"}, nil)
	name := fs.addr.String()
	got, err := get(t, e.transport(nil), name, "/_matrix/federation/v1/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "ip", name, "")
	if got.Path != "/_matrix/federation/v1/x" {
		t.Errorf("path %q", got.Path)
	}
}

// TestRequestExplicitPort: step 2.
func TestRequestExplicitPort(t *testing.T) {
	e := newEnv(t)
	fs := e.startServer("127.0.0.3", "hs1", []string{"hs1.test"}, nil)
	e.dns.SetHost("hs1.test", addr("127.0.0.3"))
	name := fmt.Sprintf("hs1.test:%d", fs.addr.Port())
	got, err := get(t, e.transport(nil), name, "/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "hs1", name, "hs1.test")
}

// TestRequestWellKnownToNameAndPort: step 3.2.
func TestRequestWellKnownToNameAndPort(t *testing.T) {
	e := newEnv(t)
	fs := e.startServer("127.0.0.4", "fed", []string{"fed.hs2.test"}, nil)
	e.dns.SetHost("fed.hs2.test", addr("127.0.0.4"))
	delegated := fmt.Sprintf("fed.hs2.test:%d", fs.addr.Port())
	e.delegate("hs2.test", delegated)
	got, err := get(t, e.transport(nil), "hs2.test", "/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "fed", delegated, "fed.hs2.test")
}

// TestRequestWellKnownToSRV: step 3.3. The SRV target is a hosting
// provider's name; Host, SNI and certificate are the delegated name.
func TestRequestWellKnownToSRV(t *testing.T) {
	e := newEnv(t)
	fs := e.startServer("127.0.0.5", "fed", []string{"fed.hs3.test"}, nil)
	e.delegate("hs3.test", "fed.hs3.test")
	e.dns.SetSRV("_matrix-fed._tcp.fed.hs3.test", net.SRV{Target: "box1.hosting.test.", Port: fs.addr.Port()})
	e.dns.SetHost("box1.hosting.test", addr("127.0.0.5"))
	got, err := get(t, e.transport(nil), "hs3.test", "/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "fed", "fed.hs3.test", "fed.hs3.test")
}

// TestRequestSRVPreference: steps 4 and 5. _matrix-fed._tcp wins over the
// deprecated _matrix._tcp, which is used once the former is gone.
func TestRequestSRVPreference(t *testing.T) {
	e := newEnv(t)
	fed := e.startServer("127.0.0.6", "matrix-fed", []string{"hs4.test"}, nil)
	legacy := e.startServer("127.0.0.7", "matrix", []string{"hs4.test"}, nil)
	e.dns.SetHost("hs4.test", addr(wellKnownIP)) // its well-known is a 404
	e.dns.SetSRV("_matrix-fed._tcp.hs4.test", net.SRV{Target: "fed.box.test", Port: fed.addr.Port()})
	e.dns.SetSRV("_matrix._tcp.hs4.test", net.SRV{Target: "legacy.box.test", Port: legacy.addr.Port()})
	e.dns.SetHost("fed.box.test", addr("127.0.0.6"))
	e.dns.SetHost("legacy.box.test", addr("127.0.0.7"))
	tr := e.transport(nil)

	got, err := get(t, tr, "hs4.test", "/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "matrix-fed", "hs4.test", "hs4.test")

	e.dns.SetSRV("_matrix-fed._tcp.hs4.test")
	e.clock.Advance(2 * time.Hour)
	got, err = get(t, tr, "hs4.test", "/x")
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "matrix", "hs4.test", "hs4.test")
}

// TestCertificateChecked: a certificate for another name, one from an
// unknown CA, and one valid only for the SRV target are all refused.
func TestCertificateChecked(t *testing.T) {
	e := newEnv(t)
	tr := e.transport(nil)

	wrongName := e.startServer("127.0.0.2", "wrong", []string{"other.test"}, nil)
	e.dns.SetHost("hs5.test", addr("127.0.0.2"))
	_, err := get(t, tr, fmt.Sprintf("hs5.test:%d", wrongName.addr.Port()), "/x")
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Errorf("certificate for another name: err = %v, want a HostnameError", err)
	}

	otherCA, otherKey, err := tlsutil.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := tlsutil.IssueCert(otherCA, otherKey, []string{"hs6.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unknown := e.startServerWithCert("127.0.0.3", "unknown", certPEM, keyPEM, nil)
	e.dns.SetHost("hs6.test", addr("127.0.0.3"))
	_, err = get(t, tr, fmt.Sprintf("hs6.test:%d", unknown.addr.Port()), "/x")
	var caErr x509.UnknownAuthorityError
	if !errors.As(err, &caErr) {
		t.Errorf("unknown CA: err = %v, want an UnknownAuthorityError", err)
	}

	srvName := e.startServer("127.0.0.4", "srv", []string{"box.hosting.test"}, nil)
	e.dns.SetHost("hs7.test", addr(wellKnownIP))
	e.dns.SetSRV("_matrix-fed._tcp.hs7.test", net.SRV{Target: "box.hosting.test", Port: srvName.addr.Port()})
	e.dns.SetHost("box.hosting.test", addr("127.0.0.4"))
	_, err = get(t, tr, "hs7.test", "/x")
	if !errors.As(err, &hostErr) {
		t.Errorf("certificate for the SRV target only: err = %v, want a HostnameError", err)
	}
}

// TestPrivateAddresses: loopback targets are refused at dial time unless
// AllowPrivate or an AllowNetworks entry permits them.
func TestPrivateAddresses(t *testing.T) {
	e := newEnv(t)
	byIP := e.startServer("127.0.0.2", "ip", []string{"127.0.0.2"}, nil)
	byName := e.startServer("127.0.0.3", "name", []string{"hs1.test"}, nil)
	e.dns.SetHost("hs1.test", addr("127.0.0.3")) // a public-looking name resolving to loopback
	names := []string{byIP.addr.String(), fmt.Sprintf("hs1.test:%d", byName.addr.Port())}

	refusing := e.transport(func(o *Options) { o.AllowPrivate = false })
	for _, n := range names {
		if _, err := get(t, refusing, n, "/x"); !errors.Is(err, netguard.ErrBlocked) {
			t.Errorf("%s without AllowPrivate: err = %v, want ErrBlocked", n, err)
		}
	}
	if byIP.conns.Load() != 0 || byName.conns.Load() != 0 {
		t.Error("a refused address was connected to")
	}

	allowing := e.transport(nil)
	for _, n := range names {
		if _, err := get(t, allowing, n, "/x"); err != nil {
			t.Errorf("%s with AllowPrivate: %v", n, err)
		}
	}

	hole := e.transport(func(o *Options) {
		o.AllowPrivate = false
		o.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	})
	if _, err := get(t, hole, names[0], "/x"); err != nil {
		t.Errorf("allowed network: %v", err)
	}
	if _, err := get(t, hole, names[1], "/x"); !errors.Is(err, netguard.ErrBlocked) {
		t.Errorf("outside the allowed network: err = %v, want ErrBlocked", err)
	}
}

// TestReresolveAfterFailure: when every cached target fails, the
// resolution is dropped and done again, and the request (with its body)
// goes to the new target. When the new resolution fails too, the error
// lists the attempts and nothing stays cached.
func TestReresolveAfterFailure(t *testing.T) {
	e := newEnv(t)
	a := e.startServer("127.0.0.2", "a", []string{"hs6.test"}, nil)
	b := e.startServer("127.0.0.3", "b", []string{"hs6.test"}, nil)
	e.dns.SetHost("hs6.test", addr(wellKnownIP))
	e.dns.SetHost("a.test", addr("127.0.0.2"))
	e.dns.SetHost("b.test", addr("127.0.0.3"))
	e.dns.SetSRV("_matrix-fed._tcp.hs6.test", net.SRV{Target: "a.test", Port: a.addr.Port()})
	tr := e.transport(nil)

	got, err := do(t, tr, http.MethodPut, "hs6.test", "/send/1", `{"n":1}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "a", "hs6.test", "hs6.test")

	a.srv.Close()
	e.dns.SetSRV("_matrix-fed._tcp.hs6.test", net.SRV{Target: "b.test", Port: b.addr.Port()})
	got, err = do(t, tr, http.MethodPut, "hs6.test", "/send/2", `{"n":2}`)
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, got, "b", "hs6.test", "hs6.test")
	if got.Body != `{"n":2}` {
		t.Errorf("body after a retry: %q", got.Body)
	}

	b.srv.Close()
	_, err = do(t, tr, http.MethodPut, "hs6.test", "/send/3", `{"n":3}`)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("all targets down: err = %v", err)
	}
	before := e.lookup.lookups()
	if _, err := resolve(t, tr, "hs6.test"); err != nil {
		t.Fatal(err)
	}
	if e.lookup.lookups() == before {
		t.Error("a destination that failed is still cached")
	}
}

// TestConnectionReuse: sequential requests share one kept-alive HTTP/2
// connection.
func TestConnectionReuse(t *testing.T) {
	e := newEnv(t)
	fs := e.startServer("127.0.0.2", "ip", []string{"127.0.0.2"}, nil)
	tr := e.transport(nil)
	for range 5 {
		got, err := get(t, tr, fs.addr.String(), "/x")
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, got, "ip", fs.addr.String(), "")
	}
	if n := fs.conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 requests, want 1", n)
	}
}

func TestRoundTripRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	tr := e.transport(nil)
	for _, tc := range []struct{ url, want string }{
		{"https://hs1.test/x", "unsupported URL scheme"},
		{"matrix://bad_name!/x", "invalid server name"},
	} {
		req, err := http.NewRequest(http.MethodGet, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.url, err, tc.want)
		}
	}
}

// keyVerifier checks signatures against one known server key.
type keyVerifier struct {
	server spec.ServerName
	keyID  gomatrixserverlib.KeyID
	key    ed25519.PublicKey
}

func (v keyVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	res := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		if r.ServerName != v.server {
			res[i].Error = fmt.Errorf("unknown server %s", r.ServerName)
			continue
		}
		res[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), v.keyID, v.key, r.Message)
	}
	return res, nil
}

// TestFederationClient sends requests through gomatrixserverlib's fclient
// with this transport installed: an unsigned GetVersion, and a signed
// profile query whose X-Matrix signature the server verifies.
func TestFederationClient(t *testing.T) {
	e := newEnv(t)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	verifier := keyVerifier{server: "origin.test", keyID: "ed25519:1", key: pub}
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	fs := e.startServer("127.0.0.2", "fed", []string{"fed.hs7.test"}, map[string]http.HandlerFunc{
		"/_matrix/federation/v1/version": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"server": map[string]string{"name": "test", "version": "7"}})
		},
		"/_matrix/federation/v1/query/profile": func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.Header.Get("Authorization"), `X-Matrix origin="origin.test"`) {
				writeJSON(w, 401, map[string]string{"errcode": "M_UNAUTHORIZED", "error": "no X-Matrix"})
				return
			}
			if _, resp := fclient.VerifyHTTPRequest(r, time.Now(), "hs7.test", nil, verifier); resp.Code != 200 {
				writeJSON(w, resp.Code, map[string]string{"errcode": "M_UNAUTHORIZED", "error": fmt.Sprint(resp.JSON)})
				return
			}
			writeJSON(w, 200, map[string]string{"displayname": "Alice of " + r.Host})
		},
	})
	e.dns.SetHost("fed.hs7.test", addr("127.0.0.2"))
	e.delegate("hs7.test", fmt.Sprintf("fed.hs7.test:%d", fs.addr.Port()))
	tr := e.transport(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	v, err := fclient.NewClient(fclient.WithTransport(tr)).GetVersion(ctx, "hs7.test")
	if err != nil {
		t.Fatal(err)
	}
	if v.Server.Version != "7" {
		t.Errorf("version %+v", v)
	}

	fc := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: "origin.test", KeyID: "ed25519:1", PrivateKey: priv}},
		fclient.WithTransport(tr), fclient.WithTimeout(20*time.Second))
	prof, err := fc.LookupProfile(ctx, "origin.test", "hs7.test", "@alice:hs7.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Alice of fed.hs7.test:%d", fs.addr.Port()); prof.DisplayName != want {
		t.Errorf("displayname %q, want %q", prof.DisplayName, want)
	}

	// A request signed with another key is rejected by the server: the
	// signature check above is real.
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bad := fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: "origin.test", KeyID: "ed25519:1", PrivateKey: other}},
		fclient.WithTransport(tr))
	if _, err := bad.LookupProfile(ctx, "origin.test", "hs7.test", "@alice:hs7.test", ""); err == nil {
		t.Error("a request with a bad signature was accepted")
	}
}
