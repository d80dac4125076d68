package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/logbridge"
	"github.com/myelin-chat/myelin/internal/signingkey"
	"github.com/myelin-chat/myelin/setup"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func newFlags(name, usageText string, s stdio) *flag.FlagSet {
	fs := flag.NewFlagSet("myelin "+name, flag.ContinueOnError)
	fs.SetOutput(s.err)
	fs.Usage = func() {
		fmt.Fprintf(s.err, "Usage: myelin %s\n\n", usageText)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; it returns -1 to go on, or the exit code.
func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	return -1
}

func cmdRun(ctx context.Context, args []string, s stdio) int {
	fs := newFlags("run", "run [--config myelin.yaml]\n\nServes the homeserver. Without a configuration file it creates one for a\n"+
		"loopback-only test server (with open registration), its signing key and data directory.", s)
	path := fs.String("config", "myelin.yaml", "configuration file")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	firstRun := ""
	if _, err := os.Stat(*path); errors.Is(err, os.ErrNotExist) {
		if firstRun, err = writeFirstRunConfig(*path); err != nil {
			fmt.Fprintf(s.err, "myelin: %v\n", err)
			return 1
		}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(s.err, "myelin: %v\n", err)
		return 1
	}
	if complementMode() {
		if err := prepareComplement(cfg); err != nil {
			fmt.Fprintf(s.err, "myelin: %v\n", err)
			return 1
		}
	}
	log := setup.NewLogger(cfg.Logging, s.err)
	logbridge.Logrus(log) // once, before anything that uses gomatrixserverlib
	setup.ApplyMemoryLimit(cfg, log)
	srv, err := setup.New(ctx, cfg, setup.Options{Logger: log, ReleaseMemoryWhenIdle: true})
	if err != nil {
		fmt.Fprintf(s.err, "myelin: %v\n", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintf(s.err, "myelin: %v\n", err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	abs, _ := filepath.Abs(*path)
	if firstRun != "" {
		fmt.Fprintf(s.out, "Myelin found no configuration, so it created one for %s:\n"+
			"  config:      %s\n  signing key: %s\n  data:        %s\n\n",
			firstRun, abs, cfg.SigningKeyPath, filepath.Dir(strings.TrimPrefix(cfg.Database.URL, "sqlite:")))
	}
	fmt.Fprintf(s.out, "Myelin %s serving %s as %s (config %s)\n", versionString(), srv.URL(), cfg.ServerName, abs)
	if cfg.Registration.Enabled {
		fmt.Fprintf(s.out, "Registration is open. Create a user with:\n"+
			"  curl -X POST %s/_matrix/client/v3/register -d '{\"username\":\"alice\",\"password\":\"choose-a-password\",\"auth\":{\"type\":\"m.login.dummy\"}}'\n"+
			"or point a Matrix client such as Element at %s\n", srv.URL(), srv.URL())
	} else {
		fmt.Fprintf(s.out, "Registration is closed. Create a user with: myelin create-account --config %s --username alice\n", *path)
	}
	return exitCode(s, srv.Wait(ctx))
}

func exitCode(s stdio, err error) int {
	if err != nil {
		fmt.Fprintf(s.err, "myelin: %v\n", err)
		return 1
	}
	return 0
}

// writeFirstRunConfig writes the first-run configuration (see
// firstRunConfig), its signing key and data directory next to path, and
// says what kind of server it is for.
func writeFirstRunConfig(path string) (string, error) {
	cfg, what, err := firstRunConfig()
	if err != nil {
		return "", err
	}
	out, err := cfg.Marshal()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	keyPath := cfg.SigningKeyPath
	if !filepath.IsAbs(keyPath) {
		keyPath = filepath.Join(dir, keyPath)
	}
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		k, err := signingkey.Generate()
		if err != nil {
			return "", err
		}
		if err := signingkey.Write(keyPath, k); err != nil {
			return "", fmt.Errorf("write signing key: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(out)
	return what, errors.Join(err, f.Close())
}

func cmdGenerateConfig(_ context.Context, args []string, s stdio) int {
	fs := newFlags("generate-config", "generate-config --server-name example.org [-o myelin.yaml]\n\n"+
		"Writes a production configuration: registration off, a random registration shared secret,\n"+
		"listening on all interfaces, every option commented.", s)
	name := fs.String("server-name", "", "the server name (domain of user IDs); required")
	outPath := fs.String("o", "", "write to this file instead of standard output")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *name == "" {
		fmt.Fprintln(s.err, "myelin generate-config: --server-name is required")
		return 2
	}
	cfg := config.Production(*name)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(s.err, "myelin generate-config: %v\n", err)
		return 2
	}
	out, err := cfg.Marshal()
	if err != nil {
		fmt.Fprintf(s.err, "myelin generate-config: %v\n", err)
		return 1
	}
	if *outPath == "" {
		_, _ = s.out.Write(out)
		return 0
	}
	if err := os.WriteFile(*outPath, out, 0o600); err != nil {
		fmt.Fprintf(s.err, "myelin generate-config: %v\n", err)
		return 1
	}
	return 0
}

func cmdGenerateKeys(_ context.Context, args []string, s stdio) int {
	fs := newFlags("generate-keys", "generate-keys [--key data/signing.key] [--tls-cert cert.pem --tls-key key.pem --server-name name]\n\n"+
		"Creates an ed25519 signing key (never overwriting one), and optionally a self-signed\n"+
		"TLS certificate for the federation listener.", s)
	keyPath := fs.String("key", "data/signing.key", "where to write the signing key")
	certPath := fs.String("tls-cert", "", "also write a self-signed TLS certificate here")
	tlsKeyPath := fs.String("tls-key", "", "the private key of that certificate")
	name := fs.String("server-name", "", "the host name the certificate is for")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *keyPath != "" {
		k, err := signingkey.Generate()
		if err == nil {
			err = signingkey.Write(*keyPath, k)
		}
		if err != nil {
			fmt.Fprintf(s.err, "myelin generate-keys: %v\n", err)
			return 1
		}
		fmt.Fprintf(s.out, "wrote signing key %s to %s\n", k.ID, *keyPath)
	}
	if *certPath != "" || *tlsKeyPath != "" {
		if *certPath == "" || *tlsKeyPath == "" || *name == "" {
			fmt.Fprintln(s.err, "myelin generate-keys: --tls-cert, --tls-key and --server-name go together")
			return 2
		}
		if err := writeSelfSigned(*certPath, *tlsKeyPath, *name); err != nil {
			fmt.Fprintf(s.err, "myelin generate-keys: %v\n", err)
			return 1
		}
		fmt.Fprintf(s.out, "wrote a self-signed certificate for %s to %s\n", *name, *certPath)
	}
	return 0
}

func writeSelfSigned(certPath, keyPath, name string) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	host, _, err := net.SplitHostPort(name)
	if err != nil {
		host = name
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

func cmdCreateAccount(ctx context.Context, args []string, s stdio) int {
	fs := newFlags("create-account", "create-account --username alice [--admin] [--config myelin.yaml]\n\n"+
		"Creates an account directly in the database (the server may be running). The password is\n"+
		"asked for at a prompt, or read from the first line of standard input when it is not a terminal.", s)
	path := fs.String("config", "myelin.yaml", "configuration file")
	username := fs.String("username", "", "localpart of the new user ID; required")
	admin := fs.Bool("admin", false, "make the user a server admin")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *username == "" {
		fmt.Fprintln(s.err, "myelin create-account: --username is required")
		return 2
	}
	cfg, err := loadValid(*path)
	if err != nil {
		fmt.Fprintf(s.err, "myelin create-account: %v\n", err)
		return 1
	}
	password, err := readPassword(s)
	if err != nil {
		fmt.Fprintf(s.err, "myelin create-account: %v\n", err)
		return 1
	}
	userID, err := setup.CreateAccount(ctx, cfg, *username, password, *admin)
	if err != nil {
		fmt.Fprintf(s.err, "myelin create-account: %v\n", err)
		return 1
	}
	fmt.Fprintf(s.out, "created %s\n", userID)
	return 0
}

// readPassword prompts twice on a terminal, or reads one line otherwise.
func readPassword(s stdio) (string, error) {
	if f, ok := s.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(s.err, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(s.err)
		if err != nil {
			return "", err
		}
		fmt.Fprint(s.err, "Password again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(s.err)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords do not match")
		}
		if len(p1) == 0 {
			return "", errors.New("empty password")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(s.in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}

func cmdCheckConfig(_ context.Context, args []string, s stdio) int {
	fs := newFlags("check-config", "check-config [--config myelin.yaml]\n\nValidates the configuration and reports every problem.", s)
	path := fs.String("config", "myelin.yaml", "configuration file")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if _, err := loadValid(*path); err != nil {
		fmt.Fprintf(s.err, "%s is not valid:\n%v\n", *path, err)
		return 1
	}
	fmt.Fprintf(s.out, "%s is valid\n", *path)
	return 0
}

// loadValid loads a configuration file and validates it.
func loadValid(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, cfg.Validate()
}

func cmdVersion(_ context.Context, args []string, s stdio) int {
	fs := newFlags("version", "version", s)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	fmt.Fprintf(s.out, "myelin %s\n", versionString())
	return 0
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
