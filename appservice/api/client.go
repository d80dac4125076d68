package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Prefix is the path prefix of the application service API.
const Prefix = "/_matrix/app/v1"

// DefaultQueryTimeout bounds one query to a service when the caller sets
// no timeout.
const DefaultQueryTimeout = 30 * time.Second

// Limits on what a service's answer may hold: queries and pings answer
// (nearly) empty objects, third-party lookups lists of results.
const (
	maxQueryResponse      = 64 << 10
	maxThirdPartyResponse = 1 << 20
)

// Errors of a request to a service.
var (
	// ErrNoURL: the service has no URL (url: null in its registration),
	// so it cannot be reached.
	ErrNoURL = errors.New("appservice: the application service has no URL")
	// ErrTimeout: the service did not answer within the timeout.
	ErrTimeout = errors.New("appservice: the application service did not answer in time")
)

// StatusError is a service's answer with a status other than 2xx.
type StatusError struct {
	Status int
	// Body is the start of the response body (at most the response
	// limit), for the ping's error and for logs.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// BadResponseError is a 2xx answer the homeserver cannot use: too large,
// not JSON, or not of the form the API describes.
type BadResponseError struct{ Reason string }

func (e *BadResponseError) Error() string { return "bad response: " + e.Reason }

// Client makes the homeserver's requests to application services (user and
// alias queries, third-party lookups, pings): the service's hs_token as
// bearer token, a timeout per request, bounded response bodies. The
// service's URL is configured by the operator, so it may be a private or
// loopback address (as Synapse, no address guard applies). A Client is safe
// for concurrent use.
type Client struct {
	http    *http.Client
	timeout time.Duration
}

// NewClient returns a client whose requests time out after timeout
// (DefaultQueryTimeout when zero). transport may be nil (the default).
func NewClient(timeout time.Duration, transport http.RoundTripper) *Client {
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// As Synapse's client of application services: no HTTP proxy
		// from the environment (services are usually on the local network).
		t.Proxy = nil
		t.MaxIdleConnsPerHost = 8
		transport = t
	}
	return &Client{
		http: &http.Client{
			Transport: transport,
			// A service's API never redirects; following one would send
			// the hs_token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout: timeout,
	}
}

// do sends one request to s and returns the body of its 2xx answer (at most
// limit bytes). It returns ErrNoURL, ErrTimeout, a *StatusError, a
// *BadResponseError (body too large), ctx's error when ctx ended first,
// or another error when the connection failed.
func (c *Client) do(ctx context.Context, s *Service, method, path string, query url.Values, body any, limit int64) ([]byte, error) {
	if s.URL == "" {
		return nil, ErrNoURL
	}
	u := s.URL + Prefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("appservice %s: %w", s.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+s.HSToken)
	req.Header.Set("User-Agent", "Myelin")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.requestError(ctx, tctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, c.requestError(ctx, tctx, err)
	}
	tooLarge := int64(len(b)) > limit
	if tooLarge {
		b = b[:limit]
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Status: resp.StatusCode, Body: strings.ToValidUTF8(string(b), "\uFFFD")}
	}
	if tooLarge {
		return nil, &BadResponseError{Reason: fmt.Sprintf("response larger than %d bytes", limit)}
	}
	return b, nil
}

// requestError maps a failed request: the caller's context ending is its
// own error, the timeout is ErrTimeout.
func (c *Client) requestError(ctx, tctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if tctx.Err() != nil {
		return fmt.Errorf("%w (%s)", ErrTimeout, c.timeout)
	}
	return err
}

// jsonBody checks that a 2xx answer is one JSON value and not null, as
// Synapse's get_json (which treats anything else as a failure).
func jsonBody(b []byte) error {
	if !json.Valid(b) {
		return &BadResponseError{Reason: "response is not JSON"}
	}
	if string(bytes.TrimSpace(b)) == "null" {
		return &BadResponseError{Reason: "response is null"}
	}
	return nil
}

// exists is the answer of a user or alias query: a 2xx JSON answer says
// yes, a 404 says no, anything else is an error.
func (c *Client) exists(ctx context.Context, s *Service, path string) (bool, error) {
	b, err := c.do(ctx, s, http.MethodGet, path, nil, nil, maxQueryResponse)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := jsonBody(b); err != nil {
		return false, err
	}
	return true, nil
}

// QueryUser is GET {url}/_matrix/app/v1/users/{userId}: true when the
// service says the user exists (it has then created the user through the
// client API), false when it answers 404; other answers are errors.
func (c *Client) QueryUser(ctx context.Context, s *Service, userID string) (bool, error) {
	return c.exists(ctx, s, "/users/"+url.PathEscape(userID))
}

// QueryAlias is GET {url}/_matrix/app/v1/rooms/{roomAlias}: true when the
// service says the alias exists (it has then created the room and the
// alias), false when it answers 404; other answers are errors.
func (c *Client) QueryAlias(ctx context.Context, s *Service, alias string) (bool, error) {
	return c.exists(ctx, s, "/rooms/"+url.PathEscape(alias))
}

// Protocol is GET {url}/_matrix/app/v1/thirdparty/protocol/{protocol}: the
// service's metadata of the protocol, a JSON object whose instances field
// is a list of objects (a *BadResponseError otherwise).
func (c *Client) Protocol(ctx context.Context, s *Service, protocol string) (map[string]json.RawMessage, []map[string]json.RawMessage, error) {
	b, err := c.do(ctx, s, http.MethodGet, "/thirdparty/protocol/"+url.PathEscape(protocol), nil, nil, maxThirdPartyResponse)
	if err != nil {
		return nil, nil, err
	}
	var info map[string]json.RawMessage
	if err := json.Unmarshal(b, &info); err != nil || info == nil {
		return nil, nil, &BadResponseError{Reason: "protocol metadata is not a JSON object"}
	}
	var instances []map[string]json.RawMessage
	if err := json.Unmarshal(info["instances"], &instances); err != nil || instances == nil {
		return nil, nil, &BadResponseError{Reason: "protocol metadata has no list of instance objects"}
	}
	for _, in := range instances {
		if in == nil {
			return nil, nil, &BadResponseError{Reason: "protocol metadata has an instance that is not an object"}
		}
	}
	return info, instances, nil
}

// Kinds of third-party entities and the field each result must carry.
const (
	ThirdPartyUser     = "user"
	ThirdPartyLocation = "location"
)

// ThirdParty is GET {url}/_matrix/app/v1/thirdparty/{kind}/{protocol} with
// the query's fields, or, with protocol "", the reverse lookup
// GET {url}/_matrix/app/v1/thirdparty/{kind}?alias= (or ?userid=). It
// returns the valid results (objects with the kind's field (userid or
// alias) and protocol as strings and a fields object, as Synapse checks
// them); invalid ones are dropped and counted in dropped. An answer that is
// not a list is a *BadResponseError.
func (c *Client) ThirdParty(ctx context.Context, s *Service, kind, protocol string, fields url.Values) (results []json.RawMessage, dropped int, err error) {
	field := "userid"
	if kind == ThirdPartyLocation {
		field = "alias"
	} else if kind != ThirdPartyUser {
		return nil, 0, fmt.Errorf("appservice: unknown third-party kind %q", kind)
	}
	path := "/thirdparty/" + kind
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
	}
	b, err := c.do(ctx, s, http.MethodGet, path, fields, nil, maxThirdPartyResponse)
	if err != nil {
		return nil, 0, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil || list == nil {
		return nil, 0, &BadResponseError{Reason: "third-party lookup answer is not a JSON list"}
	}
	for _, r := range list {
		if validThirdPartyResult(r, field) {
			results = append(results, r)
		} else {
			dropped++
		}
	}
	return results, dropped, nil
}

func validThirdPartyResult(r json.RawMessage, field string) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(r, &obj) != nil || obj == nil {
		return false
	}
	return jsonKind(obj[field]) == '"' && jsonKind(obj["protocol"]) == '"' && jsonKind(obj["fields"]) == '{'
}

// jsonKind is the first byte of a JSON value (its type), 0 when absent.
func jsonKind(v json.RawMessage) byte {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

// Ping is POST {url}/_matrix/app/v1/ping with {"transaction_id": txnID}
// (null when txnID is nil). A 2xx answer must be JSON, as Synapse's
// post_json_get_json reads it.
func (c *Client) Ping(ctx context.Context, s *Service, txnID *string) error {
	b, err := c.do(ctx, s, http.MethodPost, "/ping", nil, map[string]*string{"transaction_id": txnID}, maxQueryResponse)
	if err != nil {
		return err
	}
	if !json.Valid(b) {
		return &BadResponseError{Reason: "response is not JSON"}
	}
	return nil
}
