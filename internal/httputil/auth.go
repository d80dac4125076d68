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
	// AppServiceID is the application service whose as_token authenticated
	// the request ("" for a user's own access token): the service acts as
	// UserID (its sender, or the user_id it asserted) and, when DeviceID is
	// set, as that device of the user (device_id). Routes that only
	// services may use (the ts query parameter, MSC4190 device management)
	// check it.
	AppServiceID string
	// RateExempt is set for the requests of a service registered with
	// rate_limited: false, which no rate limit applies to.
	RateExempt bool
}

// ClientInfo describes where a request came from, for device "last seen"
// records, and whom an application service asks to act as.
type ClientInfo struct {
	IP        string
	UserAgent string
	// AssertUserID is the user_id query parameter and AssertsUser whether
	// it was given: the identity an application service asserts (the
	// spec's identity assertion). AssertDeviceID is the device_id (or
	// MSC3202's org.matrix.msc3202.device_id) query parameter: the device
	// of that user it acts as. User tokens ignore them.
	AssertUserID   string
	AssertsUser    bool
	AssertDeviceID string
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

// UnstableDeviceIDParam is MSC3202's name of the device_id query parameter
// of device masquerading, which Synapse and the mautrix bridges still use.
const UnstableDeviceIDParam = "org.matrix.msc3202.device_id"

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

// RequestClient returns the ClientInfo of a request being served: its
// client's address and user agent, and the identity an application service
// asserts in its query (user_id, device_id). Handlers that authenticate a
// request themselves (an application service's /login) pass it to
// Authenticator.Authenticate.
func RequestClient(r *http.Request) ClientInfo {
	client := ClientInfo{UserAgent: r.UserAgent()}
	if st := stateOf(r.Context()); st != nil && st.clientIP != "" {
		client.IP = st.clientIP
	} else {
		client.IP = ClientIP(r, false)
	}
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		client.AssertUserID, client.AssertsUser = q.Get("user_id"), q.Has("user_id")
		if client.AssertDeviceID = q.Get("device_id"); client.AssertDeviceID == "" {
			client.AssertDeviceID = q.Get(UnstableDeviceIDParam)
		}
	}
	return client
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
	dev, err := s.auth.Authenticate(r.Context(), token, RequestClient(r))
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
	if dev.AppServiceID != "" {
		st.log = st.log.With("appservice_id", dev.AppServiceID)
	}
	return nil
}
