// Package testutil holds test helpers that need no component: a Matrix
// client for black-box tests, polling with a deadline, a fake push
// gateway, and a buffer for a process's output.
package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Client talks to a homeserver's client API as one user (or anonymously).
type Client struct {
	T           testing.TB
	BaseURL     string
	HTTP        *http.Client
	AccessToken string
	UserID      string
	DeviceID    string
}

// NewClient returns an anonymous client for baseURL.
func NewClient(t testing.TB, baseURL string) *Client {
	return &Client{T: t, BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// As returns a copy of c authenticated with the given token.
func (c *Client) As(userID, deviceID, token string) *Client {
	cc := *c
	cc.UserID, cc.DeviceID, cc.AccessToken = userID, deviceID, token
	return &cc
}

// Response is an HTTP response with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as an object; it fails the test if it is not one.
func (r *Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// Decode decodes the body into v.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode response: %v\n%s", err, r.Body)
	}
}

// Raw is a request body sent as is.
type Raw []byte

// Do sends a request. body is nil (no body), Raw (sent as is) or a value
// encoded as JSON. path may include a query string.
func (c *Client) Do(method, path string, body any) *Response {
	c.T.Helper()
	return c.DoWithHeaders(method, path, body, nil)
}

// DoWithHeaders is Do with extra request headers.
func (c *Client) DoWithHeaders(method, path string, body any, header http.Header) *Response {
	c.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case Raw:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.T.Fatalf("encode request: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.BaseURL+path, rd)
	if err != nil {
		c.T.Fatalf("new request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		c.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.T.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// MustDo sends a request and fails the test unless the status is want; it
// returns the decoded JSON object.
func (c *Client) MustDo(method, path string, body any, want int) map[string]any {
	c.T.Helper()
	r := c.Do(method, path, body)
	if r.Status != want {
		c.T.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r.JSON(c.T)
}

// MustFail sends a request and fails the test unless it gets the Matrix
// error errcode with the given status. It returns the error body.
func (c *Client) MustFail(method, path string, body any, status int, errcode string) map[string]any {
	c.T.Helper()
	r := c.Do(method, path, body)
	m := r.JSON(c.T)
	if r.Status != status || m["errcode"] != errcode {
		c.T.Fatalf("%s %s: got %d %v, want %d %s: %s", method, path, r.Status, m["errcode"], status, errcode, r.Body)
	}
	if _, ok := m["error"].(string); !ok {
		c.T.Fatalf("%s %s: error response without an error string: %s", method, path, r.Body)
	}
	return m
}

// Register creates an account with the m.login.dummy flow and returns a
// client logged in as it.
func (c *Client) Register(localpart, password string) *Client {
	c.T.Helper()
	anon := c.As("", "", "")
	m := anon.MustDo("POST", "/_matrix/client/v3/register", map[string]any{
		"username": localpart, "password": password, "auth": map[string]any{"type": "m.login.dummy"},
	}, http.StatusOK)
	return c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
}

// Login logs in with a password and returns a client for the new device.
func (c *Client) Login(user, password string) *Client {
	c.T.Helper()
	anon := c.As("", "", "")
	m := anon.MustDo("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password,
	}, http.StatusOK)
	return c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
}

// Path builds a path from a format, escaping every argument as one path
// segment: Path("/profile/%s/displayname", userID).
func Path(format string, args ...string) string {
	esc := make([]any, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(a)
	}
	return fmt.Sprintf(format, esc...)
}

// Eventually polls cond until it is true, failing the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
