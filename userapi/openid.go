package userapi

import (
	"context"
	"errors"
	"time"

	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// openIDTokenLifetime is how long an OpenID token lets another server
// identify the user (Synapse: one hour).
const openIDTokenLifetime = time.Hour

const openIDTokenPrefix = "mylo_"

// CreateOpenIDToken implements api.OpenIDAPI.
func (u *UserAPI) CreateOpenIDToken(ctx context.Context, userID string) (string, time.Duration, error) {
	token, hash := newToken(openIDTokenPrefix)
	now := time.Now()
	if err := storage.InsertOpenIDToken(ctx, u.store.DB(), hash, userID, now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return "", 0, err
	}
	return token, openIDTokenLifetime, nil
}

// QueryOpenIDToken implements api.OpenIDAPI.
func (u *UserAPI) QueryOpenIDToken(ctx context.Context, token string) (string, error) {
	userID, err := storage.SelectOpenIDToken(ctx, u.store.DB(), hashToken(token), time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return "", api.ErrUnknownToken
	}
	return userID, err
}
