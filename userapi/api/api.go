// Package api is the contract of the user API: accounts, devices and their
// access tokens, profiles and account data, and the UserOutput stream that
// announces changes to them.
//
// Methods fail with the sentinel errors below (test with errors.Is) or with
// an opaque error when storage failed. Authenticate is the exception: it
// follows the httputil.Authenticator contract.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/myelin-chat/myelin/internal/httputil"
)

// Sentinel errors.
var (
	ErrNotFound     = errors.New("not found")
	ErrUserInUse    = errors.New("user ID already taken")
	ErrBadPassword  = errors.New("wrong password")
	ErrDeactivated  = errors.New("account deactivated")
	ErrUnknownToken = errors.New("unknown token")
	// ErrTokenReplaced: the refresh token has been superseded by one that
	// has since been used.
	ErrTokenReplaced = errors.New("refresh token replaced")
	// ErrProfileTooLarge: the change would make the profile exceed 64 KiB.
	ErrProfileTooLarge = errors.New("profile too large")
	// ErrAccountDataTooLarge: the change would make an account data item
	// exceed MaxAccountDataBytes.
	ErrAccountDataTooLarge = errors.New("account data too large")
)

// Device is the caller of an authenticated request.
type Device = httputil.Device

// Account is a local user account.
type Account struct {
	UserID      string
	CreatedTS   int64
	IsAdmin     bool
	IsGuest     bool
	Deactivated bool
	HasPassword bool
	UserType    string // "", "bot" or "support"
}

// CreateAccount describes an account to create.
type CreateAccount struct {
	// Localpart of the new user ID; empty generates a numeric one.
	Localpart   string
	Password    string // empty: no password login
	IsAdmin     bool
	IsGuest     bool
	UserType    string
	DisplayName string // empty: the localpart
}

// NewSession describes a login: the device to use or create, and its token.
type NewSession struct {
	UserID string
	// DeviceID of an existing device (whose old tokens are revoked) or of
	// the device to create; empty generates one.
	DeviceID          string
	DeviceDisplayName string
	// Refreshable issues an expiring access token and a refresh token.
	Refreshable bool
}

// Session is the credential of a logged-in device.
type Session struct {
	UserID       string
	DeviceID     string
	AccessToken  string
	RefreshToken string        // only for refreshable sessions
	ExpiresIn    time.Duration // 0: the access token does not expire
}

// DeviceInfo is a device as listed by /devices.
type DeviceInfo struct {
	DeviceID    string
	DisplayName *string
	LastSeenIP  string
	LastSeenTS  int64
	CreatedTS   int64
}

// AccountsAPI manages accounts and passwords.
type AccountsAPI interface {
	CreateAccount(ctx context.Context, req CreateAccount) (*Account, error)
	// QueryAccount returns ErrNotFound for an unknown user.
	QueryAccount(ctx context.Context, userID string) (*Account, error)
	// CheckPassword returns ErrNotFound, ErrBadPassword or ErrDeactivated.
	// It takes as long for an unknown user as for a wrong password.
	CheckPassword(ctx context.Context, userID, password string) (*Account, error)
	// SetPassword changes the password; with logoutDevices it deletes every
	// device but keepDeviceID.
	SetPassword(ctx context.Context, userID, password string, logoutDevices bool, keepDeviceID string) error
	// Deactivate deletes the account's devices and tokens and blocks login;
	// erase also removes the profile.
	Deactivate(ctx context.Context, userID string, erase bool) error
}

// SessionsAPI manages devices and tokens.
type SessionsAPI interface {
	httputil.Authenticator
	// Login creates or reuses a device and issues its tokens.
	Login(ctx context.Context, req NewSession) (*Session, error)
	// Refresh exchanges a refresh token: ErrUnknownToken, ErrTokenReplaced.
	Refresh(ctx context.Context, refreshToken string) (*Session, error)
	QueryDevices(ctx context.Context, userID string) ([]DeviceInfo, error)
	// QueryDevicesOfUsers lists the devices of several users at once;
	// users with no device are absent.
	QueryDevicesOfUsers(ctx context.Context, userIDs []string) (map[string][]DeviceInfo, error)
	// QueryDevice returns ErrNotFound for an unknown device.
	QueryDevice(ctx context.Context, userID, deviceID string) (*DeviceInfo, error)
	// UpdateDevice returns ErrNotFound for an unknown device.
	UpdateDevice(ctx context.Context, userID, deviceID, displayName string) error
	// UpsertDevice creates a device without an access token (an
	// application service managing its users' devices, MSC4190), or
	// renames an existing one when displayName is set; it reports whether
	// it created the device.
	UpsertDevice(ctx context.Context, userID, deviceID string, displayName *string) (created bool, err error)
	// DeleteDevices deletes the devices and their tokens (unknown IDs are
	// ignored).
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	// DeleteAllDevices deletes every device of the user but except (if set).
	DeleteAllDevices(ctx context.Context, userID, except string) error
}

// ProfileAPI manages profile fields (displayname, avatar_url, m.tz and
// custom keys).
type ProfileAPI interface {
	// QueryProfile returns ErrNotFound for an unknown user.
	QueryProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error
	DeleteProfileField(ctx context.Context, userID, key string) error
}

// AccountDataAPI manages account data; roomID "" is global account data.
type AccountDataAPI interface {
	// QueryAccountData returns ErrNotFound when the type is not set.
	QueryAccountData(ctx context.Context, userID, roomID, dataType string) (json.RawMessage, error)
	PutAccountData(ctx context.Context, userID, roomID, dataType string, content json.RawMessage) error
	// DeleteAccountData removes an item (MSC3391); syncs show it as {}.
	DeleteAccountData(ctx context.Context, userID, roomID, dataType string) error
	// UpdateRoomTag sets one tag of the user's m.tag account data in the
	// room to content, or removes it when content is nil, atomically.
	UpdateRoomTag(ctx context.Context, userID, roomID, tag string, content json.RawMessage) error
}

// MaxAccountDataBytes bounds one account data item (as Synapse): every
// sync of every device of the user carries it.
const MaxAccountDataBytes = 64 << 10

// RoomTagType is the room account data type that holds a user's tags of
// the room: {"tags": {tag: {"order": ...}}}.
const RoomTagType = "m.tag"

// MaxProfileBytes bounds the total size of a profile (the spec's 64 KiB).
const MaxProfileBytes = 64 * 1024

// OpenIDAPI issues the OpenID tokens through which other servers (and
// integration managers) identify a user.
type OpenIDAPI interface {
	// CreateOpenIDToken issues a token for the user and says how long it
	// is valid.
	CreateOpenIDToken(ctx context.Context, userID string) (token string, expiresIn time.Duration, err error)
	// QueryOpenIDToken returns the user of a valid token; ErrUnknownToken
	// for an unknown or expired one.
	QueryOpenIDToken(ctx context.Context, token string) (userID string, err error)
}
