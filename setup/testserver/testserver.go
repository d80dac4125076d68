// Package testserver starts the real homeserver (setup) in-process on
// 127.0.0.1 with a fresh data directory, for black-box tests.
package testserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/logbridge"
	"github.com/myelin-chat/myelin/internal/signingkey"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup"
)

// SharedSecret is the registration shared secret of test servers.
const SharedSecret = "test-shared-secret"

// Options adjust a test server.
type Options struct {
	// Postgres runs the server on a fresh PostgreSQL schema (the test is
	// skipped when MYELIN_TEST_POSTGRES is not set).
	Postgres bool
	// Configure edits the configuration before the server starts.
	Configure func(*config.Config)
}

// Server is a running test homeserver.
type Server struct {
	*setup.Server
	t    testing.TB
	Dir  string
	URL  string
	addr string
	// Name is the server name.
	Name string
	// fed is the server's place in a federation Network (nil outside one).
	fed *member
}

// Start starts a server and stops it when the test ends. Its server name
// is its listening address (127.0.0.1:port). Rate limiting is off unless
// Configure turns it on; bcrypt uses its lowest cost.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	return start(t, o, nil, "")
}

func start(t testing.TB, o Options, n *Network, name string) *Server {
	t.Helper()
	dir := t.TempDir()
	host := "127.0.0.1"
	var m *member
	if n != nil {
		m = n.add(t, name, dir)
		host = m.ip
	}
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if name == "" {
		name = addr
	}
	cfg := config.Defaults(name)
	// No notary: a test server asks other servers for their keys itself.
	cfg.Federation.TrustedKeyServers = nil
	cfg.SigningKeyPath = filepath.Join(dir, "signing.key")
	cfg.NATS.StoreDir = filepath.Join(dir, "jetstream")
	cfg.Media.StorePath = filepath.Join(dir, "media")
	cfg.Listeners.HTTP.Address = addr
	cfg.Auth.BcryptCost = 4
	cfg.RateLimiting.Enabled = false
	cfg.Push.AllowPrivateAddresses = true // fake push gateways listen on 127.0.0.1
	cfg.Registration.Enabled = true
	cfg.Registration.SharedSecret = SharedSecret
	cfg.Database.URL = "sqlite:" + filepath.Join(dir, "myelin.db")
	if o.Postgres {
		if os.Getenv(sqltest.PostgresEnv) == "" {
			ln.Close()
			t.Skip(sqltest.PostgresEnv + " not set")
		}
		cfg.Database.URL = sqltest.DSN(t, sqlutil.Postgres)
	}
	if m != nil {
		m.configure(cfg)
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	k, err := signingkey.Generate()
	if err == nil {
		err = signingkey.Write(cfg.SigningKeyPath, k)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, Dir: dir, URL: "http://" + addr, addr: addr, Name: name, fed: m}
	s.start(ln, cfg)
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Server) start(ln net.Listener, cfg *config.Config) {
	s.t.Helper()
	// As cmd/myelin does at process start: gomatrixserverlib's logrus output
	// goes to slog, once for the test process.
	logrusOnce.Do(func() { logbridge.Logrus(testLogger()) })
	o := setup.Options{Logger: testLogger(), Listener: ln}
	if s.fed != nil {
		o.FederationListener = s.fed.listen(s.t)
		o.FederationResolver = s.fed.net.Resolver
	}
	srv, err := setup.New(context.Background(), cfg, o)
	if err != nil {
		ln.Close()
		s.t.Fatalf("start server: %v", err)
	}
	if err := srv.Start(); err != nil {
		s.t.Fatalf("start server: %v", err)
	}
	s.Server = srv
}

// Stop shuts the server down (safe to call twice).
func (s *Server) Stop() {
	if s.Server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Server.Shutdown(ctx); err != nil {
		s.t.Errorf("shutdown: %v", err)
	}
	s.Server = nil
}

// Restart stops the server and starts it again on the same address, with
// the same configuration and data.
func (s *Server) Restart() {
	s.t.Helper()
	cfg := s.Config
	s.Stop()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("relisten on %s: %v", s.addr, err)
	}
	s.start(ln, cfg)
}

// Client returns an anonymous client for the server.
func (s *Server) Client() *testutil.Client {
	return testutil.NewClient(s.t, s.URL)
}

var logrusOnce sync.Once

func testLogger() *slog.Logger {
	if os.Getenv("MYELIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
