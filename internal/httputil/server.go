package httputil

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Name labels the metrics of this listener ("main", "federation"...).
	Name          string
	Logger        *slog.Logger
	Registry      prometheus.Registerer
	Authenticator Authenticator
	RateLimiter   *RateLimiter
	// MaxBodyBytes caps request bodies; larger ones are 413 M_TOO_LARGE.
	// A route may raise it with MaxBody.
	MaxBodyBytes int64
	// TrustForwardedFor takes the client IP from X-Forwarded-For (behind a
	// reverse proxy).
	TrustForwardedFor bool
}

// Server is an http.Handler serving the routes components register on it.
type Server struct {
	opts    ServerOptions
	mux     *mux.Router
	auth    Authenticator
	limiter *RateLimiter
	metrics *metrics
	log     *slog.Logger
}

// NewServer returns an empty server: every path is 404 M_UNRECOGNIZED until
// routes are registered.
func NewServer(o ServerOptions) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.Name == "" {
		o.Name = "main"
	}
	s := &Server{
		opts:    o,
		mux:     mux.NewRouter().UseEncodedPath(),
		auth:    o.Authenticator,
		limiter: o.RateLimiter,
		metrics: newMetrics(o.Registry, o.Name),
		log:     o.Logger,
	}
	s.mux.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, mxerr.Unrecognized("Unrecognized request"))
	})
	s.mux.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, mxerr.Unrecognized("Unrecognized request").WithStatus(http.StatusMethodNotAllowed))
	})
	return s
}

// Limiter returns the server's rate limiter (nil when rate limiting is off).
func (s *Server) Limiter() *RateLimiter { return s.limiter }

type authMode int

const (
	authNone authMode = iota
	authOptional
	authRequired
)

type routeOptions struct {
	auth         authMode
	allowExpired bool
	guests       bool
	admin        bool
	rateClass    string
	rateCheck    bool
	maxBody      int64
}

// Option configures one route.
type Option func(*routeOptions)

// Auth requires an access token of a non-guest user.
func Auth() Option { return func(o *routeOptions) { o.auth = authRequired } }

// OptionalAuth authenticates the request when it carries a token.
func OptionalAuth() Option { return func(o *routeOptions) { o.auth = authOptional } }

// AllowExpired lets an Auth route accept an expired access token (logout).
func AllowExpired() Option { return func(o *routeOptions) { o.allowExpired = true } }

// Guests lets guest users call an Auth route.
func Guests() Option { return func(o *routeOptions) { o.guests = true } }

// Admin requires the caller to be a server admin (implies Auth).
func Admin() Option {
	return func(o *routeOptions) { o.auth = authRequired; o.admin = true }
}

// RateLimited limits the route with the named class, keyed by the user ID
// when authenticated and by the client IP otherwise.
func RateLimited(class string) Option { return func(o *routeOptions) { o.rateClass = class } }

// RateChecked gates the route with the named class without taking a token
// (keyed as RateLimited): the handler takes one with RateLimiter.Take when
// the action it limits completes, so that the rounds of a multi-step request
// (User-Interactive Authentication) do not count.
func RateChecked(class string) Option {
	return func(o *routeOptions) { o.rateClass, o.rateCheck = class, true }
}

// RateKey is the key a route's rate limit uses for r: the authenticated
// user's ID, else the client's address.
func RateKey(r *http.Request) string {
	if st := stateOf(r.Context()); st != nil {
		if st.device != nil {
			return st.device.UserID
		}
		return st.clientIP
	}
	return ""
}

// MaxBody overrides the body size cap of the route.
func MaxBody(n int64) Option { return func(o *routeOptions) { o.maxBody = n } }

// Handle registers h for method and path (a gorilla/mux template). The path
// template is the route's metrics label.
func (s *Server) Handle(method, path string, h HandlerFunc, opts ...Option) {
	o := routeOptions{maxBody: s.opts.MaxBodyBytes}
	for _, opt := range opts {
		opt(&o)
	}
	s.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateOf(r.Context())
		st.route = path
		r.Body = http.MaxBytesReader(w, r.Body, o.maxBody)
		if r.ContentLength > o.maxBody {
			writeError(w, r, mxerr.TooLarge("Request body too large (limit %d bytes)", o.maxBody))
			return
		}
		st.clientIP = ClientIP(r, s.opts.TrustForwardedFor)
		if err := s.authenticate(r, st, &o); err != nil {
			writeError(w, r, err)
			return
		}
		if err := checkParams(r); err != nil {
			writeError(w, r, err)
			return
		}
		if o.rateClass != "" && (st.device == nil || !st.device.RateExempt) {
			check := s.limiter.Allow
			if o.rateCheck {
				check = s.limiter.Check
			}
			if ok, wait := check(o.rateClass, RateKey(r)); !ok {
				writeError(w, r, mxerr.LimitExceeded(wait))
				return
			}
		}
		body, err := h(r)
		writeResult(w, r, body, err)
	})).Methods(method)
}

// HandleRaw registers a plain http.Handler (media downloads, metrics) that
// still gets request IDs, CORS, access logs and metrics.
func (s *Server) HandleRaw(method, path string, h http.Handler) {
	s.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stateOf(r.Context()).route = path
		if err := checkParams(r); err != nil {
			writeError(w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})).Methods(method)
}

// Client paths are served under both the current (v3) and the legacy (r0)
// prefixes, as Synapse does.
var clientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0"}

// HandleClient registers h under /_matrix/client/v3 and /_matrix/client/r0.
func (s *Server) HandleClient(method, path string, h HandlerFunc, opts ...Option) {
	for _, p := range clientPrefixes {
		s.Handle(method, p+path, h, opts...)
	}
}

// Vars returns the unescaped path variables of the request. Every route's
// variables have been checked (valid escapes, UTF-8, no NUL) before its
// handler runs.
func Vars(r *http.Request) map[string]string {
	raw := mux.Vars(r)
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		if u, err := url.PathUnescape(v); err == nil {
			v = u
		}
		out[k] = v
	}
	return out
}

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodDelete: true, http.MethodOptions: true, http.MethodHead: true,
}

// ServeHTTP runs the shared middleware around the route handlers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &request{id: newRequestID(), route: "unmatched"}
	st.log = s.log.With("req_id", st.id)
	r = r.WithContext(ctxWith(r.Context(), st))
	rw := &statusWriter{ResponseWriter: w}
	s.metrics.inFlight.Inc()
	defer func() {
		if p := recover(); p != nil {
			st.log.Error("panic serving request", slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			if !rw.wroteHeader {
				writeError(rw, r, mxerr.Unknown("Internal server error"))
			}
		}
		s.metrics.inFlight.Dec()
		d := time.Since(start)
		method := r.Method
		if !knownMethods[method] {
			method = "other"
		}
		status := rw.status()
		if clientGone(r) {
			// The client hung up before the response (a cancelled
			// long-poll): whatever was written went nowhere.
			status = StatusClientClosedRequest
		}
		s.metrics.observe(st.route, method, status, d)
		attrs := []any{
			slog.String("method", r.Method),
			slog.String("route", st.route),
			slog.Int("status", status),
			slog.Float64("ms", float64(d.Microseconds())/1000),
		}
		if st.route == "unmatched" {
			// Which endpoint the client wanted: the path alone (a query
			// string may carry tokens), bounded.
			attrs = append(attrs, slog.String("path", truncate(r.URL.Path, maxLoggedPath)))
		}
		st.log.Info("request", attrs...)
	}()

	h := rw.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	if r.Method == http.MethodOptions {
		// The spec forbids running endpoint logic for OPTIONS: answer
		// every preflight with the CORS headers alone.
		st.route = "preflight"
		WriteJSON(rw, http.StatusOK, struct{}{})
		return
	}
	s.mux.ServeHTTP(rw, r)
}

// maxLoggedPath bounds the path of an unmatched request in the access log.
const maxLoggedPath = 256

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.code
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) String() string { return fmt.Sprintf("httputil.Server(%s)", s.opts.Name) }
