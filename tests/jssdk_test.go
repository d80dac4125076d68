//go:build unix

package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// jssdkDir holds the matrix-js-sdk scenarios (package.json, package-lock.json, *.mjs); node_modules is installed
// there by npm ci and not committed.
const jssdkDir = "jssdk"

// TestJSSDKPush is the push notifications "done when" test: a new user runs `myelin` with no configuration in an
// empty folder (the README's first run) and drives it with the real matrix-js-sdk in Node (jssdk/push.mjs): two
// users register, alice's sdk client reaches PREPARED (it fetches GET /pushrules/ first), her notification and
// highlight counts follow bob's messages and her read receipt, and her HTTP pusher reaches a fake push gateway.
// It skips when node or npm is not on PATH.
func TestJSSDKPush(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, installs matrix-js-sdk with npm and runs node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH: the matrix-js-sdk scenario needs Node.js 20 or later and npm")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not on PATH: the matrix-js-sdk scenario needs Node.js 20 or later and npm")
	}
	start := time.Now()

	// Build the binary and install the sdk at the same time.
	var (
		wg               sync.WaitGroup
		bin              string
		buildErr         error
		installErr       error
		buildT, installT time.Duration
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		t0 := time.Now()
		bin, buildErr = buildMyelin(t.TempDir())
		buildT = time.Since(t0)
	}()
	go func() {
		defer wg.Done()
		t0 := time.Now()
		installErr = npmCI(npm, jssdkDir)
		installT = time.Since(t0)
	}()
	wg.Wait()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if installErr != nil {
		t.Fatal(installErr)
	}
	t.Logf("built myelin in %v, npm packages ready in %v", buildT.Round(time.Millisecond), installT.Round(time.Millisecond))

	gw := testutil.NewPushGateway(t)
	// The scenario reads what the gateway accepted from this log.
	gwLog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ns []map[string]any
		for _, n := range gw.Notifications() {
			ns = append(ns, n.Notification)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"notifications": ns, "attempts": gw.Attempts()})
	}))
	t.Cleanup(gwLog.Close)

	srv := startFirstRun(t, bin)
	t.Logf("first-run server answering at %s after %v", srv.base, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "push.mjs", srv.base, gw.URL(), gwLog.URL)
	cmd.Dir = jssdkDir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	cmd.WaitDelay = 5 * time.Second
	var out testutil.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	runErr := cmd.Run()
	t.Logf("node push.mjs (%v):\n%s", time.Since(t0).Round(time.Millisecond), out.String())
	if runErr != nil {
		if os.Getenv("MYELIN_TEST_LOG") == "" {
			t.Logf("server output (tail):\n%s", tail(srv.out.String(), 60))
		}
		t.Fatalf("the matrix-js-sdk push scenario failed (%v); its first FAIL line above says which step, what it expected and what it saw", runErr)
	}
	srv.stop(t)
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// buildMyelin builds cmd/myelin into dir.
func buildMyelin(dir string) (string, error) {
	bin := filepath.Join(dir, "myelin")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/myelin-chat/myelin/cmd/myelin")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/myelin: %v\n%s", err, out)
	}
	return bin, nil
}

// npmCI installs dir's package-lock.json into dir/node_modules with npm ci, unless the last successful install was
// of the same lock file (recorded in node_modules/.myelin-lock-sha256). An exclusive lock on dir/.npm-install.lock
// keeps concurrent test runs from installing over each other.
func npmCI(npm, dir string) error {
	lockData, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(lockData)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".myelin-lock-sha256")

	lf, err := os.OpenFile(filepath.Join(dir, "node_modules.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)

	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json")); err == nil {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in tests/%s: %v\n%s", dir, err, out)
	}
	return os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

// firstRun is a `myelin` started with no configuration in an empty folder.
type firstRun struct {
	base string
	cmd  *exec.Cmd
	out  *testutil.LockedBuffer
	done chan error
}

// startFirstRun runs bin in a new empty folder, as `go run ./cmd/myelin` would, with only the listen address
// (a free loopback port instead of 8008) and push.allow_private_addresses (the fake gateway is on 127.0.0.1) set
// from the environment; no other MYELIN_* variable of the test's environment reaches it. It returns once the
// client API answers.
func startFirstRun(t *testing.T, bin string) *firstRun {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MYELIN_") {
			env = append(env, kv)
		}
	}
	env = append(env, "MYELIN_LISTENERS_HTTP_ADDRESS="+addr, "MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES=true")

	s := &firstRun{base: "http://" + addr, out: &testutil.LockedBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(bin)
	s.cmd.Dir = t.TempDir()
	s.cmd.Env = env
	if os.Getenv("MYELIN_TEST_LOG") != "" {
		s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	} else {
		s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.base + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("myelin exited before answering (%v):\n%s", err, s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("myelin did not answer GET /_matrix/client/versions at %s within 30s:\n%s", s.base, s.out.String())
		}
	}
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (s *firstRun) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err != nil {
			t.Errorf("myelin exited with %v after SIGTERM:\n%s", err, tail(s.out.String(), 40))
		}
	case <-time.After(15 * time.Second):
		t.Errorf("myelin did not stop within 15s of SIGTERM")
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
