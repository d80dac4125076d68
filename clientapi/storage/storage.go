// Package storage is the client API's own tables (prefix cs_): sessions of
// User-Interactive Authentication, registration tokens, the nonces of
// shared-secret registration and users' reports of content.
package storage

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

//go:embed schema
var schema embed.FS

// Sentinel errors.
var (
	ErrNotFound = sqlutil.ErrNotFound
	ErrExists   = errors.New("already exists")
)

// Storage is the client API's database.
type Storage struct {
	db *sqlutil.DB
}

// New migrates the client API's tables.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "cs", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// UIASession is a User-Interactive Authentication session, bound to the
// request (method and path) that started it.
type UIASession struct {
	ID                string
	CreatedTS         int64
	Method            string
	Path              string
	Completed         []string
	RegistrationToken string // the token a registration_token stage used
}

// CreateUIASession stores a new session (or puts a claimed one back).
func (s *Storage) CreateUIASession(ctx context.Context, sess *UIASession) error {
	done, _ := json.Marshal(sess.Completed)
	var token any
	if sess.RegistrationToken != "" {
		token = sess.RegistrationToken
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO cs_uia_sessions (session_id, created_ts, method, path, completed, registration_token)
		VALUES (?, ?, ?, ?, ?, ?)`, sess.ID, sess.CreatedTS, sess.Method, sess.Path, string(done), token)
	return err
}

const uiaColumns = `created_ts, method, path, completed, registration_token`

func scanUIASession(id string, sc interface{ Scan(...any) error }) (*UIASession, error) {
	sess := UIASession{ID: id}
	var done string
	var token sql.NullString
	if err := sc.Scan(&sess.CreatedTS, &sess.Method, &sess.Path, &done, &token); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	sess.RegistrationToken = token.String
	return &sess, json.Unmarshal([]byte(done), &sess.Completed)
}

// GetUIASession returns a session created after minCreatedTS, or ErrNotFound.
func (s *Storage) GetUIASession(ctx context.Context, id string, minCreatedTS int64) (*UIASession, error) {
	return scanUIASession(id, s.db.QueryRowContext(ctx, `SELECT `+uiaColumns+` FROM cs_uia_sessions
		WHERE session_id = ? AND created_ts >= ?`, id, minCreatedTS))
}

// CompleteUIAStage records a completed stage of a session.
func (s *Storage) CompleteUIAStage(ctx context.Context, id string, completed []string) error {
	done, _ := json.Marshal(completed)
	_, err := s.db.ExecContext(ctx, `UPDATE cs_uia_sessions SET completed = ? WHERE session_id = ?`, string(done), id)
	return err
}

// ClaimUIASession removes a session and returns it; of concurrent claims
// exactly one gets it, the others ErrNotFound. A registration token the
// session reserved stays pending until UseRegistrationToken or the session
// is put back with CreateUIASession.
func (s *Storage) ClaimUIASession(ctx context.Context, id string) (*UIASession, error) {
	var sess *UIASession
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		sess, err = scanUIASession(id, tx.QueryRowContext(ctx, `DELETE FROM cs_uia_sessions WHERE session_id = ? RETURNING `+uiaColumns, id))
		return err
	})
	return sess, err
}

// UseRegistrationToken moves one use of a token from pending to completed.
func (s *Storage) UseRegistrationToken(ctx context.Context, token string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE cs_registration_tokens SET pending = pending - 1, completed = completed + 1 WHERE token = ?`, token)
	return err
}

// ExpireUIASessions deletes sessions created before beforeTS, releasing the
// registration tokens they reserved.
func (s *Storage) ExpireUIASessions(ctx context.Context, beforeTS int64) error {
	return s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM cs_uia_sessions WHERE created_ts < ? RETURNING registration_token`, beforeTS)
		tokens, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[sql.NullString])
		if err != nil {
			return err
		}
		for _, t := range tokens {
			if !t.Valid {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE cs_registration_tokens SET pending = pending - 1 WHERE token = ? AND pending > 0`, t.String); err != nil {
				return err
			}
		}
		return nil
	})
}

// CreateNonce stores a shared-secret registration nonce.
func (s *Storage) CreateNonce(ctx context.Context, nonce string, ts int64) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO cs_register_nonces (nonce, created_ts) VALUES (?, ?)`, nonce, ts)
	return err
}

// TakeNonce consumes a nonce created at or after minTS, reporting whether
// it existed. Older nonces are deleted on the way.
func (s *Storage) TakeNonce(ctx context.Context, nonce string, minTS int64) (bool, error) {
	var ok bool
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM cs_register_nonces WHERE nonce = ? AND created_ts >= ?`, nonce, minTS)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM cs_register_nonces WHERE created_ts < ?`, minTS)
		return err
	})
	return ok, err
}
