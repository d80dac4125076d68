package main

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// Complement mode, as the image runs it with MYELIN_COMPLEMENT=1: the name
// from SERVER_NAME, open registration, shared secret "complement", a
// federation certificate issued at start by Complement's CA, application
// service files read, and everything reused after a restart.
func TestComplementMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir, comp := t.TempDir(), t.TempDir()
	caCert, caKey, err := tlsutil.NewCA("Complement test CA")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"ca/ca.crt": caCert, "ca/ca.key": caKey,
		"appservice/bridge.yaml": []byte("id: bridge\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\nnamespaces: {}\n"),
	} {
		p := filepath.Join(comp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr, fedAddr := testutil.FreeLoopbackAddr(t), testutil.FreeLoopbackAddr(t)
	env := []string{"MYELIN_COMPLEMENT=1", "SERVER_NAME=hs1", "MYELIN_COMPLEMENT_DIR=" + comp, "MYELIN_LISTENERS_FEDERATION_TLS_ADDRESS=" + fedAddr}
	p := startBinary(t, bin, dir, addr, env...)
	c := testutil.NewClient(t, "http://"+addr)
	alice := c.Register("alice", "pw-alice")
	if alice.UserID != "@alice:hs1" {
		t.Fatalf("registered %s", alice.UserID)
	}
	complementRegister(t, c, "admin", "pw-admin")

	// The federation listener presents a certificate for hs1 from the CA.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "hs1"}}}
	resp, err := hc.Get("https://" + fedAddr + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatalf("key server over TLS: %v", err)
	}
	var keys struct {
		ServerName string `json:"server_name"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&keys)
	resp.Body.Close()
	if resp.StatusCode != 200 || keys.ServerName != "hs1" {
		t.Fatalf("key server: %d %+v", resp.StatusCode, keys)
	}
	cfg, err := config.Load(filepath.Join(dir, "myelin.yaml"))
	if err != nil || cfg.Registration.SharedSecret != "complement" || cfg.RateLimiting.Enabled || !cfg.Federation.AllowPrivateAddresses ||
		!cfg.Push.AllowPrivateAddresses {
		t.Fatalf("complement configuration %+v %v", cfg, err)
	}
	// The health check the image runs.
	if out, err := exec.Command(bin, "healthcheck", "--config", filepath.Join(dir, "myelin.yaml"), "--url", "http://"+addr).CombinedOutput(); err != nil {
		t.Fatalf("healthcheck: %v %s", err, out)
	}
	p.stop(t, syscall.SIGTERM)
	if err := exec.Command(bin, "healthcheck", "--url", "http://"+addr).Run(); err == nil {
		t.Fatal("healthcheck passes with the server down")
	}

	// A restart (Complement snapshots and restarts containers) reuses it all.
	startBinary(t, bin, dir, addr, env...)
	c.Login("alice", "pw-alice")
	c.Login("admin", "pw-admin")

	// A broken application service file stops the start with its reason.
	if err := os.WriteFile(filepath.Join(comp, "appservice", "broken.yaml"), []byte("id: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "MYELIN_LISTENERS_HTTP_ADDRESS="+testutil.FreeLoopbackAddr(t), "MYELIN_LISTENERS_FEDERATION_TLS_ADDRESS="+testutil.FreeLoopbackAddr(t))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "broken.yaml") {
		t.Fatalf("a broken registration file: %v\n%s", err, out)
	}
}

// complementRegister creates an account through the shared-secret admin
// endpoint with Complement's secret.
func complementRegister(t *testing.T, c *testutil.Client, user, pw string) {
	t.Helper()
	nonce := c.MustDo("GET", "/_synapse/admin/v1/register", nil, 200)["nonce"].(string)
	m := hmac.New(sha1.New, []byte("complement"))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + pw + "\x00notadmin"))
	c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": nonce, "username": user, "password": pw,
		"mac": hex.EncodeToString(m.Sum(nil))}, 200)
}

// A container without a configuration file and with MYELIN_SERVER_NAME
// gets a production configuration for that name.
func TestContainerFirstRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir, addr := t.TempDir(), testutil.FreeLoopbackAddr(t)
	p := startBinary(t, bin, dir, addr, "MYELIN_SERVER_NAME=chat.example.test")
	cfg, err := config.Load(filepath.Join(dir, "myelin.yaml"))
	if err != nil || cfg.ServerName != "chat.example.test" || cfg.Registration.Enabled || cfg.Registration.SharedSecret == "" {
		t.Fatalf("container configuration %+v %v", cfg, err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "myelin.yaml"))
	if !strings.Contains(string(raw), "0.0.0.0:8008") {
		t.Fatal("the container configuration does not listen on all interfaces")
	}
	if !strings.Contains(p.stdout.String(), "a server named chat.example.test") {
		t.Fatalf("first-run message:\n%s", p.stdout.String())
	}
	p.stop(t, syscall.SIGTERM)
}
