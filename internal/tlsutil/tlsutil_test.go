package tlsutil

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs a TLS server on 127.0.0.1 with the certificate that writes
// "hello" to every connection, and returns its address.
func serve(t *testing.T, certPEM, keyPEM []byte) string {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write([]byte("hello"))
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects to addr verifying the certificate for serverName against
// pool, and reads the greeting.
func dial(addr, serverName string, pool *x509.CertPool) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: pool})
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hello" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestIssueAndServe(t *testing.T) {
	caCert, caKey, err := NewCA("Myelin test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := IssueCert(caCert, caKey, []string{"hs1.test", "127.0.0.1", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, certPEM, keyPEM)

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caCert) {
		t.Fatal("CA PEM not appended")
	}
	for _, tc := range []struct {
		serverName string
		pool       *x509.CertPool
		ok         bool
	}{
		{"hs1.test", pool, true},
		{"HS1.test", pool, true},
		{"127.0.0.1", pool, true}, // IP SAN
		{"::1", pool, true},
		{"hs2.test", pool, false},
		{"127.0.0.2", pool, false},
		{"hs1.test", x509.NewCertPool(), false}, // CA unknown
	} {
		err := dial(addr, tc.serverName, tc.pool)
		if (err == nil) != tc.ok {
			t.Errorf("dial as %q: err = %v, want ok=%v", tc.serverName, err, tc.ok)
		}
	}

	leaf := parse(t, certPEM)
	if leaf.Subject.CommonName != "hs1.test" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if d := time.Until(leaf.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Errorf("NotAfter is %v from now, want an hour", d)
	}
	if len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 1 {
		t.Errorf("SANs: DNS %v IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.IsCA {
		t.Error("a leaf certificate is a CA")
	}
}

func TestCertPool(t *testing.T) {
	caCert, caKey, err := NewCA("Myelin test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := IssueCert(caCert, caKey, []string{"hs1.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, certPEM, keyPEM)
	dir := t.TempDir()

	caPath := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caPath, caCert, 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := CertPool(caPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(addr, "hs1.test", pool); err != nil {
		t.Fatalf("pool with the CA: %v", err)
	}

	// The system pool alone does not know the test CA.
	if sys, err := CertPool(""); err == nil {
		if err := dial(addr, "hs1.test", sys); err == nil {
			t.Error("the system pool trusts the test CA")
		}
	}

	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CertPool(empty); err == nil || !strings.Contains(err.Error(), "no certificates") {
		t.Errorf("file without certificates: err = %v", err)
	}
	if _, err := CertPool(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestIssueFromRSACA issues from a CA with a PKCS#1 RSA key, the kind other
// tools (and perhaps Complement) generate.
func TestIssueFromRSACA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "RSA CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	caKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})

	certPEM, keyPEM, err := IssueCert(caCert, caKey, []string{"hs1.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, certPEM, keyPEM)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	if err := dial(addr, "hs1.test", pool); err != nil {
		t.Fatal(err)
	}
}

func TestIssueCertErrors(t *testing.T) {
	caCert, caKey, err := NewCA("CA one")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := NewCA("CA two")
	if err != nil {
		t.Fatal(err)
	}
	leafCert, leafKey, err := IssueCert(caCert, caKey, []string{"leaf.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		caCert, caKey  []byte
		names          []string
		validity       time.Duration
		wantErrContain string
	}{
		{"no names", caCert, caKey, nil, time.Hour, "no names"},
		{"host and port", caCert, caKey, []string{"hs1.test:8448"}, time.Hour, "neither"},
		{"empty name", caCert, caKey, []string{""}, time.Hour, "neither"},
		{"empty label", caCert, caKey, []string{"a..b"}, time.Hour, "neither"},
		{"zero validity", caCert, caKey, []string{"hs1.test"}, 0, "validity"},
		{"leaf as CA", leafCert, leafKey, []string{"hs1.test"}, time.Hour, "not a CA"},
		{"mismatched key", caCert, otherKey, []string{"hs1.test"}, time.Hour, "does not match"},
		{"garbage cert", []byte("junk"), caKey, []string{"hs1.test"}, time.Hour, "no CERTIFICATE"},
		{"garbage key", caCert, []byte("junk"), []string{"hs1.test"}, time.Hour, "no private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := IssueCert(tc.caCert, tc.caKey, tc.names, tc.validity)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErrContain)
			}
		})
	}
}

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
