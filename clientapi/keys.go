package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// End-to-end encryption keys: /keys/upload, /keys/query, /keys/claim,
// /keys/device_signing/upload and /keys/signatures/upload. Keys of remote
// users are asked of their servers, in parallel, within the request's
// timeout (10 s by default); the servers that did not answer are listed in
// "failures". Errors follow Synapse where the spec is silent.

func (c *ClientAPI) registerKeys(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()
	srv.HandleClient(http.MethodPost, "/keys/upload", c.postKeysUpload, auth, guests)
	srv.HandleClient(http.MethodPost, "/keys/query", c.postKeysQuery, auth, guests)
	srv.HandleClient(http.MethodPost, "/keys/claim", c.postKeysClaim, auth, guests)
	srv.HandleClient(http.MethodPost, "/keys/device_signing/upload", c.postDeviceSigningUpload, auth)
	srv.HandleClient(http.MethodPost, "/keys/signatures/upload", c.postSignaturesUpload, auth)
}

// keysError maps the user API's key errors; errBadKeys is the code of
// api.ErrInvalidKeys on the endpoint.
func keysError(err error, errBadKeys string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, api.ErrInvalidKeys):
		return mxerr.New(errBadKeys, "%s", err.Error())
	case errors.Is(err, api.ErrInvalidSignature):
		return mxerr.New(mxerr.CodeInvalidSignature, "%s", err.Error())
	case errors.Is(err, api.ErrKeyExists):
		return mxerr.New(mxerr.CodeUnknown, "%s", err.Error()).WithStatus(http.StatusBadRequest)
	case errors.Is(err, api.ErrMissingMasterKey):
		return mxerr.MissingParam("No master key available")
	case errors.Is(err, api.ErrNotFound):
		return mxerr.NotFound("Unknown device")
	}
	return err
}

// POST /_matrix/client/v3/keys/upload
func (c *ClientAPI) postKeysUpload(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if string(req.DeviceKeys) == "null" {
		return nil, mxerr.BadJSON("device_keys must not be null")
	}
	if dev.DeviceID == "" {
		// An application service acting as a user without a device.
		return nil, mxerr.InvalidParam("To upload keys, you must pass device_id when authenticating")
	}
	counts, err := c.users.UploadKeys(r.Context(), api.UploadKeysRequest{
		UserID: dev.UserID, DeviceID: dev.DeviceID,
		DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys,
	})
	if err != nil {
		return nil, keysError(err, mxerr.CodeBadJSON)
	}
	return map[string]any{"one_time_key_counts": counts.Counts}, nil
}

// keysTimeout is the federation timeout of a key request: the body's
// "timeout" (ms), else the query parameter's, else 10 s; at most 60 s.
func keysTimeout(r *http.Request, body *int64) time.Duration {
	ms := int64(10000)
	if body != nil {
		ms = *body
	} else if s := r.URL.Query().Get("timeout"); s != "" {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			ms = v
		}
	}
	return time.Duration(min(max(ms, 0), 60000)) * time.Millisecond
}

// keyFailure is a "failures" entry for a server, as Synapse writes them.
func keyFailure(err error) map[string]any {
	var re *fedapi.RemoteError
	if errors.As(err, &re) {
		f := map[string]any{"status": re.Status, "message": re.Message}
		if re.Code != "" {
			f["errcode"] = re.Code
		}
		return f
	}
	if errors.Is(err, fedapi.ErrDisabled) {
		return map[string]any{"status": http.StatusServiceUnavailable, "message": "Federation is disabled"}
	}
	return map[string]any{"status": http.StatusServiceUnavailable, "message": "Server could not be reached"}
}

// splitKeyUsers parses user IDs and groups the remote ones by server.
func (c *ClientAPI) splitKeyUsers(ids []string) (local []string, remote map[string][]string, err error) {
	remote = map[string][]string{}
	for _, id := range ids {
		uid, err := spec.NewUserID(id, true)
		if err != nil {
			return nil, nil, mxerr.InvalidParam("Invalid user ID %q", id)
		}
		if c.isRemote(uid.Domain()) {
			remote[string(uid.Domain())] = append(remote[string(uid.Domain())], id)
		} else {
			local = append(local, id)
		}
	}
	return local, remote, nil
}

// fanOut calls fn for every server in parallel within timeout, and returns
// the failures by server name.
func (c *ClientAPI) fanOut(ctx context.Context, servers []string, timeout time.Duration, fn func(ctx context.Context, server string) error) map[string]any {
	failures := map[string]any{}
	if len(servers) == 0 {
		return failures
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if c.fed == nil {
				err = fedapi.ErrDisabled
			} else {
				err = fn(ctx, s)
			}
			if err != nil {
				c.log.Debug("key request to a server failed", "server", s, "error", err.Error())
				mu.Lock()
				failures[s] = keyFailure(err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failures
}

// POST /_matrix/client/v3/keys/query
func (c *ClientAPI) postKeysQuery(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		DeviceKeys map[string]json.RawMessage `json:"device_keys"`
		Timeout    *int64                     `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, mxerr.BadJSON("'device_keys' must be a JSON object")
	}
	query := make(map[string][]string, len(req.DeviceKeys))
	for u, raw := range req.DeviceKeys {
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil || ids == nil {
			return nil, mxerr.BadJSON("'device_keys' values must be a list of strings")
		}
		query[u] = ids
	}
	local, remote, err := c.splitKeyUsers(slices.Sorted(maps.Keys(query)))
	if err != nil {
		return nil, err
	}
	localQuery := make(map[string][]string, len(local))
	for _, u := range local {
		localQuery[u] = query[u]
	}
	res, err := c.users.QueryKeys(r.Context(), api.QueryKeysRequest{RequesterUserID: dev.UserID, DeviceKeys: localQuery})
	if err != nil {
		return nil, err
	}
	if remote, err = c.cachedRemoteKeys(r.Context(), query, remote, res); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	failures := c.fanOut(r.Context(), slices.Sorted(maps.Keys(remote)), keysTimeout(r, req.Timeout), func(ctx context.Context, server string) error {
		ask := make(map[string][]string, len(remote[server]))
		for _, u := range remote[server] {
			ask[u] = query[u]
		}
		got, err := c.fed.QueryKeys(ctx, server, ask)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for u, devs := range got.DeviceKeys {
			res.DeviceKeys[u] = devs
		}
		for u, k := range got.MasterKeys {
			res.MasterKeys[u] = k
		}
		for u, k := range got.SelfSigningKeys {
			res.SelfSigningKeys[u] = k
		}
		return nil
	})
	// The requester's signatures of remote users' master keys are kept
	// here (never sent to their servers): merge them in, whether the key
	// came from the cache or over federation.
	if len(local) < len(query) {
		remoteMasters := map[string]json.RawMessage{}
		for u, k := range res.MasterKeys {
			if c.remoteUser(u) {
				remoteMasters[u] = k
			}
		}
		merged, err := c.users.MergeSignatures(r.Context(), dev.UserID, remoteMasters)
		if err != nil {
			return nil, err
		}
		if res.MasterKeys == nil {
			res.MasterKeys = map[string]json.RawMessage{}
		}
		maps.Copy(res.MasterKeys, merged)
	}
	return map[string]any{
		"device_keys":       res.DeviceKeys,
		"master_keys":       res.MasterKeys,
		"self_signing_keys": res.SelfSigningKeys,
		"user_signing_keys": res.UserSigningKeys,
		"failures":          failures,
	}, nil
}

// cachedRemoteKeys answers the remote users whose device lists the remote
// device cache holds up to date (users sharing a room with a local user)
// into res, and returns the others by server, to be asked of them.
func (c *ClientAPI) cachedRemoteKeys(ctx context.Context, query map[string][]string, remote map[string][]string, res *api.QueryKeysResponse) (map[string][]string, error) {
	if len(remote) == 0 {
		return remote, nil
	}
	ask := map[string][]string{}
	for _, users := range remote {
		for _, u := range users {
			ask[u] = query[u]
		}
	}
	cached, missing, err := c.users.QueryRemoteKeys(ctx, ask)
	if err != nil {
		return nil, err
	}
	for u, devs := range cached.DeviceKeys {
		res.DeviceKeys[u] = devs
	}
	merge := func(into *map[string]json.RawMessage, from map[string]json.RawMessage) {
		for u, k := range from {
			if *into == nil {
				*into = map[string]json.RawMessage{}
			}
			(*into)[u] = k
		}
	}
	merge(&res.MasterKeys, cached.MasterKeys)
	merge(&res.SelfSigningKeys, cached.SelfSigningKeys)
	left := map[string][]string{}
	for server, users := range remote {
		for _, u := range users {
			if _, ok := missing[u]; ok {
				left[server] = append(left[server], u)
			}
		}
	}
	return left, nil
}

// POST /_matrix/client/v3/keys/claim
func (c *ClientAPI) postKeysClaim(r *http.Request) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, mxerr.BadJSON("'one_time_keys' must be a JSON object")
	}
	local, remote, err := c.splitKeyUsers(slices.Sorted(maps.Keys(req.OneTimeKeys)))
	if err != nil {
		return nil, err
	}
	localClaim := make(map[string]map[string]string, len(local))
	for _, u := range local {
		localClaim[u] = req.OneTimeKeys[u]
	}
	res, err := c.users.ClaimKeys(r.Context(), api.ClaimKeysRequest{OneTimeKeys: localClaim})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	failures := c.fanOut(r.Context(), slices.Sorted(maps.Keys(remote)), keysTimeout(r, req.Timeout), func(ctx context.Context, server string) error {
		ask := make(map[string]map[string]string, len(remote[server]))
		for _, u := range remote[server] {
			ask[u] = req.OneTimeKeys[u]
		}
		got, err := c.fed.ClaimKeys(ctx, server, ask)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for u, devs := range got {
			res.OneTimeKeys[u] = devs
		}
		return nil
	})
	return map[string]any{"one_time_keys": res.OneTimeKeys, "failures": failures}, nil
}

// POST /_matrix/client/v3/keys/device_signing/upload
//
// As Synapse: the first master key, and keys equal to the stored ones,
// need no User-Interactive Auth; replacing keys does, but for an
// application service.
func (c *ClientAPI) postDeviceSigningUpload(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
		UserSigningKey json.RawMessage `json:"user_signing_key"`
		Auth           json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	keys := api.CrossSigningKeys{UserID: dev.UserID, MasterKey: req.MasterKey, SelfSigningKey: req.SelfSigningKey, UserSigningKey: req.UserSigningKey}
	upload := func() (any, error) {
		return struct{}{}, keysError(c.users.UploadCrossSigningKeys(r.Context(), keys), mxerr.CodeInvalidParam)
	}
	need, err := c.users.CrossSigningUploadNeedsAuth(r.Context(), keys)
	if err != nil {
		return nil, err
	}
	// An application service replaces its users' keys without
	// User-Interactive Auth (MSC4190, as Synapse).
	if !need || dev.AppServiceID != "" {
		return upload()
	}
	return c.withUIA(r, req.Auth, c.passwordUIA(r, dev.UserID), upload)
}

// POST /_matrix/client/v3/keys/signatures/upload
func (c *ClientAPI) postSignaturesUpload(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var body map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, mxerr.InvalidParam("Invalid parameter: the body maps user IDs to key IDs to signed keys")
	}
	for _, keys := range body {
		for _, raw := range keys {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
				return nil, mxerr.InvalidParam("Invalid parameter: signed keys must be objects")
			}
		}
	}
	masters, err := c.remoteMasterKeys(r, slices.Sorted(maps.Keys(body)))
	if err != nil {
		return nil, err
	}
	failures, err := c.users.UploadSignatures(r.Context(), dev.UserID, body, masters)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}

// remoteMasterKeys returns the master keys of the remote users among ids
// (a signature upload's targets), as Synapse finds them: from the remote
// device cache when it holds the user up to date, else asked of the
// user's server (/user/keys/query, within the default timeout). Users
// whose server does not answer, or who have no master key, are absent
// (their signatures then fail with M_NOT_FOUND). Invalid user IDs are left
// to the user API, which fails them the same way.
func (c *ClientAPI) remoteMasterKeys(r *http.Request, ids []string) (map[string]json.RawMessage, error) {
	remote := map[string][]string{}
	ask := map[string][]string{}
	for _, id := range ids {
		uid, err := spec.NewUserID(id, true)
		if err != nil || !c.isRemote(uid.Domain()) {
			continue
		}
		remote[string(uid.Domain())] = append(remote[string(uid.Domain())], id)
		ask[id] = []string{}
	}
	if len(ask) == 0 {
		return nil, nil
	}
	res := &api.QueryKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{}}
	remote, err := c.cachedRemoteKeys(r.Context(), ask, remote, res)
	if err != nil {
		return nil, err
	}
	masters := maps.Clone(res.MasterKeys)
	if masters == nil {
		masters = map[string]json.RawMessage{}
	}
	var mu sync.Mutex
	c.fanOut(r.Context(), slices.Sorted(maps.Keys(remote)), keysTimeout(r, nil), func(ctx context.Context, server string) error {
		q := make(map[string][]string, len(remote[server]))
		for _, u := range remote[server] {
			q[u] = []string{}
		}
		got, err := c.fed.QueryKeys(ctx, server, q)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, u := range remote[server] {
			if k, ok := got.MasterKeys[u]; ok {
				masters[u] = k
			}
		}
		return nil
	})
	return masters, nil
}
