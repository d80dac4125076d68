package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// The environment of the container image (see build/Dockerfile).
const (
	// envComplement = "1" runs the server the way Complement, the Matrix
	// test suite, expects of a homeserver image.
	envComplement = "MYELIN_COMPLEMENT"
	// envComplementDir is where Complement mounts ca/ and appservice/
	// (/complement; tests change it).
	envComplementDir = "MYELIN_COMPLEMENT_DIR"
	// envServerName names the server when a container starts without a
	// configuration file.
	envServerName = "MYELIN_SERVER_NAME"
	// envContainer = "1" is set by the image: a first start there needs a
	// server name (a loopback-only server would be unreachable).
	envContainer = "MYELIN_CONTAINER"
)

func complementMode() bool { return os.Getenv(envComplement) == "1" }

func complementDir() string {
	if d := os.Getenv(envComplementDir); d != "" {
		return d
	}
	return "/complement"
}

// firstRunConfig is the configuration a start without a configuration file
// writes, and what it tells the operator about it:
//   - in Complement mode, Complement's homeserver (named by SERVER_NAME);
//   - with MYELIN_SERVER_NAME (a container), a production configuration for
//     that name listening on all interfaces;
//   - otherwise a test server only this machine can reach.
func firstRunConfig() (*config.Config, string, error) {
	switch {
	case complementMode():
		name := os.Getenv("SERVER_NAME")
		if name == "" {
			return nil, "", errors.New("MYELIN_COMPLEMENT=1 needs SERVER_NAME")
		}
		c := config.Defaults(name)
		c.Listeners.HTTP.Address = "0.0.0.0:8008"
		c.Listeners.FederationTLS = config.TLSListener{Address: "0.0.0.0:8448", CertPath: "data/federation.crt", KeyPath: "data/federation.key"}
		c.Registration.Enabled = true
		c.Registration.SharedSecret = "complement"
		c.RateLimiting.Enabled = false
		c.Auth.BcryptCost = 4
		c.Federation.AllowPrivateAddresses = true
		c.Federation.AllowDeviceNameLookup = true // as Complement's Synapse
		c.Push.AllowPrivateAddresses = true       // Complement's push gateways are at host.docker.internal
		c.Federation.TrustedKeyServers = []config.TrustedKeyServer{}
		c.Federation.CACertsPath = filepath.Join(complementDir(), "ca", "ca.crt")
		return c, "a server for Complement", nil
	case os.Getenv(envServerName) != "":
		c := config.Production(os.Getenv(envServerName))
		return c, "a server named " + c.ServerName + " listening on all interfaces", nil
	case os.Getenv(envContainer) == "1":
		return nil, "", errors.New("no configuration at /data/myelin.yaml: set MYELIN_SERVER_NAME to create one, or mount one")
	}
	return config.FirstRun(), "a server only this machine can reach", nil
}

// prepareComplement does what Complement expects at every start: the
// federation certificate for the server name, issued by the CA Complement
// mounts (so that other containers trust it), and the application
// service registrations it writes.
func prepareComplement(cfg *config.Config) error {
	dir := complementDir()
	caCert, err := os.ReadFile(filepath.Join(dir, "ca", "ca.crt"))
	if err != nil {
		return fmt.Errorf("complement CA: %w", err)
	}
	caKey, err := os.ReadFile(filepath.Join(dir, "ca", "ca.key"))
	if err != nil {
		return fmt.Errorf("complement CA key: %w", err)
	}
	host := cfg.ServerName
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	cert, key, err := tlsutil.IssueCert(caCert, caKey, []string{host}, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("federation certificate: %w", err)
	}
	t := cfg.Listeners.FederationTLS
	if err := os.MkdirAll(filepath.Dir(t.CertPath), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(t.CertPath, cert, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(t.KeyPath, key, 0o600); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "appservice", "*.yaml"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	cfg.AppServiceConfigFiles = append(cfg.AppServiceConfigFiles, files...)
	return nil
}

func cmdHealthcheck(ctx context.Context, args []string, s stdio) int {
	fs := newFlags("healthcheck", "healthcheck [--config myelin.yaml | --url http://127.0.0.1:8008]\n\n"+
		"Exits 0 when the server answers /_matrix/client/versions (the container's HEALTHCHECK).", s)
	path := fs.String("config", "myelin.yaml", "configuration file, for the address of the HTTP listener")
	base := fs.String("url", "", "base URL of the client API (instead of the configuration's listener)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *base == "" {
		*base = "http://127.0.0.1:8008"
		if cfg, err := config.Load(*path); err == nil {
			*base = "http://" + loopbackAddr(cfg.Listeners.HTTP.Address)
		} else if !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(s.err, "myelin healthcheck: %v\n", err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *base+"/_matrix/client/versions", nil)
	if err != nil {
		fmt.Fprintf(s.err, "myelin healthcheck: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(s.err, "myelin healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(s.err, "myelin healthcheck: %s answered %d\n", *base, resp.StatusCode)
		return 1
	}
	return 0
}

// loopbackAddr turns a listening address into one to connect to: an
// unspecified host (0.0.0.0, ::, empty) becomes 127.0.0.1.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
