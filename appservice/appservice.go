// Package appservice is the application service component: it sends the
// registered application services (bridges) what they are interested in
// as transactions (PUT {url}/_matrix/app/v1/transactions/{txnId}): the
// events of rooms where their users are, of their users, and of rooms
// whose ID or aliases are in their namespaces.
//
// What a service is owed is queued in as_queue in the transaction that
// applies the stream message it came from, and sent in order, in batches
// of up to 100 events, by one sender per service. A transaction is stored
// before it is first sent and resent with the same ID and body until the
// service answers 2xx, with exponential backoff while the service is
// down, so that an outage or a restart of either side loses and
// duplicates nothing.
package appservice

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/prometheus/client_golang/prometheus"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/appservice/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Config is what the component needs from the configuration.
type Config struct {
	ServerName string
	// Services are the registered application services; those without a
	// URL receive nothing.
	Services *asapi.Registry
	// Registry receives the component's metrics (nil: none).
	Registry prometheus.Registerer
}

// Rooms is what the component reads of rooms: their current state (the
// members and canonical alias that make a service interested) and their
// directory aliases.
type Rooms interface {
	QueryCurrentState(ctx context.Context, roomID string, tuples ...rsapi.StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	QueryEvents(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error)
	QueryAliasesForRoom(ctx context.Context, roomID string) ([]string, error)
	QueryRoomsForUser(ctx context.Context, userID string, memberships ...string) ([]rsapi.MemberInfo, error)
}

// AppService is the component.
type AppService struct {
	cfg      Config
	store    *storage.Storage
	bus      *bus.Bus
	log      *slog.Logger
	client   *http.Client
	users    Users // nil: no key counts
	interest *interest
	metrics  *metrics
	senders  map[string]*sender

	// queueMu makes the component the single writer of as_queue IDs.
	queueMu sync.Mutex
	nextID  int64
	stored  map[string]uint64 // the last position each consumer stored

	stops []func()
}

// New migrates the component's tables and returns it; nil when no
// registered service has a URL (there is nothing to send).
func New(ctx context.Context, cfg Config, db *sqlutil.DB, b *bus.Bus, rooms Rooms, users Users, log *slog.Logger) (*AppService, error) {
	if log == nil {
		log = slog.Default()
	}
	var services []*asapi.Service
	for _, s := range cfg.Services.Services() {
		if s.URL != "" {
			services = append(services, s)
		}
	}
	if len(services) == 0 || b == nil {
		return nil, nil
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("appservice: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("appservice: metrics: %w", err)
	}
	a := &AppService{cfg: cfg, store: st, bus: b, log: log.With("component", "appservice"), users: users,
		interest: newInterest(services, cfg.ServerName, rooms), metrics: m, senders: map[string]*sender{}, stored: map[string]uint64{}}
	// The services' URLs come from the operator's registration files, so
	// no guard against private addresses applies (as in Synapse).
	a.client = &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
		},
	}
	for _, s := range services {
		a.senders[s.ID] = newSender(a, s)
	}
	return a, nil
}

// Start forgets what is queued for services no longer registered, then
// starts the consumers and one sender per service.
func (a *AppService) Start(ctx context.Context) error {
	ids := make([]string, 0, len(a.senders))
	for id := range a.senders {
		ids = append(ids, id)
	}
	if err := a.store.WithTx(ctx, func(tx *sqlutil.Tx) error { return storage.ForgetServicesExcept(ctx, tx, ids) }); err != nil {
		return fmt.Errorf("appservice: %w", err)
	}
	next, err := storage.MaxQueueID(ctx, a.store.DB())
	if err != nil {
		return fmt.Errorf("appservice: %w", err)
	}
	a.nextID = next
	pending, err := storage.PendingCounts(ctx, a.store.DB())
	if err != nil {
		return fmt.Errorf("appservice: %w", err)
	}
	for id, s := range a.senders {
		s.setPending(pending[id])
	}
	if err := a.startConsumers(ctx); err != nil {
		a.Close()
		return err
	}
	for _, s := range a.senders {
		a.stops = append(a.stops, s.start())
	}
	return nil
}

// Close stops the consumers and the senders (a transaction in flight is
// abandoned and resent at the next start).
func (a *AppService) Close() {
	for i := len(a.stops) - 1; i >= 0; i-- {
		a.stops[i]()
	}
	a.stops = nil
}

// startFrom makes a consumer that never ran start at the end of its stream:
// a service registered today is sent what happens from now on, not the
// stream's history (as Synapse, whose services start at the current
// position).
func (a *AppService) startFrom(ctx context.Context, stream, consumer string) error {
	known, err := storage.ConsumerKnown(ctx, a.store.DB(), consumer)
	if err != nil || known {
		return err
	}
	st, err := a.bus.JS.Stream(ctx, a.bus.Name(stream))
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	return a.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		return storage.Consumers.Set(ctx, tx, consumer, info.State.LastSeq)
	})
}

// enqueue queues rows for services in tx, assigning their IDs in order;
// the returned function, called once tx committed, wakes their senders.
// The caller holds queueMu until then.
func (a *AppService) enqueue(ctx context.Context, tx *sqlutil.Tx, rows []storage.QueueRow) error {
	for i := range rows {
		rows[i].ID = a.nextID + int64(i) + 1
	}
	return storage.InsertQueue(ctx, tx, rows)
}

// positionEvery is how many messages that queue nothing a consumer may
// apply before it stores its position: most room events concern no
// service, and they need no write each. After a restart, the consumer's
// acknowledgements (not the stored position) decide where it resumes, and
// a message redelivered past the position queues nothing again.
const positionEvery = 100

// apply queues rows and stores the consumer's position in one transaction,
// then wakes the senders of the rows queued.
func (a *AppService) apply(ctx context.Context, consumer string, seq uint64, rows []storage.QueueRow) error {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	if len(rows) == 0 && seq < a.stored[consumer]+positionEvery {
		return nil
	}
	err := a.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := a.enqueue(ctx, tx, rows); err != nil {
			return err
		}
		return storage.Consumers.Set(ctx, tx, consumer, seq)
	})
	if err != nil {
		return err
	}
	a.nextID += int64(len(rows))
	a.stored[consumer] = seq
	count := map[string]int{}
	for _, r := range rows {
		count[r.ServiceID]++
	}
	for id, n := range count {
		if s := a.senders[id]; s != nil {
			s.queued(n)
		}
	}
	return nil
}
