package userapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// newDeviceID returns ten random upper-case letters, as Synapse does.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:])
}

// Login creates the device (or reuses it, revoking its old tokens) and
// issues an access token, plus a refresh token when asked.
func (u *UserAPI) Login(ctx context.Context, req api.NewSession) (*api.Session, error) {
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	}
	now := nowMS()
	sess := &api.Session{UserID: req.UserID, DeviceID: deviceID}
	var created bool
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var name *string
		if req.DeviceDisplayName != "" {
			name = &req.DeviceDisplayName
		}
		var err error
		created, err = storage.InsertDevice(ctx, tx, &storage.Device{UserID: req.UserID, DeviceID: deviceID, DisplayName: name, CreatedTS: now})
		if err != nil {
			return err
		}
		if !created {
			// A client that names an existing device takes it over:
			// the tokens previously assigned to it are revoked.
			if err := storage.DeleteDeviceTokens(ctx, tx, req.UserID, deviceID); err != nil {
				return err
			}
		} else if err := u.queueDevices(ctx, tx, req.UserID, []string{deviceID}, false); err != nil {
			return err
		}
		return u.issueTokens(ctx, tx, sess, req.Refreshable, now)
	})
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if !created {
		u.tokens.purgeDevices(req.UserID, deviceID)
		return sess, nil
	}
	u.announce(ctx, req.UserID)
	return sess, nil
}

// issueTokens adds an access token (and a refresh token) for sess's device.
func (u *UserAPI) issueTokens(ctx context.Context, tx *sqlutil.Tx, sess *api.Session, refreshable bool, now int64) error {
	tok := &storage.AccessToken{UserID: sess.UserID, DeviceID: sess.DeviceID, CreatedTS: now}
	if refreshable {
		refresh, rhash := newToken(refreshTokenPrefix)
		id, err := storage.InsertRefreshToken(ctx, tx, rhash, sess.UserID, sess.DeviceID, now)
		if err != nil {
			return err
		}
		tok.RefreshTokenID = id
		tok.ExpiresTS = now + u.cfg.AccessTokenLifetime.Milliseconds()
		sess.RefreshToken = refresh
		sess.ExpiresIn = u.cfg.AccessTokenLifetime
	}
	access, ahash := newToken(accessTokenPrefix)
	if _, err := storage.InsertAccessToken(ctx, tx, ahash, tok); err != nil {
		return err
	}
	sess.AccessToken = access
	return nil
}

// Authenticate resolves an access token to its device, or an application
// service's as_token to the user (and device) it acts as
// (authenticateAppService). Unknown tokens are 401 M_UNKNOWN_TOKEN; expired
// ones are an *httputil.ExpiredTokenError.
func (u *UserAPI) Authenticate(ctx context.Context, token string, client httputil.ClientInfo) (*api.Device, error) {
	// A service's token from outside its ip_range_whitelist is no token
	// of it (Synapse: then an unknown user token).
	if svc := u.cfg.AppServices.ByASToken(token); svc != nil && svc.AllowsIP(client.IP) {
		return u.authenticateAppService(ctx, svc, token, client)
	}
	hash := hashToken(token)
	var dev api.Device
	var expires int64
	if e, ok := u.tokens.get(hash); ok {
		dev, expires = e.dev, e.expiresTS
	} else {
		t, err := storage.SelectAccessToken(ctx, u.store.DB(), hash)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxerr.UnknownToken(false, "Unknown access token")
		}
		if err != nil {
			return nil, err
		}
		acc, err := storage.SelectAccount(ctx, u.store.DB(), t.UserID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && acc.Deactivated) {
			return nil, mxerr.UnknownToken(false, "Unknown access token")
		}
		if err != nil {
			return nil, err
		}
		dev = api.Device{UserID: t.UserID, DeviceID: t.DeviceID, IsGuest: acc.IsGuest, IsAdmin: acc.IsAdmin, TokenID: t.ID}
		expires = t.ExpiresTS
		if t.RefreshTokenID != 0 && !t.Used {
			// The first use of a refreshed token retires the refresh
			// token it replaced.
			if err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
				return storage.MarkAccessTokenUsed(ctx, tx, t.ID, t.RefreshTokenID)
			}); err != nil {
				return nil, err
			}
			u.tokens.purgeDevices(t.UserID, t.DeviceID)
		}
		u.tokens.put(hash, &cachedToken{dev: dev, expiresTS: expires})
	}
	if expires != 0 && nowMS() >= expires {
		d := dev
		return nil, &httputil.ExpiredTokenError{Device: &d}
	}
	if u.lastSeen.due(dev.UserID, dev.DeviceID) {
		if err := storage.UpdateDeviceLastSeen(ctx, u.store.DB(), dev.UserID, dev.DeviceID, nowMS(), client.IP, client.UserAgent); err != nil {
			// Not worth failing the request for: the record is advisory.
			u.log.Warn("could not record device last seen", slog.String("error", err.Error()))
		}
	}
	d := dev
	return &d, nil
}

// Refresh exchanges a refresh token for a new access and refresh token. The
// old refresh token stays usable until the new tokens are used, so that a
// client that lost the response can retry.
func (u *UserAPI) Refresh(ctx context.Context, refreshToken string) (*api.Session, error) {
	var sess *api.Session
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		old, err := storage.SelectRefreshToken(ctx, tx, hashToken(refreshToken))
		if errors.Is(err, storage.ErrNotFound) {
			return api.ErrUnknownToken
		}
		if err != nil {
			return err
		}
		if old.NextTokenID != 0 {
			used, err := storage.RefreshTokenUsed(ctx, tx, old.NextTokenID)
			if err != nil {
				return err
			}
			if used {
				return api.ErrTokenReplaced
			}
			// The client never used the tokens of its last refresh:
			// replace them.
			if err := storage.DeleteRefreshTokens(ctx, tx, old.NextTokenID); err != nil {
				return err
			}
		}
		// Using this token retires the one it replaced.
		if err := storage.RevokeReplaced(ctx, tx, old.ID); err != nil {
			return err
		}
		sess = &api.Session{UserID: old.UserID, DeviceID: old.DeviceID}
		if err := u.issueTokens(ctx, tx, sess, true, nowMS()); err != nil {
			return err
		}
		next, err := storage.SelectRefreshToken(ctx, tx, hashToken(sess.RefreshToken))
		if err != nil {
			return err
		}
		return storage.SetNextRefreshToken(ctx, tx, old.ID, next.ID)
	})
	if err != nil {
		return nil, err
	}
	u.tokens.purgeDevices(sess.UserID, sess.DeviceID)
	return sess, nil
}

func toDeviceInfo(d *storage.Device) api.DeviceInfo {
	return api.DeviceInfo{
		DeviceID:    d.DeviceID,
		DisplayName: d.DisplayName,
		LastSeenIP:  d.LastSeenIP,
		LastSeenTS:  d.LastSeenTS,
		CreatedTS:   d.CreatedTS,
	}
}

// QueryDevices lists the user's devices.
func (u *UserAPI) QueryDevices(ctx context.Context, userID string) ([]api.DeviceInfo, error) {
	ds, err := storage.SelectDevices(ctx, u.store.DB(), userID)
	if err != nil {
		return nil, err
	}
	out := make([]api.DeviceInfo, len(ds))
	for i := range ds {
		out[i] = toDeviceInfo(&ds[i])
	}
	return out, nil
}

// QueryDevicesOfUsers lists the devices of several users (those with none
// are absent), in a statement per 500 users.
func (u *UserAPI) QueryDevicesOfUsers(ctx context.Context, userIDs []string) (map[string][]api.DeviceInfo, error) {
	ds, err := storage.SelectDevicesOfUsers(ctx, u.store.DB(), userIDs)
	if err != nil {
		return nil, err
	}
	out := map[string][]api.DeviceInfo{}
	for i := range ds {
		out[ds[i].UserID] = append(out[ds[i].UserID], toDeviceInfo(&ds[i]))
	}
	return out, nil
}

// QueryDevice returns one device or api.ErrNotFound.
func (u *UserAPI) QueryDevice(ctx context.Context, userID, deviceID string) (*api.DeviceInfo, error) {
	d, err := storage.SelectDevice(ctx, u.store.DB(), userID, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	info := toDeviceInfo(d)
	return &info, nil
}

// UpdateDevice renames a device.
func (u *UserAPI) UpdateDevice(ctx context.Context, userID, deviceID, displayName string) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.UpdateDeviceName(ctx, tx, userID, deviceID, &displayName); err != nil {
			return err
		}
		if err := u.Keys.DeviceRenamed(ctx, tx, userID, deviceID, &displayName); err != nil {
			return err
		}
		return u.queueDevices(ctx, tx, userID, []string{deviceID}, false)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return api.ErrNotFound
	}
	if err != nil {
		return err
	}
	u.announce(ctx, userID)
	return nil
}

// UpsertDevice creates the device without a token, or renames it when it
// exists and displayName is set.
func (u *UserAPI) UpsertDevice(ctx context.Context, userID, deviceID string, displayName *string) (bool, error) {
	var created, changed bool
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		created, err = storage.InsertDevice(ctx, tx, &storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: displayName, CreatedTS: nowMS()})
		if err != nil {
			return err
		}
		if !created {
			if displayName == nil {
				return nil
			}
			if err := storage.UpdateDeviceName(ctx, tx, userID, deviceID, displayName); err != nil {
				return err
			}
			if err := u.Keys.DeviceRenamed(ctx, tx, userID, deviceID, displayName); err != nil {
				return err
			}
		}
		changed = true
		return u.queueDevices(ctx, tx, userID, []string{deviceID}, false)
	})
	if err != nil {
		return false, fmt.Errorf("upsert device: %w", err)
	}
	if changed {
		u.announce(ctx, userID)
	}
	return created, nil
}

// DeleteDevices deletes devices with their tokens, pushers and local
// notification settings.
func (u *UserAPI) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	var gone *deviceLeftovers
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		deleted, err := storage.DeleteDevices(ctx, tx, userID, deviceIDs)
		if err != nil {
			return err
		}
		gone, err = u.deleteDeviceLeftovers(ctx, tx, userID, deleted, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete devices: %w", err)
	}
	u.tokens.purgeDevices(userID, deviceIDs...)
	return u.announceDeviceDeletion(ctx, gone)
}

// DeleteAllDevices deletes every device of the user but except, as
// DeleteDevices does.
func (u *UserAPI) DeleteAllDevices(ctx context.Context, userID, except string) error {
	var gone *deviceLeftovers
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		deleted, err := storage.DeleteAllDevices(ctx, tx, userID, except)
		if err != nil {
			return err
		}
		gone, err = u.deleteDeviceLeftovers(ctx, tx, userID, deleted, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete devices: %w", err)
	}
	u.tokens.purgeUser(userID, except)
	return u.announceDeviceDeletion(ctx, gone)
}
