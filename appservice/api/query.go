package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// How long protocol metadata is kept: an hour when a service answered (as
// Synapse's as_protocol_meta cache), a minute when it failed, so that a
// service that is down does not slow every lookup by a timeout.
const (
	protocolTTL       = time.Hour
	protocolFailedTTL = time.Minute
)

// Kinds of queries, the kind label of the metrics.
const (
	kindUser       = "user"
	kindAlias      = "alias"
	kindProtocol   = "protocol"
	kindThirdParty = "thirdparty"
	kindPing       = "ping"
)

// QuerierOptions configure a Querier.
type QuerierOptions struct {
	// Timeout bounds each request to a service (DefaultQueryTimeout when
	// zero).
	Timeout time.Duration
	// Transport carries the requests (nil: the default).
	Transport http.RoundTripper
	// Registry receives the metrics (nil: none).
	Registry prometheus.Registerer
	Logger   *slog.Logger
}

// Querier asks the registered services what the homeserver does not know,
// as Synapse's ApplicationServicesHandler: whether a user or a room alias in
// a service's namespace exists, the services' third-party protocols,
// locations and users, and pings. A failing service is logged and counted
// and its answer taken as "no" (or no results). A nil *Querier has no
// services. It is safe for concurrent use.
type Querier struct {
	reg    *Registry
	client *Client
	log    *slog.Logger

	queries  *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu        sync.Mutex
	protocols map[[2]string]*protocolEntry
	// inflight are the user and alias queries under way, by kind and ID,
	// so that concurrent lookups of one ID (many clients joining a new
	// portal's alias at once) ask the services once.
	inflight map[[2]string]*inflightQuery
	// joined counts the queries that shared one under way (for tests).
	joined atomic.Int64
	now    func() time.Time
}

type inflightQuery struct {
	found bool
	done  chan struct{}
}

type protocolEntry struct {
	info      map[string]json.RawMessage
	instances []map[string]json.RawMessage
	ok        bool
	until     time.Time
	// done is closed once the entry is filled, so that concurrent lookups
	// of the same protocol make one request.
	done chan struct{}
}

// NewQuerier returns the querier of the services of reg.
func NewQuerier(reg *Registry, o QuerierOptions) (*Querier, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	q := &Querier{
		reg:       reg,
		client:    NewClient(o.Timeout, o.Transport),
		log:       o.Logger.With("component", "appservice"),
		protocols: map[[2]string]*protocolEntry{},
		inflight:  map[[2]string]*inflightQuery{},
		now:       time.Now,
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_appservice_queries_total",
			Help: "Requests of the homeserver to application services other than transactions, by service, kind (user, alias, protocol, thirdparty, ping) and result (ok, not_found, error).",
		}, []string{"service", "kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "myelin_appservice_query_duration_seconds",
			Help:    "Time application services took to answer the homeserver's queries, by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
	}
	if o.Registry != nil {
		for _, c := range []prometheus.Collector{q.queries, q.duration} {
			if err := o.Registry.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return q, nil
}

// Registry returns the registered services (nil for a nil Querier).
func (q *Querier) Registry() *Registry {
	if q == nil {
		return nil
	}
	return q.reg
}

// observe counts one request and logs a failure.
func (q *Querier) observe(s *Service, kind string, start time.Time, found bool, err error) {
	q.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	result := "ok"
	switch {
	case err != nil:
		result = "error"
		if !errors.Is(err, context.Canceled) {
			q.log.Warn("application service query failed", "appservice", s.ID, "kind", kind, "error", err.Error())
		}
	case !found:
		result = "not_found"
	}
	q.queries.WithLabelValues(s.ID, kind, result).Inc()
}

// QueryUser asks the services with userID in a user namespace, in
// registration order, whether the user exists, and reports whether one said
// yes (that service has then registered the user). A service's own sender
// is never queried. Concurrent queries of one user share the answer. The
// caller looks the account up again.
func (q *Querier) QueryUser(ctx context.Context, userID string) bool {
	return q.shared(ctx, kindUser, userID, func(ctx context.Context) bool {
		for _, s := range q.Registry().Services() {
			if s.URL == "" || userID == s.SenderID {
				continue
			}
			if m, _ := s.UserInNamespace(userID); !m {
				continue
			}
			start := time.Now()
			ok, err := q.client.QueryUser(ctx, s, userID)
			q.observe(s, kindUser, start, ok, err)
			if ok {
				return true
			}
		}
		return false
	})
}

// QueryAlias asks the services with alias in an alias namespace, in
// registration order, whether the alias exists, and reports whether one said
// yes (that service has then created the room and the alias). Concurrent
// queries of one alias share the answer. The caller looks the alias up
// again.
func (q *Querier) QueryAlias(ctx context.Context, alias string) bool {
	return q.shared(ctx, kindAlias, alias, func(ctx context.Context) bool {
		for _, s := range q.Registry().Services() {
			if s.URL == "" {
				continue
			}
			if m, _ := s.AliasInNamespace(alias); !m {
				continue
			}
			start := time.Now()
			ok, err := q.client.QueryAlias(ctx, s, alias)
			q.observe(s, kindAlias, start, ok, err)
			if ok {
				return true
			}
		}
		return false
	})
}

// shared runs ask once for concurrent callers with the same kind and id.
// The first caller's request outlives it (the others wait for it); the
// client's timeout bounds it. A caller that gives up gets false.
func (q *Querier) shared(ctx context.Context, kind, id string, ask func(context.Context) bool) bool {
	if q == nil || len(q.reg.Services()) == 0 {
		return false
	}
	key := [2]string{kind, id}
	q.mu.Lock()
	f := q.inflight[key]
	if f == nil {
		f = &inflightQuery{done: make(chan struct{})}
		q.inflight[key] = f
		q.mu.Unlock()
		go func() {
			f.found = ask(context.WithoutCancel(ctx))
			q.mu.Lock()
			delete(q.inflight, key)
			q.mu.Unlock()
			close(f.done)
		}()
	} else {
		q.mu.Unlock()
		q.joined.Add(1)
	}
	select {
	case <-f.done:
		return f.found
	case <-ctx.Done():
		return false
	}
}

// protocol returns a service's metadata of one protocol, from the cache or
// the service; ok is false when the service could not give it.
func (q *Querier) protocol(ctx context.Context, s *Service, protocol string) (map[string]json.RawMessage, []map[string]json.RawMessage, bool) {
	key := [2]string{s.ID, protocol}
	q.mu.Lock()
	e := q.protocols[key]
	if e != nil {
		select {
		case <-e.done:
			if q.now().Before(e.until) {
				q.mu.Unlock()
				return e.info, e.instances, e.ok
			}
			e = nil // expired
		default:
		}
	}
	if e != nil {
		// Another request is asking the service: wait for its answer.
		q.mu.Unlock()
		select {
		case <-e.done:
			return e.info, e.instances, e.ok
		case <-ctx.Done():
			return nil, nil, false
		}
	}
	e = &protocolEntry{done: make(chan struct{})}
	q.protocols[key] = e
	q.mu.Unlock()

	start := time.Now()
	// The request outlives a caller that gives up, since others may be
	// waiting for it; the client's timeout bounds it.
	info, instances, err := q.client.Protocol(context.WithoutCancel(ctx), s, protocol)
	q.observe(s, kindProtocol, start, err == nil, err)
	e.info, e.instances, e.ok = info, instances, err == nil
	e.until = q.now().Add(protocolTTL)
	if err != nil {
		e.until = q.now().Add(protocolFailedTTL)
	}
	close(e.done)
	return e.info, e.instances, e.ok
}

// Protocols returns the metadata of every protocol the services declare
// (only the one named when only is not ""), as
// GET /_matrix/client/v3/thirdparty/protocols answers it: for each
// protocol, the first service's metadata with the instances of every
// service that answered, in registration order. Each instance with a
// network_id gets the instance_id "<service id>|<network_id>" (Synapse's
// ThirdPartyInstanceID, which the public room directory's
// third_party_instance_id takes). A protocol no service could describe is
// left out.
func (q *Querier) Protocols(ctx context.Context, only string) map[string]json.RawMessage {
	type answer struct {
		protocol  string
		service   *Service
		info      map[string]json.RawMessage
		instances []map[string]json.RawMessage
		ok        bool
	}
	var answers []*answer
	for _, s := range q.Registry().Services() {
		if s.URL == "" {
			continue
		}
		for _, p := range s.Protocols {
			if only == "" || p == only {
				answers = append(answers, &answer{protocol: p, service: s})
			}
		}
	}
	var wg sync.WaitGroup
	for _, a := range answers {
		wg.Go(func() { a.info, a.instances, a.ok = q.protocol(ctx, a.service, a.protocol) })
	}
	wg.Wait()

	merged := map[string]map[string]json.RawMessage{}
	instances := map[string][]map[string]json.RawMessage{}
	var order []string
	for _, a := range answers {
		if !a.ok {
			continue
		}
		if _, seen := merged[a.protocol]; !seen {
			merged[a.protocol] = a.info
			order = append(order, a.protocol)
		}
		for _, in := range a.instances {
			var networkID string
			if jsonKind(in["network_id"]) == '"' && json.Unmarshal(in["network_id"], &networkID) == nil {
				// A copy: the cached instance stays as the service sent it.
				c := make(map[string]json.RawMessage, len(in)+1)
				for k, v := range in {
					c[k] = v
				}
				id, _ := json.Marshal(a.service.ID + "|" + networkID)
				c["instance_id"] = id
				in = c
			}
			instances[a.protocol] = append(instances[a.protocol], in)
		}
	}
	out := make(map[string]json.RawMessage, len(order))
	for _, p := range order {
		info := make(map[string]json.RawMessage, len(merged[p]))
		for k, v := range merged[p] {
			info[k] = v
		}
		list := instances[p]
		if list == nil {
			list = []map[string]json.RawMessage{}
		}
		info["instances"], _ = json.Marshal(list)
		out[p], _ = json.Marshal(info)
	}
	return out
}

// ThirdParty looks up third-party users or locations (kind ThirdPartyUser
// or ThirdPartyLocation) of protocol with the given fields, at every
// service that declares the protocol, and returns their valid results
// together, in registration order. With protocol "", it is the reverse
// lookup of a Matrix user ID (fields' userid) or room alias (fields'
// alias), asked of the services with that user or alias in a namespace.
func (q *Querier) ThirdParty(ctx context.Context, kind, protocol string, fields url.Values) []json.RawMessage {
	var services []*Service
	for _, s := range q.Registry().Services() {
		if s.URL == "" {
			continue
		}
		var want bool
		switch {
		case protocol != "":
			want = slices.Contains(s.Protocols, protocol)
		case kind == ThirdPartyUser:
			want = s.IsInterestedInUser(fields.Get("userid"))
		case kind == ThirdPartyLocation:
			want, _ = s.AliasInNamespace(fields.Get("alias"))
		}
		if want {
			services = append(services, s)
		}
	}
	results := make([][]json.RawMessage, len(services))
	var wg sync.WaitGroup
	for i, s := range services {
		wg.Go(func() {
			start := time.Now()
			r, dropped, err := q.client.ThirdParty(ctx, s, kind, protocol, fields)
			q.observe(s, kindThirdParty, start, len(r) > 0, err)
			if dropped > 0 {
				q.log.Warn("application service returned invalid third-party results", "appservice", s.ID, "kind", kind, "dropped", dropped)
			}
			results[i] = r
		})
	}
	wg.Wait()
	out := []json.RawMessage{}
	for _, r := range results {
		out = append(out, r...)
	}
	return out
}

// Ping calls the service's POST /_matrix/app/v1/ping with txnID and returns
// how long it took. Its errors are the Client's: ErrNoURL, ErrTimeout, a
// *StatusError, a *BadResponseError, or a connection error.
func (q *Querier) Ping(ctx context.Context, s *Service, txnID *string) (time.Duration, error) {
	start := time.Now()
	err := q.client.Ping(ctx, s, txnID)
	d := time.Since(start)
	if !errors.Is(err, ErrNoURL) {
		q.observe(s, kindPing, start, true, err)
	}
	return d, err
}
