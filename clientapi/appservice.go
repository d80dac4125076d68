package clientapi

import (
	"context"
	"net/http"
	"strconv"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// What application services (bridges) do on the client API: they
// authenticate with their as_token (userapi resolves it to the user, and
// device, they act as), register and log in their users without
// User-Interactive Authentication, hold user IDs and aliases exclusively,
// may be exempt from rate limits, set the timestamps of the events they
// send, and publish rooms in the directories of their networks.

// Login and registration type of application services.
const authAppService = "m.login.application_service"

// CodeAppServiceLoginUnsupported is Synapse's error for an MSC4190 service
// that logs its users in (it must create their devices itself).
const CodeAppServiceLoginUnsupported = "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED"

// appService returns the service that authenticated the request with its
// as_token, or nil for a user's own access token.
func (c *ClientAPI) appService(ctx context.Context) *asapi.Service {
	if dev := httputil.DeviceFrom(ctx); dev != nil && dev.AppServiceID != "" {
		return c.cfg.AppServices.ByID(dev.AppServiceID)
	}
	return nil
}

// limits is the rate limiter for the request: none for a service
// registered with rate_limited: false, as in Synapse, where only requests
// made with such a service's as_token are exempt (not its users' own
// access tokens).
func (c *ClientAPI) limits(ctx context.Context) *httputil.RateLimiter {
	if dev := httputil.DeviceFrom(ctx); dev != nil && dev.RateExempt {
		return nil
	}
	return c.limiter
}

// checkUserNotExclusive refuses a user ID that a service other than
// allowed (nil: any service) holds exclusively, as Synapse's
// check_user_id_not_appservice_exclusive: 400 M_EXCLUSIVE.
func (c *ClientAPI) checkUserNotExclusive(userID string, allowed *asapi.Service) error {
	for _, s := range c.cfg.AppServices.Services() {
		if s == allowed {
			continue
		}
		if _, excl := s.UserInNamespace(userID); excl || userID == s.SenderID {
			return mxerr.New(mxerr.CodeExclusive, "This user ID is reserved by an application service.")
		}
	}
	return nil
}

// checkAliasWritable applies Synapse's rules for creating or deleting an
// alias: a service (its as_token) may only touch aliases of its own
// namespaces; a user may not touch an alias that a service holds
// exclusively, unless the user is that service's sender. Both are 400
// M_EXCLUSIVE.
func (c *ClientAPI) checkAliasWritable(ctx context.Context, userID, alias string) error {
	if svc := c.appService(ctx); svc != nil {
		if m, _ := svc.AliasInNamespace(alias); !m {
			return mxerr.New(mxerr.CodeExclusive, "This application service has not reserved this kind of alias.")
		}
		return nil
	}
	for _, s := range c.cfg.AppServices.Services() {
		m, excl := s.AliasInNamespace(alias)
		if !m {
			continue
		}
		if userID == s.SenderID {
			return nil
		}
		if excl {
			return mxerr.New(mxerr.CodeExclusive, "This alias is reserved by an application service.")
		}
	}
	return nil
}

// massagedTS returns the ts query parameter of a request made by an
// application service (timestamp massaging: the origin_server_ts of the
// event it sends, for bridged history), 0 when absent or when the request
// is not a service's (Synapse ignores it then).
func (c *ClientAPI) massagedTS(r *http.Request) (int64, error) {
	if c.appService(r.Context()) == nil || !r.URL.Query().Has("ts") {
		return 0, nil
	}
	ts, err := strconv.ParseInt(r.URL.Query().Get("ts"), 10, 64)
	if err != nil || ts < 0 || ts > 1<<53-1 {
		return 0, mxerr.InvalidParam("ts must be a non-negative integer")
	}
	return ts, nil
}

// validAppServiceLocalpart checks the localpart a service registers. As
// Synapse, services may use any localpart that makes a valid user ID
// (historical characters, upper case and a leading underscore included),
// which bridges rely on.
func (c *ClientAPI) validAppServiceLocalpart(localpart string) error {
	if localpart == "" {
		return mxerr.InvalidUsername("User ID cannot be empty")
	}
	for i := 0; i < len(localpart); i++ {
		if b := localpart[i]; b < 0x21 || b > 0x7e || b == ':' {
			return mxerr.InvalidUsername("User ID contains an invalid character")
		}
	}
	if len(c.userID(localpart)) > httputil.MaxIDBytes {
		return mxerr.InvalidUsername("User ID is too long (%d bytes at most)", httputil.MaxIDBytes)
	}
	return nil
}
