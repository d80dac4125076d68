package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// passwordUIA requires the caller to confirm their own password.
func (c *ClientAPI) passwordUIA(r *http.Request, userID string) *uia {
	return &uia{
		flows: [][]string{{authPassword}},
		stages: map[string]stageFunc{authPassword: func(ctx context.Context, _ *storage.UIASession, a *authDict) error {
			uid, err := c.resolveUser(a.Identifier, a.User)
			if err != nil {
				return err
			}
			if uid != userID {
				// Synapse's 403 (no challenge): another account's password
				// never authenticates this one, and whether it was right is
				// not said.
				return &uiaFinal{mxerr.Forbidden("The password must be that of the account making the request")}
			}
			_, err = c.checkPassword(r, uid, a.Password)
			return err
		}},
	}
}

// GET /_matrix/client/v3/account/whoami
func (c *ClientAPI) getWhoami(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	body := map[string]any{"user_id": dev.UserID, "is_guest": dev.IsGuest}
	// An application service acting as a user without naming a device has
	// none.
	if dev.DeviceID != "" {
		body["device_id"] = dev.DeviceID
	}
	return body, nil
}

// POST /_matrix/client/v3/account/password
func (c *ClientAPI) postPassword(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   *string         `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return nil, mxerr.MissingParam("Missing new_password")
	}
	if len(*req.NewPassword) > maxPasswordLength {
		return nil, mxerr.InvalidParam("Password too long (%d characters at most)", maxPasswordLength)
	}
	return c.withUIA(r, req.Auth, c.passwordUIA(r, dev.UserID), func() (any, error) {
		logout := req.LogoutDevices == nil || *req.LogoutDevices
		return struct{}{}, c.users.SetPassword(r.Context(), dev.UserID, *req.NewPassword, logout, dev.DeviceID)
	})
}

// POST /_matrix/client/v3/account/deactivate
func (c *ClientAPI) postDeactivate(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return c.withUIA(r, req.Auth, c.passwordUIA(r, dev.UserID), func() (any, error) {
		if err := c.users.Deactivate(r.Context(), dev.UserID, req.Erase); err != nil && !errors.Is(err, api.ErrNotFound) {
			return nil, err
		}
		c.log.Info("deactivated user", "user_id", dev.UserID, "erase", req.Erase)
		// No identity server bindings exist to remove.
		return map[string]string{"id_server_unbind_result": "no-support"}, nil
	})
}
