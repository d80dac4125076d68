// Package syncapi serves what clients read the world through: /sync,
// /messages, /context, typing, receipts, read markers and presence, from a
// read model built from the roomserver's and the user API's output streams
// and from the typing, receipt and presence EDUs of other servers
// (FederationIn). It publishes its users' typing, receipts and presence
// for other servers (FederationOut), and has the federation API backfill
// history /messages reaches the start of. It also owns filters, which
// shape those reads, and the devices' send-to-device inboxes
// (/sendToDevice, m.direct_to_device; see todevice.go).
package syncapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
	"github.com/myelin-chat/myelin/syncapi/pushgateway"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Config is what the sync API needs from the configuration.
type Config struct {
	ServerName      string
	PresenceEnabled bool
	// IdleAfter and OfflineAfter are the presence timeouts (Synapse's
	// 5 minutes and 30 seconds when zero).
	IdleAfter, OfflineAfter time.Duration
	// PushAllowPrivateAddresses lets pushers deliver to push gateways on
	// loopback and private addresses.
	PushAllowPrivateAddresses bool
	// Registry receives the sync API's metrics (nil: none).
	Registry prometheus.Registerer
	// Backfiller fetches history from other servers when /messages
	// reaches the start of what the sync API holds of a room; nil when
	// there is no federation.
	Backfiller Backfiller
	// Marks are the positions of the writes of the producers in this
	// process, which reads wait for (read-your-writes); nil: the sync
	// API keeps its own, which only its own waits mark.
	Marks *bus.WriteMarks
	// Output is what the sync API publishes on SyncOutput (the zero
	// value: nothing).
	Output syncout.Output
	// Caches bounds the in-memory caches (zero fields: DefaultCacheSizes).
	Caches CacheSizes
}

// CacheSizes bounds the sync API's caches, in entries.
type CacheSizes struct {
	// LazyDevices are the devices whose lazy-loaded members are
	// remembered.
	LazyDevices int
	// PushRules are users' compiled push rules (about 2 KB each).
	PushRules int
	// PushRooms are rooms' push evaluation contexts.
	PushRooms int
}

// DefaultCacheSizes are the sizes of fields left at zero: those of the
// configuration's defaults, for a small machine.
var DefaultCacheSizes = CacheSizes{LazyDevices: 1000, PushRules: 2000, PushRooms: 200}

// orDefault fills the zero sizes from DefaultCacheSizes.
func (c CacheSizes) orDefault() CacheSizes {
	if c.LazyDevices <= 0 {
		c.LazyDevices = DefaultCacheSizes.LazyDevices
	}
	if c.PushRules <= 0 {
		c.PushRules = DefaultCacheSizes.PushRules
	}
	if c.PushRooms <= 0 {
		c.PushRooms = DefaultCacheSizes.PushRooms
	}
	return c
}

// UserAPI is what the sync API uses of the user API: account data (the
// read marker), pushers, and the devices to-device messages go to.
type UserAPI interface {
	userapi.AccountDataAPI
	userapi.PushersAPI
	QueryDevicesOfUsers(ctx context.Context, userIDs []string) (map[string][]userapi.DeviceInfo, error)
	QueryDehydratedDevice(ctx context.Context, userID string) (*userapi.DehydratedDevice, error)
}

// KeyCounter reports what one-time and fallback keys a device has left
// (userapi/api.KeysAPI's OneTimeKeyCounts).
type KeyCounter interface {
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*userapi.OneTimeKeyCounts, error)
}

// SyncAPI is the sync component.
type SyncAPI struct {
	cfg      Config
	store    *storage.Storage
	bus      *bus.Bus
	rooms    rsapi.QueryAPI
	users    UserAPI
	log      *slog.Logger
	metrics  *metrics
	notifier *notifier
	typing   *typingStore
	presence *presenceTracker
	lazy     *lazyCache
	push     *pushCache
	unread   *unreadStore
	edus     *eduSender // nil without a bus
	// typingOut publishes typing on SyncOutput; nil when Output.Ephemeral
	// is off.
	typingOut *typingOutput
	pushers   *pushers
	keys      KeyCounter // nil: no key counts

	// pos holds the highest committed position of each stream.
	pos struct {
		pdu, receipt, accountData, presence, toDevice, deviceList atomic.Int64
	}
	receiptMu   sync.Mutex // orders receipt positions with their commits
	fullyReadMu sync.Mutex // orders read marker moves

	// toDeviceMu makes writeToDevice the single writer of the to-device
	// stream; toDeviceOutbox publishes its outbox in order.
	toDeviceMu     sync.Mutex
	toDeviceOutbox *bus.Outbox[storage.ToDeviceOutbound]
	// fedOutbox publishes sync_outbox (local users' public receipts) on
	// FederationOut.
	fedOutbox   *bus.Outbox[bus.OutboxRow]
	outboxDirty atomic.Bool // a flush failed: the retry timer tries again
	inboxes     toDeviceInboxes

	// applied holds the last stream sequence each consumer applied,
	// reported to cfg.Marks (read-your-writes).
	applied struct {
		roomOutput, userOutput, federationIn appliedSeq
	}
	// readWaitTimeouts counts reads that served what the read model had
	// after waiting catchUpLimit for their writes.
	readWaitTimeouts prometheus.Counter

	stopMu sync.Mutex
	stops  []func()

	// draining is closed when the server begins to shut down: waiting
	// long-polls then return at once instead of holding the shutdown up.
	draining  chan struct{}
	drainOnce sync.Once
}

// New migrates the sync API's tables and returns the component.
func New(ctx context.Context, cfg Config, db *sqlutil.DB, b *bus.Bus, rooms rsapi.QueryAPI, users UserAPI, log *slog.Logger) (*SyncAPI, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = 5 * time.Minute
	}
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = 30 * time.Second
	}
	cfg.Caches = cfg.Caches.orDefault()
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	s := &SyncAPI{cfg: cfg, store: st, bus: b, rooms: rooms, users: users, log: log.With("component", "syncapi"),
		metrics:  newMetrics(cfg.Registry),
		notifier: newNotifier(), lazy: newLazyCache(cfg.Caches.LazyDevices), push: newPushCache(cfg.Caches.PushRules, cfg.Caches.PushRooms), unread: newUnreadStore(), draining: make(chan struct{}),
		toDeviceOutbox: newToDeviceOutbox(st), fedOutbox: storage.Outbox.Outbox(st.DB())}
	if s.cfg.Marks == nil {
		s.cfg.Marks = bus.NewWriteMarks()
	}
	s.applied.roomOutput = appliedSeq{stream: rsapi.RoomOutputStream.Name, marks: s.cfg.Marks}
	s.applied.userOutput = appliedSeq{stream: userapi.UserOutputStream.Name, marks: s.cfg.Marks}
	s.applied.federationIn = appliedSeq{stream: fedapi.FederationInStream.Name, marks: s.cfg.Marks}
	s.readWaitTimeouts = prometheus.NewCounter(prometheus.CounterOpts{Name: "myelin_syncapi_read_wait_timeouts_total",
		Help: "Reads served after waiting the limit for the read model to apply their caller's writes."})
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(s.readWaitTimeouts); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("syncapi: metrics: %w", err)
			}
			s.readWaitTimeouts = are.ExistingCollector.(prometheus.Counter)
		}
	}
	if kc, ok := users.(KeyCounter); ok {
		s.keys = kc
	}
	if b != nil {
		s.edus = newEDUSender(b, s.log)
	}
	if b != nil && cfg.Output.Ephemeral {
		s.typingOut = newTypingOutput(b, s.log, func(roomID string) []string { return s.typing.since([]string{roomID}, 0, true)[roomID] })
	}
	s.typing = newTypingStore(func(roomID string) {
		s.notifier.wakeRoom(roomID)
		s.typingOut.changed(roomID)
	}, s.sendTyping)
	s.presence = newPresenceTracker(s)
	if users != nil {
		client := pushgateway.NewClient(pushgateway.ClientConfig{AllowPrivateAddresses: cfg.PushAllowPrivateAddresses})
		s.pushers = &pushers{api: users, known: map[string][]pushgateway.Target{},
			pool: pushgateway.NewPool(pushSource{s}, client, s.log, cfg.Registry)}
	}
	return s, nil
}

// load reads the streams' positions and the rooms' members.
func (s *SyncAPI) load(ctx context.Context) error {
	ev, rc, ad, pr, err := storage.MaxPositions(ctx, s.store.DB())
	if err != nil {
		return fmt.Errorf("syncapi: positions: %w", err)
	}
	s.pos.pdu.Store(ev)
	s.pos.receipt.Store(rc)
	s.pos.accountData.Store(ad)
	s.pos.presence.Store(pr)
	if err := s.loadToDevice(ctx); err != nil {
		return fmt.Errorf("syncapi: to-device: %w", err)
	}
	dl, err := storage.MaxDeviceListPos(ctx, s.store.DB())
	if err != nil {
		return fmt.Errorf("syncapi: device list position: %w", err)
	}
	s.pos.deviceList.Store(dl)
	members, err := storage.EveryCurrentMember(ctx, s.store.DB())
	if err != nil {
		return fmt.Errorf("syncapi: members: %w", err)
	}
	for _, m := range members {
		s.notifier.setMember(m.RoomID, m.UserID, m.Membership, s.isLocal(m.UserID))
	}
	return nil
}

// Start loads positions and memberships, and starts the stream consumers.
func (s *SyncAPI) Start(ctx context.Context) error {
	if err := s.load(ctx); err != nil {
		return err
	}
	if err := s.presence.loadRemote(ctx); err != nil {
		return fmt.Errorf("syncapi: remote presence: %w", err)
	}
	s.addStop(s.edus.start())
	s.addStop(s.typingOut.start())
	s.addStop(s.fedOutbox.Relay(s.bus, 10*time.Second, s.log)) // what a crash left goes out now
	s.addStop(s.startToDevice(ctx))
	if s.pushers != nil {
		s.addStop(s.pushers.pool.Close) // stopped after the consumers
	}
	stopUnread, err := s.startUnread(ctx)
	if err != nil {
		s.Close()
		return fmt.Errorf("syncapi: unread counts: %w", err)
	}
	s.addStop(stopUnread) // saved once the consumers have stopped
	// RoomOutput in batches (onRoomOutputs), the others a message at a time.
	seq, err := storage.ConsumerPosition(ctx, s.store.DB(), roomOutputConsumer)
	if err != nil {
		s.Close()
		return err
	}
	s.applied.roomOutput.Store(seq)
	stop, err := s.bus.ConsumeBatch(ctx, bus.ConsumerSpec{
		Stream: rsapi.RoomOutputStream.Name, Durable: roomOutputConsumer,
		LastApplied: func(ctx context.Context) (uint64, error) {
			return storage.ConsumerPosition(ctx, s.store.DB(), roomOutputConsumer)
		},
	}, maxOutputBatch, s.onRoomOutputs)
	if err != nil {
		s.Close()
		return err
	}
	s.addStop(stop)
	for _, c := range []struct {
		name, stream string
		subjects     []string
		applied      *appliedSeq
		handle       bus.Handler
	}{
		{userOutputConsumer, userapi.UserOutputStream.Name, nil, &s.applied.userOutput, s.onUserOutput},
		{federationInConsumer, fedapi.FederationInStream.Name, federationInSubjects, &s.applied.federationIn, s.onFederationIn},
	} {
		seq, err := storage.ConsumerPosition(ctx, s.store.DB(), c.name)
		if err != nil {
			return err
		}
		c.applied.Store(seq)
		stop, err := s.bus.Consume(ctx, bus.ConsumerSpec{
			Stream: c.stream, Durable: c.name, MaxAckPending: 1, FilterSubjects: c.subjects,
			LastApplied: func(ctx context.Context) (uint64, error) { return storage.ConsumerPosition(ctx, s.store.DB(), c.name) },
		}, c.handle)
		if err != nil {
			s.Close()
			return err
		}
		s.addStop(stop)
	}
	s.addStop(s.presence.start())
	s.addStop(s.typing.stop)
	if err := s.resumePushers(ctx); err != nil {
		s.Close()
		return fmt.Errorf("syncapi: pushers: %w", err)
	}
	return nil
}

func (s *SyncAPI) addStop(f func()) {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	s.stops = append(s.stops, f)
}

// Close stops the consumers and timers.
func (s *SyncAPI) Close() {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

// Drain ends the long-polls in progress and makes new ones return at
// once: the server is shutting down.
func (s *SyncAPI) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
}

// Register mounts the sync API's client routes.
func (s *SyncAPI) Register(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()
	srv.HandleClient(http.MethodPost, "/user/{userId}/filter", s.postFilter, auth, guests)
	srv.HandleClient(http.MethodGet, "/user/{userId}/filter/{filterId}", s.getFilter, auth, guests)
	srv.HandleClient(http.MethodGet, "/sync", s.getSync, auth, guests)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/messages", s.getMessages, auth, guests)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/members", s.getMembers, auth, guests)
	srv.HandleClient(http.MethodGet, "/rooms/{roomId}/context/{eventId}", s.getContext, auth, guests)
	srv.Handle(http.MethodGet, "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", s.getTimestampToEvent, auth, guests)
	srv.HandleClient(http.MethodPut, "/rooms/{roomId}/typing/{userId}", s.putTyping, auth, guests)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", s.postReceipt, auth, guests)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/read_markers", s.postReadMarkers, auth, guests)
	srv.HandleClient(http.MethodPut, "/presence/{userId}/status", s.putPresence, auth, guests)
	srv.HandleClient(http.MethodGet, "/presence/{userId}/status", s.getPresence, auth, guests)
	srv.HandleClient(http.MethodGet, "/notifications", s.getNotifications, auth)
	srv.HandleClient(http.MethodPut, "/sendToDevice/{eventType}/{txnId}", s.putSendToDevice, auth, guests)
	srv.HandleClient(http.MethodGet, "/keys/changes", s.getKeyChanges, auth, guests)
	srv.HandleClient(http.MethodPost, "/user_directory/search", s.postUserDirectorySearch, auth)
	s.registerDehydrated(srv)
	s.registerRelations(srv)
	s.registerThreadSubscriptions(srv)
}

// catchUp waits, at most catchUpLimit, until the read model has applied
// the writes a read by userID depends on (bus.WriteMarks): the user's own
// (an event sent, account data set, a room joined) and those of the rooms
// the user is in and of rooms (the room read): an event another member
// sent, an invite or a kick of the user, acknowledged before this read;
// and key changes (bus.EveryReader), which concern everyone sharing a room
// with their user. It waits for nothing else, not for every stream to drain: a read with no
// such write pending costs a map look-up per key, no round trip to NATS.
// With an empty userID (no caller) it waits for the rooms only. When the
// limit passes first, it logs, counts
// (myelin_syncapi_read_wait_timeouts_total) and serves what the read model
// has, as Synapse does when a worker is slow to catch up
// (wait_for_stream_position): the write is committed and comes with a
// later position, so a later /sync brings it; refusing the read would not
// make the consumer faster.
func (s *SyncAPI) catchUp(ctx context.Context, userID string, rooms ...string) error {
	start := time.Now()
	deadline := start.Add(catchUpLimit)
	for {
		// Again after each wait: a room joined meanwhile adds its marks.
		keys := append(rooms[:len(rooms):len(rooms)], bus.EveryReader)
		if userID != "" {
			keys = s.notifier.readKeys(userID, keys...)
		}
		if !s.cfg.Marks.Pending(keys...) {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if s.cfg.Marks.Wait(ctx, left, keys...) && ctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		break
	}
	s.readWaitTimeouts.Inc()
	s.log.Warn("read served before the read model applied the writes it depends on",
		slog.Duration("waited", time.Since(start)), slog.Uint64("room_output_applied", s.applied.roomOutput.Load()),
		slog.Uint64("user_output_applied", s.applied.userOutput.Load()))
	return nil
}

// catchUpLimit bounds how long a read waits for the consumers.
const catchUpLimit = 2 * time.Second

// appliedSeq is the last stream sequence a consumer applied. Storing it
// (once everything the message changed is in place, notifier included)
// reports it to the write marks, releasing the reads that wait for it.
type appliedSeq struct {
	atomic.Uint64
	stream string
	marks  *bus.WriteMarks
}

// Store records seq and reports it to the marks.
func (a *appliedSeq) Store(seq uint64) {
	a.Uint64.Store(seq)
	a.marks.Applied(a.stream, seq)
}
