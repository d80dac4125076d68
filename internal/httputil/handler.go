package httputil

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// HandlerFunc serves one route. It returns the body of a 200 response (a
// value marshalled as JSON), a *Response for any other status or extra
// headers, or an error. A *mxerr.Error is sent as a Matrix error; any other
// error becomes 500 M_UNKNOWN, logged once here and never sent.
type HandlerFunc func(r *http.Request) (any, error)

// Response is a handler result with an explicit status and headers.
type Response struct {
	Status int
	Body   any
	Header http.Header
}

// writeResult sends a handler's result.
func writeResult(w http.ResponseWriter, r *http.Request, body any, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if resp, ok := body.(*Response); ok {
		for k, vs := range resp.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		status = resp.Status
		body = resp.Body
	}
	if body == nil {
		body = struct{}{}
	}
	WriteJSON(w, status, body)
}

// StatusClientClosedRequest is the status recorded (in the access log and
// metrics, as nginx and Synapse do) for a request whose client hung up
// before the response: not a server error.
const StatusClientClosedRequest = 499

// clientGone reports whether the client of r has hung up (its context is
// cancelled; the server's own deadlines are DeadlineExceeded).
func clientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// writeError sends err as a Matrix error response. When the client has hung
// up, whatever failed (typically the storage call that the cancellation
// interrupted) is no server error: it is logged at debug level and recorded
// as 499.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if clientGone(r) {
		Logger(r.Context()).Debug("client disconnected", slog.String("error", err.Error()))
		w.WriteHeader(StatusClientClosedRequest)
		return
	}
	merr, ok := mxerr.As(err)
	if !ok {
		Logger(r.Context()).Error("request failed", slog.String("error", err.Error()))
		merr = mxerr.Unknown("Internal server error")
	} else if merr.HTTPStatus() >= 500 {
		Logger(r.Context()).Error("request failed", slog.String("error", merr.Error()))
	}
	for k, vs := range merr.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	WriteJSON(w, merr.HTTPStatus(), merr)
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
