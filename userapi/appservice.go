package userapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// CodeUnknownDevice is Synapse's error for an application service that
// asks to act as a device its user does not have (MSC4326).
const CodeUnknownDevice = "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE"

// authenticateAppService resolves a request made with svc's as_token, as
// Synapse's get_appservice_user: the service acts as its sender, or as the
// user_id it asserts, which must be in its user namespaces (403 M_FORBIDDEN)
// and a registered local user (403 M_FORBIDDEN); with device_id, as that
// existing device of the user (400 ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE).
//
// What it resolved is cached like user tokens, under a key made of the
// token, user and device, so that a bridge's requests cost no query; the
// purges of user tokens (device deletion, deactivation) purge these too.
func (u *UserAPI) authenticateAppService(ctx context.Context, svc *asapi.Service, token string, client httputil.ClientInfo) (*api.Device, error) {
	userID := svc.SenderID
	if client.AssertsUser {
		userID = client.AssertUserID
	}
	h := sha256.New()
	for _, part := range []string{token, userID, client.AssertDeviceID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	key := h.Sum(nil)
	if e, ok := u.tokens.get(key); ok {
		d := e.dev
		return &d, nil
	}
	if userID != svc.SenderID && !svc.IsInterestedInUser(userID) {
		return nil, mxerr.Forbidden("Application service cannot masquerade as this user (%s).", userID)
	}
	acc, err := storage.SelectAccount(ctx, u.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.Forbidden("Application service has not registered this user (%s)", userID)
	}
	if err != nil {
		return nil, err
	}
	dev := api.Device{UserID: userID, IsGuest: acc.IsGuest, IsAdmin: acc.IsAdmin, AppServiceID: svc.ID, RateExempt: !svc.RateLimited}
	if client.AssertDeviceID != "" {
		_, err := storage.SelectDevice(ctx, u.store.DB(), userID, client.AssertDeviceID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxerr.New(CodeUnknownDevice, "Application service trying to use a device that doesn't exist ('%s' for %s)",
				client.AssertDeviceID, userID).WithStatus(http.StatusBadRequest)
		}
		if err != nil {
			return nil, err
		}
		dev.DeviceID = client.AssertDeviceID
		if u.lastSeen.due(userID, dev.DeviceID) {
			if err := storage.UpdateDeviceLastSeen(ctx, u.store.DB(), userID, dev.DeviceID, nowMS(), client.IP, client.UserAgent); err != nil {
				u.log.Warn("could not record device last seen", slog.String("error", err.Error()))
			}
		}
	}
	u.tokens.put(key, &cachedToken{dev: dev})
	d := dev
	return &d, nil
}
