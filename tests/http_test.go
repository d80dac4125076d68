package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// rawRequest sends a request with net/http directly (any method, any body
// reader) and returns the response with its body read.
func rawRequest(t *testing.T, method, url string, body io.Reader, header http.Header) *testutil.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return &testutil.Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// headerList splits a comma-separated header into upper-cased tokens.
func headerList(h http.Header, name string) map[string]bool {
	out := map[string]bool{}
	for _, v := range h.Values(name) {
		for _, tok := range strings.Split(v, ",") {
			out[strings.ToUpper(strings.TrimSpace(tok))] = true
		}
	}
	return out
}

// checkCORS checks the CORS headers the specification recommends.
func checkCORS(t *testing.T, what string, h http.Header) {
	t.Helper()
	if got := h.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("%s: Access-Control-Allow-Origin = %q, want *", what, got)
	}
	methods := headerList(h, "Access-Control-Allow-Methods")
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
		if !methods[m] {
			t.Errorf("%s: Access-Control-Allow-Methods %q lacks %s", what, h.Get("Access-Control-Allow-Methods"), m)
		}
	}
	headers := headerList(h, "Access-Control-Allow-Headers")
	for _, name := range []string{"AUTHORIZATION", "CONTENT-TYPE"} {
		if !headers[name] {
			t.Errorf("%s: Access-Control-Allow-Headers %q lacks %s", what, h.Get("Access-Control-Allow-Headers"), name)
		}
	}
}

// checkJSONContentType checks that a response declares application/json.
func checkJSONContentType(t *testing.T, what string, h http.Header) {
	t.Helper()
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		t.Errorf("%s: Content-Type = %q, want application/json", what, h.Get("Content-Type"))
	}
}

// checkMatrixError checks a raw response is the given standard error
// response (string errcode and error) with the usual headers.
func checkMatrixError(t *testing.T, what string, r *testutil.Response, status int, errcode string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Errorf("%s: body is not a JSON object: %s", what, r.Body)
		return
	}
	code, _ := m["errcode"].(string)
	_, hasMsg := m["error"].(string)
	if r.Status != status || code != errcode || !hasMsg {
		t.Errorf("%s: got %d %s, want %d %s with an error string", what, r.Status, r.Body, status, errcode)
	}
	checkJSONContentType(t, what, r.Header)
	checkCORS(t, what, r.Header)
}

// OPTIONS is answered with the CORS headers on every path without running
// the endpoint.
func TestHTTPPreflight(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	preflight := http.Header{
		"Origin":                         {"https://app.example.org"},
		"Access-Control-Request-Method":  {"PUT"},
		"Access-Control-Request-Headers": {"authorization, content-type"},
	}
	for _, p := range []string{
		"/_matrix/client/v3/account/whoami",
		"/_matrix/client/r0/account/whoami",
		"/_matrix/client/v3/login",
		"/_matrix/client/versions",
		"/_matrix/client/v3/capabilities",
		"/_matrix/client/v3/no/such/endpoint",
		"/_matrix/client/v3/user/" + alice.UserID + "/filter",
		profilePath(alice.UserID, "displayname"),
		"/.well-known/matrix/client",
		"/completely/unknown",
	} {
		r := rawRequest(t, "OPTIONS", srv.URL+p, nil, preflight)
		if r.Status != http.StatusOK {
			t.Errorf("OPTIONS %s: status %d, want 200: %s", p, r.Status, r.Body)
		}
		checkCORS(t, "OPTIONS "+p, r.Header)
	}

	// No endpoint logic runs: neither a profile change nor a logout.
	h := http.Header{"Authorization": {"Bearer " + alice.AccessToken}, "Content-Type": {"application/json"}}
	rawRequest(t, "OPTIONS", srv.URL+profilePath(alice.UserID, "displayname"), strings.NewReader(`{"displayname":"Mallory"}`), h)
	rawRequest(t, "OPTIONS", srv.URL+"/_matrix/client/v3/logout", strings.NewReader(`{}`), h)
	if m := alice.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK); m["displayname"] != "alice" {
		t.Fatalf("OPTIONS changed the profile: %v", m)
	}
	alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
}

// Ordinary responses, successes and errors alike, carry the CORS headers
// and a JSON content type.
func TestHTTPResponseHeaders(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	auth := http.Header{"Authorization": {"Bearer " + alice.AccessToken}}
	for _, tc := range []struct {
		method, path string
		header       http.Header
		status       int
	}{
		{"GET", "/_matrix/client/versions", nil, 200},
		{"GET", "/_matrix/client/v3/account/whoami", auth, 200},
		{"GET", "/_matrix/client/v3/login", nil, 200},
		{"GET", profilePath(alice.UserID), nil, 200},
		{"GET", "/_matrix/client/v3/account/whoami", nil, 401},
		{"GET", "/_matrix/client/v3/no/such/endpoint", nil, 404},
		{"DELETE", "/_matrix/client/v3/login", nil, 405},
	} {
		what := tc.method + " " + tc.path
		r := rawRequest(t, tc.method, srv.URL+tc.path, nil, tc.header)
		if r.Status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", what, r.Status, tc.status, r.Body)
		}
		checkCORS(t, what, r.Header)
		checkJSONContentType(t, what, r.Header)
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Errorf("%s: body is not a JSON object: %s", what, r.Body)
		}
	}
}

func TestHTTPUnknownEndpointAndWrongMethod(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	for _, p := range []string{
		"/_matrix/client/v3/no/such/endpoint",
		"/_matrix/client/v3/account/whoami/extra",
		"/_matrix/client/unknown",
		"/_matrix/client/v4/login",
		"/_matrix/nothing",
		"/_matrix/client/v1/unknown",
		"/_matrix/client/v3/room/unknown",
		"/_matrix/federation/unknown",
		"/_matrix/federation/v1/unknown",
		"/_matrix/key/unknown",
		"/_matrix/key/v2/unknown",
	} {
		alice.MustFail("GET", p, nil, http.StatusNotFound, "M_UNRECOGNIZED")
		alice.MustFail("POST", p, map[string]any{}, http.StatusNotFound, "M_UNRECOGNIZED")
	}
	for _, tc := range []struct{ method, path string }{
		{"DELETE", "/_matrix/client/v3/login"},
		{"PUT", "/_matrix/client/v3/login"},
		{"DELETE", "/_matrix/client/r0/login"},
		{"POST", "/_matrix/client/versions"},
		{"GET", "/_matrix/client/v3/logout"},
		{"POST", "/_matrix/client/v3/account/whoami"},
		{"POST", profilePath(alice.UserID, "displayname")},
		{"PUT", "/_matrix/federation/v1/version"},
		{"PUT", "/_matrix/key/v2/query"},
	} {
		alice.MustFail(tc.method, tc.path, nil, http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	}
}

// Client endpoints are served under the legacy r0 prefix as well.
func TestHTTPLegacyPrefix(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	m := c.MustDo("POST", "/_matrix/client/r0/register", map[string]any{
		"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"},
	}, http.StatusOK)
	alice := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
	if who := alice.MustDo("GET", "/_matrix/client/r0/account/whoami", nil, http.StatusOK); who["user_id"] != alice.UserID {
		t.Fatalf("r0 whoami = %v", who)
	}
	m = c.MustDo("POST", "/_matrix/client/r0/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw",
	}, http.StatusOK)
	if m["user_id"] != alice.UserID {
		t.Fatalf("r0 login = %v", m)
	}
	if caps := alice.MustDo("GET", "/_matrix/client/r0/capabilities", nil, http.StatusOK); caps["capabilities"] == nil {
		t.Fatalf("r0 capabilities = %v", caps)
	}
	alice.MustDo("PUT", testutil.Path("/_matrix/client/r0/user/%s/account_data/%s", alice.UserID, "com.example.r0"), map[string]any{"a": 1}, http.StatusOK)
	if got := alice.MustDo("GET", accountDataPath(alice.UserID, "com.example.r0"), nil, http.StatusOK); got["a"] != 1.0 {
		t.Fatalf("account data set through r0 = %v", got)
	}
	c.MustFail("GET", "/_matrix/client/r0/account/whoami", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// unsizedReader hides the length of its reader so that net/http sends the
// body with chunked transfer encoding.
type unsizedReader struct{ r io.Reader }

func (u unsizedReader) Read(p []byte) (int, error) { return u.r.Read(p) }

// A JSON body over listeners.http.max_request_bytes is 413 M_TOO_LARGE,
// whether its length is declared or not.
func TestHTTPRequestBodyLimit(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configT) { c.Listeners.HTTP.MaxRequestBytes = 4096 }})
	alice := srv.Client().Register("alice", "pw")
	big, err := json.Marshal(map[string]any{"com.example.big": strings.Repeat("x", 10*1024), "type": "m.login.password"})
	if err != nil {
		t.Fatal(err)
	}
	auth := http.Header{"Authorization": {"Bearer " + alice.AccessToken}, "Content-Type": {"application/json"}}
	for _, tc := range []struct {
		method, path string
		header       http.Header
	}{
		{"POST", "/_matrix/client/v3/login", http.Header{"Content-Type": {"application/json"}}},
		{"POST", "/_matrix/client/v3/register", http.Header{"Content-Type": {"application/json"}}},
		{"PUT", profilePath(alice.UserID, "com.example.big"), auth},
		{"PUT", accountDataPath(alice.UserID, "com.example.big"), auth},
		{"POST", filterPath(alice.UserID), auth},
	} {
		what := tc.method + " " + tc.path
		r := rawRequest(t, tc.method, srv.URL+tc.path, bytes.NewReader(big), tc.header)
		checkMatrixError(t, what+" (Content-Length)", r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		r = rawRequest(t, tc.method, srv.URL+tc.path, unsizedReader{bytes.NewReader(big)}, tc.header)
		checkMatrixError(t, what+" (chunked)", r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	}
	alice.MustFail("GET", profilePath(alice.UserID, "com.example.big"), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("GET", accountDataPath(alice.UserID, "com.example.big"), nil, http.StatusNotFound, "M_NOT_FOUND")

	// Bodies under the limit still work, chunked or not.
	small := `{"com.example.small":"` + strings.Repeat("y", 3000) + `"}`
	r := rawRequest(t, "PUT", srv.URL+profilePath(alice.UserID, "com.example.small"), unsizedReader{strings.NewReader(small)}, auth)
	if r.Status != http.StatusOK {
		t.Fatalf("chunked body under the limit: status %d: %s", r.Status, r.Body)
	}
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.small"), testutil.Raw(small), http.StatusOK)
}

// Bodies that are not JSON, or not JSON objects, are refused with the
// right code on every endpoint that takes one.
func TestHTTPMalformedJSON(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	anon := srv.Client()
	for _, tc := range []struct {
		c            *testutil.Client
		method, path string
	}{
		{anon, "POST", "/_matrix/client/v3/login"},
		{anon, "POST", "/_matrix/client/v3/register"},
		{alice, "PUT", profilePath(alice.UserID, "displayname")},
		{alice, "PUT", accountDataPath(alice.UserID, "com.example.x")},
		{alice, "POST", filterPath(alice.UserID)},
	} {
		// The last is invalid UTF-8 inside a string, which encoding/json
		// alone would accept.
		for _, body := range []string{`{"type":`, `{'type':'m.login.password'}`, `not json at all`, `{"a":1}}`, "{ \"test\":\"a\x81\" }"} {
			tc.c.MustFail(tc.method, tc.path, testutil.Raw(body), http.StatusBadRequest, "M_NOT_JSON")
		}
		for _, body := range []string{`[]`, `[{"type":"m.login.password"}]`, `"text"`, `1`} {
			tc.c.MustFail(tc.method, tc.path, testutil.Raw(body), http.StatusBadRequest, "M_BAD_JSON")
		}
	}
}

func TestVersions(t *testing.T) {
	srv := testserver.Start(t)
	version := regexp.MustCompile(`^(r0\.\d+\.\d+|v1\.\d+)$`)
	for _, c := range []*testutil.Client{srv.Client(), srv.Client().Register("alice", "pw")} {
		r := c.Do("GET", "/_matrix/client/versions", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("versions: status %d: %s", r.Status, r.Body)
		}
		m := r.JSON(t)
		versions, _ := m["versions"].([]any)
		if len(versions) == 0 {
			t.Fatalf("no versions: %s", r.Body)
		}
		for _, v := range versions {
			if s, ok := v.(string); !ok || !version.MatchString(s) {
				t.Errorf("version %v does not look like r0.x.y or v1.x", v)
			}
		}
		// v1.1 is what clients require; v1.2 adds the space hierarchy and
		// v1.3 relation aggregations, which Myelin does not serve yet.
		listed := map[string]bool{}
		for _, v := range versions {
			s, _ := v.(string)
			listed[s] = true
		}
		if !listed["v1.1"] || !listed["r0.6.1"] {
			t.Errorf("versions %v lack v1.1 or r0.6.1", versions)
		}
		for _, v := range []string{"v1.2", "v1.3", "v1.4", "v1.11"} {
			if listed[v] {
				t.Errorf("versions list %s, whose features (such as %s) do not exist", v, map[string]string{
					"v1.2": "GET /hierarchy", "v1.3": "GET /relations", "v1.4": "threads", "v1.11": "authenticated media"}[v])
			}
		}
		if c.Do("GET", "/_matrix/client/v1/rooms/!x:localhost/hierarchy", nil).Status != http.StatusNotFound {
			t.Errorf("GET /hierarchy exists: list v1.2")
		}
		features, ok := m["unstable_features"].(map[string]any)
		if !ok {
			t.Fatalf("unstable_features is not an object: %s", r.Body)
		}
		if features["org.matrix.msc3814"] != true {
			t.Errorf("unstable_features lacks dehydrated devices (org.matrix.msc3814): %v", features)
		}
		if features["org.matrix.msc3391"] != true {
			t.Errorf("unstable_features lacks account data deletion (org.matrix.msc3391): %v", features)
		}
		for k, v := range features {
			if _, ok := v.(bool); !ok {
				t.Errorf("unstable_features[%s] = %v, want a boolean", k, v)
			}
		}
	}
}

func TestCapabilities(t *testing.T) {
	srv := testserver.Start(t)
	srv.Client().MustFail("GET", "/_matrix/client/v3/capabilities", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	srv.Client().As("", "", "bogus").MustFail("GET", "/_matrix/client/v3/capabilities", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	alice := srv.Client().Register("alice", "pw")
	m := alice.MustDo("GET", "/_matrix/client/v3/capabilities", nil, http.StatusOK)
	caps, ok := m["capabilities"].(map[string]any)
	if !ok {
		t.Fatalf("no capabilities object: %v", m)
	}
	if cp, _ := caps["m.change_password"].(map[string]any); cp == nil || cp["enabled"] != true {
		t.Errorf("m.change_password = %v, want enabled", caps["m.change_password"])
	}
	pf, _ := caps["m.profile_fields"].(map[string]any)
	if pf == nil {
		t.Fatalf("m.profile_fields missing: %v", caps)
	}
	if _, ok := pf["enabled"].(bool); !ok {
		t.Errorf("m.profile_fields.enabled = %v, want a boolean", pf["enabled"])
	}
	for k, v := range caps {
		if strings.HasPrefix(k, "m.set_") || k == "m.3pid_changes" || k == "m.get_login_token" || k == "m.change_password" {
			if c, _ := v.(map[string]any); c == nil {
				t.Errorf("%s = %v, want an object", k, v)
			} else if _, ok := c["enabled"].(bool); !ok {
				t.Errorf("%s.enabled = %v, want a boolean", k, c["enabled"])
			}
		}
	}
}

func TestWellKnownNotConfigured(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	c.MustFail("GET", "/.well-known/matrix/client", nil, http.StatusNotFound, "M_NOT_FOUND")
	c.MustFail("GET", "/.well-known/matrix/server", nil, http.StatusNotFound, "M_NOT_FOUND")
	c.MustFail("GET", "/.well-known/matrix/support", nil, http.StatusNotFound, "M_NOT_FOUND")
	c.Register("alice", "pw")
	m := c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw",
	}, http.StatusOK)
	if wk, ok := m["well_known"]; ok {
		t.Fatalf("login response has well_known %v though none is configured", wk)
	}
}

func TestWellKnownConfigured(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configT) {
		c.WellKnown.ClientBaseURL = "https://matrix.example.org"
		c.WellKnown.ServerDelegation = "matrix.example.org:443"
		c.WellKnown.Support.Contacts = []config.SupportContact{{MatrixID: "@admin:example.org", Role: "m.role.admin"},
			{EmailAddress: "security@example.org", Role: "m.role.security"}}
		c.WellKnown.Support.SupportPage = "https://example.org/help"
	}})
	c := srv.Client()
	baseURL := func(what string, v any) {
		t.Helper()
		hs, _ := v.(map[string]any)
		u, _ := hs["m.homeserver"].(map[string]any)
		if s, _ := u["base_url"].(string); strings.TrimSuffix(s, "/") != "https://matrix.example.org" {
			t.Fatalf("%s = %v, want m.homeserver.base_url https://matrix.example.org", what, v)
		}
	}
	r := c.Do("GET", "/.well-known/matrix/client", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("well-known client: %d %s", r.Status, r.Body)
	}
	checkCORS(t, "GET /.well-known/matrix/client", r.Header)
	baseURL("/.well-known/matrix/client", r.JSON(t))
	if m := c.MustDo("GET", "/.well-known/matrix/server", nil, http.StatusOK); m["m.server"] != "matrix.example.org:443" {
		t.Fatalf("/.well-known/matrix/server = %v", m)
	}
	r = c.Do("GET", "/.well-known/matrix/support", nil)
	checkCORS(t, "GET /.well-known/matrix/support", r.Header)
	if want := map[string]any{"contacts": []any{map[string]any{"matrix_id": "@admin:example.org", "role": "m.role.admin"},
		map[string]any{"email_address": "security@example.org", "role": "m.role.security"}},
		"support_page": "https://example.org/help"}; r.Status != http.StatusOK || !sameJSON(t, r.JSON(t), want) {
		t.Fatalf("/.well-known/matrix/support: %d %s", r.Status, r.Body)
	}

	c.Register("alice", "pw")
	m := c.MustDo("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "pw",
	}, http.StatusOK)
	baseURL("login well_known", m["well_known"])
}

// The metrics listener counts requests by route template, never by the
// concrete path (which holds user IDs).
func TestHTTPMetricsRouteLabels(t *testing.T) {
	addr := testutil.FreeLoopbackAddr(t)
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configT) {
		c.Metrics.Enabled = true
		c.Metrics.Address = addr
	}})
	alice := srv.Client().Register("alice", "pw")
	anon := srv.Client()
	for range 3 {
		anon.MustDo("GET", profilePath(alice.UserID, "displayname"), nil, http.StatusOK)
	}
	alice.MustDo("PUT", profilePath(alice.UserID, "com.example.field"), map[string]any{"com.example.field": 1}, http.StatusOK)
	alice.MustDo("PUT", accountDataPath(alice.UserID, "com.example.data"), map[string]any{}, http.StatusOK)
	anon.MustFail("GET", "/_matrix/client/v3/unknown/"+alice.UserID, nil, http.StatusNotFound, "M_UNRECOGNIZED")
	rawRequest(t, "OPTIONS", srv.URL+profilePath(alice.UserID, "displayname"), nil, nil)

	labels := regexp.MustCompile(`(\w+)="([^"]*)"`)
	type sample struct {
		line   string
		labels map[string]string
		value  float64
	}
	var body []byte
	var samples []sample
	scrape := func() {
		r := rawRequest(t, "GET", "http://"+addr+"/metrics", nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET /metrics: status %d", r.Status)
		}
		body, samples = r.Body, nil
		for _, line := range strings.Split(string(r.Body), "\n") {
			if !strings.HasPrefix(line, "myelin_http_requests_total{") {
				continue
			}
			end := strings.LastIndex(line, "}")
			s := sample{line: line, labels: map[string]string{}}
			for _, m := range labels.FindAllStringSubmatch(line[:end], -1) {
				s.labels[m[1]] = m[2]
			}
			s.value, _ = strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
			samples = append(samples, s)
		}
	}
	count := func(route, method, code string) float64 {
		for _, s := range samples {
			if s.labels["route"] == route && s.labels["method"] == method && s.labels["code"] == code {
				return s.value
			}
		}
		return 0
	}
	// Requests are counted by route template.
	testutil.Eventually(t, 5*time.Second, "the profile and account data requests to be counted by route template", func() bool {
		scrape()
		return count("/_matrix/client/v3/profile/{userId}/{keyName}", "GET", "200") >= 3 &&
			count("/_matrix/client/v3/profile/{userId}/{keyName}", "PUT", "200") >= 1 &&
			count("/_matrix/client/v3/user/{userId}/account_data/{type}", "PUT", "200") >= 1
	})
	for _, s := range samples {
		if route := s.labels["route"]; strings.Contains(route, "@") || strings.Contains(route, "%40") || strings.Contains(route, "alice") {
			t.Errorf("route label holds a user ID: %s", s.line)
		}
	}
	if strings.Contains(string(body), "alice") {
		t.Errorf("metrics mention a user:\n%s", body)
	}
}
