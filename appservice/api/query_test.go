package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeService serves h on 127.0.0.1 as the service s.
func fakeService(t *testing.T, id string, h http.HandlerFunc) *Service {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Service{ID: id, URL: srv.URL, ASToken: "as-" + id, HSToken: "hs-" + id, SenderID: "@" + id + "bot:example.org",
		Users:     []Namespace{mustNSQ(t, `@`+id+`_`)},
		Aliases:   []Namespace{mustNSQ(t, `#`+id+`_`)},
		Protocols: []string{"irc"}}
}

func mustNSQ(t *testing.T, re string) Namespace {
	t.Helper()
	n, err := NewNamespace(re, false)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTestQuerier(t *testing.T, timeout time.Duration, reg prometheus.Registerer, services ...*Service) *Querier {
	t.Helper()
	r, err := NewRegistry(services)
	if err != nil {
		t.Fatal(err)
	}
	q, err := NewQuerier(r, QuerierOptions{Timeout: timeout, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Path segments are escaped (a '#' or '/' in an alias stays in its
// segment) and the hs_token is the bearer token.
func TestClientEscapesAndAuthenticates(t *testing.T) {
	var got, auth string
	s := fakeService(t, "a", func(w http.ResponseWriter, r *http.Request) {
		got, auth = r.URL.EscapedPath(), r.Header.Get("Authorization")
		w.Write([]byte(`{}`))
	})
	c := NewClient(time.Second, nil)
	ok, err := c.QueryAlias(context.Background(), s, "#a_x/y?z:example.org")
	if !ok || err != nil {
		t.Fatalf("QueryAlias = %v, %v", ok, err)
	}
	if got != "/_matrix/app/v1/rooms/%23a_x%2Fy%3Fz:example.org" || auth != "Bearer hs-a" {
		t.Fatalf("request path %q, auth %q", got, auth)
	}
}

// A redirect is not followed (the hs_token would go with it), answers are
// bounded, and a status other than 2xx or 404 is an error.
func TestClientRedirectsLimitsAndStatuses(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	s := fakeService(t, "a", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "redirect:example.org"):
			http.Redirect(w, r, other.URL, http.StatusFound)
		case strings.HasSuffix(r.URL.Path, "big:example.org"):
			w.Write([]byte(`{"x":"` + strings.Repeat("a", maxQueryResponse) + `"}`))
		case strings.HasSuffix(r.URL.Path, "bigerror:example.org"):
			w.WriteHeader(500)
			w.Write([]byte(strings.Repeat("e", 2*maxQueryResponse)))
		case strings.HasSuffix(r.URL.Path, "forbidden:example.org"):
			w.WriteHeader(403)
			w.Write([]byte(`{"errcode":"M_FORBIDDEN"}`))
		default:
			w.WriteHeader(404)
		}
	})
	c := NewClient(time.Second, nil)
	ctx := context.Background()
	var se *StatusError
	if ok, err := c.QueryUser(ctx, s, "@a_redirect:example.org"); ok || !errors.As(err, &se) || se.Status != http.StatusFound || elsewhere.Load() != 0 {
		t.Errorf("redirect: %v, %v; followed %d times", ok, err, elsewhere.Load())
	}
	var bad *BadResponseError
	if ok, err := c.QueryUser(ctx, s, "@a_big:example.org"); ok || !errors.As(err, &bad) {
		t.Errorf("oversized answer: %v, %v", ok, err)
	}
	if _, err := c.QueryUser(ctx, s, "@a_bigerror:example.org"); !errors.As(err, &se) || se.Status != 500 || len(se.Body) != maxQueryResponse {
		t.Errorf("oversized error: %v (body %d bytes)", err, len(se.Body))
	}
	if ok, err := c.QueryUser(ctx, s, "@a_forbidden:example.org"); ok || !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("403: %v, %v", ok, err)
	}
	if ok, err := c.QueryUser(ctx, s, "@a_missing:example.org"); ok || err != nil {
		t.Errorf("404: %v, %v, want false, nil", ok, err)
	}
	if _, err := c.QueryUser(ctx, &Service{ID: "n", HSToken: "x"}, "@n:example.org"); !errors.Is(err, ErrNoURL) {
		t.Errorf("no URL: %v", err)
	}
}

// A service that does not answer in time is ErrTimeout; a caller that
// gives up first gets its own context's error.
func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := fakeService(t, "a", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := NewClient(100*time.Millisecond, nil)
	if err := c.Ping(context.Background(), s, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("slow service: %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if err := NewClient(time.Minute, nil).Ping(ctx, s, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("caller gone: %v, want context.Canceled", err)
	}
}

// Protocol metadata is asked once for concurrent lookups, kept an hour
// when the service answered and a minute when it failed.
func TestProtocolCache(t *testing.T) {
	var asked atomic.Int32
	var fail atomic.Bool
	s := fakeService(t, "a", func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		time.Sleep(20 * time.Millisecond)
		if fail.Load() {
			w.WriteHeader(500)
			return
		}
		w.Write([]byte(`{"user_fields":[],"instances":[{"network_id":"n","desc":"N"}]}`))
	})
	reg := prometheus.NewRegistry()
	q := newTestQuerier(t, time.Second, reg, s)
	now := time.Now()
	var mu sync.Mutex
	q.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if p := q.Protocols(ctx, ""); !strings.Contains(string(p["irc"]), `"instance_id":"a|n"`) {
				t.Errorf("protocols = %s", p["irc"])
			}
		})
	}
	wg.Wait()
	if n := asked.Load(); n != 1 {
		t.Fatalf("8 concurrent lookups asked the service %d times, want 1", n)
	}
	advance(59 * time.Minute)
	q.Protocols(ctx, "irc")
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times within the hour, want 1", n)
	}
	advance(2 * time.Minute)
	fail.Store(true)
	if p := q.Protocols(ctx, ""); len(p) != 0 {
		t.Fatalf("failing service: protocols = %v, want none", p)
	}
	advance(30 * time.Second)
	q.Protocols(ctx, "")
	if n := asked.Load(); n != 2 {
		t.Fatalf("asked %d times, want 2 (the failure is kept a minute)", n)
	}
	fail.Store(false)
	advance(31 * time.Second)
	if p := q.Protocols(ctx, ""); len(p) != 1 || asked.Load() != 3 {
		t.Fatalf("after a minute: protocols = %v, asked %d times", p, asked.Load())
	}
	if v := queryCount(t, reg, "a", kindProtocol, "error"); v != 1 {
		t.Errorf("error count = %v, want 1", v)
	}
	if v := queryCount(t, reg, "a", kindProtocol, "ok"); v != 2 {
		t.Errorf("ok count = %v, want 2", v)
	}
}

// User queries skip the service's sender and stop at the first service
// that says yes, in registration order; a nil Querier has no services.
func TestQueryUserOrder(t *testing.T) {
	var order []string
	var mu sync.Mutex
	answer := func(id string, yes bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			if !yes {
				w.WriteHeader(404)
				return
			}
			w.Write([]byte(`{}`))
		}
	}
	a := fakeService(t, "a", answer("a", false))
	b := fakeService(t, "b", answer("b", true))
	c := fakeService(t, "c", answer("c", true))
	for _, s := range []*Service{a, b, c} {
		s.Users = []Namespace{mustNSQ(t, `@shared_`)}
	}
	a.SenderID = "@shared_bot:example.org"
	q := newTestQuerier(t, time.Second, nil, a, b, c)
	if !q.QueryUser(context.Background(), "@shared_x:example.org") || strings.Join(order, ",") != "a,b" {
		t.Fatalf("asked %v, want a then b", order)
	}
	order = nil
	q.QueryUser(context.Background(), "@shared_bot:example.org")
	if strings.Join(order, ",") != "b" {
		t.Fatalf("a's sender: asked %v, want only b", order)
	}
	var none *Querier
	if none.QueryUser(context.Background(), "@x:example.org") || none.QueryAlias(context.Background(), "#x:example.org") ||
		len(none.Protocols(context.Background(), "")) != 0 || len(none.ThirdParty(context.Background(), ThirdPartyUser, "irc", nil)) != 0 {
		t.Fatal("a nil Querier answered")
	}
}

// queryCount is myelin_appservice_queries_total{service,kind,result}.
func queryCount(t *testing.T, reg *prometheus.Registry, service, kind, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "myelin_appservice_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == service && labels["kind"] == kind && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Concurrent queries of one alias ask the service once and share its
// answer (a bridge would otherwise create the portal several times); a
// later query asks again.
func TestQueryAliasShared(t *testing.T) {
	var asked atomic.Int32
	release := make(chan struct{})
	s := fakeService(t, "a", func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		<-release
		w.Write([]byte(`{}`))
	})
	q := newTestQuerier(t, 5*time.Second, nil, s)
	var wg sync.WaitGroup
	var yes atomic.Int32
	for range 10 {
		wg.Go(func() {
			if q.QueryAlias(context.Background(), "#a_portal:example.org") {
				yes.Add(1)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.joined.Load() < 9 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	if asked.Load() != 1 || yes.Load() != 10 {
		t.Fatalf("10 concurrent lookups: the service was asked %d times, %d said yes; want 1 and 10", asked.Load(), yes.Load())
	}
	if !q.QueryAlias(context.Background(), "#a_portal:example.org") || asked.Load() != 2 {
		t.Fatalf("a later lookup: asked %d times, want 2", asked.Load())
	}
	// A caller that gives up does not wait for the service.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	block := fakeService(t, "b", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	qb := newTestQuerier(t, time.Second, nil, block)
	start := time.Now()
	if qb.QueryUser(ctx, "@b_x:example.org") || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("a caller that gave up waited %v", time.Since(start))
	}
}
