package clientapi

import (
	"net/http"
	"net/url"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// registerThirdParty mounts the third-party lookups
// (third_party_lookup.yaml), answered by the application services that
// bridge each protocol.
func (c *ClientAPI) registerThirdParty(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()
	srv.HandleClient(http.MethodGet, "/thirdparty/protocols", c.getThirdPartyProtocols, auth, guests)
	srv.HandleClient(http.MethodGet, "/thirdparty/protocol/{protocol}", c.getThirdPartyProtocol, auth, guests)
	srv.HandleClient(http.MethodGet, "/thirdparty/location/{protocol}", c.getThirdPartyLocations, auth, guests)
	srv.HandleClient(http.MethodGet, "/thirdparty/user/{protocol}", c.getThirdPartyUsers, auth, guests)
	srv.HandleClient(http.MethodGet, "/thirdparty/location", c.getThirdPartyLocationByAlias, auth, guests)
	srv.HandleClient(http.MethodGet, "/thirdparty/user", c.getThirdPartyUserByID, auth, guests)
}

// GET /_matrix/client/v3/thirdparty/protocols
func (c *ClientAPI) getThirdPartyProtocols(r *http.Request) (any, error) {
	return c.cfg.ASQueries.Protocols(r.Context(), ""), nil
}

// GET /_matrix/client/v3/thirdparty/protocol/{protocol}
func (c *ClientAPI) getThirdPartyProtocol(r *http.Request) (any, error) {
	protocol := httputil.Vars(r)["protocol"]
	info, ok := c.cfg.ASQueries.Protocols(r.Context(), protocol)[protocol]
	if !ok {
		return nil, mxerr.NotFound("Unknown protocol")
	}
	return info, nil
}

// lookupFields are the query parameters passed on to the services: all of
// them but the access token, as Synapse passes them.
func lookupFields(r *http.Request) url.Values {
	q := r.URL.Query()
	q.Del("access_token")
	return q
}

// GET /_matrix/client/v3/thirdparty/location/{protocol}
//
// As Synapse, no result (an unknown protocol included) is an empty list.
func (c *ClientAPI) getThirdPartyLocations(r *http.Request) (any, error) {
	return c.cfg.ASQueries.ThirdParty(r.Context(), asapi.ThirdPartyLocation, httputil.Vars(r)["protocol"], lookupFields(r)), nil
}

// GET /_matrix/client/v3/thirdparty/user/{protocol}
func (c *ClientAPI) getThirdPartyUsers(r *http.Request) (any, error) {
	return c.cfg.ASQueries.ThirdParty(r.Context(), asapi.ThirdPartyUser, httputil.Vars(r)["protocol"], lookupFields(r)), nil
}

// GET /_matrix/client/v3/thirdparty/location?alias=
//
// Asked of the services with the alias in an alias namespace (Synapse asks
// none and always answers an empty list).
func (c *ClientAPI) getThirdPartyLocationByAlias(r *http.Request) (any, error) {
	alias := r.URL.Query().Get("alias")
	if alias == "" {
		return nil, mxerr.MissingParam("Missing alias parameter")
	}
	return c.cfg.ASQueries.ThirdParty(r.Context(), asapi.ThirdPartyLocation, "", url.Values{"alias": {alias}}), nil
}

// GET /_matrix/client/v3/thirdparty/user?userid=
//
// Asked of the services with the user in a user namespace (Synapse asks
// none and always answers an empty list).
func (c *ClientAPI) getThirdPartyUserByID(r *http.Request) (any, error) {
	userID := r.URL.Query().Get("userid")
	if userID == "" {
		return nil, mxerr.MissingParam("Missing userid parameter")
	}
	return c.cfg.ASQueries.ThirdParty(r.Context(), asapi.ThirdPartyUser, "", url.Values{"userid": {userID}}), nil
}
