package federationapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// endless is a body that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// Answers of other servers are read up to a bound: an endless answer (a
// hostile server's send_join) fails at the bound instead of filling memory.
// (The suite had only met honest servers, so nothing bounded them.)
func TestResponseBound(t *testing.T) {
	for _, c := range []struct {
		size int64
		body io.Reader
		err  error
	}{
		{1000, bytes.NewReader(make([]byte, 1000)), nil},
		{1000, bytes.NewReader(make([]byte, 1001)), errResponseTooLarge},
		{1000, endless{}, errResponseTooLarge},
	} {
		tr := &guardTransport{self: "self.test", limit: func(string) int64 { return c.size },
			next: roundTripFunc(func(*http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 200, Body: io.NopCloser(c.body)}, nil
			})}
		req, _ := http.NewRequest("GET", "matrix://remote.test/_matrix/federation/v1/event/x", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if !errors.Is(err, c.err) || int64(len(b)) > c.size {
			t.Errorf("read %d bytes, error %v; want at most %d, %v", len(b), err, c.size, c.err)
		}
	}
	for path, want := range map[string]int64{
		"/_matrix/federation/v2/send_join/!r:x/$e": maxStateResponseBytes,
		"/_matrix/federation/v1/state/!r:x":        maxStateResponseBytes,
		"/_matrix/federation/v1/backfill/!r:x":     maxResponseBytes,
		"/_matrix/key/v2/server":                   maxResponseBytes,
	} {
		if got := responseLimit(path); got != want {
			t.Errorf("responseLimit(%s) = %d, want %d", path, got, want)
		}
	}
}
