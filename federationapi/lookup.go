package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
)

// QueryRoomAlias implements fedapi.FederationAPI: the alias's server
// answers /query/directory.
func (f *FederationAPI) QueryRoomAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		return "", nil, fmt.Errorf("invalid room alias %q: %w", alias, err)
	}
	if f.isLocal(server) {
		return "", nil, fmt.Errorf("%s is an alias of this server", alias)
	}
	res, err := f.client.LookupRoomAlias(ctx, f.cfg.ServerName, server, alias)
	if err != nil {
		return "", nil, remoteError(server, err)
	}
	if _, err := spec.NewRoomID(res.RoomID); err != nil {
		return "", nil, fmt.Errorf("%w: %s answered an invalid room ID %q", fedapi.ErrNoServer, server, res.RoomID)
	}
	servers := make([]string, 0, len(res.Servers))
	for _, s := range res.Servers {
		servers = append(servers, string(s))
	}
	return res.RoomID, servers, nil
}

// QueryProfile implements fedapi.FederationAPI: the user's server answers
// /query/profile (every field it has, or the one asked for).
func (f *FederationAPI) QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, fmt.Errorf("invalid user ID %q: %w", userID, err)
	}
	server := uid.Domain()
	if f.isLocal(server) {
		return nil, fmt.Errorf("%s is a user of this server", userID)
	}
	q := url.Values{"user_id": {userID}}
	if field != "" {
		q.Set("field", field)
	}
	var res map[string]json.RawMessage
	if err := f.doSigned(ctx, "GET", server, "/_matrix/federation/v1/query/profile?"+q.Encode(), nil, &res); err != nil {
		return nil, remoteError(server, err)
	}
	if field == "" {
		if res == nil {
			res = map[string]json.RawMessage{}
		}
		return res, nil
	}
	v, ok := res[field]
	if !ok || string(v) == "null" {
		return nil, &fedapi.RemoteError{Server: string(server), Status: 404, Code: "M_NOT_FOUND", Message: "Profile field " + field + " is not set"}
	}
	return map[string]json.RawMessage{field: v}, nil
}

// QueryPublicRooms implements fedapi.FederationAPI: GET /publicRooms, or
// POST when searching, as Synapse asks.
func (f *FederationAPI) QueryPublicRooms(ctx context.Context, server string, req *fedapi.PublicRoomsRequest) (json.RawMessage, error) {
	dest := spec.ServerName(server)
	if _, _, ok := spec.ParseAndValidateServerName(dest); !ok {
		return nil, fmt.Errorf("invalid server name %q", server)
	}
	if f.isLocal(dest) {
		return nil, fmt.Errorf("%s is this server", server)
	}
	var res json.RawMessage
	var err error
	if req.SearchTerm == "" {
		q := url.Values{}
		if req.Limit > 0 {
			q.Set("limit", strconv.Itoa(req.Limit))
		}
		if req.Since != "" {
			q.Set("since", req.Since)
		}
		if req.IncludeAllNetworks {
			q.Set("include_all_networks", "true")
		}
		if req.ThirdPartyInstanceID != "" {
			q.Set("third_party_instance_id", req.ThirdPartyInstanceID)
		}
		path := "/_matrix/federation/v1/publicRooms"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		err = f.doSigned(ctx, "GET", dest, path, nil, &res)
	} else {
		body := struct {
			*fedapi.PublicRoomsRequest
			Filter map[string]string `json:"filter"`
		}{req, map[string]string{"generic_search_term": req.SearchTerm}}
		err = f.doSigned(ctx, "POST", dest, "/_matrix/federation/v1/publicRooms", body, &res)
	}
	if err != nil {
		return nil, remoteError(dest, err)
	}
	var check struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	if err := json.Unmarshal(res, &check); err != nil || check.Chunk == nil {
		return nil, fmt.Errorf("%w: %s answered a room directory without chunk", fedapi.ErrNoServer, server)
	}
	return res, nil
}
