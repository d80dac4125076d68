package federationapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/lru"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// This file is the keyring (other servers' verify keys: fetched directly or
// through trusted notaries, cached in memory and in fed_server_keys) and the
// key endpoints: this server's own keys and the notary.

const (
	// keyFailuresMax bounds the servers remembered as failing.
	keyFailuresMax = 10000
	// keyFetchBackoff is how long a server whose key request failed is not
	// asked again (its keys may still come from a notary meanwhile).
	keyFetchBackoff = 30 * time.Second
	// notaryMaxFetches bounds the servers one notary query fetches keys
	// from; the others are answered from the cache.
	notaryMaxFetches = 50
	// notaryFetchParallel bounds the concurrent fetches of one query.
	notaryFetchParallel = 8
	// notaryFetchWait bounds how long a notary query waits for fetches.
	notaryFetchWait = 15 * time.Second
	// notaryMinRefetch is how long after fetching a server's keys the
	// notary answers from what it got whatever the query asks (a key the
	// server does not have, a validity it does not give), so that queries
	// cannot make it hammer a server.
	notaryMinRefetch = time.Minute
)

// initKeyRing builds the keyring (f.keyring) and its parts: the key
// database (f.keyDB: this server's keys from the configuration, an LRU
// cache, fed_server_keys) and the key client of its fetchers (f.keyFetch).
// The fetchers are the server itself (DirectKeyFetcher) first, then each
// trusted key server in configuration order (PerspectiveKeyFetcher, whose
// answers must be signed by one of the notary's configured keys).
func (f *FederationAPI) initKeyRing() {
	f.keyDB = &keyDatabase{
		store: f.store,
		self:  f.cfg.ServerName,
		own:   f.ownKeyResults,
		cache: lru.New[gomatrixserverlib.PublicKeyLookupRequest, gomatrixserverlib.PublicKeyLookupResult](f.cfg.KeyCacheSize, nil),
	}
	f.keyFetch = &keyFetchClient{f: f, client: f.keyClient, minRefetch: notaryMinRefetch,
		inflight: map[spec.ServerName]*keyCall{}, failed: map[spec.ServerName]time.Time{}}
	fetchers := []gomatrixserverlib.KeyFetcher{&gomatrixserverlib.DirectKeyFetcher{
		Client:            f.keyFetch,
		IsLocalServerName: f.isLocal,
		LocalPublicKey:    spec.Base64Bytes(f.publicKey()),
	}}
	for _, ts := range f.cfg.TrustedKeyServers {
		if f.isLocal(ts.ServerName) {
			continue
		}
		fetchers = append(fetchers, &gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: ts.ServerName,
			PerspectiveServerKeys: ts.VerifyKeys,
			Client:                f.keyFetch,
		})
	}
	f.keyring = &gomatrixserverlib.KeyRing{KeyFetchers: fetchers, KeyDatabase: f.keyDB}
}

func (f *FederationAPI) isLocal(name spec.ServerName) bool {
	return strings.EqualFold(string(name), string(f.cfg.ServerName))
}

func (f *FederationAPI) publicKey() []byte {
	return []byte(f.cfg.PrivateKey[32:]) // the ed25519 private key is seed || public key
}

// ownKeyResults are this server's keys as the keyring sees them: the
// current key valid for KeyValidity from now, the old keys expired.
func (f *FederationAPI) ownKeyResults() map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{}
	for _, k := range f.cfg.OldKeys {
		out[k.KeyID] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PublicKey)},
			ExpiredTS: k.ExpiredTS, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid,
		}
	}
	out[f.cfg.KeyID] = gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(f.publicKey())},
		ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
		ValidUntilTS: spec.AsTimestamp(time.Now().Add(f.cfg.KeyValidity)),
	}
	return out
}

// ownKeyResponse is this server's signed key response (GET
// /_matrix/key/v2/server), valid for KeyValidity from now.
func (f *FederationAPI) ownKeyResponse() ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName: f.cfg.ServerName,
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			f.cfg.KeyID: {Key: spec.Base64Bytes(f.publicKey())},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
		ValidUntilTS:  spec.AsTimestamp(time.Now().Add(f.cfg.KeyValidity)),
	}
	for _, k := range f.cfg.OldKeys {
		fields.OldVerifyKeys[k.KeyID] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PublicKey)},
			ExpiredTS: k.ExpiredTS,
		}
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey, b)
}

// keyDatabase is the keyring's gomatrixserverlib.KeyDatabase: this
// server's own keys (never stored), then an LRU cache in front of
// fed_server_keys.
type keyDatabase struct {
	store *storage.Storage
	self  spec.ServerName
	own   func() map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult
	cache *lru.Cache[gomatrixserverlib.PublicKeyLookupRequest, gomatrixserverlib.PublicKeyLookupResult]
}

func (d *keyDatabase) FetcherName() string { return "KeyDatabase" }

// FetchKeys returns the known keys among requests, whatever their
// validity (the keyring decides what to refetch). It fails only when the
// database does.
func (d *keyDatabase) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(requests))
	var own map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult
	var misses []storage.KeyRef
	for req := range requests {
		if strings.EqualFold(string(req.ServerName), string(d.self)) {
			if own == nil {
				own = d.own()
			}
			if res, ok := own[req.KeyID]; ok {
				out[req] = res
			}
			continue
		}
		if res, ok := d.cache.Get(req); ok {
			out[req] = res
			continue
		}
		misses = append(misses, storage.KeyRef{ServerName: string(req.ServerName), KeyID: string(req.KeyID)})
	}
	if len(misses) == 0 {
		return out, nil
	}
	keys, err := d.store.ServerKeys(ctx, misses)
	if err != nil {
		return nil, fmt.Errorf("federationapi: loading server keys: %w", err)
	}
	for _, k := range keys {
		req, res, err := fromStoredKey(k)
		if err != nil {
			continue // not a key anyone can verify with: as if unknown
		}
		d.cache.Put(req, res)
		out[req] = res
	}
	return out, nil
}

// StoreKeys stores the keys that changed. The keyring calls it after
// every verification that needed more than the cache, with every key it
// used, so keys equal to the cached ones are skipped.
func (d *keyDatabase) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	var changed []storage.ServerKey
	var reqs []gomatrixserverlib.PublicKeyLookupRequest
	for req, res := range results {
		if strings.EqualFold(string(req.ServerName), string(d.self)) || req.KeyID == "" {
			continue
		}
		if cached, ok := d.cache.Get(req); ok && sameKey(cached, res) {
			continue
		}
		changed = append(changed, toStoredKey(req, res))
		reqs = append(reqs, req)
	}
	if len(changed) == 0 {
		return nil
	}
	if err := d.store.StoreServerKeys(ctx, changed, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("federationapi: storing server keys: %w", err)
	}
	// The database keeps the more useful of the stored and the new key
	// (storage.MergeServerKey): the next lookup reads its choice.
	for _, req := range reqs {
		d.cache.Remove(req)
	}
	return nil
}

func sameKey(a, b gomatrixserverlib.PublicKeyLookupResult) bool {
	return a.ValidUntilTS == b.ValidUntilTS && a.ExpiredTS == b.ExpiredTS && bytes.Equal(a.Key, b.Key)
}

func toStoredKey(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) storage.ServerKey {
	return storage.ServerKey{
		ServerName:   string(req.ServerName),
		KeyID:        string(req.KeyID),
		PublicKey:    base64.RawStdEncoding.EncodeToString(res.Key),
		ValidUntilTS: int64(res.ValidUntilTS),
		ExpiredTS:    int64(res.ExpiredTS),
	}
}

func fromStoredKey(k storage.ServerKey) (gomatrixserverlib.PublicKeyLookupRequest, gomatrixserverlib.PublicKeyLookupResult, error) {
	req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(k.ServerName), KeyID: gomatrixserverlib.KeyID(k.KeyID)}
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.PublicKey, "="))
	if err != nil {
		return req, gomatrixserverlib.PublicKeyLookupResult{}, err
	}
	return req, gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: key},
		ValidUntilTS: spec.Timestamp(k.ValidUntilTS),
		ExpiredTS:    spec.Timestamp(k.ExpiredTS),
	}, nil
}

// lookupResults maps a key response (already checked) to keyring results,
// as gomatrixserverlib's fetchers do.
func lookupResults(keys gomatrixserverlib.ServerKeys) map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for id, k := range keys.VerifyKeys {
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: k, ValidUntilTS: keys.ValidUntilTS, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	for id, k := range keys.OldVerifyKeys {
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: k.VerifyKey, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid, ExpiredTS: k.ExpiredTS,
		}
	}
	return out
}

// keyFetchClient is the gomatrixserverlib.KeyClient of the keyring's
// fetchers and of the notary. It coalesces concurrent key requests to one
// server, does not ask a server whose request failed less than
// keyFetchBackoff ago, and stores every valid response fetched directly
// from a server for the notary endpoints.
type keyFetchClient struct {
	f      *FederationAPI
	client gomatrixserverlib.KeyClient
	// minRefetch is notaryMinRefetch (tests change it).
	minRefetch time.Duration

	mu       sync.Mutex
	inflight map[spec.ServerName]*keyCall
	failed   map[spec.ServerName]time.Time
}

type keyCall struct {
	done    chan struct{}
	waiters int // callers that joined (guarded by keyFetchClient.mu)
	keys    gomatrixserverlib.ServerKeys
	err     error
}

// errKeyBackoff: the server failed recently and is not asked again yet.
var errKeyBackoff = errors.New("federationapi: key server failed recently")

func (c *keyFetchClient) backingOff(server spec.ServerName) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.failed[server]
	if ok && time.Since(t) >= keyFetchBackoff {
		delete(c.failed, server)
		return false
	}
	return ok
}

func (c *keyFetchClient) done(server spec.ServerName, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if len(c.failed) >= keyFailuresMax {
			for s, t := range c.failed {
				if time.Since(t) >= keyFetchBackoff {
					delete(c.failed, s)
				}
			}
		}
		c.failed[server] = time.Now()
	} else {
		delete(c.failed, server)
	}
}

// GetServerKeys fetches server's key response (GET
// /_matrix/key/v2/server) and, when it is valid, stores it for the
// notary. A caller that gives up (ctx) does not stop the fetch: others
// may be waiting for it, and its result is stored.
func (c *keyFetchClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	if c.backingOff(server) {
		return gomatrixserverlib.ServerKeys{}, fmt.Errorf("%w: %s", errKeyBackoff, server)
	}
	c.mu.Lock()
	call, ok := c.inflight[server]
	if !ok {
		call = &keyCall{done: make(chan struct{})}
		c.inflight[server] = call
		go c.fetch(context.WithoutCancel(ctx), server, call)
	}
	call.waiters++
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.keys, call.err
	case <-ctx.Done():
		return gomatrixserverlib.ServerKeys{}, ctx.Err()
	}
}

func (c *keyFetchClient) fetch(ctx context.Context, server spec.ServerName, call *keyCall) {
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	call.keys, call.err = c.client.GetServerKeys(ctx, server)
	c.done(server, call.err)
	if call.err == nil {
		c.record(ctx, server, call.keys)
	}
	c.mu.Lock()
	delete(c.inflight, server)
	c.mu.Unlock()
	close(call.done)
}

// record stores a key response fetched directly from server, if it passes
// gomatrixserverlib's checks (the server's name, every verify key signing
// it).
func (c *keyFetchClient) record(ctx context.Context, server spec.ServerName, keys gomatrixserverlib.ServerKeys) {
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), keys); !checks.AllChecksOK {
		c.f.log.Info("invalid key response", slog.String("server", string(server)))
		return
	}
	ids := make([]string, 0, len(keys.VerifyKeys)+len(keys.OldVerifyKeys))
	for id := range keys.VerifyKeys {
		ids = append(ids, string(id))
	}
	for id := range keys.OldVerifyKeys {
		ids = append(ids, string(id))
	}
	if err := c.f.store.StoreKeyResponse(ctx, string(server), ids, int64(keys.ValidUntilTS), time.Now().UnixMilli(), keys.Raw); err != nil {
		c.f.log.Warn("storing key response failed", slog.String("server", string(server)), slog.String("error", err.Error()))
	}
}

// LookupServerKeys asks the notary server for keys (POST
// /_matrix/key/v2/query). The fetchers check the answers.
func (c *keyFetchClient) LookupServerKeys(ctx context.Context, server spec.ServerName, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	if c.backingOff(server) {
		return nil, fmt.Errorf("%w: %s", errKeyBackoff, server)
	}
	keys, err := c.client.LookupServerKeys(ctx, server, reqs)
	c.done(server, err)
	return keys, err
}

// fetchForNotary fetches server's keys directly for the notary and feeds
// valid ones to the keyring's database too.
func (f *FederationAPI) fetchForNotary(ctx context.Context, server spec.ServerName) error {
	keys, err := f.keyFetch.GetServerKeys(ctx, server)
	if err != nil {
		return err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), keys); !checks.AllChecksOK {
		return fmt.Errorf("federationapi: key response of %s failed checks", server)
	}
	return f.keyDB.StoreKeys(ctx, lookupResults(keys))
}

// keyQuery is what a notary query asks of one server: keys (all when
// empty) valid until at least minValid (0: now).
type keyQuery struct {
	keyIDs   []string
	minValid int64
}

// fresh reports whether the stored responses answer q without a fetch:
// every requested key is there (any key, when none is requested), in a
// response valid until q.minValid; without a minimum, valid now and not
// past half its lifetime (keys/server: notaries cache a response for half
// its lifetime).
func (q keyQuery) fresh(rows []storage.KeyResponse, now int64) bool {
	if len(rows) == 0 {
		return false
	}
	ok := func(r storage.KeyResponse) bool {
		if q.minValid > 0 {
			return r.ValidUntilTS >= q.minValid
		}
		return r.ValidUntilTS > now && now < r.FetchedTS+(r.ValidUntilTS-r.FetchedTS)/2
	}
	if len(q.keyIDs) == 0 {
		latest := rows[0]
		for _, r := range rows[1:] {
			if r.FetchedTS > latest.FetchedTS {
				latest = r
			}
		}
		return ok(latest)
	}
	have := map[string]storage.KeyResponse{}
	for _, r := range rows {
		have[r.KeyID] = r
	}
	for _, id := range q.keyIDs {
		r, found := have[id]
		if !found || !ok(r) {
			return false
		}
	}
	return true
}

// fetchedRecently reports whether the notary fetched server's keys less
// than minRefetch ago.
func (f *FederationAPI) fetchedRecently(ctx context.Context, server spec.ServerName, now int64) bool {
	if f.keyFetch.minRefetch <= 0 {
		return false
	}
	rows, err := f.store.KeyResponses(ctx, string(server), nil)
	if err != nil {
		return false
	}
	for _, r := range rows {
		if now-r.FetchedTS < f.keyFetch.minRefetch.Milliseconds() {
			return true
		}
	}
	return false
}

// notaryQuery answers a notary query: for each server the key responses it
// signed (this server's own from the configuration), each with this
// server's signature added. What is not stored, or not valid long enough,
// is fetched from the server itself first (for at most notaryMaxFetches
// servers not fetched in the last notaryMinRefetch, waiting at most
// notaryFetchWait); when that fails the stored responses are returned anyway, and
// a server with none is left out. The notary never answers with keys it
// got from another notary.
func (f *FederationAPI) notaryQuery(ctx context.Context, query map[spec.ServerName]keyQuery) ([]json.RawMessage, error) {
	servers := make([]spec.ServerName, 0, len(query))
	for s := range query {
		if _, _, ok := spec.ParseAndValidateServerName(s); ok {
			servers = append(servers, s)
		}
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i] < servers[j] })

	now := time.Now().UnixMilli()
	stored := make([][]storage.KeyResponse, len(servers))
	var toFetch []int
	for i, s := range servers {
		if f.isLocal(s) {
			continue
		}
		rows, err := f.store.KeyResponses(ctx, string(s), query[s].keyIDs)
		if err != nil {
			return nil, err
		}
		stored[i] = rows
		if !query[s].fresh(rows, now) && !f.fetchedRecently(ctx, s, now) && f.policy.allowed(s) && len(toFetch) < notaryMaxFetches {
			toFetch = append(toFetch, i)
		}
	}
	if len(toFetch) > 0 {
		fctx, cancel := context.WithTimeout(ctx, notaryFetchWait)
		defer cancel()
		var wg sync.WaitGroup
		sem := make(chan struct{}, notaryFetchParallel)
		for _, i := range toFetch {
			wg.Add(1)
			sem <- struct{}{}
			go func(s spec.ServerName) {
				defer func() { <-sem; wg.Done() }()
				if err := f.fetchForNotary(fctx, s); err != nil {
					httputil.Logger(ctx).Info("notary: fetching keys failed",
						slog.String("server", string(s)), slog.String("error", err.Error()))
				}
			}(servers[i])
		}
		wg.Wait()
		for _, i := range toFetch {
			rows, err := f.store.KeyResponses(ctx, string(servers[i]), query[servers[i]].keyIDs)
			if err != nil {
				return nil, err
			}
			stored[i] = rows
		}
	}

	out := []json.RawMessage{}
	for i, s := range servers {
		if f.isLocal(s) {
			own, err := f.ownKeyResponse()
			if err != nil {
				return nil, err
			}
			out = append(out, own)
			continue
		}
		seen := map[string]bool{}
		for _, r := range stored[i] {
			if seen[string(r.JSON)] {
				continue
			}
			seen[string(r.JSON)] = true
			signed, err := gomatrixserverlib.SignJSON(string(f.cfg.ServerName), f.cfg.KeyID, f.cfg.PrivateKey, r.JSON)
			if err != nil {
				httputil.Logger(ctx).Warn("notary: unsignable stored key response",
					slog.String("server", string(s)), slog.String("error", err.Error()))
				continue
			}
			out = append(out, signed)
		}
	}
	return out, nil
}

// registerKeyRoutes mounts the key endpoints (unauthenticated).
func (f *FederationAPI) registerKeyRoutes(srv *httputil.Server) {
	srv.Handle(http.MethodGet, "/_matrix/key/v2/server", f.serveOwnKeys)
	// Deprecated: the key ID is ignored, as Synapse does.
	srv.Handle(http.MethodGet, "/_matrix/key/v2/server/{keyID}", f.serveOwnKeys)
	srv.Handle(http.MethodGet, "/_matrix/key/v2/query/{serverName}", f.serveKeyQueryGET)
	// Deprecated: one key ID in the path.
	srv.Handle(http.MethodGet, "/_matrix/key/v2/query/{serverName}/{keyID}", f.serveKeyQueryGET)
	srv.Handle(http.MethodPost, "/_matrix/key/v2/query", f.serveKeyQueryPOST)
}

// GET /_matrix/key/v2/server: this server's keys, signed.
func (f *FederationAPI) serveOwnKeys(r *http.Request) (any, error) {
	b, err := f.ownKeyResponse()
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

type keyQueryResponse struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// GET /_matrix/key/v2/query/{serverName}: a server's keys, notarised.
func (f *FederationAPI) serveKeyQueryGET(r *http.Request) (any, error) {
	vars := httputil.Vars(r)
	q := keyQuery{}
	if id := vars["keyID"]; id != "" {
		q.keyIDs = []string{id}
	}
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("minimum_valid_until_ts must be a timestamp")
		}
		q.minValid = n
	}
	keys, err := f.notaryQuery(r.Context(), map[spec.ServerName]keyQuery{spec.ServerName(vars["serverName"]): q})
	if err != nil {
		return nil, err
	}
	return keyQueryResponse{ServerKeys: keys}, nil
}

// POST /_matrix/key/v2/query: several servers' keys, notarised.
func (f *FederationAPI) serveKeyQueryPOST(r *http.Request) (any, error) {
	var body struct {
		ServerKeys map[spec.ServerName]map[string]struct {
			MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.ServerKeys == nil {
		return nil, mxerr.BadJSON("server_keys is required")
	}
	query := make(map[spec.ServerName]keyQuery, len(body.ServerKeys))
	for server, ids := range body.ServerKeys {
		q := keyQuery{}
		for id, c := range ids {
			if id == "" {
				continue
			}
			q.keyIDs = append(q.keyIDs, id)
			q.minValid = max(q.minValid, c.MinimumValidUntilTS)
		}
		sort.Strings(q.keyIDs)
		query[server] = q
	}
	keys, err := f.notaryQuery(r.Context(), query)
	if err != nil {
		return nil, err
	}
	return keyQueryResponse{ServerKeys: keys}, nil
}
