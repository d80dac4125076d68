package httputil_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/testutil"
)

// logLines parses the JSON log lines written to b.
func logLines(t *testing.T, b *testutil.LockedBuffer) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// The access log line of a request no route matched names its path (not
// its query string, which may carry an access token), so that an operator
// sees which endpoint a client wanted; a matched request is named by its
// route template alone.
func TestAccessLogNamesUnmatchedPath(t *testing.T) {
	var buf testutil.LockedBuffer
	s := httputil.NewServer(httputil.ServerOptions{
		Logger:   slog.New(slog.NewJSONHandler(&buf, nil)),
		Registry: prometheus.NewRegistry(),
	})
	s.Handle("GET", "/_matrix/client/v3/thing/{id}", func(r *http.Request) (any, error) {
		return struct{}{}, nil
	})
	ts := httptest.NewServer(s)
	defer ts.Close()

	long := "/_matrix/client/v3/" + strings.Repeat("x", 1000)
	for _, tc := range []struct {
		method, path, query string
		status              int
		wantPath            string
	}{
		{"GET", "/_matrix/client/v3/thing/@alice:example.org", "", 200, ""},
		{"GET", "/_matrix/client/v3/unknown/endpoint", "access_token=secret123", 404, "/_matrix/client/v3/unknown/endpoint"},
		{"PUT", "/_matrix/client/v3/thing/1", "access_token=secret123", 405, "/_matrix/client/v3/thing/1"},
		{"GET", long, "", 404, long[:256] + "…"},
	} {
		buf.Reset()
		u := ts.URL + tc.path
		if tc.query != "" {
			u += "?" + tc.query
		}
		req, _ := http.NewRequest(tc.method, u, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.status {
			t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
		var access map[string]any
		for _, l := range logLines(t, &buf) {
			if l["msg"] == "request" {
				access = l
			}
			if b, _ := json.Marshal(l); strings.Contains(string(b), "secret123") {
				t.Errorf("%s %s: the log shows the query string: %s", tc.method, tc.path, b)
			}
		}
		if access == nil {
			t.Fatalf("%s %s: no access log line", tc.method, tc.path)
		}
		got, has := access["path"]
		if tc.wantPath == "" {
			if has {
				t.Errorf("%s %s: matched request logged path %v; its route %v names it", tc.method, tc.path, got, access["route"])
			}
			if access["route"] != "/_matrix/client/v3/thing/{id}" {
				t.Errorf("route = %v", access["route"])
			}
			continue
		}
		if got != tc.wantPath {
			t.Errorf("%s %s: logged path %v, want %q", tc.method, tc.path, got, tc.wantPath)
		}
	}
}
