package federationapi

import "github.com/myelin-chat/myelin/internal/httputil"

// registerServing mounts the routes that serve events, state and lookups
// to other servers.
func (f *FederationAPI) registerServing(srv *httputil.Server) {}
