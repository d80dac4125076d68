// Package httputil is the HTTP layer every Myelin API shares: the router
// (gorilla/mux) with 404/405 M_UNRECOGNIZED, the (body, error) handler
// contract, size-limited JSON decoding, access-token extraction and
// authentication, CORS and OPTIONS preflight, per-user and per-IP rate
// limiting, request IDs, slog access logs and Prometheus HTTP metrics.
package httputil
