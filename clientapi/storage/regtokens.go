package storage

import (
	"context"
	"database/sql"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// RegistrationToken is a token that lets its holder register
// (m.login.registration_token), as in Synapse's admin API.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

// Valid reports whether the token can still be used at time now (ms).
func (t *RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime <= now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const tokenColumns = `token, uses_allowed, pending, completed, expiry_time`

func scanToken(sc interface{ Scan(...any) error }) (*RegistrationToken, error) {
	var t RegistrationToken
	var uses, exp sql.NullInt64
	if err := sc.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
		return nil, err
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if exp.Valid {
		t.ExpiryTime = &exp.Int64
	}
	return &t, nil
}

// CreateRegistrationToken stores a new token; ErrExists if it is taken.
func (s *Storage) CreateRegistrationToken(ctx context.Context, t *RegistrationToken) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO cs_registration_tokens (token, uses_allowed, expiry_time) VALUES (?, ?, ?)`,
		t.Token, t.UsesAllowed, t.ExpiryTime)
	if sqlutil.IsUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// GetRegistrationToken returns a token or ErrNotFound.
func (s *Storage) GetRegistrationToken(ctx context.Context, token string) (*RegistrationToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM cs_registration_tokens WHERE token = ?`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return t, err
}

// ListRegistrationTokens returns every token, ordered by token.
func (s *Storage) ListRegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM cs_registration_tokens ORDER BY token`)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (RegistrationToken, error) {
		t, err := scanToken(rows)
		if err != nil {
			return RegistrationToken{}, err
		}
		return *t, nil
	})
}

// UpdateRegistrationToken sets the limits of a token; ErrNotFound if absent.
func (s *Storage) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed, expiryTime *int64, setUses, setExpiry bool) (*RegistrationToken, error) {
	var out *RegistrationToken
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if setUses {
			if _, err := tx.ExecContext(ctx, `UPDATE cs_registration_tokens SET uses_allowed = ? WHERE token = ?`, usesAllowed, token); err != nil {
				return err
			}
		}
		if setExpiry {
			if _, err := tx.ExecContext(ctx, `UPDATE cs_registration_tokens SET expiry_time = ? WHERE token = ?`, expiryTime, token); err != nil {
				return err
			}
		}
		var err error
		out, err = scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM cs_registration_tokens WHERE token = ?`, token))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	return out, err
}

// DeleteRegistrationToken deletes a token; ErrNotFound if absent.
func (s *Storage) DeleteRegistrationToken(ctx context.Context, token string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM cs_registration_tokens WHERE token = ?`, token)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// ReserveRegistrationToken counts the token as pending for the UIA session
// if it is valid at now, and reports whether it was. The check and the count
// are one statement, so concurrent registrations cannot overspend a token.
func (s *Storage) ReserveRegistrationToken(ctx context.Context, sessionID, token string, now int64) (bool, error) {
	var ok bool
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE cs_registration_tokens SET pending = pending + 1 WHERE token = ?
			AND (expiry_time IS NULL OR expiry_time > ?) AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`, token, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		ok = true
		_, err = tx.ExecContext(ctx, `UPDATE cs_uia_sessions SET registration_token = ? WHERE session_id = ?`, token, sessionID)
		return err
	})
	return ok, err
}
