package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Server-side key backups: user_key_backup_owners (numbers a user's
// versions and orders the user's writes), user_key_backups (versions) and
// user_key_backup_sessions (the backed-up sessions).

// KeyBackup is a row of user_key_backups.
type KeyBackup struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	ETag      int64
	Count     int64
	Deleted   bool
}

// BackupSession is a row of user_key_backup_sessions (without its user
// and version).
type BackupSession struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// BackupSessionKey names a session of a backup: room ID and session ID.
type BackupSessionKey struct{ RoomID, SessionID string }

// Rows per statement of the batched session reads and writes (8
// parameters a row for writes: far below both engines' limits).
const (
	backupReadBatch  = 400
	backupWriteBatch = 400
)

// CreateKeyBackup creates the user's next version and returns its number.
// It also takes the user's backup lock (see LockKeyBackups).
func CreateKeyBackup(ctx context.Context, tx *sqlutil.Tx, userID, algorithm string, authData json.RawMessage) (int64, error) {
	var version int64
	err := tx.QueryRowContext(ctx, `INSERT INTO user_key_backup_owners (user_id, last_version) VALUES (?, 1)
		ON CONFLICT (user_id) DO UPDATE SET last_version = user_key_backup_owners.last_version + 1
		RETURNING last_version`, userID).Scan(&version)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO user_key_backups (user_id, version, algorithm, auth_data) VALUES (?, ?, ?, ?)`,
		userID, version, algorithm, string(authData))
	return version, err
}

// LockKeyBackups holds the user's backup lock until tx ends, so that the
// writes of one user's backups run one after the other (a no-op update of
// the owner row: a row lock on PostgreSQL; SQLite has a single writer). It
// reports false when the user never created a backup (nothing to lock:
// there is nothing to write to either).
func LockKeyBackups(ctx context.Context, tx *sqlutil.Tx, userID string) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE user_key_backup_owners SET last_version = last_version WHERE user_id = ?`, userID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SelectKeyBackup returns a version of the user's backups, deleted or not
// (ErrNotFound when it never existed).
func SelectKeyBackup(ctx context.Context, q sqlutil.Querier, userID string, version int64) (*KeyBackup, error) {
	var b KeyBackup
	var authData string
	err := q.QueryRowContext(ctx, `SELECT version, algorithm, auth_data, etag, key_count, deleted FROM user_key_backups
		WHERE user_id = ? AND version = ?`, userID, version).Scan(&b.Version, &b.Algorithm, &authData, &b.ETag, &b.Count, &b.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.AuthData = json.RawMessage(authData)
	return &b, nil
}

// SelectCurrentKeyBackup returns the user's current version: the newest
// one not deleted (ErrNotFound when there is none).
func SelectCurrentKeyBackup(ctx context.Context, q sqlutil.Querier, userID string) (*KeyBackup, error) {
	var b KeyBackup
	var authData string
	err := q.QueryRowContext(ctx, `SELECT version, algorithm, auth_data, etag, key_count, deleted FROM user_key_backups
		WHERE user_id = ? AND NOT deleted ORDER BY version DESC LIMIT 1`, userID).
		Scan(&b.Version, &b.Algorithm, &authData, &b.ETag, &b.Count, &b.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.AuthData = json.RawMessage(authData)
	return &b, nil
}

// UpdateKeyBackupAuthData replaces the auth_data of a version.
func UpdateKeyBackupAuthData(ctx context.Context, q sqlutil.Querier, userID string, version int64, authData json.RawMessage) error {
	_, err := q.ExecContext(ctx, `UPDATE user_key_backups SET auth_data = ? WHERE user_id = ? AND version = ?`,
		string(authData), userID, version)
	return err
}

// MarkKeyBackupDeleted deletes the sessions of a version and marks it
// deleted (the row stays, so that the number is not reused and a second
// delete finds it).
func MarkKeyBackupDeleted(ctx context.Context, tx *sqlutil.Tx, userID string, version int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_key_backup_sessions WHERE user_id = ? AND version = ?`, userID, version); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE user_key_backups SET deleted = TRUE, key_count = 0, etag = etag + 1
		WHERE user_id = ? AND version = ?`, userID, version)
	return err
}

// DeleteAllKeyBackups deletes every backup of the user (deactivation).
func DeleteAllKeyBackups(ctx context.Context, tx *sqlutil.Tx, userID string) error {
	for _, table := range []string{"user_key_backup_sessions", "user_key_backups", "user_key_backup_owners"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = ?`, userID); err != nil {
			return err
		}
	}
	return nil
}

// BumpKeyBackup records a change of a version's sessions: a new etag and
// the count changed by delta. It returns the etag and count after.
func BumpKeyBackup(ctx context.Context, tx *sqlutil.Tx, userID string, version, delta int64) (etag, count int64, err error) {
	err = tx.QueryRowContext(ctx, `UPDATE user_key_backups SET etag = etag + 1, key_count = key_count + ?
		WHERE user_id = ? AND version = ? RETURNING etag, key_count`, delta, userID, version).Scan(&etag, &count)
	return etag, count, err
}

const backupSessionCols = `room_id, session_id, first_message_index, forwarded_count, is_verified, session_data`

func scanBackupSession(rows *sql.Rows) (BackupSession, error) {
	var s BackupSession
	var data string
	err := rows.Scan(&s.RoomID, &s.SessionID, &s.FirstMessageIndex, &s.ForwardedCount, &s.IsVerified, &data)
	s.SessionData = json.RawMessage(data)
	return s, err
}

// SelectBackupSessions returns the sessions of a version: all (roomID
// ""), those of a room (sessionID "") or one, by room and session ID.
func SelectBackupSessions(ctx context.Context, q sqlutil.Querier, userID string, version int64, roomID, sessionID string) ([]BackupSession, error) {
	cond, args := ``, []any{userID, version}
	if roomID != "" {
		cond, args = ` AND room_id = ?`, append(args, roomID)
		if sessionID != "" {
			cond, args = cond+` AND session_id = ?`, append(args, sessionID)
		}
	}
	rows, err := q.QueryContext(ctx, `SELECT `+backupSessionCols+` FROM user_key_backup_sessions WHERE user_id = ? AND version = ?`+
		cond+` ORDER BY room_id, session_id`, args...)
	return sqlutil.Collect(rows, err, scanBackupSession)
}

// SelectBackupSessionsByKey returns the stored sessions of a version among
// keys (absent ones are missing from the map), a batch of keys per query.
// Their session_data is not read.
//
// A batch is queried as room_id IN (...) AND session_id IN (...), which
// both engines answer from the primary key's index whatever their
// statistics (a row-value IN (VALUES ...) was planned as a scan of the
// user's sessions on PostgreSQL until the table was analysed); the few
// other pairs it may match are dropped.
func SelectBackupSessionsByKey(ctx context.Context, q sqlutil.Querier, userID string, version int64, keys []BackupSessionKey) (map[BackupSessionKey]BackupSession, error) {
	want := make(map[BackupSessionKey]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	out := make(map[BackupSessionKey]BackupSession)
	err := sqlutil.InBatches(keys, backupReadBatch, func(batch []BackupSessionKey) error {
		var rooms, sessions []string
		seenRoom, seenSession := map[string]bool{}, map[string]bool{}
		for _, k := range batch {
			if !seenRoom[k.RoomID] {
				seenRoom[k.RoomID] = true
				rooms = append(rooms, k.RoomID)
			}
			if !seenSession[k.SessionID] {
				seenSession[k.SessionID] = true
				sessions = append(sessions, k.SessionID)
			}
		}
		args := append(sqlutil.Args(rooms, userID, version), sqlutil.Args(sessions)...)
		rows, err := q.QueryContext(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified
			FROM user_key_backup_sessions WHERE user_id = ? AND version = ? AND room_id IN (`+sqlutil.InList(len(rooms))+`)
			AND session_id IN (`+sqlutil.InList(len(sessions))+`)`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var s BackupSession
			if err := rows.Scan(&s.RoomID, &s.SessionID, &s.FirstMessageIndex, &s.ForwardedCount, &s.IsVerified); err != nil {
				return err
			}
			if k := (BackupSessionKey{s.RoomID, s.SessionID}); want[k] {
				out[k] = s
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpsertBackupSessions writes sessions to a version, inserting new ones
// and overwriting stored ones, a batch of rows per statement. The caller
// holds the user's lock and has decided which sessions to write.
func UpsertBackupSessions(ctx context.Context, tx *sqlutil.Tx, userID string, version int64, sessions []BackupSession) error {
	return sqlutil.InBatches(sessions, backupWriteBatch, func(batch []BackupSession) error {
		args := make([]any, 0, 8*len(batch))
		for _, s := range batch {
			args = append(args, userID, version, s.RoomID, s.SessionID, s.FirstMessageIndex, s.ForwardedCount, s.IsVerified,
				string(s.SessionData))
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO user_key_backup_sessions (user_id, version, `+backupSessionCols+`) VALUES `+
			backupValues("(?, CAST(? AS BIGINT), ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BOOLEAN), ?)", len(batch))+`
			ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
				forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
			args...)
		return err
	})
}

// DeleteBackupSessions deletes the sessions of a version with the
// selection of SelectBackupSessions and returns how many there were.
func DeleteBackupSessions(ctx context.Context, tx *sqlutil.Tx, userID string, version int64, roomID, sessionID string) (int64, error) {
	cond, args := ``, []any{userID, version}
	if roomID != "" {
		cond, args = ` AND room_id = ?`, append(args, roomID)
		if sessionID != "" {
			cond, args = cond+` AND session_id = ?`, append(args, sessionID)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM user_key_backup_sessions WHERE user_id = ? AND version = ?`+cond, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// backupValues returns n copies of row separated by commas.
func backupValues(row string, n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat(row+", ", n-1) + row
}
