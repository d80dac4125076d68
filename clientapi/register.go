package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/clientapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// maxPasswordLength bounds passwords, as Synapse does.
const maxPasswordLength = 512

// validateLocalpart checks a requested (lower-cased) localpart.
func (c *ClientAPI) validateLocalpart(localpart string) error {
	if err := api.CheckLocalpart(localpart, c.cfg.ServerName); err != nil {
		return mxerr.InvalidUsername("%s", err.Error())
	}
	return nil
}

// checkAvailable validates a localpart and checks that it is free: no
// application service holds it exclusively (400 M_EXCLUSIVE) and no account
// has it.
func (c *ClientAPI) checkAvailable(ctx context.Context, localpart string) error {
	if err := c.validateLocalpart(localpart); err != nil {
		return err
	}
	if err := c.checkUserNotExclusive(c.userID(localpart), nil); err != nil {
		return err
	}
	_, err := c.users.QueryAccount(ctx, c.userID(localpart))
	switch {
	case err == nil:
		return mxerr.UserInUse("User ID already taken")
	case errors.Is(err, api.ErrNotFound):
		return nil
	default:
		return err
	}
}

type registerRequest struct {
	// Type is m.login.application_service for a service's registration.
	Type                     string          `json:"type"`
	Auth                     json.RawMessage `json:"auth"`
	Username                 string          `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

// registrationUIA is what /register requires: a registration token when
// tokens are required, nothing (m.login.dummy) otherwise.
func (c *ClientAPI) registrationUIA() *uia {
	if c.cfg.RequireRegistrationToken {
		return &uia{
			flows: [][]string{{authRegistrationToken}},
			stages: map[string]stageFunc{authRegistrationToken: func(ctx context.Context, sess *storage.UIASession, a *authDict) error {
				ok, err := c.store.ReserveRegistrationToken(ctx, sess.ID, a.Token, nowMS())
				if err != nil {
					return err
				}
				if !ok {
					return mxerr.New(mxerr.CodeUnauthorized, "Invalid registration token")
				}
				return nil
			}},
		}
	}
	return &uia{
		flows:  [][]string{{authDummy}},
		stages: map[string]stageFunc{authDummy: func(context.Context, *storage.UIASession, *authDict) error { return nil }},
	}
}

// POST /_matrix/client/v3/register
func (c *ClientAPI) postRegister(r *http.Request) (any, error) {
	ctx := r.Context()
	switch kind := r.URL.Query().Get("kind"); kind {
	case "guest":
		return c.registerGuest(r)
	case "", "user":
	default:
		return nil, mxerr.InvalidParam("kind must be user or guest")
	}
	var req registerRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	if req.Type == authAppService {
		// Whether or not registration is open.
		return c.registerAppService(r, &req)
	}
	if !c.cfg.RegistrationEnabled {
		return nil, mxerr.Forbidden("Registration has been disabled")
	}
	if req.Password != nil && len(*req.Password) > maxPasswordLength {
		return nil, mxerr.InvalidParam("Password too long (%d characters at most)", maxPasswordLength)
	}
	localpart := strings.ToLower(req.Username)
	if req.Username != "" {
		// The spec requires these checks before authentication.
		if err := c.checkAvailable(ctx, localpart); err != nil {
			return nil, err
		}
	}
	return c.withUIA(r, req.Auth, c.registrationUIA(), func() (any, error) {
		if req.Password == nil || *req.Password == "" {
			return nil, mxerr.MissingParam("Missing password")
		}
		acc, err := c.users.CreateAccount(ctx, api.CreateAccount{Localpart: localpart, Password: *req.Password})
		if errors.Is(err, api.ErrUserInUse) {
			return nil, mxerr.UserInUse("User ID already taken")
		}
		if err != nil {
			return nil, err
		}
		c.limiter.Take(RateRegistration, httputil.RateKey(r))
		c.log.Info("registered user", "user_id", acc.UserID)
		return c.registered(ctx, acc.UserID, &req)
	})
}

// registered answers a completed registration: the new user's session,
// unless inhibit_login asked for none.
func (c *ClientAPI) registered(ctx context.Context, userID string, req *registerRequest) (any, error) {
	if req.InhibitLogin {
		return map[string]any{"user_id": userID, "home_server": c.cfg.ServerName}, nil
	}
	s, err := c.users.Login(ctx, api.NewSession{
		UserID: userID, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName, Refreshable: req.RefreshToken,
	})
	if err != nil {
		return nil, err
	}
	return c.sessionResponse(s, false), nil
}

// registerAppService registers a user of the application service whose
// as_token the request carries (type m.login.application_service), as
// Synapse: no User-Interactive Authentication, no registration needs to be
// open, the user must be in the service's user namespaces and in no other
// service's exclusive ones (400 M_EXCLUSIVE), and the localpart is taken as
// given (no lower-casing). A service with MSC4190 creates its users'
// devices itself, so it must ask for inhibit_login.
func (c *ClientAPI) registerAppService(r *http.Request, req *registerRequest) (any, error) {
	token := httputil.AccessToken(r)
	if token == "" {
		return nil, mxerr.MissingToken("Appservice token must be provided when using a type of m.login.application_service")
	}
	svc := c.cfg.AppServices.ByASToken(token)
	if svc == nil || !svc.AllowsIP(httputil.RequestClient(r).IP) {
		return nil, mxerr.UnknownToken(false, "Unrecognised application service token")
	}
	if req.Username == "" {
		return nil, mxerr.MissingParam("Missing username")
	}
	if err := c.validAppServiceLocalpart(req.Username); err != nil {
		return nil, err
	}
	userID := c.userID(req.Username)
	if !svc.IsInterestedInUser(userID) {
		return nil, mxerr.New(mxerr.CodeExclusive, "Invalid user localpart for this application service.")
	}
	if err := c.checkUserNotExclusive(userID, svc); err != nil {
		return nil, err
	}
	if svc.MSC4190 && !req.InhibitLogin {
		return nil, mxerr.New(CodeAppServiceLoginUnsupported, "This appservice has MSC4190 enabled, so the inhibit_login parameter must be set to true.")
	}
	acc, err := c.users.CreateAccount(r.Context(), api.CreateAccount{Localpart: req.Username})
	if errors.Is(err, api.ErrUserInUse) {
		return nil, mxerr.UserInUse("User ID already taken")
	}
	if err != nil {
		return nil, err
	}
	c.log.Info("registered application service user", "user_id", acc.UserID, "appservice_id", svc.ID)
	return c.registered(r.Context(), acc.UserID, req)
}

// registerGuest creates a guest account: every parameter but the device
// display name is ignored, as the spec requires.
func (c *ClientAPI) registerGuest(r *http.Request) (any, error) {
	if !c.cfg.GuestAccess {
		return nil, mxerr.Forbidden("Guest access is disabled")
	}
	var req registerRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	acc, err := c.users.CreateAccount(r.Context(), api.CreateAccount{IsGuest: true})
	if err != nil {
		return nil, err
	}
	c.limiter.Take(RateRegistration, httputil.RateKey(r))
	s, err := c.users.Login(r.Context(), api.NewSession{UserID: acc.UserID, DeviceDisplayName: req.InitialDeviceDisplayName})
	if err != nil {
		return nil, err
	}
	return c.sessionResponse(s, false), nil
}

// sessionResponse is the body of a successful /register or /login.
func (c *ClientAPI) sessionResponse(s *api.Session, withWellKnown bool) map[string]any {
	body := map[string]any{
		"user_id":      s.UserID,
		"access_token": s.AccessToken,
		"device_id":    s.DeviceID,
		"home_server":  c.cfg.ServerName,
	}
	if s.RefreshToken != "" {
		body["refresh_token"] = s.RefreshToken
		body["expires_in_ms"] = s.ExpiresIn.Milliseconds()
	}
	if withWellKnown && c.cfg.WellKnownClient != "" {
		wk := map[string]any{"m.homeserver": map[string]string{"base_url": c.cfg.WellKnownClient}}
		if c.cfg.WellKnownIdentity != "" {
			wk["m.identity_server"] = map[string]string{"base_url": c.cfg.WellKnownIdentity}
		}
		body["well_known"] = wk
	}
	return body
}

// GET /_matrix/client/v3/register/available
func (c *ClientAPI) getRegisterAvailable(r *http.Request) (any, error) {
	if !c.cfg.RegistrationEnabled {
		return nil, mxerr.Forbidden("Registration has been disabled")
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return nil, mxerr.MissingParam("Missing username")
	}
	if err := c.checkAvailable(r.Context(), strings.ToLower(username)); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// GET /_matrix/client/v1/register/m.login.registration_token/validity
func (c *ClientAPI) getTokenValidity(r *http.Request) (any, error) {
	if !c.cfg.RequireRegistrationToken {
		return nil, mxerr.Forbidden("Registration tokens are not enabled")
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, mxerr.MissingParam("Missing token")
	}
	t, err := c.store.GetRegistrationToken(r.Context(), token)
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]bool{"valid": false}, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": t.Valid(nowMS())}, nil
}
