package testutil

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// PushGatewayPath is the path of the Push Gateway API's notify endpoint.
const PushGatewayPath = "/_matrix/push/v1/notify"

// PushNotification is one notify request a PushGateway accepted.
type PushNotification struct {
	// Raw is the request body as received.
	Raw []byte
	// Notification is the body's "notification" object, decoded.
	Notification map[string]any
	// EventID is notification.event_id ("" if absent).
	EventID string
	// PushKeys are the devices' pushkeys, in order.
	PushKeys []string
}

// PushGateway is a fake push gateway for tests: an HTTP server on
// 127.0.0.1 answering POST /_matrix/push/v1/notify. It records every
// notification it accepts (answering 200 {"rejected": [...]}), can be
// switched into an outage (an error status, or connections closed without
// an answer) or made slow, and answers chosen push keys as rejected.
// Requests to other paths get 404. It is closed when the test ends.
// Its methods are safe for concurrent use.
type PushGateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	accepted []PushNotification
	attempts int
	status   int  // answer every request with this status (0: accept)
	drop     bool // close connections without answering
	delay    time.Duration
	rejected map[string]bool
	changed  chan struct{} // closed and replaced whenever a request is handled
}

// NewPushGateway starts a fake push gateway, closed by t.Cleanup.
func NewPushGateway(t testing.TB) *PushGateway {
	g := &PushGateway{rejected: map[string]bool{}, changed: make(chan struct{})}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

// URL is the notify URL, for a pusher's data.url
// (http://127.0.0.1:<port>/_matrix/push/v1/notify).
func (g *PushGateway) URL() string { return g.srv.URL + PushGatewayPath }

// FailWith answers every request with status (such as 503 or 400) and
// records nothing; 0 goes back to accepting.
func (g *PushGateway) FailWith(status int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.status = status
}

// Drop, while on, closes every connection without answering (a network
// error for the sender) and records nothing.
func (g *PushGateway) Drop(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.drop = on
}

// SetDelay makes the gateway wait d before handling each request (or
// until the sender gives up); 0 removes the delay.
func (g *PushGateway) SetDelay(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.delay = d
}

// Reject makes accepted requests for these push keys answer them in
// "rejected".
func (g *PushGateway) Reject(pushKeys ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range pushKeys {
		g.rejected[k] = true
	}
}

// Notifications returns the accepted notifications so far, oldest first.
func (g *PushGateway) Notifications() []PushNotification {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]PushNotification(nil), g.accepted...)
}

// Attempts is the number of notify requests received, accepted or not
// (a request is counted when it arrives, before any delay).
func (g *PushGateway) Attempts() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.attempts
}

// WaitFor waits until at least n notifications were accepted and returns
// them all; it fails the test after timeout.
func (g *PushGateway) WaitFor(t testing.TB, n int, timeout time.Duration) []PushNotification {
	t.Helper()
	return g.wait(t, timeout, "notifications", n, func() int { return len(g.accepted) })
}

// WaitForAttempts waits until at least n requests arrived (accepted or
// not); it fails the test after timeout.
func (g *PushGateway) WaitForAttempts(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	g.wait(t, timeout, "requests", n, func() int { return g.attempts })
}

func (g *PushGateway) wait(t testing.TB, timeout time.Duration, what string, n int, count func() int) []PushNotification {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		got, changed := count(), g.changed
		if got >= n {
			out := append([]PushNotification(nil), g.accepted...)
			g.mu.Unlock()
			return out
		}
		g.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("push gateway: timed out after %v waiting for %d %s (have %d)", timeout, n, what, got)
			return nil
		}
	}
}

func (g *PushGateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != PushGatewayPath {
		http.Error(w, `{"errcode":"M_UNRECOGNIZED","error":"unknown endpoint"}`, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, `{"errcode":"M_UNRECOGNIZED","error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	g.mu.Lock()
	g.attempts++
	g.notifyLocked()
	delay := g.delay
	g.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.drop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without an answer
	case g.status != 0:
		w.WriteHeader(g.status)
		return
	}
	var req struct {
		Notification map[string]any `json:"notification"`
	}
	if err != nil || json.Unmarshal(body, &req) != nil || req.Notification == nil {
		http.Error(w, `{"errcode":"M_BAD_JSON","error":"not a notify request"}`, http.StatusBadRequest)
		return
	}
	pn := PushNotification{Raw: body, Notification: req.Notification}
	pn.EventID, _ = req.Notification["event_id"].(string)
	rejected := []string{}
	devices, _ := req.Notification["devices"].([]any)
	for _, d := range devices {
		dm, _ := d.(map[string]any)
		pk, _ := dm["pushkey"].(string)
		pn.PushKeys = append(pn.PushKeys, pk)
		if g.rejected[pk] {
			rejected = append(rejected, pk)
		}
	}
	g.accepted = append(g.accepted, pn)
	g.notifyLocked()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
}

// notifyLocked wakes the waiters; g.mu is held.
func (g *PushGateway) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}
