package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Errors of the application service ping (appservice_ping.yaml).
const (
	codeURLNotSet         = "M_URL_NOT_SET"
	codeBadStatus         = "M_BAD_STATUS"
	codeConnectionFailed  = "M_CONNECTION_FAILED"
	codeConnectionTimeout = "M_CONNECTION_TIMEOUT"
)

// queryAlias returns the room of an alias known here. A local alias that is
// unknown is asked of the application services with it in an alias
// namespace (GET /_matrix/app/v1/rooms/{roomAlias}); one that says it exists
// has created the room and the alias meanwhile, so the lookup is made
// again. It returns rsapi.ErrAliasNotFound when there is still none.
func (c *ClientAPI) queryAlias(ctx context.Context, alias string) (string, error) {
	roomID, err := c.rooms.QueryAlias(ctx, alias)
	if !errors.Is(err, rsapi.ErrAliasNotFound) {
		return roomID, err
	}
	if _, server, _ := gomatrixserverlib.SplitID('#', alias); c.isRemote(server) {
		return "", err
	}
	if !c.cfg.ASQueries.QueryAlias(ctx, alias) {
		return "", err
	}
	return c.rooms.QueryAlias(ctx, alias)
}

// retryUnknownUser reports whether a local user without an account should
// be looked up again: an application service with the user in a user
// namespace said it exists (GET /_matrix/app/v1/users/{userId}), and has
// registered the user meanwhile.
func (c *ClientAPI) retryUnknownUser(ctx context.Context, userID string) bool {
	return !c.remoteUser(userID) && c.cfg.ASQueries.QueryUser(ctx, userID)
}

// queryAccount is users.QueryAccount for a local user, asking the
// application services about a user without an account (retryUnknownUser).
func (c *ClientAPI) queryAccount(ctx context.Context, userID string) (*userapi.Account, error) {
	acc, err := c.users.QueryAccount(ctx, userID)
	if errors.Is(err, userapi.ErrNotFound) && c.retryUnknownUser(ctx, userID) {
		acc, err = c.users.QueryAccount(ctx, userID)
	}
	return acc, err
}

// queryProfile is users.QueryProfile, asking the application services about
// a user without an account (retryUnknownUser).
func (c *ClientAPI) queryProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	p, err := c.users.QueryProfile(ctx, userID)
	if errors.Is(err, userapi.ErrNotFound) && c.retryUnknownUser(ctx, userID) {
		p, err = c.users.QueryProfile(ctx, userID)
	}
	return p, err
}

// POST /_matrix/client/v1/appservice/{appserviceId}/ping
func (c *ClientAPI) postAppServicePing(r *http.Request) (any, error) {
	// Only a service's as_token (accepted from the addresses its
	// ip_range_whitelist allows, as on every route) may ping, as Synapse
	// answers: 403 for a user's own token.
	dev := httputil.DeviceFrom(r.Context())
	if dev == nil || dev.AppServiceID == "" {
		return nil, mxerr.Forbidden("Only application services can use the /appservice/ping endpoint")
	}
	s := c.cfg.ASQueries.Registry().ByID(dev.AppServiceID)
	if s == nil || s.ID != httputil.Vars(r)["appserviceId"] {
		return nil, mxerr.Forbidden("Mismatching application service ID in path")
	}
	if s.URL == "" {
		return nil, mxerr.New(codeURLNotSet, "The application service does not have a URL set")
	}
	var req struct {
		TransactionID *string `json:"transaction_id"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	d, err := c.cfg.ASQueries.Ping(r.Context(), s, req.TransactionID)
	if err != nil {
		return nil, pingError(err)
	}
	return map[string]int64{"duration_ms": d.Milliseconds()}, nil
}

// pingError is the client's error for a failed ping, as Synapse maps them:
// a timeout is 504 M_CONNECTION_TIMEOUT; a status other than 2xx is 502
// M_BAD_STATUS with the status and the body; anything else (refused
// connection, an answer that is not JSON) is 502 M_CONNECTION_FAILED.
func pingError(err error) error {
	var se *asapi.StatusError
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, asapi.ErrTimeout):
		return mxerr.New(codeConnectionTimeout, "Connection to application service timed out").WithStatus(http.StatusGatewayTimeout)
	case errors.As(err, &se):
		return mxerr.New(codeBadStatus, "%s", se.Error()).WithStatus(http.StatusBadGateway).
			With("status", se.Status).With("body", se.Body)
	}
	return mxerr.New(codeConnectionFailed, "Connection to application service failed: %v", err).WithStatus(http.StatusBadGateway)
}
