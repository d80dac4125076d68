// Package setup is Myelin's composition root: it opens and migrates the
// database, starts or joins NATS and declares the streams, builds the
// components in dependency order, mounts their routes, serves them, and shuts
// everything down in reverse order. Only cmd and tests import it.
package setup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/myelin-chat/myelin/appservice"
	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/clientapi"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/federationapi"
	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/transport"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/signingkey"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
	"github.com/myelin-chat/myelin/userapi"
	userapiapi "github.com/myelin-chat/myelin/userapi/api"
)

// Options adjust how a server is built (mostly for tests).
type Options struct {
	// Logger receives the server's logs; nil builds one from the config.
	Logger *slog.Logger
	// Registry receives the metrics; nil creates one.
	Registry *prometheus.Registry
	// Listener, when set, is used instead of listening on
	// listeners.http.address (tests pass 127.0.0.1:0).
	Listener net.Listener
	// FederationListener, when set, is used instead of listening on
	// listeners.federation_tls.address.
	FederationListener net.Listener
	// FederationResolver answers the DNS questions of server discovery
	// (nil: the system's resolver); tests give their servers names.
	FederationResolver transport.Resolver
	// ReleaseMemoryWhenIdle returns free memory to the OS once the server
	// has gone idleRelease without a request (see idleReleaser). It acts on
	// the whole process, so the binary turns it on and tests, which run
	// many servers in one process, leave it off.
	ReleaseMemoryWhenIdle bool
}

// Server is a running homeserver.
type Server struct {
	Config   *config.Config
	Log      *slog.Logger
	Registry *prometheus.Registry
	Key      *signingkey.Key
	Handler  *httputil.Server

	DB    *sqlutil.DB
	Bus   *bus.Bus
	Users *userapi.UserAPI
	Rooms *roomserver.Roomserver
	// Federation is nil when federation is off.
	Federation *federationapi.FederationAPI
	// AppServices are the registered application services (bridges).
	AppServices *asapi.Registry
	// ASQueries asks the application services about users and aliases in
	// their namespaces and their third-party networks.
	ASQueries *asapi.Querier

	ln    net.Listener
	fedLn net.Listener
	// releaseIdle is Options.ReleaseMemoryWhenIdle.
	releaseIdle bool
	servers     []*http.Server
	fresh       freshConns
	closers     []func()
	drainers    []func() // run when shutdown starts: end long-polls
	serveErr    chan error
}

// New builds every component. It returns once the database is migrated and
// the streams exist; Start begins serving.
func New(ctx context.Context, cfg *config.Config, o Options) (s *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	s = &Server{Config: cfg, Log: o.Logger, Registry: o.Registry, ln: o.Listener, fedLn: o.FederationListener, serveErr: make(chan error, 3),
		releaseIdle: o.ReleaseMemoryWhenIdle}
	if s.Log == nil {
		s.Log = NewLogger(cfg.Logging, nil)
	}
	if s.Registry == nil {
		s.Registry = prometheus.NewRegistry()
		s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	if err := os.MkdirAll(cfg.Media.StorePath, 0o700); err != nil {
		return nil, fmt.Errorf("media store: %w", err)
	}
	if s.AppServices, err = appServiceRegistry(cfg); err != nil {
		return nil, fmt.Errorf("application services: %w", err)
	}
	if s.ASQueries, err = asapi.NewQuerier(s.AppServices, asapi.QuerierOptions{
		Timeout: time.Duration(cfg.ASQueryTimeout), Registry: s.Registry, Logger: s.Log,
	}); err != nil {
		return nil, err
	}
	if s.Key, err = signingkey.Load(cfg.SigningKeyPath); err != nil {
		return nil, fmt.Errorf("signing key: %w (create one with 'myelin generate-keys')", err)
	}
	if s.DB, err = sqlutil.Open(ctx, cfg.Database.URL, sqlutil.Options{MaxOpenConns: cfg.Database.MaxOpenConns,
		SQLiteCacheSize: int64(cfg.Database.SQLiteCacheSize)}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.DB.Close() })
	if err := s.DB.RegisterMetrics(s.Registry); err != nil {
		return nil, fmt.Errorf("database metrics: %w", err)
	}

	if s.Bus, err = bus.Open(ctx, bus.Config{URLs: cfg.NATS.URLs, StoreDir: cfg.NATS.StoreDir, Prefix: cfg.NATS.Prefix,
		MaxMemory: int64(cfg.NATS.MaxMemory), MaxStore: int64(cfg.NATS.MaxStore)}, s.Log); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.Bus.Close)
	if err := s.Bus.RegisterMetrics(s.Registry); err != nil {
		return nil, fmt.Errorf("bus metrics: %w", err)
	}
	if err := s.Bus.EnsureStreams(ctx, append(append(append(userapiapi.Streams(), rsapi.Streams()...), fedapi.Streams()...), syncout.Streams()...)...); err != nil {
		return nil, err
	}

	var limiter *httputil.RateLimiter
	if rl := cfg.RateLimiting; rl.Enabled {
		rate := func(r config.Rate) httputil.Rate { return httputil.Rate{PerSecond: r.PerSecond, Burst: r.Burst} }
		limiter = httputil.NewRateLimiter(map[string]httputil.Rate{
			clientapi.RateLogin:         rate(rl.Login),
			clientapi.RateFailedLogin:   rate(rl.FailedLogin),
			clientapi.RateRegistration:  rate(rl.Registration),
			clientapi.RateMessage:       rate(rl.Message),
			clientapi.RateTokenValidity: rate(rl.RegistrationTokenValidity),
			clientapi.RateRoomCreation:  rate(rl.RoomCreation),
			clientapi.RateJoinLocal:     rate(rl.Joins.Local),
			clientapi.RateJoinRemote:    rate(rl.Joins.Remote),
			clientapi.RateInviteRoom:    rate(rl.Invites.PerRoom),
			clientapi.RateInviteUser:    rate(rl.Invites.PerUser),
			clientapi.RateInviteIssuer:  rate(rl.Invites.PerIssuer),
		}, rl.ExemptUserIDs)
	}

	// marks carries the positions of writes from their producers to the
	// sync API: read-your-writes by position, in this process.
	marks := bus.NewWriteMarks()
	s.Users, err = userapi.New(ctx, userapi.Config{
		ServerName:          cfg.ServerName,
		BcryptCost:          cfg.Auth.BcryptCost,
		AccessTokenLifetime: time.Duration(cfg.Auth.AccessTokenLifetime),
		Marks:               marks,
		AppServices:         s.AppServices,
		TokenCacheSize:      cfg.Caches.AccessTokens,
	}, s.DB, s.Bus, s.Log)
	if err != nil {
		return nil, err
	}
	if err := ensureAppServiceSenders(ctx, s.Users, s.AppServices); err != nil {
		return nil, err
	}
	s.Users.Start()
	s.closers = append(s.closers, s.Users.Close)
	rooms, err := roomserver.New(ctx, roomserver.Config{
		ServerName: spec.ServerName(cfg.ServerName),
		KeyID:      gomatrixserverlib.KeyID(s.Key.ID),
		PrivateKey: s.Key.Private,
		Registry:   s.Registry,
		Marks:      marks,
		Caches: roomserver.CacheSizes{
			Events:          cfg.Caches.RoomEvents,
			SnapshotEntries: cfg.Caches.StateSnapshots,
			BlockEntries:    cfg.Caches.StateBlocks,
			BlockIDs:        cfg.Caches.StateBlockIDs,
			StateKeys:       cfg.Caches.StateKeys,
		},
	}, s.DB, s.Bus, s.Log)
	if err != nil {
		return nil, err
	}
	// The components run until Shutdown stops them, not until ctx (the
	// process's signal context) is done: a SIGTERM must let them finish the
	// work of the requests still being served.
	runCtx := context.WithoutCancel(ctx)
	if err := rooms.Start(runCtx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, rooms.Close)
	s.Rooms = rooms
	inputer, err := rsapi.NewInputer(s.Bus)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, inputer.Close)
	if cfg.Federation.Enabled {
		if s.Federation, err = newFederation(ctx, runCtx, s, o, inputer); err != nil {
			return nil, err
		}
	}
	// fed is the federation API as the other components take it: a nil
	// interface (not a nil pointer in one) when federation is off.
	var fed fedapi.FederationAPI
	syncCfg := syncapi.Config{
		ServerName: cfg.ServerName, PresenceEnabled: cfg.Presence.Enabled,
		IdleAfter: time.Duration(cfg.Presence.IdleAfter), OfflineAfter: time.Duration(cfg.Presence.OfflineAfter),
		PushAllowPrivateAddresses: cfg.Push.AllowPrivateAddresses, Registry: s.Registry, Marks: marks,
		Output: syncOutput(s.AppServices),
		Caches: syncapi.CacheSizes{LazyDevices: cfg.Caches.LazyMembers, PushRules: cfg.Caches.PushRules, PushRooms: cfg.Caches.PushRooms},
	}
	if s.Federation != nil {
		fed = s.Federation
		syncCfg.Backfiller = s.Federation
	}
	sync, err := syncapi.New(ctx, syncCfg, s.DB, s.Bus, rooms, s.Users, s.Log)
	if err != nil {
		return nil, err
	}
	if err := sync.Start(runCtx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, sync.Close)
	s.drainers = append(s.drainers, sync.Drain)
	// The application services' transactions: nothing when no service
	// has a URL.
	bridges, err := appservice.New(ctx, appservice.Config{
		ServerName: cfg.ServerName, Services: s.AppServices, Registry: s.Registry,
	}, s.DB, s.Bus, rooms, s.Users, s.Log)
	if err != nil {
		return nil, err
	}
	if bridges != nil {
		if err := bridges.Start(runCtx); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, bridges.Close)
	}
	client, err := clientapi.New(ctx, clientapi.Config{
		ServerName:               cfg.ServerName,
		RegistrationEnabled:      cfg.Registration.Enabled,
		RegistrationSharedSecret: cfg.Registration.SharedSecret,
		RequireRegistrationToken: cfg.Registration.RequireToken,
		GuestAccess:              cfg.Registration.GuestAccess,
		ASQueries:                s.ASQueries,
		WellKnownClient:          cfg.WellKnown.ClientBaseURL,
		WellKnownIdentity:        cfg.WellKnown.IdentityServerURL,
		WellKnownServer:          cfg.WellKnown.ServerDelegation,
		WellKnownSupport:         supportDocument(cfg.WellKnown.Support),
		TURN: clientapi.TURNConfig{URIs: cfg.VoIP.TURNURIs, SharedSecret: cfg.VoIP.TURNSharedSecret, Username: cfg.VoIP.TURNUsername,
			Password: cfg.VoIP.TURNPassword, Lifetime: time.Duration(cfg.VoIP.TURNUserLifetime), AllowGuests: cfg.VoIP.TURNAllowGuests},
		AppServices: s.AppServices,
		Relations:   sync,
	}, s.DB, s.Users, rooms, inputer, fed, limiter, s.Log)
	if err != nil {
		return nil, err
	}

	s.Handler = httputil.NewServer(httputil.ServerOptions{
		Name:              "main",
		Logger:            s.Log,
		Registry:          s.Registry,
		Authenticator:     s.Users,
		RateLimiter:       limiter,
		MaxBodyBytes:      int64(cfg.Listeners.HTTP.MaxRequestBytes),
		TrustForwardedFor: cfg.Listeners.HTTP.XForwardedFor,
	})
	client.Register(s.Handler)
	sync.Register(s.Handler)
	if s.Federation != nil {
		s.Federation.Register(s.Handler)
	}
	return s, nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	cfg := s.Config
	if s.ln == nil {
		ln, err := net.Listen("tcp", cfg.Listeners.HTTP.Address)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Listeners.HTTP.Address, err)
		}
		s.ln = ln
	}
	var handler http.Handler = s.Handler
	if s.releaseIdle {
		idle := newIdleReleaser(idleRelease, s.Log, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.DB.ReleaseMemory(ctx); err != nil {
				s.Log.Warn("idle: releasing the database's memory", slog.String("error", err.Error()))
			}
		})
		stopIdle := make(chan struct{})
		go idle.run(stopIdle)
		s.closers = append(s.closers, func() { close(stopIdle) })
		handler = idle.wrap(s.Handler)
	}
	s.serve(s.ln, handler, nil)
	if t := cfg.Listeners.FederationTLS; t.Address != "" || s.fedLn != nil {
		cert, err := tls.LoadX509KeyPair(t.CertPath, t.KeyPath)
		if err != nil {
			return fmt.Errorf("federation TLS certificate: %w", err)
		}
		ln := s.fedLn
		if ln == nil {
			if ln, err = net.Listen("tcp", t.Address); err != nil {
				return fmt.Errorf("listen on %s: %w", t.Address, err)
			}
		}
		s.serve(ln, handler, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if m := cfg.Metrics; m.Enabled {
		ln, err := net.Listen("tcp", m.Address)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", m.Address, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
		if m.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		s.serve(ln, mux, nil)
	}
	return nil
}

func (s *Server) serve(ln net.Listener, h http.Handler, tlsCfg *tls.Config) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
		ConnState:         s.fresh.track,
	}
	s.servers = append(s.servers, srv)
	go func() {
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()
}

// URL is the base URL of the client listener.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Run starts serving and then waits (see Wait).
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		_ = s.Shutdown(context.Background())
		return err
	}
	return s.Wait(ctx)
}

// Wait serves until ctx is done or a listener fails, then shuts down,
// giving requests in flight up to 6 seconds to finish and the consumers
// up to bus.DrainTimeout more for the inputs in flight: within 10 seconds
// of a SIGTERM the process has exited.
func (s *Server) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
		s.Log.Info("shutting down: finishing requests in flight")
	case err = <-s.serveErr:
		s.Log.Error("listener failed: shutting down", slog.String("error", err.Error()))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	err = errors.Join(err, s.Shutdown(sctx))
	s.Log.Info("stopped")
	return err
}

// Shutdown stops accepting requests, ends long-polls, waits for the
// requests in flight (until ctx is done), then stops the components (whose
// consumers finish the message in flight), the bus and the database.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, d := range s.drainers {
		d()
	}
	for _, srv := range s.servers {
		srv.SetKeepAlivesEnabled(false)
	}
	s.fresh.closeAll()
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			srv.Close()
		}
	}
	s.close()
	return errors.Join(errs...)
}

// freshConns are the connections that have not begun a request yet
// (http.StateNew). http.Server.Shutdown waits for such a connection until it
// is 5 seconds old, so a client that opened one just before a SIGTERM (an
// HTTP client's spare dial) would hold the shutdown most of its budget;
// Shutdown closes them first instead.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
}

func (s *Server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
