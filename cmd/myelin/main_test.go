package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/util"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
)

func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// generate-config writes a production configuration that loads back and
// validates.
func TestGenerateConfigRoundTrips(t *testing.T) {
	code, out, errs := runCLI(t, "", "generate-config", "--server-name", "example.org")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	cfg, err := config.Parse([]byte(out))
	if err != nil {
		t.Fatalf("generated config does not parse: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("generated config is invalid: %v", err)
	}
	if cfg.ServerName != "example.org" || cfg.Registration.Enabled || cfg.Registration.SharedSecret == "" ||
		!strings.HasPrefix(cfg.Listeners.HTTP.Address, "0.0.0.0:") {
		t.Fatalf("not a production config: %+v", cfg)
	}
	if strings.Count(out, "\n#")+strings.Count(out, "\n  #") < 30 {
		t.Fatalf("options are not commented:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "prod.yaml")
	if code, _, errs := runCLI(t, "", "generate-config", "--server-name", "example.org", "-o", path); code != 0 {
		t.Fatalf("-o: exit %d: %s", code, errs)
	}
	if code, out, _ := runCLI(t, "", "check-config", "--config", path); code != 0 || !strings.Contains(out, "is valid") {
		t.Fatalf("check-config on generated file: exit %d %s", code, out)
	}
	if code, _, _ := runCLI(t, "", "generate-config"); code != 2 {
		t.Fatalf("generate-config without --server-name: exit %d, want 2", code)
	}
}

func TestCheckConfigReportsProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("server_name: \"bad name\"\nauth:\n  bcrypt_cost: 1\nlogging:\n  level: loud\n"), 0o600)
	code, _, errs := runCLI(t, "", "check-config", "--config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, key := range []string{"server_name", "auth.bcrypt_cost", "logging.level"} {
		if !strings.Contains(errs, key) {
			t.Errorf("report does not name %s:\n%s", key, errs)
		}
	}
	os.WriteFile(path, []byte("server_name: a.org\nunknown_key: 1\n"), 0o600)
	if code, _, errs := runCLI(t, "", "check-config", "--config", path); code != 1 || !strings.Contains(errs, "unknown_key") {
		t.Fatalf("unknown key: exit %d: %s", code, errs)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, c := range commands {
		code, _, errs := runCLI(t, "", c.name, "--help")
		if code != 0 || !strings.Contains(errs, "Usage: myelin "+c.name) {
			t.Errorf("%s --help: exit %d, output %q", c.name, code, errs)
		}
	}
	if code, out, _ := runCLI(t, "", "--help"); code != 0 || !strings.Contains(out, "create-account") {
		t.Errorf("--help: exit %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "", "version"); code != 0 || !strings.HasPrefix(out, "myelin ") {
		t.Errorf("version: exit %d %q", code, out)
	}
	if code, _, _ := runCLI(t, "", "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

// The README's run command in an empty folder: a config, a key and a data
// directory appear, the server answers, SIGTERM stops it with status 0, and
// a second start reuses everything.
func TestFirstRunRestartAndCreateAccount(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	addr := testutil.FreeLoopbackAddr(t)
	base := "http://" + addr

	p := startBinary(t, bin, dir, addr)
	c := testutil.NewClient(t, base)
	alice := c.Register("alice", "wonderland")
	for _, f := range []string{"myelin.yaml", "data/signing.key", "data/myelin.db", "data/jetstream", "data/media"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("first run did not create %s: %v", f, err)
		}
	}
	if !strings.Contains(p.stdout.String(), "Registration is open") {
		t.Errorf("first run output does not say how to register:\n%s", p.stdout.String())
	}
	key, _ := os.ReadFile(filepath.Join(dir, "data/signing.key"))
	cfgBefore, _ := os.ReadFile(filepath.Join(dir, "myelin.yaml"))
	p.stop(t, syscall.SIGTERM)

	// create-account works against the same data, password from stdin.
	cmd := exec.Command(bin, "create-account", "--username", "bob", "--admin")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("builder\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "@bob:localhost:8008") {
		t.Fatalf("create-account: %v\n%s", err, out)
	}

	p = startBinary(t, bin, dir, addr)
	key2, _ := os.ReadFile(filepath.Join(dir, "data/signing.key"))
	cfgAfter, _ := os.ReadFile(filepath.Join(dir, "myelin.yaml"))
	if !bytes.Equal(key, key2) || !bytes.Equal(cfgBefore, cfgAfter) {
		t.Error("the second start regenerated the key or the configuration")
	}
	if strings.Contains(p.stdout.String(), "created one") {
		t.Error("the second start claims to have created a configuration")
	}
	alice.MustDo("GET", "/_matrix/client/v3/account/whoami", nil, http.StatusOK)
	c.Login("alice", "wonderland")
	c.Login("bob", "builder")
	p.stop(t, syscall.SIGINT)
}

type proc struct {
	cmd    *exec.Cmd
	stdout *testutil.LockedBuffer
	stderr *testutil.LockedBuffer // also copied to the test's stderr
	done   chan error
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// buildBinary builds the myelin binary once for the package's tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "myelin-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "myelin")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func startBinary(t *testing.T, bin, dir, addr string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "MYELIN_LISTENERS_HTTP_ADDRESS="+addr, "MYELIN_AUTH_BCRYPT_COST=4", "MYELIN_LOGGING_LEVEL=warn"), env...)
	p := &proc{cmd: cmd, stdout: &testutil.LockedBuffer{}, stderr: &testutil.LockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout = p.stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, p.stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	testutil.Eventually(t, 20*time.Second, "the server to answer", func() bool {
		resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return p
}

func (p *proc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after %v: %v", sig, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("took %v to stop", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("did not stop within 15s of %v", sig)
	}
}

// With federation off (nothing in setup touches logrus then), what
// gomatrixserverlib logs through logrus still reaches the server's slog
// output: cmdRun routes it once at start. Before, only building the
// federation API did, so such lines went to raw stderr without it.
func TestRunSendsLogrusToSlogWithoutFederation(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeLoopbackAddr(t)
	t.Setenv("MYELIN_FEDERATION_ENABLED", "false")
	t.Setenv("MYELIN_LOGGING_LEVEL", "debug")
	t.Setenv("MYELIN_LOGGING_FORMAT", "json")
	t.Setenv("MYELIN_LISTENERS_HTTP_ADDRESS", addr)
	t.Setenv("MYELIN_AUTH_BCRYPT_COST", "4")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testutil.LockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "--config", filepath.Join(dir, "myelin.yaml")}, strings.NewReader(""), &out, &errb)
	}()
	testutil.Eventually(t, 20*time.Second, "the server to answer", func() bool {
		resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	// util.GetLogger is the logrus entry gomatrixserverlib logs through.
	util.GetLogger(ctx).WithField("probe", "p1").Warn("gomatrixserverlib probe line")
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d:\n%s", code, errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	for _, line := range strings.Split(errb.String(), "\n") {
		if strings.Contains(line, "gomatrixserverlib probe line") {
			if !strings.HasPrefix(line, "{") || !strings.Contains(line, `"from":"gomatrixserverlib"`) || !strings.Contains(line, `"probe":"p1"`) {
				t.Errorf("the logrus line did not go through slog's JSON handler: %s", line)
			}
			return
		}
	}
	t.Errorf("the logrus line is not in the server's log:\n%s", errb.String())
}
