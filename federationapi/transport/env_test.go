package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// env is one test's world: a CA, DNS (a StaticResolver), a movable clock,
// and a well-known server on 127.0.0.9 answering for every host the test
// registers, with certificates issued on demand for the SNI it is asked for.
type env struct {
	t      *testing.T
	caCert []byte
	caKey  []byte
	roots  *x509.CertPool
	dns    *StaticResolver
	lookup *countingResolver
	clock  *clock

	wkAddr  netip.AddrPort
	wkMu    sync.Mutex
	wk      map[string]http.HandlerFunc
	wkHits  map[string]int
	certsMu sync.Mutex
	certs   map[string]*tls.Certificate
}

const wellKnownIP = "127.0.0.9"

// quiet discards the test servers' logs of failed TLS handshakes.
var quiet = log.New(io.Discard, "", 0)

func newEnv(t *testing.T) *env {
	t.Helper()
	caCert, caKey, err := tlsutil.NewCA("transport test CA")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caCert)
	dns := NewStaticResolver()
	e := &env{
		t: t, caCert: caCert, caKey: caKey, roots: roots, dns: dns,
		lookup: &countingResolver{Resolver: dns},
		clock:  &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		wk:     map[string]http.HandlerFunc{}, wkHits: map[string]int{},
		certs: map[string]*tls.Certificate{},
	}
	ln, err := tls.Listen("tcp", wellKnownIP+":0", &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return e.certFor(hello.ServerName)
		},
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.wkAddr = netip.MustParseAddrPort(ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(e.serveWellKnown), ReadHeaderTimeout: 5 * time.Second, ErrorLog: quiet}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return e
}

// certFor issues (once) a certificate for name from the test CA.
func (e *env) certFor(name string) (*tls.Certificate, error) {
	e.certsMu.Lock()
	defer e.certsMu.Unlock()
	if c, ok := e.certs[name]; ok {
		return c, nil
	}
	certPEM, keyPEM, err := tlsutil.IssueCert(e.caCert, e.caKey, []string{name}, time.Hour)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	e.certs[name] = &c
	return &c, nil
}

func (e *env) serveWellKnown(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	e.wkMu.Lock()
	h := e.wk[host]
	e.wkHits[host]++
	e.wkMu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

// setWellKnown makes https://host/.well-known/matrix/server answer with h
// (host resolving to the well-known server).
func (e *env) setWellKnown(host string, h http.HandlerFunc) {
	e.dns.SetHost(host, netip.MustParseAddr(wellKnownIP))
	e.wkMu.Lock()
	e.wk[host] = h
	e.wkMu.Unlock()
}

// delegate makes host's well-known delegate to server, with optional
// response headers as "Name: value".
func (e *env) delegate(host, server string, headers ...string) {
	e.setWellKnown(host, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ": ")
			w.Header().Add(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"m.server": server})
	})
}

func (e *env) wellKnownHits(host string) int {
	e.wkMu.Lock()
	defer e.wkMu.Unlock()
	return e.wkHits[host]
}

// transport returns a Transport on this env's DNS, roots and clock,
// permitting loopback, with the well-known port pointed at the env's
// well-known server. mod may adjust the options.
func (e *env) transport(mod func(*Options)) *Transport {
	o := Options{
		Resolver:      e.lookup,
		RootCAs:       e.roots,
		AllowPrivate:  true,
		WellKnownPort: int(e.wkAddr.Port()),
		Now:           e.clock.Now,
	}
	if mod != nil {
		mod(&o)
	}
	tr := New(o)
	e.t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// echo is what a fedServer answers to any path but the special ones.
type echo struct {
	By    string `json:"by"`
	Host  string `json:"host"`
	SNI   string `json:"sni"`
	Proto string `json:"proto"`
	Path  string `json:"path"`
	Auth  string `json:"auth"`
	Body  string `json:"body"`
}

// fedServer is a federation server on a loopback address.
type fedServer struct {
	addr  netip.AddrPort
	conns atomic.Int32
	srv   *http.Server
}

// startServer runs a TLS server on ip:0 labelled label, with a certificate
// for names, that answers with an echo unless mux handles the path.
func (e *env) startServer(ip, label string, names []string, mux map[string]http.HandlerFunc) *fedServer {
	e.t.Helper()
	certPEM, keyPEM, err := tlsutil.IssueCert(e.caCert, e.caKey, names, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.startServerWithCert(ip, label, certPEM, keyPEM, mux)
}

func (e *env) startServerWithCert(ip, label string, certPEM, keyPEM []byte, mux map[string]http.HandlerFunc) *fedServer {
	e.t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		e.t.Fatal(err)
	}
	fs := &fedServer{addr: netip.MustParseAddrPort(ln.Addr().String())}
	fs.srv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          quiet, // refused handshakes are what some tests expect
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				fs.conns.Add(1)
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := mux[r.URL.Path]; h != nil {
				h(w, r)
				return
			}
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(echo{
				By: label, Host: r.Host, SNI: r.TLS.ServerName, Proto: r.Proto,
				Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Body: string(body),
			})
		}),
	}
	go fs.srv.Serve(ln)
	e.t.Cleanup(func() { fs.srv.Close() })
	return fs
}

// get sends GET matrix://<server><path> through tr and decodes the echo.
func get(t *testing.T, tr *Transport, server, path string) (echo, error) {
	t.Helper()
	return do(t, tr, http.MethodGet, server, path, "")
}

func do(t *testing.T, tr *Transport, method, server, path, body string) (echo, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "matrix://"+server+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return echo{}, err
	}
	defer resp.Body.Close()
	var ec echo
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ec); err != nil {
		t.Fatal(err)
	}
	return ec, nil
}

// clock is a movable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingResolver counts the lookups that reach the resolver it wraps.
type countingResolver struct {
	Resolver
	srv, ip atomic.Int32
}

func (r *countingResolver) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	r.srv.Add(1)
	return r.Resolver.LookupSRV(ctx, service, proto, name)
}

func (r *countingResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	r.ip.Add(1)
	return r.Resolver.LookupIPAddr(ctx, host)
}

func (r *countingResolver) lookups() int { return int(r.srv.Load() + r.ip.Load()) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
