// Package tlsutil makes X.509 certificates in Go, without openssl: a private
// certificate authority, server certificates it issues for DNS names and IP
// addresses, and root pools that add such a CA to the system roots.
//
// Tests use it to run real TLS servers on loopback; the Complement mode uses
// IssueCert to obtain a federation certificate from the CA Complement mounts.
// Keys it generates are ECDSA P-256, which every TLS stack accepts; CA keys
// it reads may be ECDSA, RSA or ed25519, in PKCS#8, PKCS#1 or SEC 1 PEM.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// caValidity is how long a CA made by NewCA is valid.
const caValidity = 10 * 365 * 24 * time.Hour

// backdate is subtracted from NotBefore to tolerate clock skew.
const backdate = time.Hour

// NewCA returns a new self-signed certificate authority with the given
// common name, valid for ten years, as PEM certificate and PEM PKCS#8 key.
func NewCA(commonName string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // Go derives the SubjectKeyId for CAs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// IssueCert returns a server certificate signed by the CA, valid from now
// (backdated an hour for clock skew) for validity, for every name in names:
// IP addresses become IP SANs, anything else a DNS SAN. The first name is
// also the subject common name. It fails if the CA certificate or key cannot
// be parsed or do not match, the CA is not a CA, names is empty or holds
// something that is neither an IP address nor a DNS name (such as a
// host:port), or validity is not positive.
func IssueCert(caCertPEM, caKeyPEM []byte, names []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("tlsutil: no names to issue a certificate for")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("tlsutil: validity %v is not positive", validity)
	}
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, nil, err
	}
	if !ca.IsCA {
		return nil, nil, errors.New("tlsutil: the CA certificate is not a CA")
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	if !publicKeysEqual(caKey.Public(), ca.PublicKey) {
		return nil, nil, errors.New("tlsutil: the CA key does not match the CA certificate")
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if !validDNSName(n) {
			return nil, nil, fmt.Errorf("tlsutil: %q is neither an IP address nor a DNS name", n)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return encode(der, key)
}

// CertPool returns the system root pool plus every certificate in the PEM
// file at extraPEMPath. With an empty path it is the system pool alone (and
// fails if the system has none). It fails if the file cannot be read or holds
// no certificate. If the system pool cannot be loaded but the file can, the
// pool holds the file's certificates only.
func CertPool(extraPEMPath string) (*x509.CertPool, error) {
	pool, sysErr := x509.SystemCertPool()
	if extraPEMPath == "" {
		if sysErr != nil {
			return nil, fmt.Errorf("tlsutil: system roots: %w", sysErr)
		}
		return pool, nil
	}
	if sysErr != nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(extraPEMPath)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsutil: no certificates in %s", extraPEMPath)
	}
	return pool, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("tlsutil: no CERTIFICATE block in the CA certificate PEM")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("tlsutil: CA certificate: %w", err)
			}
			return c, nil
		}
	}
}

// parseKey reads the first private key block: PKCS#8, PKCS#1 (RSA) or
// SEC 1 (EC).
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("tlsutil: no private key block in the CA key PEM")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tlsutil: CA key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("tlsutil: CA key of type %T cannot sign", k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// validDNSName accepts labels of letters, digits, '-' and '_' separated by
// dots, with an optional leading "*." wildcard and trailing dot.
func validDNSName(n string) bool {
	n = strings.TrimPrefix(n, "*.")
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
