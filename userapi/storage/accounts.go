package storage

import (
	"context"
	"database/sql"
	"strconv"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Account is a row of user_accounts.
type Account struct {
	UserID       string
	PasswordHash string // "" when the account has no password
	CreatedTS    int64
	IsAdmin      bool
	IsGuest      bool
	Deactivated  bool
	UserType     string
}

// InsertAccount creates an account; ErrExists when the user ID is taken.
func InsertAccount(ctx context.Context, q sqlutil.Querier, a *Account) error {
	var hash any
	if a.PasswordHash != "" {
		hash = a.PasswordHash
	}
	_, err := q.ExecContext(ctx, `INSERT INTO user_accounts (user_id, password_hash, created_ts, is_admin, is_guest, user_type)
		VALUES (?, ?, ?, ?, ?, ?)`, a.UserID, hash, a.CreatedTS, a.IsAdmin, a.IsGuest, a.UserType)
	if sqlutil.IsUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// NextGeneratedLocalpart returns the next number for a generated localpart.
func NextGeneratedLocalpart(ctx context.Context, tx *sqlutil.Tx) (string, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `UPDATE user_counters SET value = value + 1 WHERE name = 'generated_localpart' RETURNING value`).Scan(&n)
	return strconv.FormatInt(n, 10), err
}

// SelectAccount returns the account, or ErrNotFound.
func SelectAccount(ctx context.Context, q sqlutil.Querier, userID string) (*Account, error) {
	var a Account
	var hash sql.NullString
	err := q.QueryRowContext(ctx, `SELECT user_id, password_hash, created_ts, is_admin, is_guest, deactivated, user_type
		FROM user_accounts WHERE user_id = ?`, userID).
		Scan(&a.UserID, &hash, &a.CreatedTS, &a.IsAdmin, &a.IsGuest, &a.Deactivated, &a.UserType)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	a.PasswordHash = hash.String
	return &a, nil
}

// UpdatePasswordHash replaces the password hash; ErrNotFound for an unknown
// user.
func UpdatePasswordHash(ctx context.Context, q sqlutil.Querier, userID, hash string) error {
	res, err := q.ExecContext(ctx, `UPDATE user_accounts SET password_hash = ? WHERE user_id = ?`, hash, userID)
	return affected(res, err)
}

// MarkDeactivated deactivates the account and clears its password.
func MarkDeactivated(ctx context.Context, q sqlutil.Querier, userID string) error {
	res, err := q.ExecContext(ctx, `UPDATE user_accounts SET deactivated = TRUE, password_hash = NULL WHERE user_id = ?`, userID)
	return affected(res, err)
}

// SetAdmin grants or revokes server admin.
func SetAdmin(ctx context.Context, q sqlutil.Querier, userID string, admin bool) error {
	res, err := q.ExecContext(ctx, `UPDATE user_accounts SET is_admin = ? WHERE user_id = ?`, admin, userID)
	return affected(res, err)
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
