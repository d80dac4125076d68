package testserver

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/federationapi/transport"
	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// Remote is a fake homeserver of a Network, written with gomatrixserverlib,
// for what a real server would not do (hostile input) or to check exactly
// what Myelin sends. It serves its signing key and the routes a test adds
// to Mux, and sends signed requests through the network.
type Remote struct {
	Name  spec.ServerName
	KeyID gomatrixserverlib.KeyID
	Key   ed25519.PrivateKey
	// Mux serves the remote's routes besides /_matrix/key/v2/server (Go
	// 1.22 patterns such as "PUT /_matrix/federation/v1/send/{txnId}").
	Mux *http.ServeMux
	// Client sends requests signed as the remote.
	Client fclient.FederationClient
	http   *http.Client
	srv    *http.Server

	mu sync.Mutex
	// keys, when set, answers /_matrix/key/v2/server (SetKeyHandler).
	keys http.HandlerFunc
}

// StartRemote starts a fake server named name in the network.
func (n *Network) StartRemote(name string) *Remote {
	n.t.Helper()
	t := n.t
	dir := t.TempDir()
	m := n.add(t, name, dir)
	_, key, _ := ed25519.GenerateKey(nil)
	r := &Remote{Name: spec.ServerName(name), KeyID: "ed25519:fake", Key: key, Mux: http.NewServeMux()}
	cert, err := tls.LoadX509KeyPair(m.certPath, m.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ln := m.listen(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/key/v2/server", r.serveKeys)
	mux.HandleFunc("GET /_matrix/key/v2/server/{keyID}", r.serveKeys)
	mux.Handle("/", r.Mux)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		_ = r.srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() { _ = r.srv.Close() })
	roots, err := tlsutil.CertPool(n.caPath)
	if err != nil {
		t.Fatal(err)
	}
	tr := transport.New(transport.Options{Resolver: n.Resolver, RootCAs: roots, AllowPrivate: true})
	r.Client = fclient.NewFederationClient([]*fclient.SigningIdentity{{ServerName: r.Name, KeyID: r.KeyID, PrivateKey: key}},
		fclient.WithTransport(tr), fclient.WithTimeout(30*time.Second))
	r.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return r
}

// SetKeyHandler makes h answer the remote's key requests (nil: its own
// key response, valid for a day), for hostile key responses.
func (r *Remote) SetKeyHandler(h http.HandlerFunc) {
	r.mu.Lock()
	r.keys = h
	r.mu.Unlock()
}

// KeyResponse is the remote's key response, valid until validUntil and
// signed with its key.
func (r *Remote) KeyResponse(validUntil time.Time) []byte {
	body, _ := json.Marshal(map[string]any{
		"server_name":     r.Name,
		"valid_until_ts":  validUntil.UnixMilli(),
		"verify_keys":     map[string]any{string(r.KeyID): map[string]string{"key": base64.RawStdEncoding.EncodeToString(r.Key.Public().(ed25519.PublicKey))}},
		"old_verify_keys": map[string]any{},
	})
	signed, _ := gomatrixserverlib.SignJSON(string(r.Name), r.KeyID, r.Key, body) // a JSON object: cannot fail
	return signed
}

func (r *Remote) serveKeys(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	h := r.keys
	r.mu.Unlock()
	if h != nil {
		h(w, req)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(r.KeyResponse(time.Now().Add(24 * time.Hour)))
}

// Send sends a transaction to dest and returns its response.
func (r *Remote) Send(dest spec.ServerName, txnID string, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) (fclient.RespSend, error) {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return r.Client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(txnID), Origin: r.Name, Destination: dest,
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus, EDUs: edus,
	})
}

// Do sends a request signed as the remote (body nil: none) and returns the
// status and body. unsigned sends it without the X-Matrix header.
func (r *Remote) Do(method string, dest spec.ServerName, path string, body any, unsigned ...bool) (int, []byte, error) {
	req := fclient.NewFederationRequest(method, r.Name, dest, path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return 0, nil, err
		}
	}
	if len(unsigned) == 0 || !unsigned[0] {
		if err := req.Sign(r.Name, r.KeyID, r.Key); err != nil {
			return 0, nil, err
		}
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return 0, nil, err
	}
	resp, err := r.http.Do(hr)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// DoRaw sends a request with the given raw body and Authorization header
// (for malformed requests).
func (r *Remote) DoRaw(method string, dest spec.ServerName, path string, body []byte, authorization string) (int, []byte, error) {
	hr, err := http.NewRequest(method, "matrix://"+string(dest)+path, strings.NewReader(string(body)))
	if err != nil {
		return 0, nil, err
	}
	if authorization != "" {
		hr.Header.Set("Authorization", authorization)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(hr)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
