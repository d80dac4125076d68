package httputil

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// Device is the authenticated caller of a request: the user and the device
// whose access token was presented.
type Device struct {
	UserID   string
	DeviceID string
	IsGuest  bool
	IsAdmin  bool
	// TokenID identifies the access token used, so that /logout can revoke
	// exactly that session.
	TokenID int64
}

// ClientInfo describes where a request came from, for device "last seen"
// records.
type ClientInfo struct {
	IP        string
	UserAgent string
}

// Authenticator resolves access tokens. It returns a *mxerr.Error
// (M_UNKNOWN_TOKEN) for a token it does not know, an *ExpiredTokenError for
// one that has expired, and a plain error when it could not decide.
type Authenticator interface {
	Authenticate(ctx context.Context, token string, client ClientInfo) (*Device, error)
}

// ExpiredTokenError reports an access token that was valid but has
// expired. Routes that accept expired tokens (AllowExpired) use the Device;
// the others answer 401 M_UNKNOWN_TOKEN with soft_logout, so that the client
// refreshes instead of discarding its state.
type ExpiredTokenError struct {
	Device *Device
}

func (e *ExpiredTokenError) Error() string { return "access token expired" }

// AccessToken returns the access token of the request, from the
// "Authorization: Bearer" header or the deprecated access_token query
// parameter. It returns "" when neither is present.
func AccessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// authenticate applies the route's auth mode to the request.
func (s *Server) authenticate(r *http.Request, st *request, o *routeOptions) error {
	if o.auth == authNone {
		return nil
	}
	token := AccessToken(r)
	if token == "" {
		if o.auth == authOptional {
			return nil
		}
		return mxerr.MissingToken("Missing access token")
	}
	if s.auth == nil {
		return mxerr.UnknownToken(false, "Unknown access token")
	}
	dev, err := s.auth.Authenticate(r.Context(), token, ClientInfo{
		IP:        ClientIP(r, s.opts.TrustForwardedFor),
		UserAgent: r.UserAgent(),
	})
	var expired *ExpiredTokenError
	if errors.As(err, &expired) {
		if !o.allowExpired {
			return mxerr.UnknownToken(true, "Access token has expired")
		}
		dev, err = expired.Device, nil
	}
	if err != nil {
		return err
	}
	if dev.IsGuest && !o.guests {
		return mxerr.GuestAccessForbidden("Guest access not allowed")
	}
	if o.admin && !dev.IsAdmin {
		return mxerr.Forbidden("You are not a server admin")
	}
	st.device = dev
	st.log = st.log.With("user_id", dev.UserID, "device_id", dev.DeviceID)
	return nil
}
