package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// api is a minimal Matrix client-server API client over plain net/http.
// One api (and its transport) is shared by every simulated user, so that
// connections are reused across requests rather than opened per request.
type api struct {
	base string
	hc   *http.Client
	txn  atomic.Int64
}

func newAPI(base string) *api {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2000,
		MaxIdleConnsPerHost: 2000,
		IdleConnTimeout:     90 * time.Second,
	}
	return &api{base: strings.TrimSuffix(base, "/"), hc: &http.Client{Transport: tr, Timeout: 90 * time.Second}}
}

// user is a logged-in account.
type user struct {
	ID    string
	Token string
}

// httpError is a response with an unexpected status.
type httpError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *httpError) Error() string {
	b := e.Body
	if len(b) > 200 {
		b = b[:200] + "..."
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, b)
}

// do sends one request and decodes a 200 response into out (when not nil).
// Any other status is an *httpError.
func (a *api) do(ctx context.Context, u *user, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if u != nil && u.Token != "" {
		req.Header.Set("Authorization", "Bearer "+u.Token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &httpError{Method: method, Path: path, Status: resp.StatusCode, Body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
		}
	}
	return nil
}

// waitReady polls /versions until the server answers or the timeout ends.
func (a *api) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := a.do(ctx, nil, "GET", "/_matrix/client/versions", nil, nil)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// register creates an account through open registration (m.login.dummy).
func (a *api) register(ctx context.Context, localpart string) (*user, error) {
	var r struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	err := a.do(ctx, nil, "POST", "/_matrix/client/v3/register", map[string]any{
		"username": localpart, "password": "bench-password-" + localpart,
		"auth": map[string]any{"type": "m.login.dummy"}, "initial_device_display_name": "bench",
	}, &r)
	if err != nil {
		return nil, err
	}
	if r.UserID == "" || r.AccessToken == "" {
		return nil, fmt.Errorf("register %s: no user_id or access_token in the response", localpart)
	}
	return &user{ID: r.UserID, Token: r.AccessToken}, nil
}

// registerMany registers n users named prefix-0 .. prefix-(n-1), conc at a
// time.
func (a *api) registerMany(ctx context.Context, prefix string, n, conc int) ([]*user, error) {
	users := make([]*user, n)
	err := parallel(n, conc, func(i int) error {
		u, err := a.register(ctx, fmt.Sprintf("%s-%d", prefix, i))
		users[i] = u
		return err
	})
	return users, err
}

func (a *api) createRoom(ctx context.Context, u *user, name string) (string, error) {
	var r struct {
		RoomID string `json:"room_id"`
	}
	if err := a.do(ctx, u, "POST", "/_matrix/client/v3/createRoom",
		map[string]any{"preset": "public_chat", "name": name}, &r); err != nil {
		return "", err
	}
	if r.RoomID == "" {
		return "", fmt.Errorf("createRoom: no room_id in the response")
	}
	return r.RoomID, nil
}

func (a *api) join(ctx context.Context, u *user, roomID string) error {
	var r struct {
		RoomID string `json:"room_id"`
	}
	if err := a.do(ctx, u, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, &r); err != nil {
		return err
	}
	if r.RoomID != roomID {
		return fmt.Errorf("join %s: response names room %q", roomID, r.RoomID)
	}
	return nil
}

// send sends an m.room.message with the given body and returns its event ID.
func (a *api) send(ctx context.Context, u *user, roomID, body string) (string, error) {
	return a.sendContent(ctx, u, roomID, map[string]any{"msgtype": "m.text", "body": body})
}

// sendContent sends an m.room.message with the given content.
func (a *api) sendContent(ctx context.Context, u *user, roomID string, content map[string]any) (string, error) {
	var r struct {
		EventID string `json:"event_id"`
	}
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/bench-%d-%d",
		url.PathEscape(roomID), time.Now().UnixNano(), a.txn.Add(1))
	if err := a.do(ctx, u, "PUT", path, content, &r); err != nil {
		return "", err
	}
	if r.EventID == "" {
		return "", fmt.Errorf("send: no event_id in the response")
	}
	return r.EventID, nil
}

// syncResponse is the part of a /sync response the scenarios read.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []syncEvent `json:"events"`
				Limited bool        `json:"limited"`
			} `json:"timeline"`
			State struct {
				Events []syncEvent `json:"events"`
			} `json:"state"`
		} `json:"join"`
	} `json:"rooms"`
}

type syncEvent struct {
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	EventID  string          `json:"event_id"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// sync calls /sync with an inline filter (may be empty), since (may be
// empty) and timeout in milliseconds (negative: none).
func (a *api) sync(ctx context.Context, u *user, filter, since string, timeoutMS int) (*syncResponse, error) {
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	if since != "" {
		q.Set("since", since)
	}
	if timeoutMS >= 0 {
		q.Set("timeout", fmt.Sprint(timeoutMS))
	}
	path := "/_matrix/client/v3/sync"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r syncResponse
	if err := a.do(ctx, u, "GET", path, nil, &r); err != nil {
		return nil, err
	}
	if r.NextBatch == "" {
		return nil, fmt.Errorf("sync: no next_batch in the response")
	}
	return &r, nil
}

// parallel runs f(0..n-1), conc at a time, and returns the first error
// (every call runs even after one fails, so that setup errors are counted
// rather than cut short).
func parallel(n, conc int, f func(i int) error) error {
	if conc < 1 {
		conc = 1
	}
	next := make(chan int)
	errs := make(chan error, n)
	done := make(chan struct{})
	for range conc {
		go func() {
			for i := range next {
				errs <- f(i)
			}
			done <- struct{}{}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	for range conc {
		<-done
	}
	close(errs)
	var first error
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return fmt.Errorf("%d of %d failed, first: %w", failed, n, first)
	}
	return nil
}
