package pushgateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/netguard"
)

// Defaults of ClientConfig fields left zero.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultUserAgent = "Myelin"
)

const (
	// maxResponseBytes bounds what is read of a gateway's answer.
	maxResponseBytes = 64 << 10
	dialTimeout      = 5 * time.Second
	idleConnTimeout  = 90 * time.Second
	// maxIdleConnsPerHost keeps connections to the few big gateways
	// (most users share one) warm.
	maxIdleConnsPerHost = 32
)

// ClientConfig configures a Client. The zero value is usable.
type ClientConfig struct {
	// AllowPrivateAddresses permits gateways on loopback, private and
	// link-local addresses (config push.allow_private_addresses). Off,
	// such connections are refused when dialled (after DNS resolution)
	// by netguard, since any user can choose a pusher's URL.
	AllowPrivateAddresses bool
	// UserAgent is sent with every request (default "Myelin"; setup
	// passes "Myelin/<version>" as federation does).
	UserAgent string
	// Timeout bounds one request, connection and response included
	// (default 10s).
	Timeout time.Duration
}

// Client sends notifications to push gateways over HTTP(S). It follows no
// redirects, uses no proxy from the environment (which would bypass the
// address guard) and reads at most 64 KiB of a response. It is safe for
// concurrent use.
type Client struct {
	http      *http.Client
	userAgent string
	timeout   time.Duration
}

// NewClient returns a Client for o.
func NewClient(o ClientConfig) *Client {
	guard := &netguard.Guard{AllowPrivate: o.AllowPrivateAddresses}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, ControlContext: guard.Control}
	c := &Client{
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         dialer.DialContext,
				ForceAttemptHTTP2:   true,
				TLSHandshakeTimeout: dialTimeout,
				MaxIdleConnsPerHost: maxIdleConnsPerHost,
				IdleConnTimeout:     idleConnTimeout,
			},
			// A gateway's URL is the notify endpoint itself: a redirect
			// is a misconfiguration, not something to follow with a POST.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		userAgent: o.UserAgent,
		timeout:   o.Timeout,
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c
}

// Close closes idle connections. The Client remains usable.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Error is a failed delivery of one notification. Notify returns only
// this type of error.
type Error struct {
	// StatusCode is the gateway's HTTP status, 0 if there was no answer.
	StatusCode int
	// Permanent is true when sending the same notification again cannot
	// succeed: the pool drops it and moves on. Otherwise the pool retries
	// it after a backoff.
	Permanent bool
	// RetryAfter is the gateway's Retry-After on a 429 or 503, 0 if none.
	RetryAfter time.Duration
	// Err is the cause.
	Err error
}

func (e *Error) Error() string {
	kind := "transient"
	if e.Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("pushgateway: %s failure: %v", kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Notify sends n to t's gateway. rejected is true when the gateway
// answered 2xx with t.PushKey among its "rejected" push keys: the pusher
// must be removed (other push keys in the list are ignored, as Synapse
// does: they were not sent). A 2xx answer that is not the JSON the
// specification describes counts as delivered with nothing rejected.
//
// Failures are *Error. Transient (retry later): network errors, timeouts,
// 5xx, 408 and 429. Permanent (drop this notification): other 3xx and
// 4xx, an invalid URL or payload, and addresses refused by netguard (the
// policy does not change while the server runs, so retrying cannot help).
// ctx's cancellation is transient.
func (c *Client) Notify(ctx context.Context, t Target, n Notification) (rejected bool, err error) {
	body, err := Payload(t, n)
	if err != nil {
		return false, &Error{Permanent: true, Err: err}
	}
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return false, &Error{Permanent: true, Err: errors.New("pusher URL is not an http(s) URL")}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return false, &Error{Permanent: true, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error names the URL; keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return false, &Error{Permanent: errors.Is(err, netguard.ErrBlocked), Err: err}
	}
	defer resp.Body.Close()
	answer, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return false, statusError(resp)
	}
	if readErr != nil {
		// The gateway accepted the notification; only its list of
		// rejected keys is lost, and the next push will repeat it.
		return false, nil
	}
	for _, pk := range gjson.GetBytes(answer, "rejected").Array() {
		if pk.Type == gjson.String && pk.Str == t.PushKey {
			return true, nil
		}
	}
	return false, nil
}

// statusError classifies a non-2xx answer.
func statusError(resp *http.Response) *Error {
	code := resp.StatusCode
	e := &Error{StatusCode: code, Err: fmt.Errorf("gateway answered %d", code)}
	switch {
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	default:
		e.Permanent = true
	}
	return e
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
// Anything else, or a time in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 || s > int64(24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}
