package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// AccessToken is a row of user_access_tokens. Only the SHA-256 of the token
// is stored.
type AccessToken struct {
	ID             int64
	UserID         string
	DeviceID       string
	CreatedTS      int64
	ExpiresTS      int64 // 0: never
	RefreshTokenID int64 // 0: not issued by a refresh
	Used           bool
}

// InsertAccessToken stores a token hash and returns its row ID.
func InsertAccessToken(ctx context.Context, q sqlutil.Querier, hash []byte, t *AccessToken) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `INSERT INTO user_access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
		hash, t.UserID, t.DeviceID, t.CreatedTS, nullInt(t.ExpiresTS), nullInt(t.RefreshTokenID)).Scan(&id)
	return id, err
}

// SelectAccessToken looks a token up by its hash; ErrNotFound when unknown.
func SelectAccessToken(ctx context.Context, q sqlutil.Querier, hash []byte) (*AccessToken, error) {
	var t AccessToken
	var exp, ref sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT id, user_id, device_id, created_ts, expires_ts, refresh_token_id, used
		FROM user_access_tokens WHERE token_hash = ?`, hash).
		Scan(&t.ID, &t.UserID, &t.DeviceID, &t.CreatedTS, &exp, &ref, &t.Used)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	t.ExpiresTS, t.RefreshTokenID = exp.Int64, ref.Int64
	return &t, nil
}

// DeleteDeviceTokens deletes the access and refresh tokens of one device.
func DeleteDeviceTokens(ctx context.Context, q sqlutil.Querier, userID, deviceID string) error {
	for _, table := range []string{"user_access_tokens", "user_refresh_tokens"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = ? AND device_id = ?`, userID, deviceID); err != nil {
			return err
		}
	}
	return nil
}

// MarkAccessTokenUsed records the first use of a token issued by a refresh
// and revokes the refresh token that was exchanged for it (the one whose
// next_token_id is refreshTokenID), with that token's access tokens.
func MarkAccessTokenUsed(ctx context.Context, tx *sqlutil.Tx, id, refreshTokenID int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE user_access_tokens SET used = TRUE WHERE id = ?`, id); err != nil {
		return err
	}
	return RevokeReplaced(ctx, tx, refreshTokenID)
}

// RevokeReplaced deletes the refresh tokens superseded by refreshTokenID,
// and the access tokens they issued.
func RevokeReplaced(ctx context.Context, tx *sqlutil.Tx, refreshTokenID int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_access_tokens WHERE refresh_token_id IN
		(SELECT id FROM user_refresh_tokens WHERE next_token_id = ?)`, refreshTokenID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM user_refresh_tokens WHERE next_token_id = ?`, refreshTokenID)
	return err
}

// RefreshToken is a row of user_refresh_tokens.
type RefreshToken struct {
	ID          int64
	UserID      string
	DeviceID    string
	NextTokenID int64 // 0: not exchanged yet
}

// InsertRefreshToken stores a refresh token hash and returns its row ID.
func InsertRefreshToken(ctx context.Context, q sqlutil.Querier, hash []byte, userID, deviceID string, ts int64) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `INSERT INTO user_refresh_tokens (token_hash, user_id, device_id, created_ts)
		VALUES (?, ?, ?, ?) RETURNING id`, hash, userID, deviceID, ts).Scan(&id)
	return id, err
}

// SelectRefreshToken looks a refresh token up by its hash.
func SelectRefreshToken(ctx context.Context, q sqlutil.Querier, hash []byte) (*RefreshToken, error) {
	var t RefreshToken
	var next sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT id, user_id, device_id, next_token_id FROM user_refresh_tokens WHERE token_hash = ?`, hash).
		Scan(&t.ID, &t.UserID, &t.DeviceID, &next)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	t.NextTokenID = next.Int64
	return &t, nil
}

// RefreshTokenUsed reports whether the refresh token with this ID has been
// exchanged, or an access token it issued has been used.
func RefreshTokenUsed(ctx context.Context, q sqlutil.Querier, id int64) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM user_refresh_tokens WHERE id = ? AND next_token_id IS NOT NULL) +
		(SELECT COUNT(*) FROM user_access_tokens WHERE refresh_token_id = ? AND used)`, id, id).Scan(&n)
	return n > 0, err
}

// DeleteRefreshTokens deletes refresh tokens by ID, with the access tokens
// they issued.
func DeleteRefreshTokens(ctx context.Context, tx *sqlutil.Tx, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	in := sqlutil.InList(len(ids))
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_access_tokens WHERE refresh_token_id IN (`+in+`)`, args...); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM user_refresh_tokens WHERE id IN (`+in+`)`, args...)
	return err
}

// SetNextRefreshToken records that refresh token id was exchanged for next.
func SetNextRefreshToken(ctx context.Context, q sqlutil.Querier, id, next int64) error {
	_, err := q.ExecContext(ctx, `UPDATE user_refresh_tokens SET next_token_id = ? WHERE id = ?`, next, id)
	return err
}

func nullInt(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

// InsertOpenIDToken stores an OpenID token hash, and forgets expired ones.
func InsertOpenIDToken(ctx context.Context, q sqlutil.Querier, hash []byte, userID string, expiresTS, now int64) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM user_openid_tokens WHERE expires_ts < ?`, now); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `INSERT INTO user_openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)`, hash, userID, expiresTS)
	return err
}

// SelectOpenIDToken returns the user of an OpenID token that has not
// expired at now; ErrNotFound otherwise.
func SelectOpenIDToken(ctx context.Context, q sqlutil.Querier, hash []byte, now int64) (string, error) {
	var userID string
	err := q.QueryRowContext(ctx, `SELECT user_id FROM user_openid_tokens WHERE token_hash = ? AND expires_ts > ?`, hash, now).Scan(&userID)
	return userID, sqlutil.NotFound(err)
}
