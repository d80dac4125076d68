// Package clientapi serves /_matrix/client (except /sync, to-device
// messages, filters and media): registration with User-Interactive
// Authentication, login and tokens, devices, profiles, account data, push
// rules and pushers, end-to-end encryption keys and cross-signing, key
// backups, dehydrated devices, capabilities and discovery, third-party
// lookups and the ping answered by application services, plus Synapse's
// shared-secret registration and registration-token admin APIs.
package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/clientapi/storage"
	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	syncapi "github.com/myelin-chat/myelin/syncapi/api"
	"github.com/myelin-chat/myelin/userapi/api"
)

// Config is what the client API needs from the configuration.
type Config struct {
	ServerName               string
	RegistrationEnabled      bool
	RegistrationSharedSecret string
	RequireRegistrationToken bool
	GuestAccess              bool
	// ASQueries asks the registered application services about users and
	// aliases in their namespaces, third-party networks and pings (nil:
	// no services).
	ASQueries AppServiceQuerier
	// WellKnownClient and WellKnownIdentity are the base URLs of
	// /.well-known/matrix/client; WellKnownServer is m.server.
	WellKnownClient   string
	WellKnownIdentity string
	WellKnownServer   string
	// TURN is what /voip/turnServer hands out.
	TURN TURNConfig
	// WellKnownSupport is the /.well-known/matrix/support document (nil:
	// none configured).
	WellKnownSupport json.RawMessage
	// AppServices are the registered application services (nil: none).
	AppServices *asapi.Registry
	// Relations bundles the aggregations of the events GET /event serves
	// (nil: none).
	Relations syncapi.RelationsAPI
}

// RoomsAPI is what the client API reads rooms through.
type RoomsAPI interface {
	rsapi.QueryAPI
	rsapi.AliasAPI
	// QueryJoinedServers lists the servers with a user joined to the room
	// (whether this server is in a room it has the state of).
	QueryJoinedServers(ctx context.Context, roomID string) ([]string, error)
}

// Inputer submits events to the roomserver and waits for the result.
type Inputer interface {
	Input(ctx context.Context, msg *rsapi.InputMessage) (*rsapi.InputResult, error)
}

// UserAPI is what the client API uses of the user API.
type UserAPI interface {
	api.AccountsAPI
	api.SessionsAPI
	api.ProfileAPI
	api.AccountDataAPI
	api.OpenIDAPI
	api.PushRulesAPI
	api.PushersAPI
	api.KeysAPI
	api.RemoteKeysAPI
	api.DehydratedDevicesAPI
	api.KeyBackupAPI
}

// AppServiceQuerier is what the client API asks the application services
// through (appservice/api's Querier): a failing service counts as one that
// says no or has nothing.
type AppServiceQuerier interface {
	// Registry returns the registered services.
	Registry() *asapi.Registry
	// QueryUser and QueryAlias report whether a service with the user or
	// alias in a namespace says it exists (and has created it).
	QueryUser(ctx context.Context, userID string) bool
	QueryAlias(ctx context.Context, alias string) bool
	// Protocols returns the merged metadata of the services' protocols
	// (only the one named, unless only is "").
	Protocols(ctx context.Context, only string) map[string]json.RawMessage
	// ThirdParty returns the services' third-party users or locations.
	ThirdParty(ctx context.Context, kind, protocol string, fields url.Values) []json.RawMessage
	// Ping pings the service and returns how long it took; its errors
	// are appservice/api's (ErrTimeout, *StatusError...).
	Ping(ctx context.Context, s *asapi.Service, txnID *string) (time.Duration, error)
}

// ClientAPI is the client API component.
type ClientAPI struct {
	cfg   Config
	users UserAPI
	rooms RoomsAPI
	input Inputer
	store *storage.Storage
	// fed reaches other servers; nil when federation is off (remote users,
	// rooms and servers are then refused).
	fed     fedapi.FederationAPI
	limiter *httputil.RateLimiter
	log     *slog.Logger
}

// New migrates the client API's tables and returns the component. fed is
// nil when federation is off; limiter may be nil (rate limiting off).
func New(ctx context.Context, cfg Config, db *sqlutil.DB, users UserAPI, rooms RoomsAPI, input Inputer, fed fedapi.FederationAPI,
	limiter *httputil.RateLimiter, log *slog.Logger) (*ClientAPI, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("clientapi: %w", err)
	}
	if cfg.ASQueries == nil {
		cfg.ASQueries = (*asapi.Querier)(nil) // no services
	}
	return &ClientAPI{cfg: cfg, users: users, rooms: rooms, input: input, store: st, fed: fed, limiter: limiter, log: log.With("component", "clientapi")}, nil
}

// Rate limit classes used by the client API's routes.
const (
	RateLogin        = "login"
	RateFailedLogin  = "failed_login"
	RateRegistration = "registration"
	RateMessage      = "message"
	// RateTokenValidity: registration token validity checks per address.
	RateTokenValidity = "registration_token_validity"
	// RateRoomCreation: createRoom per user.
	RateRoomCreation = "room_creation"
	// RateJoinLocal and RateJoinRemote: joins per user to rooms this
	// server is in, and through other servers.
	RateJoinLocal  = "join_local"
	RateJoinRemote = "join_remote"
	// RateInviteRoom, RateInviteUser and RateInviteIssuer: invites per
	// room, per invitee and per inviter.
	RateInviteRoom   = "invite_room"
	RateInviteUser   = "invite_user"
	RateInviteIssuer = "invite_issuer"
)

// Register mounts the client API's routes.
func (c *ClientAPI) Register(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()

	srv.Handle(http.MethodGet, "/_matrix/client/versions", c.getVersions)
	srv.Handle(http.MethodGet, "/.well-known/matrix/client", c.getWellKnownClient)
	srv.Handle(http.MethodGet, "/.well-known/matrix/server", c.getWellKnownServer)
	srv.Handle(http.MethodGet, "/.well-known/matrix/support", c.getWellKnownSupport)
	srv.HandleClient(http.MethodGet, "/capabilities", c.getCapabilities, auth, guests)

	// Registration.
	// Completed registrations count (postRegister takes the token), not
	// the rounds of User-Interactive Authentication before one, nor
	// availability checks.
	srv.HandleClient(http.MethodPost, "/register", c.postRegister, httputil.RateChecked(RateRegistration))
	srv.HandleClient(http.MethodGet, "/register/available", c.getRegisterAvailable, httputil.RateChecked(RateRegistration))
	srv.Handle(http.MethodGet, "/_matrix/client/v1/register/m.login.registration_token/validity", c.getTokenValidity,
		httputil.RateLimited(RateTokenValidity))

	// Login and tokens.
	srv.HandleClient(http.MethodGet, "/login", c.getLogin)
	// Login attempts count as they start (postLogin takes the token), but
	// those of application services registered with rate_limited: false.
	srv.HandleClient(http.MethodPost, "/login", c.postLogin, httputil.RateChecked(RateLogin))
	srv.HandleClient(http.MethodPost, "/refresh", c.postRefresh)
	srv.HandleClient(http.MethodPost, "/logout", c.postLogout, auth, guests, httputil.AllowExpired())
	srv.HandleClient(http.MethodPost, "/logout/all", c.postLogoutAll, auth, guests, httputil.AllowExpired())

	// Account.
	srv.HandleClient(http.MethodGet, "/account/whoami", c.getWhoami, auth, guests)
	srv.HandleClient(http.MethodPost, "/account/password", c.postPassword, auth)
	srv.HandleClient(http.MethodPost, "/account/deactivate", c.postDeactivate, auth)

	// Devices.
	srv.HandleClient(http.MethodGet, "/devices", c.getDevices, auth, guests)
	srv.HandleClient(http.MethodGet, "/devices/{deviceId}", c.getDevice, auth, guests)
	srv.HandleClient(http.MethodPut, "/devices/{deviceId}", c.putDevice, auth, guests)
	srv.HandleClient(http.MethodDelete, "/devices/{deviceId}", c.deleteDevice, auth)
	srv.HandleClient(http.MethodPost, "/delete_devices", c.postDeleteDevices, auth)

	// Profiles.
	srv.HandleClient(http.MethodGet, "/profile/{userId}", c.getProfile)
	srv.HandleClient(http.MethodGet, "/profile/{userId}/{keyName}", c.getProfileField)
	srv.HandleClient(http.MethodPut, "/profile/{userId}/{keyName}", c.putProfileField, auth, guests)
	srv.HandleClient(http.MethodDelete, "/profile/{userId}/{keyName}", c.deleteProfileField, auth, guests)
	srv.HandleClient(http.MethodPost, "/user/{userId}/openid/request_token", c.requestOpenIDToken, auth, guests)

	// Account data.
	srv.HandleClient(http.MethodGet, "/user/{userId}/account_data/{type}", c.getAccountData, auth, guests)
	srv.HandleClient(http.MethodPut, "/user/{userId}/account_data/{type}", c.putAccountData, auth, guests)
	srv.HandleClient(http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", c.getAccountData, auth, guests)
	srv.HandleClient(http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", c.putAccountData, auth, guests)
	srv.Handle(http.MethodDelete, msc3391Prefix+"/user/{userId}/account_data/{type}", c.deleteAccountData, auth, guests)
	srv.Handle(http.MethodDelete, msc3391Prefix+"/user/{userId}/rooms/{roomId}/account_data/{type}", c.deleteAccountData, auth, guests)
	srv.HandleClient(http.MethodGet, "/voip/turnServer", c.getTurnServer, auth, guests)
	srv.HandleClient(http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", c.getRoomTags, auth)
	srv.HandleClient(http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", c.putRoomTag, auth)
	srv.HandleClient(http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", c.deleteRoomTag, auth)

	// Push rules (the GETs of the whole ruleset also without the trailing
	// slash the spec writes) and pushers.
	for _, p := range []string{"/pushrules/", "/pushrules"} {
		srv.HandleClient(http.MethodGet, p, c.getPushRules, auth)
	}
	for _, p := range []string{"/pushrules/{scope}/", "/pushrules/{scope}"} {
		srv.HandleClient(http.MethodGet, p, c.getPushRulesScope, auth)
	}
	srv.HandleClient(http.MethodGet, "/pushrules/{scope}/{kind}/", c.getPushRulesKind, auth)
	srv.HandleClient(http.MethodGet, "/pushrules/{scope}/{kind}/{ruleId}", c.getPushRule, auth)
	srv.HandleClient(http.MethodPut, "/pushrules/{scope}/{kind}/{ruleId}", c.putPushRule, auth)
	srv.HandleClient(http.MethodDelete, "/pushrules/{scope}/{kind}/{ruleId}", c.deletePushRule, auth)
	srv.HandleClient(http.MethodGet, "/pushrules/{scope}/{kind}/{ruleId}/enabled", c.getPushRuleEnabled, auth)
	srv.HandleClient(http.MethodPut, "/pushrules/{scope}/{kind}/{ruleId}/enabled", c.putPushRuleEnabled, auth)
	srv.HandleClient(http.MethodGet, "/pushrules/{scope}/{kind}/{ruleId}/actions", c.getPushRuleActions, auth)
	srv.HandleClient(http.MethodPut, "/pushrules/{scope}/{kind}/{ruleId}/actions", c.putPushRuleActions, auth)
	srv.HandleClient(http.MethodGet, "/pushers", c.getPushers, auth)
	srv.HandleClient(http.MethodPost, "/pushers/set", c.postPushersSet, auth)

	// End-to-end encryption keys (keys.go).
	c.registerKeys(srv)
	c.registerDehydrated(srv)
	// Server-side key backups.
	srv.HandleClient(http.MethodPost, "/room_keys/version", c.postRoomKeysVersion, auth)
	srv.HandleClient(http.MethodGet, "/room_keys/version", c.getRoomKeysVersionCurrent, auth)
	srv.HandleClient(http.MethodGet, "/room_keys/version/{version}", c.getRoomKeysVersion, auth)
	srv.HandleClient(http.MethodPut, "/room_keys/version/{version}", c.putRoomKeysVersion, auth)
	srv.HandleClient(http.MethodDelete, "/room_keys/version/{version}", c.deleteRoomKeysVersion, auth)
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		srv.HandleClient(http.MethodGet, p, c.getRoomKeys, auth)
		srv.HandleClient(http.MethodPut, p, c.putRoomKeys, auth, httputil.MaxBody(maxRoomKeysBody))
		srv.HandleClient(http.MethodDelete, p, c.deleteRoomKeys, auth)
	}

	c.registerRooms(srv)
	c.registerReports(srv)

	// Application services: third-party lookups, and the ping.
	c.registerThirdParty(srv)
	srv.Handle(http.MethodPost, "/_matrix/client/v1/appservice/{appserviceId}/ping", c.postAppServicePing, auth)

	// Synapse-compatible admin APIs.
	srv.Handle(http.MethodGet, "/_synapse/admin/v1/register", c.getAdminRegisterNonce)
	srv.Handle(http.MethodPost, "/_synapse/admin/v1/register", c.postAdminRegister)
	admin := httputil.Admin()
	srv.Handle(http.MethodGet, "/_synapse/admin/v1/registration_tokens", c.listRegistrationTokens, admin)
	srv.Handle(http.MethodPost, "/_synapse/admin/v1/registration_tokens/new", c.newRegistrationToken, admin)
	srv.Handle(http.MethodGet, "/_synapse/admin/v1/registration_tokens/{token}", c.getRegistrationToken, admin)
	srv.Handle(http.MethodPut, "/_synapse/admin/v1/registration_tokens/{token}", c.putRegistrationToken, admin)
	srv.Handle(http.MethodDelete, "/_synapse/admin/v1/registration_tokens/{token}", c.deleteRegistrationToken, admin)
}

func (c *ClientAPI) userID(localpart string) string { return "@" + localpart + ":" + c.cfg.ServerName }

func nowMS() int64 { return time.Now().UnixMilli() }
