package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
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
