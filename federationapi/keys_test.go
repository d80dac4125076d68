package federationapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/internal/testutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// ---- test network ----

// testNet is a Config.Transport for tests: it sends matrix://<server>/...
// requests to the test HTTP server registered for <server> and fails the
// others as unreachable.
type testNet struct {
	mu    sync.Mutex
	hosts map[spec.ServerName]string
}

func newTestNet() *testNet { return &testNet{hosts: map[spec.ServerName]string{}} }

func (n *testNet) route(name spec.ServerName, baseURL string) *testNet {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[name] = baseURL
	return n
}

func (n *testNet) unroute(name spec.ServerName) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.hosts, name)
}

func (n *testNet) RoundTrip(r *http.Request) (*http.Response, error) {
	n.mu.Lock()
	base, ok := n.hosts[spec.ServerName(r.URL.Host)]
	n.mu.Unlock()
	if !ok {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("test net: %s is unreachable", r.URL.Host)
	}
	u, _ := url.Parse(base)
	r2 := r.Clone(r.Context())
	r2.URL.Scheme, r2.URL.Host = u.Scheme, u.Host
	return http.DefaultTransport.RoundTrip(r2)
}

// ---- Myelin nodes ----

type node struct {
	name  spec.ServerName
	keyID gomatrixserverlib.KeyID
	pub   ed25519.PublicKey
	f     *FederationAPI
	url   string
	net   *testNet // where its outgoing requests go
	logs  *testutil.LockedBuffer
}

// newNode builds the component on db as server name, serves its routes
// (plus test routes behind request authentication) on a test HTTP server,
// and sends its outgoing requests through its own testNet.
func newNode(t *testing.T, db *sqlutil.DB, name spec.ServerName, mod func(*Config)) *node {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(ctx, append(rsapi.Streams(), fedapi.Streams()...)...); err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	n := &node{name: name, keyID: "ed25519:" + gomatrixserverlib.KeyID(strings.ReplaceAll(string(name), ".", "_")), pub: pub,
		net: newTestNet(), logs: &testutil.LockedBuffer{}}
	cfg := Config{ServerName: name, KeyID: n.keyID, PrivateKey: priv, KeyValidity: time.Hour, Transport: n.net}
	if mod != nil {
		mod(&cfg)
	}
	log := slog.New(slog.NewTextHandler(n.logs, nil))
	n.f, err = New(ctx, cfg, db, b, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.f.Close)
	srv := httputil.NewServer(httputil.ServerOptions{Logger: log})
	echo := func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		return map[string]any{"origin": origin, "body": string(body)}, nil
	}
	n.f.handle(srv, http.MethodGet, "/_matrix/federation/v1/test/echo", echo)
	n.f.handle(srv, http.MethodPost, "/_matrix/federation/v1/test/echo", echo)
	n.f.handle(srv, http.MethodPost, "/_matrix/federation/v1/test/small", echo, httputil.MaxBody(100))
	// A real federation client route: the profile query answers the
	// origin as display name.
	n.f.handle(srv, http.MethodGet, "/_matrix/federation/v1/query/profile", func(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
		return map[string]string{"displayname": string(origin)}, nil
	})
	// The component's routes come after the test routes, which take
	// precedence (the real /query/profile needs a user API).
	n.f.Register(srv)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	n.url = ts.URL
	return n
}

// ---- fake remote servers (gomatrixserverlib only) ----

// fakeServer is another homeserver: it publishes its keys, signs
// requests and, when it knows other servers, answers notary queries.
type fakeServer struct {
	name  spec.ServerName
	keyID gomatrixserverlib.KeyID
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	url   string
	hits  atomic.Int32 // GET /_matrix/key/v2/server
	qhits atomic.Int32 // POST /_matrix/key/v2/query

	mu         sync.Mutex
	validUntil time.Time
	old        map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey
	knows      map[spec.ServerName]*fakeServer // notary: whose keys it vouches for
	notaryKey  ed25519.PrivateKey              // signs notary answers (priv unless set)
}

func newFakeServer(t *testing.T, name spec.ServerName) *fakeServer {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	s := &fakeServer{name: name, keyID: "ed25519:fake", priv: priv, pub: pub, validUntil: time.Now().Add(time.Hour),
		old: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}, knows: map[spec.ServerName]*fakeServer{}}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

func (s *fakeServer) setValidUntil(v time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.validUntil = v
}

func (s *fakeServer) keyResponse() []byte {
	s.mu.Lock()
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:    s.name,
		VerifyKeys:    map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{s.keyID: {Key: spec.Base64Bytes(s.pub)}},
		OldVerifyKeys: s.old,
		ValidUntilTS:  spec.AsTimestamp(s.validUntil),
	}
	b, err := json.Marshal(fields)
	s.mu.Unlock()
	if err != nil {
		panic(err)
	}
	return s.sign(b)
}

func (s *fakeServer) sign(msg []byte) []byte {
	out, err := gomatrixserverlib.SignJSON(string(s.name), s.keyID, s.priv, msg)
	if err != nil {
		panic(err)
	}
	return out
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/_matrix/key/v2/server":
		s.hits.Add(1)
		w.Write(s.keyResponse())
	case r.Method == http.MethodPost && r.URL.Path == "/_matrix/key/v2/query":
		s.qhits.Add(1)
		var req gomatrixserverlib.PublicKeyNotaryLookupRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(400)
			return
		}
		s.mu.Lock()
		signer := s.notaryKey
		if signer == nil {
			signer = s.priv
		}
		var out []json.RawMessage
		for name := range req.ServerKeys {
			if other, ok := s.knows[name]; ok {
				signed, err := gomatrixserverlib.SignJSON(string(s.name), s.keyID, signer, other.keyResponse())
				if err != nil {
					panic(err)
				}
				out = append(out, signed)
			}
		}
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"server_keys": out})
	default:
		w.WriteHeader(404)
		w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"no"}`))
	}
}

// request signs a federation request from s to dest and aims it at the
// test server at baseURL.
func (s *fakeServer) request(t *testing.T, baseURL, method string, dest spec.ServerName, uri string, content any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, s.name, dest, uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(s.name, s.keyID, s.priv); err != nil {
		t.Fatal(err)
	}
	r, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(baseURL)
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	return r
}

// ---- HTTP helpers ----

type result struct {
	status int
	body   map[string]any
	raw    []byte
}

func do(t *testing.T, r *http.Request) result {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := result{status: resp.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &res.body)
	return res
}

func get(t *testing.T, u string) result {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, u, nil)
	return do(t, r)
}

func post(t *testing.T, u string, body any) result {
	t.Helper()
	var b []byte
	if s, ok := body.(string); ok {
		b = []byte(s)
	} else {
		b, _ = json.Marshal(body)
	}
	r, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(b))
	r.Header.Set("Content-Type", "application/json")
	return do(t, r)
}

func (r result) errcode() string { s, _ := r.body["errcode"].(string); return s }

// serverKeysOf decodes a notary answer.
func serverKeysOf(t *testing.T, r result) []gomatrixserverlib.ServerKeys {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	var body struct {
		ServerKeys []gomatrixserverlib.ServerKeys `json:"server_keys"`
	}
	if err := json.Unmarshal(r.raw, &body); err != nil || body.ServerKeys == nil {
		t.Fatalf("bad notary answer %s: %v", r.raw, err)
	}
	return body.ServerKeys
}

func ts(t time.Time) int64 { return t.UnixMilli() }

// ---- tests ----

func TestOwnKeys(t *testing.T) {
	db := sqltest.Open(t, sqlutil.SQLite)
	oldPub, _, _ := ed25519.GenerateKey(nil)
	expired := spec.AsTimestamp(time.Now().Add(-24 * time.Hour))
	n := newNode(t, db, "local.test", func(c *Config) {
		c.OldKeys = []OldKey{{KeyID: "ed25519:old", PublicKey: oldPub, ExpiredTS: expired}}
	})
	for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/server/ed25519:whatever"} {
		r := get(t, n.url+path)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
		var keys gomatrixserverlib.ServerKeys
		if err := json.Unmarshal(r.raw, &keys); err != nil {
			t.Fatal(err)
		}
		if checks, _ := gomatrixserverlib.CheckKeys("local.test", time.Now(), keys); !checks.AllChecksOK {
			t.Fatalf("%s: checks failed: %+v", path, checks)
		}
		if err := gomatrixserverlib.VerifyJSON("local.test", n.keyID, n.pub, r.raw); err != nil {
			t.Fatalf("%s: signature: %v", path, err)
		}
		if !bytes.Equal(keys.VerifyKeys[n.keyID].Key, n.pub) || len(keys.VerifyKeys) != 1 {
			t.Fatalf("%s: verify_keys = %v", path, keys.VerifyKeys)
		}
		if d := keys.ValidUntilTS.Time().Sub(time.Now().Add(time.Hour)); d < -time.Minute || d > time.Minute {
			t.Fatalf("%s: valid_until_ts %v is not an hour from now", path, keys.ValidUntilTS.Time())
		}
		old := keys.OldVerifyKeys["ed25519:old"]
		if !bytes.Equal(old.Key, oldPub) || old.ExpiredTS != expired || len(keys.OldVerifyKeys) != 1 {
			t.Fatalf("%s: old_verify_keys = %v", path, keys.OldVerifyKeys)
		}
	}

	// The notary answers for this server from the configuration: no
	// fetch (the node's network has no route to itself, and the
	// transport refuses it anyway).
	keys := serverKeysOf(t, get(t, n.url+"/_matrix/key/v2/query/local.test"))
	if len(keys) != 1 || keys[0].ServerName != "local.test" || !bytes.Equal(keys[0].VerifyKeys[n.keyID].Key, n.pub) {
		t.Fatalf("own keys through the notary: %+v", keys)
	}
	if err := gomatrixserverlib.VerifyJSON("local.test", n.keyID, n.pub, keys[0].Raw); err != nil {
		t.Fatal(err)
	}

	// The keyring knows this server's keys, old ones with their expiry.
	msg := []byte(`{"a":1}`)
	signed, _ := gomatrixserverlib.SignJSON("local.test", n.keyID, n.f.cfg.PrivateKey, msg)
	res, err := n.f.keyring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: "local.test", AtTS: spec.AsTimestamp(time.Now()), Message: signed,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil || res[0].Error != nil {
		t.Fatalf("own signature: %v %v", err, res)
	}
	got, _ := n.f.keyDB.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{{ServerName: "local.test", KeyID: "ed25519:old"}: 0})
	if k := got[gomatrixserverlib.PublicKeyLookupRequest{ServerName: "local.test", KeyID: "ed25519:old"}]; k.ExpiredTS != expired || !bytes.Equal(k.Key, oldPub) {
		t.Fatalf("own old key = %+v", k)
	}
}

func TestVersion(t *testing.T) {
	n := newNode(t, sqltest.Open(t, sqlutil.SQLite), "local.test", nil)
	r := get(t, n.url+"/_matrix/federation/v1/version")
	server, _ := r.body["server"].(map[string]any)
	if r.status != 200 || server["name"] != "Myelin" || server["version"] == "" {
		t.Fatalf("version: %d %s", r.status, r.raw)
	}
}

func checkNotarised(t *testing.T, k gomatrixserverlib.ServerKeys, remote *fakeServer, notary *node) {
	t.Helper()
	if k.ServerName != remote.name {
		t.Fatalf("server_name %s, want %s", k.ServerName, remote.name)
	}
	if err := gomatrixserverlib.VerifyJSON(string(remote.name), remote.keyID, remote.pub, k.Raw); err != nil {
		t.Fatalf("the server's signature: %v", err)
	}
	if err := gomatrixserverlib.VerifyJSON(string(notary.name), notary.keyID, notary.pub, k.Raw); err != nil {
		t.Fatalf("the notary's signature: %v", err)
	}
	if !bytes.Equal(k.VerifyKeys[remote.keyID].Key, remote.pub) {
		t.Fatalf("verify_keys %v", k.VerifyKeys)
	}
}

func TestNotary(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		n := newNode(t, db, "notary.test", nil)
		n.f.keyFetch.minRefetch = 0 // checked at the end
		remote := newFakeServer(t, "remote.test")
		n.net.route("remote.test", remote.url)

		// GET: fetched, both signatures.
		keys := serverKeysOf(t, get(t, n.url+"/_matrix/key/v2/query/remote.test"))
		if len(keys) != 1 {
			t.Fatalf("got %d responses", len(keys))
		}
		checkNotarised(t, keys[0], remote, n)
		if h := remote.hits.Load(); h != 1 {
			t.Fatalf("hits = %d, want 1", h)
		}
		// Cached: no fetch, even with a minimum it satisfies.
		keys = serverKeysOf(t, get(t, n.url+fmt.Sprintf("/_matrix/key/v2/query/remote.test?minimum_valid_until_ts=%d", ts(time.Now().Add(30*time.Minute)))))
		checkNotarised(t, keys[0], remote, n)
		keys = serverKeysOf(t, post(t, n.url+"/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{"remote.test": map[string]any{}}}))
		checkNotarised(t, keys[0], remote, n)
		keys = serverKeysOf(t, get(t, n.url+"/_matrix/key/v2/query/remote.test/"+string(remote.keyID)))
		checkNotarised(t, keys[0], remote, n)
		if h := remote.hits.Load(); h != 1 {
			t.Fatalf("hits = %d, want 1 (cached)", h)
		}
		// The keyring learnt the keys too.
		kr, _ := n.f.keyDB.FetchKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{{ServerName: "remote.test", KeyID: remote.keyID}: 0})
		if len(kr) != 1 {
			t.Fatalf("keyring has %v", kr)
		}

		// POST asking for a longer validity than cached: refetched (and
		// answered even though still not valid long enough).
		keys = serverKeysOf(t, post(t, n.url+"/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{
			"remote.test": map[string]any{string(remote.keyID): map[string]any{"minimum_valid_until_ts": ts(time.Now().Add(2 * time.Hour))}},
		}}))
		if len(keys) != 1 || remote.hits.Load() != 2 {
			t.Fatalf("got %d responses, hits %d; want 1, 2", len(keys), remote.hits.Load())
		}
		checkNotarised(t, keys[0], remote, n)

		// Expired responses are refetched each time until a valid one.
		exp := newFakeServer(t, "expiring.test")
		exp.setValidUntil(time.Now().Add(-time.Second))
		n.net.route("expiring.test", exp.url)
		for want := int32(1); want <= 2; want++ {
			keys = serverKeysOf(t, get(t, n.url+"/_matrix/key/v2/query/expiring.test"))
			if len(keys) != 1 || exp.hits.Load() != want {
				t.Fatalf("expired: %d responses, hits %d, want 1, %d", len(keys), exp.hits.Load(), want)
			}
		}
		exp.setValidUntil(time.Now().Add(time.Hour))
		for i := 0; i < 2; i++ {
			keys = serverKeysOf(t, get(t, n.url+"/_matrix/key/v2/query/expiring.test"))
			if len(keys) != 1 || exp.hits.Load() != 3 || keys[0].ValidUntilTS.Time().Before(time.Now()) {
				t.Fatalf("renewed: %d responses, hits %d, valid until %v", len(keys), exp.hits.Load(), keys[0].ValidUntilTS.Time())
			}
		}

		// Not refetched within notaryMinRefetch, whatever the query asks.
		n.f.keyFetch.minRefetch = time.Minute
		keys = serverKeysOf(t, post(t, n.url+"/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{
			"expiring.test": map[string]any{"ed25519:other": map[string]any{"minimum_valid_until_ts": ts(time.Now().Add(5 * time.Hour))}},
		}}))
		if len(keys) != 0 || exp.hits.Load() != 3 {
			t.Fatalf("within notaryMinRefetch: %d responses, hits %d, want 0, 3", len(keys), exp.hits.Load())
		}
		n.f.keyFetch.minRefetch = 0

		// A server that went away: the last response is still served.
		n.net.unroute("remote.test")
		keys = serverKeysOf(t, post(t, n.url+"/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{
			"remote.test":  map[string]any{string(remote.keyID): map[string]any{"minimum_valid_until_ts": ts(time.Now().Add(3 * time.Hour))}},
			"unknown.test": map[string]any{},
			"notary.test":  map[string]any{},
			"bad name!":    map[string]any{},
		}}))
		if len(keys) != 2 {
			t.Fatalf("got %d responses, want remote.test's and notary.test's", len(keys))
		}
		checkNotarised(t, keys[1], remote, n)
		if keys[0].ServerName != "notary.test" {
			t.Fatalf("first answer is %s", keys[0].ServerName)
		}
		// Nothing known, nothing reachable: an empty list.
		r := get(t, n.url+"/_matrix/key/v2/query/unknown.test")
		if r.status != 200 || !strings.Contains(string(r.raw), `"server_keys":[]`) {
			t.Fatalf("unknown server: %d %s", r.status, r.raw)
		}
		r = post(t, n.url+"/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{}})
		if r.status != 200 || !strings.Contains(string(r.raw), `"server_keys":[]`) {
			t.Fatalf("empty query: %d %s", r.status, r.raw)
		}

		// Bad requests.
		for _, c := range []struct {
			r    result
			code string
		}{
			{post(t, n.url+"/_matrix/key/v2/query", map[string]any{}), "M_BAD_JSON"},
			{post(t, n.url+"/_matrix/key/v2/query", "{nope"), "M_NOT_JSON"},
			{get(t, n.url+"/_matrix/key/v2/query/remote.test?minimum_valid_until_ts=soon"), "M_INVALID_PARAM"},
		} {
			if c.r.status != 400 || c.r.errcode() != c.code {
				t.Errorf("got %d %s, want 400 %s", c.r.status, c.r.raw, c.code)
			}
		}
	})
}

// verify checks msg as signed by server at atTS with the node's keyring.
func verify(t *testing.T, n *node, server spec.ServerName, atTS time.Time, msg []byte) error {
	t.Helper()
	res, err := n.f.keyring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: server, AtTS: spec.AsTimestamp(atTS), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		t.Fatalf("VerifyJSONs: %v", err)
	}
	return res[0].Error
}

func TestKeyRingDirect(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		n := newNode(t, db, "local.test", nil)
		remote := newFakeServer(t, "remote.test")
		n.net.route("remote.test", remote.url)
		msg := remote.sign([]byte(`{"hello":"world"}`))

		if err := verify(t, n, "remote.test", time.Now(), msg); err != nil {
			t.Fatal(err)
		}
		if err := verify(t, n, "remote.test", time.Now(), msg); err != nil {
			t.Fatal(err)
		}
		if h := remote.hits.Load(); h != 1 {
			t.Fatalf("hits = %d, want 1", h)
		}
		// Stored: the key for the keyring, the response for the notary.
		ks, err := n.f.store.ServerKeys(ctx, []storage.KeyRef{{ServerName: "remote.test", KeyID: string(remote.keyID)}})
		if err != nil || len(ks) != 1 || ks[0].ExpiredTS != 0 || ks[0].ValidUntilTS != ts(remote.validUntil) {
			t.Fatalf("stored keys %+v, %v", ks, err)
		}
		rows, err := n.f.store.KeyResponses(ctx, "remote.test", nil)
		if err != nil || len(rows) != 1 || gomatrixserverlib.VerifyJSON("remote.test", remote.keyID, remote.pub, rows[0].JSON) != nil {
			t.Fatalf("stored responses %v, %v", rows, err)
		}
		// A fresh component on the same database does not fetch again.
		n2 := newNode(t, db, "local.test", nil)
		if err := verify(t, n2, "remote.test", time.Now(), msg); err != nil {
			t.Fatal(err)
		}
		if h := remote.hits.Load(); h != 1 {
			t.Fatalf("hits = %d after restart, want 1", h)
		}
		// A forged message fails.
		forged := bytes.Replace(msg, []byte("world"), []byte("earth"), 1)
		if err := verify(t, n, "remote.test", time.Now(), forged); err == nil {
			t.Fatal("forged message verified")
		}
		// A server that is unreachable, with no notary: fails.
		ghost := newFakeServer(t, "ghost.test")
		if err := verify(t, n, "ghost.test", time.Now(), ghost.sign([]byte(`{}`))); err == nil {
			t.Fatal("verified without the key")
		}
	})
}

func TestKeyRingValidity(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		n := newNode(t, db, "local.test", nil)
		remote := newFakeServer(t, "remote.test")
		n.net.route("remote.test", remote.url)
		now := time.Now()
		// The server publishes a response that expired a minute ago, and
		// an old key retired an hour ago.
		oldPub, oldPriv, _ := ed25519.GenerateKey(nil)
		remote.mu.Lock()
		remote.validUntil = now.Add(-time.Minute)
		remote.old["ed25519:old"] = gomatrixserverlib.OldVerifyKey{VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(oldPub)},
			ExpiredTS: spec.AsTimestamp(now.Add(-time.Hour))}
		remote.mu.Unlock()
		msg := remote.sign([]byte(`{"event":1}`))

		// Signed before the key expired: valid, and valid again without
		// a refetch.
		for i := 0; i < 2; i++ {
			if err := verify(t, n, "remote.test", now.Add(-2*time.Minute), msg); err != nil {
				t.Fatalf("old event: %v", err)
			}
		}
		if h := remote.hits.Load(); h != 1 {
			t.Fatalf("hits = %d, want 1", h)
		}
		// Signed now: the key has expired, the keyring refetches, still
		// expired.
		if err := verify(t, n, "remote.test", now, msg); err == nil {
			t.Fatal("expired key verified a new message")
		}
		if h := remote.hits.Load(); h != 2 {
			t.Fatalf("hits = %d, want 2 (refetched)", h)
		}
		// The server renews its key response: the refetch finds it.
		remote.setValidUntil(time.Now().Add(time.Hour))
		if err := verify(t, n, "remote.test", time.Now(), msg); err != nil {
			t.Fatalf("renewed key: %v", err)
		}
		if h := remote.hits.Load(); h != 3 {
			t.Fatalf("hits = %d, want 3", h)
		}
		// The old key verifies what was signed before it expired only.
		oldMsg, _ := gomatrixserverlib.SignJSON("remote.test", "ed25519:old", oldPriv, []byte(`{"event":2}`))
		if err := verify(t, n, "remote.test", now.Add(-2*time.Hour), oldMsg); err != nil {
			t.Fatalf("old key, old event: %v", err)
		}
		if err := verify(t, n, "remote.test", now.Add(-30*time.Minute), oldMsg); err == nil {
			t.Fatal("old key verified an event signed after it expired")
		}
		if h := remote.hits.Load(); h != 3 {
			t.Fatalf("hits = %d, want 3 (old keys are not refetched)", h)
		}
	})
}

func TestKeyRingPerspective(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		// hidden.test cannot be reached from local.test; notary.test (a
		// fake) and myelin-notary.test (a Myelin node) can reach it.
		hidden := newFakeServer(t, "hidden.test")
		msg := hidden.sign([]byte(`{"through":"notary"}`))

		notary := newFakeServer(t, "notary.test")
		notary.knows["hidden.test"] = hidden
		trust := func(s *fakeServer) TrustedKeyServer {
			return TrustedKeyServer{ServerName: s.name, VerifyKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{s.keyID: s.pub}}
		}
		n := newNode(t, db, "local.test", func(c *Config) { c.TrustedKeyServers = []TrustedKeyServer{trust(notary)} })
		n.net.route("notary.test", notary.url)
		if err := verify(t, n, "hidden.test", time.Now(), msg); err != nil {
			t.Fatalf("through the notary: %v", err)
		}
		if hidden.hits.Load() != 0 || notary.qhits.Load() != 1 {
			t.Fatalf("hidden hits %d, notary queries %d", hidden.hits.Load(), notary.qhits.Load())
		}

		// A notary signing with a key other than the configured one is
		// not believed.
		liar := newFakeServer(t, "liar.test")
		liar.knows["hidden.test"] = hidden
		_, wrong, _ := ed25519.GenerateKey(nil)
		liar.notaryKey = wrong
		n2 := newNode(t, sqltest.Open(t, db.Dialect), "local2.test", func(c *Config) { c.TrustedKeyServers = []TrustedKeyServer{trust(liar)} })
		n2.net.route("liar.test", liar.url)
		if err := verify(t, n2, "hidden.test", time.Now(), msg); err == nil {
			t.Fatal("verified with keys from a notary whose signature is wrong")
		}
		if liar.qhits.Load() != 1 {
			t.Fatalf("liar queries %d", liar.qhits.Load())
		}

		// A Myelin notary: it fetches hidden.test's keys for us.
		mn := newNode(t, sqltest.Open(t, db.Dialect), "myelin-notary.test", nil)
		mn.net.route("hidden.test", hidden.url)
		n3 := newNode(t, sqltest.Open(t, db.Dialect), "local3.test", func(c *Config) {
			c.TrustedKeyServers = []TrustedKeyServer{{ServerName: mn.name, VerifyKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{mn.keyID: mn.pub}}}
		})
		n3.net.route(mn.name, mn.url)
		if err := verify(t, n3, "hidden.test", time.Now(), msg); err != nil {
			t.Fatalf("through a Myelin notary: %v", err)
		}
		if h := hidden.hits.Load(); h != 1 {
			t.Fatalf("hidden hits %d, want 1 (by the Myelin notary)", h)
		}
	})
}

// stubKeyClient counts key requests; GetServerKeys waits for release.
type stubKeyClient struct {
	calls   atomic.Int32
	release chan struct{}
	keys    gomatrixserverlib.ServerKeys
	err     error
}

func (s *stubKeyClient) GetServerKeys(ctx context.Context, _ spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	s.calls.Add(1)
	<-s.release
	return s.keys, s.err
}

func (s *stubKeyClient) LookupServerKeys(context.Context, spec.ServerName, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	s.calls.Add(1)
	return nil, s.err
}

func TestKeyFetchCoalescingAndBackoff(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, sqltest.Open(t, sqlutil.SQLite), "local.test", nil)
	remote := newFakeServer(t, "remote.test")
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(remote.keyResponse(), &keys); err != nil {
		t.Fatal(err)
	}
	stub := &stubKeyClient{release: make(chan struct{}), keys: keys}
	n.f.keyFetch.client = stub

	// Concurrent requests for one server share one fetch; one caller
	// giving up does not cancel it for the others.
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := n.f.keyFetch.GetServerKeys(ctx, "remote.test")
			if err == nil && got.ServerName != "remote.test" {
				err = fmt.Errorf("got keys of %q", got.ServerName)
			}
			errs <- err
		}()
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.f.keyFetch.GetServerKeys(cctx, "remote.test"); err == nil {
		t.Fatal("a cancelled caller got keys")
	}
	waiters := func() int {
		n.f.keyFetch.mu.Lock()
		defer n.f.keyFetch.mu.Unlock()
		if c := n.f.keyFetch.inflight["remote.test"]; c != nil {
			return c.waiters
		}
		return 0
	}
	for deadline := time.Now().Add(5 * time.Second); waiters() < 11 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(stub.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if c := stub.calls.Load(); c != 1 {
		t.Fatalf("%d fetches, want 1", c)
	}
	// The response was stored for the notary.
	if rows, err := n.f.store.KeyResponses(ctx, "remote.test", nil); err != nil || len(rows) != 1 {
		t.Fatalf("stored %v, %v", rows, err)
	}

	// A failure: the server is not asked again for a while, by either
	// kind of request.
	stub.err = errors.New("unreachable")
	if _, err := n.f.keyFetch.GetServerKeys(ctx, "remote.test"); err == nil {
		t.Fatal("no error")
	}
	if _, err := n.f.keyFetch.GetServerKeys(ctx, "remote.test"); !errors.Is(err, errKeyBackoff) {
		t.Fatalf("second try: %v, want errKeyBackoff", err)
	}
	if _, err := n.f.keyFetch.LookupServerKeys(ctx, "remote.test", nil); !errors.Is(err, errKeyBackoff) {
		t.Fatalf("lookup: %v, want errKeyBackoff", err)
	}
	if c := stub.calls.Load(); c != 2 {
		t.Fatalf("%d fetches, want 2", c)
	}
}
