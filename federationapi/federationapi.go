// Package federationapi is the server-server API: it serves
// /_matrix/federation and /_matrix/key to other homeservers (transactions,
// joins, invites, leaves, knocks, backfill, state, keys), verifies what they
// send (request signatures, event signatures and hashes, auth rules through
// the roomserver), fetches what is missing, and sends this server's events
// and EDUs to the servers in each room through one persisted queue per
// destination with backoff.
package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Config is what the federation API needs from the configuration.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// OldKeys are retired verify keys, still served so old events verify.
	OldKeys []OldKey
	// KeyValidity is how long others may cache this server's key.
	KeyValidity time.Duration
	// TrustedKeyServers are notaries for other servers' keys.
	TrustedKeyServers []TrustedKeyServer
	// DomainAllowlist (if not empty) and DomainDenylist limit the servers
	// this server talks to.
	DomainAllowlist []string
	DomainDenylist  []string
	// AllowDeviceNameLookup gives other servers the display names of local
	// users' devices (Synapse's allow_device_name_lookup_over_federation).
	AllowDeviceNameLookup bool
	// Transport carries outgoing federation requests (server discovery,
	// TLS, the address guard); see the transport package.
	Transport http.RoundTripper
	// Registry receives the component's metrics (nil: none).
	Registry prometheus.Registerer
	// KeyCacheSize bounds the other servers' keys cached in memory in
	// front of fed_server_keys (entries, about 300 bytes each; 0:
	// DefaultKeyCacheSize).
	KeyCacheSize int
	// AppServices asks the application services about an unknown local
	// alias in their namespaces before /query/directory answers 404
	// (nil: no services).
	AppServices AliasQuerier
}

// AliasQuerier asks application services whether an alias in one of
// their namespaces exists; one that says yes has created it meanwhile
// (appservice/api's Querier).
type AliasQuerier interface {
	QueryAlias(ctx context.Context, alias string) bool
}

// DefaultKeyCacheSize is the key cache size when Config leaves it at zero
// (the configuration's default).
const DefaultKeyCacheSize = 2000

// OldKey is a retired verify key.
type OldKey struct {
	KeyID     gomatrixserverlib.KeyID
	PublicKey ed25519.PublicKey
	ExpiredTS spec.Timestamp
}

// TrustedKeyServer is a notary and its keys.
type TrustedKeyServer struct {
	ServerName spec.ServerName
	VerifyKeys map[gomatrixserverlib.KeyID]ed25519.PublicKey
}

// Rooms is what the federation API needs of the roomserver.
type Rooms interface {
	rsapi.QueryAPI
	rsapi.FederationQueryAPI
	rsapi.AliasAPI
}

// Inputer submits events to the roomserver.
type Inputer interface {
	Input(ctx context.Context, msg *rsapi.InputMessage) (*rsapi.InputResult, error)
}

// Users is what the federation API needs of the user API.
type Users interface {
	userapi.ProfileAPI
	userapi.OpenIDAPI
	userapi.KeysAPI
	// QueryAccountData reads the invite permission of invitees.
	QueryAccountData(ctx context.Context, userID, roomID, dataType string) (json.RawMessage, error)
}

// FederationAPI is the federation API component.
type FederationAPI struct {
	cfg   Config
	store *storage.Storage
	bus   *bus.Bus
	// outbox publishes fed_outbox (FederationIn) in commit order.
	outbox *bus.Outbox[bus.OutboxRow]
	rooms  Rooms
	input  Inputer
	users  Users
	log    *slog.Logger
	// devUsers keeps the device lists (devicelists.go); nil when the user
	// API given has no keys (tests with a partial user API).
	devUsers DeviceListUsers

	// policy applies the domain allow/deny lists (client.go).
	policy domainPolicy
	// client sends signed federation requests as this server; keyClient
	// fetches keys (unsigned). Both go through transport() (client.go).
	client    fclient.FederationClient
	keyClient *fclient.Client
	// keyring verifies other servers' signatures (requests, events); keyDB
	// and keyFetch are its database and its fetchers' client (keys.go).
	keyring  *gomatrixserverlib.KeyRing
	keyDB    *keyDatabase
	keyFetch *keyFetchClient

	// Inbound transactions: one per origin at a time; each room's events
	// taken in one at a time (send.go, events.go).
	txnLocks  originLocks
	roomLocks roomLocks
	// queues send to other servers (queue.go); joined caches the servers
	// in each room.
	queues  *queues
	joined  joinedServersCache
	metrics *metrics

	stopMu sync.Mutex
	stops  []func()
}

// New migrates the federation API's tables and returns the component, with
// its outgoing clients and keyring (no network access yet). It fails when
// the signing identity (ServerName, KeyID, PrivateKey) is incomplete.
func New(ctx context.Context, cfg Config, db *sqlutil.DB, b *bus.Bus, rooms Rooms, input Inputer, users Users, log *slog.Logger) (*FederationAPI, error) {
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.PrivateKey) != ed25519.PrivateKeySize || cfg.KeyID == "" || cfg.ServerName == "" {
		return nil, fmt.Errorf("federationapi: server name, key ID and ed25519 signing key are required")
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("federationapi: %w", err)
	}
	if cfg.KeyValidity <= 0 {
		cfg.KeyValidity = 24 * time.Hour
	}
	if cfg.KeyCacheSize <= 0 {
		cfg.KeyCacheSize = DefaultKeyCacheSize
	}
	f := &FederationAPI{cfg: cfg, store: st, bus: b, rooms: rooms, input: input, users: users,
		log: log.With("component", "federationapi"), outbox: storage.Outbox.Outbox(st.DB())}
	if du, ok := users.(DeviceListUsers); ok {
		f.devUsers = du
	}
	f.policy = newDomainPolicy(cfg.DomainAllowlist, cfg.DomainDenylist)
	f.client, f.keyClient = f.newClients()
	f.initKeyRing()
	f.queues = newQueues(f)
	f.metrics = newMetrics(cfg.Registry)
	if cfg.Registry != nil {
		_ = cfg.Registry.Register(queueCollector{st.DB()})
	}
	return f, nil
}

// Start starts the consumers of RoomOutput (events to send) and
// FederationOut (EDUs to send) and the queues of the destinations with
// something left to send.
func (f *FederationAPI) Start(ctx context.Context) error {
	// What a crash left in the outbox goes out now, and what a failed
	// publish leaves later.
	if err := f.outbox.Flush(ctx, f.bus); err != nil {
		f.log.Warn("publishing the outbox failed: the relay retries", slog.String("error", err.Error()))
	}
	stopRelay := f.outbox.Relay(f.bus, outboxRetry, f.log)
	f.stopMu.Lock()
	f.stops = append(f.stops, stopRelay)
	f.stopMu.Unlock()
	for _, c := range []struct {
		name, stream string
		handle       bus.Handler
	}{
		{roomOutputConsumer, rsapi.RoomOutputStream.Name, f.onRoomOutput},
		{eduOutConsumer, fedapi.FederationOutStream.Name, f.onFederationOut},
	} {
		stop, err := f.bus.Consume(ctx, bus.ConsumerSpec{
			Stream:  c.stream,
			Durable: c.name,
			LastApplied: func(ctx context.Context) (uint64, error) {
				return storage.ConsumerPosition(ctx, f.store.DB(), c.name)
			},
		}, c.handle)
		if err != nil {
			f.Close()
			return err
		}
		f.stopMu.Lock()
		f.stops = append(f.stops, stop)
		f.stopMu.Unlock()
	}
	if f.devUsers != nil {
		if err := f.startDeviceLists(ctx); err != nil {
			f.Close()
			return err
		}
	}
	f.stopMu.Lock()
	f.stops = append(f.stops, f.queues.stop)
	f.stopMu.Unlock()
	return f.queues.start(ctx)
}

// Close stops the consumers and queues.
func (f *FederationAPI) Close() {
	f.stopMu.Lock()
	defer f.stopMu.Unlock()
	for i := len(f.stops) - 1; i >= 0; i-- {
		f.stops[i]()
	}
	f.stops = nil
}

// Register mounts the federation and key routes. Routes under
// /_matrix/federation other than /version go through f.handle (request
// authentication).
func (f *FederationAPI) Register(srv *httputil.Server) {
	f.registerKeyRoutes(srv)
	srv.Handle(http.MethodGet, "/_matrix/federation/v1/version", f.serveVersion)
	f.handle(srv, http.MethodPut, "/_matrix/federation/v1/send/{txnId}", f.onSend, httputil.MaxBody(MaxTransactionBytes))
	f.registerServing(srv)
	f.registerUserKeys(srv)
	f.registerMembership(srv)
	srv.Handle(http.MethodGet, "/_matrix/federation/v1/openid/userinfo", f.serveOpenIDUserInfo)
}
