package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Users' end-to-end encryption keys over federation: the client side of
// /user/keys/query, /user/keys/claim and /user/devices/{userId} (the
// serving side is in userkeys_serve.go).

// remoteKeyServer checks that server is a valid name of another server.
func (f *FederationAPI) remoteKeyServer(server string) (spec.ServerName, error) {
	dest := spec.ServerName(server)
	if _, _, ok := spec.ParseAndValidateServerName(dest); !ok {
		return "", fmt.Errorf("invalid server name %q", server)
	}
	if f.isLocal(dest) {
		return "", fmt.Errorf("%s is this server", server)
	}
	return dest, nil
}

// QueryKeys implements fedapi.FederationAPI: POST /user/keys/query.
func (f *FederationAPI) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*fedapi.KeysQueryResponse, error) {
	dest, err := f.remoteKeyServer(server)
	if err != nil {
		return nil, err
	}
	body := map[string]map[string][]string{"device_keys": make(map[string][]string, len(deviceKeys))}
	for u, ids := range deviceKeys {
		if ids == nil {
			ids = []string{}
		}
		body["device_keys"][u] = ids
	}
	var res fedapi.KeysQueryResponse
	if err := f.doSigned(ctx, "POST", dest, "/_matrix/federation/v1/user/keys/query", body, &res); err != nil {
		return nil, remoteError(dest, err)
	}
	// Only what was asked for, of users of that server.
	for u := range res.DeviceKeys {
		if _, ok := deviceKeys[u]; !ok {
			delete(res.DeviceKeys, u)
		}
	}
	for _, m := range []map[string]json.RawMessage{res.MasterKeys, res.SelfSigningKeys} {
		for u := range m {
			if _, ok := deviceKeys[u]; !ok {
				delete(m, u)
			}
		}
	}
	if res.DeviceKeys == nil {
		res.DeviceKeys = map[string]map[string]json.RawMessage{}
	}
	return &res, nil
}

// ClaimKeys implements fedapi.FederationAPI: POST /user/keys/claim.
func (f *FederationAPI) ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	dest, err := f.remoteKeyServer(server)
	if err != nil {
		return nil, err
	}
	var res struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	body := map[string]any{"one_time_keys": oneTimeKeys}
	if err := f.doSigned(ctx, "POST", dest, "/_matrix/federation/v1/user/keys/claim", body, &res); err != nil {
		return nil, remoteError(dest, err)
	}
	out := make(map[string]map[string]map[string]json.RawMessage, len(res.OneTimeKeys))
	for u, devs := range res.OneTimeKeys {
		asked, ok := oneTimeKeys[u]
		if !ok {
			continue
		}
		for d, keys := range devs {
			if _, ok := asked[d]; !ok || len(keys) == 0 {
				continue
			}
			if out[u] == nil {
				out[u] = map[string]map[string]json.RawMessage{}
			}
			out[u][d] = keys
		}
	}
	return out, nil
}

// QueryUserDevices implements fedapi.FederationAPI: GET
// /user/devices/{userId}.
func (f *FederationAPI) QueryUserDevices(ctx context.Context, server, userID string) (*fedapi.UserDevicesResponse, error) {
	dest, err := f.remoteKeyServer(server)
	if err != nil {
		return nil, err
	}
	var res fedapi.UserDevicesResponse
	if err := f.doSigned(ctx, "GET", dest, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &res); err != nil {
		return nil, remoteError(dest, err)
	}
	if res.UserID != userID {
		return nil, fmt.Errorf("%w: %s answered the devices of %q for %q", fedapi.ErrNoServer, server, res.UserID, userID)
	}
	return &res, nil
}

// Bounds of the served key requests.
const (
	// serveMaxKeyUsers bounds the users of one /user/keys/query.
	serveMaxKeyUsers = 10000
	// serveMaxKeyClaims bounds the devices of one /user/keys/claim.
	serveMaxKeyClaims = 10000
)

// registerUserKeys mounts the served key routes.
func (f *FederationAPI) registerUserKeys(srv *httputil.Server) {
	const v1 = "/_matrix/federation/v1"
	f.handle(srv, http.MethodPost, v1+"/user/keys/query", f.serveUserKeysQuery)
	f.handle(srv, http.MethodPost, v1+"/user/keys/claim", f.serveUserKeysClaim)
	f.handle(srv, http.MethodGet, v1+"/user/devices/{userId}", f.serveUserDevices)
}

// localKeyUser checks that userID is a valid ID of a local user (400
// M_INVALID_PARAM otherwise, as Synapse answers "User is not hosted on
// this homeserver").
func (f *FederationAPI) localKeyUser(userID string) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return mxerr.InvalidParam("Invalid user ID %q", userID)
	}
	if !f.isLocal(uid.Domain()) {
		return mxerr.InvalidParam("User %s is not hosted on this homeserver", userID)
	}
	return nil
}

// POST /_matrix/federation/v1/user/keys/query: device keys (with display
// names only if Config.AllowDeviceNameLookup, as in Synapse), master and
// self-signing keys of local users.
func (f *FederationAPI) serveUserKeysQuery(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.UnmarshalRemoteObject(body, &req); err != nil {
		return nil, err
	}
	if req.DeviceKeys == nil {
		return nil, mxerr.BadJSON("'device_keys' must be a JSON object")
	}
	if len(req.DeviceKeys) > serveMaxKeyUsers {
		return nil, mxerr.New(mxerr.CodeTooLarge, "Too many users: at most %d", serveMaxKeyUsers).WithStatus(http.StatusBadRequest)
	}
	for u := range req.DeviceKeys {
		if err := f.localKeyUser(u); err != nil {
			return nil, err
		}
	}
	res, err := f.users.QueryKeys(r.Context(), userapi.QueryKeysRequest{DeviceKeys: req.DeviceKeys, OverFederation: true,
		DeviceNames: f.cfg.AllowDeviceNameLookup})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"device_keys": res.DeviceKeys}
	if len(res.MasterKeys) > 0 {
		out["master_keys"] = res.MasterKeys
	}
	if len(res.SelfSigningKeys) > 0 {
		out["self_signing_keys"] = res.SelfSigningKeys
	}
	return out, nil
}

// POST /_matrix/federation/v1/user/keys/claim: one key per device of local
// users.
func (f *FederationAPI) serveUserKeysClaim(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.UnmarshalRemoteObject(body, &req); err != nil {
		return nil, err
	}
	if req.OneTimeKeys == nil {
		return nil, mxerr.BadJSON("'one_time_keys' must be a JSON object")
	}
	n := 0
	for u, devs := range req.OneTimeKeys {
		if err := f.localKeyUser(u); err != nil {
			return nil, err
		}
		n += len(devs)
	}
	if n > serveMaxKeyClaims {
		return nil, mxerr.New(mxerr.CodeTooLarge, "Too many devices: at most %d", serveMaxKeyClaims).WithStatus(http.StatusBadRequest)
	}
	res, err := f.users.ClaimKeys(r.Context(), userapi.ClaimKeysRequest{OneTimeKeys: req.OneTimeKeys})
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": res.OneTimeKeys}, nil
}

// GET /_matrix/federation/v1/user/devices/{userId}: a local user's devices
// with keys (display names only if Config.AllowDeviceNameLookup),
// the stream ID of their last change, and the master and self-signing
// keys.
func (f *FederationAPI) serveUserDevices(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	userID := httputil.Vars(r)["userId"]
	if err := f.localKeyUser(userID); err != nil {
		return nil, err
	}
	res, err := f.users.QueryUserDevices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	devices := make([]fedapi.UserDevice, len(res.Devices))
	for i, d := range res.Devices {
		devices[i] = fedapi.UserDevice{DeviceID: d.DeviceID, Keys: d.Keys, DeviceDisplayName: f.deviceName(d.DisplayName)}
	}
	return fedapi.UserDevicesResponse{UserID: userID, StreamID: res.StreamID, Devices: devices,
		MasterKey: res.MasterKey, SelfSigningKey: res.SelfSigningKey}, nil
}
