package httputil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"strings"
)

// request is the per-request state the middleware shares with handlers.
type request struct {
	id     string
	route  string
	log    *slog.Logger
	device *Device
	// clientIP is the client's address (X-Forwarded-For when trusted).
	clientIP string
}

type ctxKey struct{}

func stateOf(ctx context.Context) *request {
	s, _ := ctx.Value(ctxKey{}).(*request)
	return s
}

// Logger returns the request's logger (with req_id, user_id and device_id
// fields once known), or slog.Default outside a request.
func Logger(ctx context.Context) *slog.Logger {
	if s := stateOf(ctx); s != nil {
		return s.log
	}
	return slog.Default()
}

// RequestID returns the request's ID, or "" outside a request.
func RequestID(ctx context.Context) string {
	if s := stateOf(ctx); s != nil {
		return s.id
	}
	return ""
}

// DeviceFrom returns the authenticated device of the request, or nil.
func DeviceFrom(ctx context.Context) *Device {
	if s := stateOf(ctx); s != nil {
		return s.device
	}
	return nil
}

// WithDevice returns ctx carrying dev as the authenticated device; tests and
// in-process callers use it to call handlers directly.
func WithDevice(ctx context.Context, dev *Device) context.Context {
	s := &request{log: Logger(ctx), device: dev}
	if old := stateOf(ctx); old != nil {
		c := *old
		c.device = dev
		s = &c
	}
	return context.WithValue(ctx, ctxKey{}, s)
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ClientIP returns the address the request came from: the first
// X-Forwarded-For entry when trustForwarded is set, else the peer address.
func ClientIP(r *http.Request, trustForwarded bool) string {
	if trustForwarded {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := strings.TrimSpace(first); ip != "" {
				return ip
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func ctxWith(ctx context.Context, st *request) context.Context {
	return context.WithValue(ctx, ctxKey{}, st)
}

// AddLogAttrs adds slog attributes (key-value pairs, as slog.Logger.With
// takes them) to the request's logger, so that the handler's log lines and
// the request's access log line carry them (the federation API adds the
// authenticated origin server). Outside a request it does nothing.
func AddLogAttrs(ctx context.Context, args ...any) {
	if s := stateOf(ctx); s != nil && len(args) > 0 {
		s.log = s.log.With(args...)
	}
}
