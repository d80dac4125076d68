package clientapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
)

// userIdentifier is the "identifier" object of /login and UIA.
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// resolveUser turns a user identifier (or the legacy "user" field) into a
// local user ID. Localparts are matched case-insensitively, as registration
// lower-cases them.
func (c *ClientAPI) resolveUser(ident *userIdentifier, legacyUser string) (string, error) {
	user := legacyUser
	if ident != nil {
		switch ident.Type {
		case "m.id.user":
			user = ident.User
		case "m.id.thirdparty", "m.id.phone":
			return "", mxerr.Forbidden("No third-party identifiers are associated with accounts on this server")
		case "":
			return "", mxerr.MissingParam("identifier.type is required")
		default:
			return "", mxerr.Unknown("Unknown identifier type %s", ident.Type).WithStatus(http.StatusBadRequest)
		}
	}
	if user == "" {
		return "", mxerr.MissingParam("Missing user identifier")
	}
	if strings.HasPrefix(user, "@") {
		uid, err := spec.NewUserID(user, true)
		if err != nil {
			return "", mxerr.InvalidParam("Invalid user ID")
		}
		if string(uid.Domain()) != c.cfg.ServerName {
			return "", mxerr.Forbidden("Invalid username or password")
		}
		user = uid.Local()
	}
	return c.userID(strings.ToLower(user)), nil
}

// checkPassword verifies a password with the failed-attempt limit per
// account, returning the Matrix error to send on failure.
func (c *ClientAPI) checkPassword(r *http.Request, userID, password string) (*api.Account, error) {
	if ok, wait := c.limiter.Check(RateFailedLogin, userID); !ok {
		return nil, mxerr.LimitExceeded(wait)
	}
	acc, err := c.users.CheckPassword(r.Context(), userID, password)
	switch {
	case err == nil:
		return acc, nil
	case errors.Is(err, api.ErrDeactivated):
		return nil, mxerr.New(mxerr.CodeUserDeactivated, "This account has been deactivated")
	case errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrBadPassword):
		c.limiter.Allow(RateFailedLogin, userID)
		return nil, mxerr.Forbidden("Invalid username or password")
	default:
		return nil, err
	}
}

// GET /_matrix/client/v3/login
func (c *ClientAPI) getLogin(r *http.Request) (any, error) {
	return map[string]any{"flows": []map[string]string{{"type": authPassword}, {"type": authAppService}}}, nil
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

// POST /_matrix/client/v3/login
func (c *ClientAPI) postLogin(r *http.Request) (any, error) {
	var req loginRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := checkDeviceID(req.DeviceID); err != nil {
		return nil, err
	}
	if req.Type == authAppService {
		return c.loginAppService(r, &req)
	}
	c.limiter.Take(RateLogin, httputil.RateKey(r))
	switch req.Type {
	case authPassword:
	case "":
		return nil, mxerr.MissingParam("Missing login type")
	default:
		return nil, mxerr.Unknown("Unknown login type %s", req.Type).WithStatus(http.StatusBadRequest)
	}
	userID, err := c.resolveUser(req.Identifier, req.User)
	if err != nil {
		return nil, err
	}
	if req.Password == nil {
		return nil, mxerr.MissingParam("Missing password")
	}
	if _, err := c.checkPassword(r, userID, *req.Password); err != nil {
		return nil, err
	}
	s, err := c.users.Login(r.Context(), api.NewSession{
		UserID: userID, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName, Refreshable: req.RefreshToken,
	})
	if err != nil {
		return nil, err
	}
	return c.sessionResponse(s, true), nil
}

// loginAppService logs in a user of the application service whose as_token
// authenticates the request (m.login.application_service, as Synapse):
// the user, named by an m.id.user identifier, must be in the service's
// namespaces (403 M_FORBIDDEN) and exist. The request's own identity
// assertion (user_id, device_id) is checked as on any route. A service
// with MSC4190 creates its users' devices itself and may not log them in.
// Only services with rate_limited true are limited, per address.
func (c *ClientAPI) loginAppService(r *http.Request, req *loginRequest) (any, error) {
	token := httputil.AccessToken(r)
	if token == "" {
		return nil, mxerr.MissingToken("Missing access token")
	}
	dev, err := c.users.Authenticate(r.Context(), token, httputil.RequestClient(r))
	if err != nil {
		var expired *httputil.ExpiredTokenError
		if errors.As(err, &expired) {
			return nil, mxerr.UnknownToken(true, "Access token has expired")
		}
		return nil, err
	}
	svc := c.cfg.AppServices.ByID(dev.AppServiceID)
	if svc == nil {
		return nil, mxerr.UnknownToken(false, "This login method is only valid for application services")
	}
	if svc.MSC4190 {
		return nil, mxerr.New(CodeAppServiceLoginUnsupported, "This appservice has MSC4190 enabled, so appservice login cannot be used.")
	}
	if svc.RateLimited {
		c.limiter.Take(RateLogin, httputil.RateKey(r))
	}
	if req.Identifier == nil {
		return nil, mxerr.InvalidParam("Invalid identifier in login submission")
	}
	if req.Identifier.Type != "m.id.user" {
		return nil, mxerr.InvalidParam("Unknown login identifier type")
	}
	if req.Identifier.User == "" {
		return nil, mxerr.InvalidParam("Invalid user in identifier")
	}
	userID := req.Identifier.User
	if !strings.HasPrefix(userID, "@") {
		userID = c.userID(userID)
	}
	if !svc.IsInterestedInUser(userID) {
		return nil, mxerr.Forbidden("Invalid access_token")
	}
	acc, err := c.users.QueryAccount(r.Context(), userID)
	if errors.Is(err, api.ErrNotFound) {
		return nil, mxerr.Forbidden("Application service has not registered this user (%s)", userID)
	}
	if err != nil {
		return nil, err
	}
	if acc.Deactivated && userID != svc.SenderID {
		return nil, mxerr.New(mxerr.CodeUserDeactivated, "This account has been deactivated")
	}
	s, err := c.users.Login(r.Context(), api.NewSession{
		UserID: userID, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName, Refreshable: req.RefreshToken,
	})
	if err != nil {
		return nil, err
	}
	return c.sessionResponse(s, true), nil
}

// POST /_matrix/client/v3/refresh
func (c *ClientAPI) postRefresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxerr.MissingParam("Missing refresh_token")
	}
	s, err := c.users.Refresh(r.Context(), req.RefreshToken)
	if errors.Is(err, api.ErrUnknownToken) || errors.Is(err, api.ErrTokenReplaced) {
		return nil, mxerr.UnknownToken(false, "Unknown or already used refresh token")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":  s.AccessToken,
		"refresh_token": s.RefreshToken,
		"expires_in_ms": s.ExpiresIn.Milliseconds(),
	}, nil
}

// POST /_matrix/client/v3/logout: the device goes with its token.
func (c *ClientAPI) postLogout(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	return struct{}{}, c.users.DeleteDevices(r.Context(), dev.UserID, []string{dev.DeviceID})
}

// POST /_matrix/client/v3/logout/all
func (c *ClientAPI) postLogoutAll(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	return struct{}{}, c.users.DeleteAllDevices(r.Context(), dev.UserID, "")
}
