package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// supportedVersions are the spec versions whose client-server features
// Myelin serves. A version is listed only when what it adds works: v1.2
// waits on the space hierarchy (/hierarchy), v1.3 on relation aggregations
// and /relations. (The content repository, in every version since r0, is
// still missing too; clients refuse a server without v1.1, so the list
// cannot wait for it.)
var supportedVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1",
}

// unstableFeatures are the MSC flags of what Myelin implements beyond the
// versions it lists.
var unstableFeatures = map[string]bool{
	// Dehydrated devices.
	"org.matrix.msc3814": true,
	// Deleting account data (DELETE, or PUT of {}).
	"org.matrix.msc3391": true,
	// Custom profile fields, as the stable v1.16 endpoints serve them.
	"uk.tcpip.msc4133.stable": true,
	// Invite filtering by user and server lists (the stable v1.18 module
	// is served too).
	"org.matrix.msc4155": true,
}

// GET /_matrix/client/versions
func (c *ClientAPI) getVersions(r *http.Request) (any, error) {
	return map[string]any{
		"versions":          supportedVersions,
		"unstable_features": unstableFeatures,
	}, nil
}

// GET /_matrix/client/v3/capabilities
func (c *ClientAPI) getCapabilities(r *http.Request) (any, error) {
	enabled := map[string]bool{"enabled": true}
	disabled := map[string]bool{"enabled": false}
	available := map[string]string{}
	for v, impl := range gomatrixserverlib.RoomVersions() {
		if rsapi.SupportedRoomVersion(impl.Version()) {
			available[string(v)] = "stable"
		}
	}
	return map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": string(DefaultRoomVersion), "available": available},
		"m.change_password": enabled,
		"m.set_displayname": enabled,
		"m.set_avatar_url":  enabled,
		"m.profile_fields":  enabled,
		"m.3pid_changes":    disabled,
		"m.get_login_token": disabled,
	}}, nil
}

// GET /.well-known/matrix/client
func (c *ClientAPI) getWellKnownClient(r *http.Request) (any, error) {
	if c.cfg.WellKnownClient == "" {
		return nil, mxerr.NotFound("No client discovery information configured")
	}
	body := map[string]any{"m.homeserver": map[string]string{"base_url": c.cfg.WellKnownClient}}
	if c.cfg.WellKnownIdentity != "" {
		body["m.identity_server"] = map[string]string{"base_url": c.cfg.WellKnownIdentity}
	}
	return body, nil
}

// GET /.well-known/matrix/server
func (c *ClientAPI) getWellKnownServer(r *http.Request) (any, error) {
	if c.cfg.WellKnownServer == "" {
		return nil, mxerr.NotFound("No server delegation configured")
	}
	return map[string]string{"m.server": c.cfg.WellKnownServer}, nil
}

// GET /.well-known/matrix/support
func (c *ClientAPI) getWellKnownSupport(r *http.Request) (any, error) {
	if c.cfg.WellKnownSupport == nil {
		return nil, mxerr.NotFound("No support information configured")
	}
	return c.cfg.WellKnownSupport, nil
}
