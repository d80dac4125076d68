package api

import (
	"context"
	"encoding/json"
	"errors"
)

// Server-side key backups (/room_keys): a user's backup versions, each with
// its algorithm and auth_data, and the encrypted megolm session keys stored
// in them. Versions are opaque decimal strings numbered per user; a
// deleted version's number is never reused. The current version is the
// newest one that is not deleted; only it can be written to.

// Errors of KeyBackupAPI besides ErrNotFound (an unknown or deleted
// version).
var (
	// ErrWrongVersion: the version exists but is not the current one. The
	// error is a *WrongVersionError, which names the current version.
	ErrWrongVersion = errors.New("not the current backup version")
	// ErrAlgorithmMismatch: an update names another algorithm than the
	// backup's.
	ErrAlgorithmMismatch = errors.New("backup algorithm does not match")
)

// WrongVersionError is ErrWrongVersion with the current version, which
// M_WRONG_ROOM_KEYS_VERSION carries as current_version.
type WrongVersionError struct {
	Current string `json:"current_version"`
}

func (e *WrongVersionError) Error() string {
	return ErrWrongVersion.Error() + " (current: " + e.Current + ")"
}

// Is makes errors.Is(err, ErrWrongVersion) true.
func (e *WrongVersionError) Is(target error) bool { return target == ErrWrongVersion }

// KeyBackup is a backup version as GET /room_keys/version/{version}
// returns it.
type KeyBackup struct {
	Version   string          `json:"version"`
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	// Count is the number of sessions stored in the version.
	Count int64 `json:"count"`
	// ETag changes whenever the sessions stored in the version change.
	ETag string `json:"etag"`
}

// KeyBackupCounts is what a write of sessions answers: the version's etag
// and session count after it.
type KeyBackupCounts struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// RoomKey is one backed-up megolm session. SessionData is the
// algorithm-dependent (encrypted) JSON object, opaque to the server.
type RoomKey struct {
	RoomID            string          `json:"room_id"`
	SessionID         string          `json:"session_id"`
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// Replaces reports whether an uploaded key k replaces the stored key old
// of the same session, by the rules of the spec: a verified key beats an
// unverified one; between keys equally verified, the lower
// first_message_index wins, then the lower forwarded_count. A key no
// better than the stored one (an equal one included) leaves it.
func (k *RoomKey) Replaces(old *RoomKey) bool {
	if k.IsVerified != old.IsVerified {
		return k.IsVerified
	}
	if k.FirstMessageIndex != old.FirstMessageIndex {
		return k.FirstMessageIndex < old.FirstMessageIndex
	}
	return k.ForwardedCount < old.ForwardedCount
}

// KeyBackupAPI manages server-side key backups. Every method is about the
// backups of userID alone: another user's versions do not exist for it
// (ErrNotFound). Versions that are not decimal numbers are unknown
// (ErrNotFound). Methods fail with the errors named, or with an opaque
// error when storage failed.
type KeyBackupAPI interface {
	// CreateKeyBackup creates a version with the algorithm and auth_data
	// (a JSON object, validated by the caller) and returns it; it becomes
	// the current version.
	CreateKeyBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (version string, err error)
	// QueryKeyBackup returns a version ("" for the current one). It fails
	// with ErrNotFound for an unknown or deleted version, or when there is
	// no current one.
	QueryKeyBackup(ctx context.Context, userID, version string) (*KeyBackup, error)
	// UpdateKeyBackup replaces the auth_data of a version (current or
	// not). It fails with ErrNotFound or, when algorithm is not the
	// version's, ErrAlgorithmMismatch.
	UpdateKeyBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error
	// DeleteKeyBackup deletes a version and its sessions; the newest
	// remaining version becomes current. A version deleted before is no
	// error; one that never existed is ErrNotFound.
	DeleteKeyBackup(ctx context.Context, userID, version string) error
	// PutRoomKeys stores keys in the current version, in one transaction:
	// a new session is added; a known one is replaced only when the
	// upload is better (RoomKey.Replaces). Every RoomID and SessionID must
	// be non-empty, and a session must appear once. It fails with
	// ErrNotFound when the version does not exist (or there is no current
	// one) and with a *WrongVersionError (ErrWrongVersion) when it exists
	// but is not current.
	PutRoomKeys(ctx context.Context, userID, version string, keys []RoomKey) (KeyBackupCounts, error)
	// QueryRoomKeys returns the keys of a version: all of them (roomID
	// ""), those of a room (sessionID "") or of one session, sorted by
	// room and session. Keys of a version that is not current can be read.
	// It fails with ErrNotFound for an unknown or deleted version; no keys
	// is an empty list.
	QueryRoomKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]RoomKey, error)
	// DeleteRoomKeys deletes the keys of a version, with the selection of
	// QueryRoomKeys, current version or not. It fails with ErrNotFound for
	// an unknown or deleted version; deleting nothing is no error.
	DeleteRoomKeys(ctx context.Context, userID, version, roomID, sessionID string) (KeyBackupCounts, error)
}
