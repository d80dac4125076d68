package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// POST /_matrix/client/v3/user/{userId}/openid/request_token: a token that
// lets another server (or an integration manager) learn who the user is,
// through /_matrix/federation/v1/openid/userinfo.
func (c *ClientAPI) requestOpenIDToken(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	if httputil.Vars(r)["userId"] != dev.UserID {
		return nil, mxerr.Forbidden("Cannot request an OpenID token for another user")
	}
	var body map[string]any
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	token, expiresIn, err := c.users.CreateOpenIDToken(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": c.cfg.ServerName,
		"expires_in":         int64(expiresIn.Seconds()),
	}, nil
}
