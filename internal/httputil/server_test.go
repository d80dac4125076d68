package httputil_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// A client that hangs up (a cancelled long-poll) is no server error: the
// storage error its cancellation causes is not logged as ERROR, and the
// access log and metrics record 499, not 500. The suite had never
// cancelled a request.
func TestClientDisconnectIsNotServerError(t *testing.T) {
	var buf testutil.LockedBuffer
	reg := prometheus.NewRegistry()
	s := httputil.NewServer(httputil.ServerOptions{
		Logger:   slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registry: reg,
	})
	started := make(chan struct{})
	s.Handle("GET", "/_matrix/client/v3/sync", func(r *http.Request) (any, error) {
		close(started)
		<-r.Context().Done()
		return nil, fmt.Errorf("query events: %w", r.Context().Err())
	})
	ts := httptest.NewServer(s)
	defer ts.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/_matrix/client/v3/sync", nil)
	go func() { <-started; cancel() }()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("cancelled request succeeded")
	}
	var access map[string]any
	testutil.Eventually(t, 5*time.Second, "access log line", func() bool {
		for _, l := range logLines(t, &buf) {
			if l["msg"] == "request" {
				access = l
			}
		}
		return access != nil
	})
	for _, l := range logLines(t, &buf) {
		if l["level"] == "ERROR" {
			t.Errorf("logged as an error: %v", l)
		}
	}
	if access["status"] != float64(499) {
		t.Errorf("access log status %v, want 499", access["status"])
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "myelin_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "code" && lp.GetValue() != "499" {
					t.Errorf("request counted with code %s, want 499", lp.GetValue())
				}
			}
		}
	}
}
