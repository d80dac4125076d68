package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// Server-side key backups (api.KeyBackupAPI). Every write takes the
// user's backup lock first, so that a version switch, an upload and a
// deletion of one user never interleave (as Synapse's per-user lock), and
// an upload reads the stored sessions it may replace, decides in memory,
// and writes the winners in batches: a constant number of statements per
// few hundred sessions, in one transaction.

var _ api.KeyBackupAPI = (*UserAPI)(nil)

// parseBackupVersion reads a version string: a positive decimal number in
// canonical form (so that "01" is not "1"); anything else is unknown.
func parseBackupVersion(version string) (int64, error) {
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil || v <= 0 || strconv.FormatInt(v, 10) != version {
		return 0, api.ErrNotFound
	}
	return v, nil
}

func formatBackupVersion(v int64) string { return strconv.FormatInt(v, 10) }

func keyBackupOf(b *storage.KeyBackup) *api.KeyBackup {
	return &api.KeyBackup{
		Version: formatBackupVersion(b.Version), Algorithm: b.Algorithm, AuthData: b.AuthData,
		Count: b.Count, ETag: strconv.FormatInt(b.ETag, 10),
	}
}

func backupCountsOf(etag, count int64) api.KeyBackupCounts {
	return api.KeyBackupCounts{ETag: strconv.FormatInt(etag, 10), Count: count}
}

// liveKeyBackup returns a version that is not deleted (ErrNotFound for an
// unknown, deleted or malformed one).
func liveKeyBackup(ctx context.Context, q sqlutil.Querier, userID, version string) (*storage.KeyBackup, error) {
	v, err := parseBackupVersion(version)
	if err != nil {
		return nil, err
	}
	b, err := storage.SelectKeyBackup(ctx, q, userID, v)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && b.Deleted) {
		return nil, api.ErrNotFound
	}
	return b, err
}

// CreateKeyBackup implements api.KeyBackupAPI.
func (u *UserAPI) CreateKeyBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	var v int64
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		v, err = storage.CreateKeyBackup(ctx, tx, userID, algorithm, authData)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create key backup: %w", err)
	}
	return formatBackupVersion(v), nil
}

// QueryKeyBackup implements api.KeyBackupAPI.
func (u *UserAPI) QueryKeyBackup(ctx context.Context, userID, version string) (*api.KeyBackup, error) {
	var b *storage.KeyBackup
	var err error
	if version == "" {
		b, err = storage.SelectCurrentKeyBackup(ctx, u.store.DB(), userID)
		if errors.Is(err, storage.ErrNotFound) {
			err = api.ErrNotFound
		}
	} else {
		b, err = liveKeyBackup(ctx, u.store.DB(), userID, version)
	}
	if err != nil {
		return nil, err
	}
	return keyBackupOf(b), nil
}

// UpdateKeyBackup implements api.KeyBackupAPI.
func (u *UserAPI) UpdateKeyBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if _, err := storage.LockKeyBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := liveKeyBackup(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		if b.Algorithm != algorithm {
			return api.ErrAlgorithmMismatch
		}
		return storage.UpdateKeyBackupAuthData(ctx, tx, userID, b.Version, authData)
	})
	return keyBackupError("update key backup", err)
}

// DeleteKeyBackup implements api.KeyBackupAPI.
func (u *UserAPI) DeleteKeyBackup(ctx context.Context, userID, version string) error {
	v, err := parseBackupVersion(version)
	if err != nil {
		return err
	}
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if _, err := storage.LockKeyBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := storage.SelectKeyBackup(ctx, tx, userID, v)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return api.ErrNotFound
		case err != nil:
			return err
		case b.Deleted:
			return nil
		}
		return storage.MarkKeyBackupDeleted(ctx, tx, userID, v)
	})
	return keyBackupError("delete key backup", err)
}

// writableKeyBackup returns the version an upload names, which must be
// the current one, with the user's lock held.
func writableKeyBackup(ctx context.Context, tx *sqlutil.Tx, userID, version string) (*storage.KeyBackup, error) {
	if ok, err := storage.LockKeyBackups(ctx, tx, userID); err != nil || !ok {
		if err == nil {
			err = api.ErrNotFound
		}
		return nil, err
	}
	cur, err := storage.SelectCurrentKeyBackup(ctx, tx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if formatBackupVersion(cur.Version) == version {
		return cur, nil
	}
	// Not current: 403 if it exists, else 404.
	if _, err := liveKeyBackup(ctx, tx, userID, version); err != nil {
		return nil, err
	}
	return nil, &api.WrongVersionError{Current: formatBackupVersion(cur.Version)}
}

// PutRoomKeys implements api.KeyBackupAPI.
func (u *UserAPI) PutRoomKeys(ctx context.Context, userID, version string, keys []api.RoomKey) (api.KeyBackupCounts, error) {
	var counts api.KeyBackupCounts
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		b, err := writableKeyBackup(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		counts = backupCountsOf(b.ETag, b.Count)
		if len(keys) == 0 {
			return nil
		}
		keys, ids := uniqueRoomKeys(keys)
		stored, err := storage.SelectBackupSessionsByKey(ctx, tx, userID, b.Version, ids)
		if err != nil {
			return err
		}
		var write []storage.BackupSession
		var added int64
		for i := range keys {
			k := &keys[i]
			if old, ok := stored[ids[i]]; ok {
				if !k.Replaces(&api.RoomKey{IsVerified: old.IsVerified, FirstMessageIndex: old.FirstMessageIndex, ForwardedCount: old.ForwardedCount}) {
					continue
				}
			} else {
				added++
			}
			write = append(write, storage.BackupSession{
				RoomID: k.RoomID, SessionID: k.SessionID, FirstMessageIndex: k.FirstMessageIndex,
				ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified, SessionData: k.SessionData,
			})
		}
		if len(write) == 0 {
			return nil
		}
		if err := storage.UpsertBackupSessions(ctx, tx, userID, b.Version, write); err != nil {
			return err
		}
		etag, count, err := storage.BumpKeyBackup(ctx, tx, userID, b.Version, added)
		counts = backupCountsOf(etag, count)
		return err
	})
	if err != nil {
		return api.KeyBackupCounts{}, keyBackupError("put room keys", err)
	}
	return counts, nil
}

// uniqueRoomKeys returns keys with each session once (the best of its
// copies, should a caller pass several) and their session keys.
func uniqueRoomKeys(keys []api.RoomKey) ([]api.RoomKey, []storage.BackupSessionKey) {
	ids := make([]storage.BackupSessionKey, 0, len(keys))
	at := make(map[storage.BackupSessionKey]int, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		id := storage.BackupSessionKey{RoomID: k.RoomID, SessionID: k.SessionID}
		if i, dup := at[id]; dup {
			if k.Replaces(&out[i]) {
				out[i] = k
			}
			continue
		}
		at[id] = len(out)
		out = append(out, k)
		ids = append(ids, id)
	}
	return out, ids
}

// QueryRoomKeys implements api.KeyBackupAPI.
func (u *UserAPI) QueryRoomKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]api.RoomKey, error) {
	b, err := liveKeyBackup(ctx, u.store.DB(), userID, version)
	if err != nil {
		return nil, err
	}
	rows, err := storage.SelectBackupSessions(ctx, u.store.DB(), userID, b.Version, roomID, sessionID)
	if err != nil {
		return nil, fmt.Errorf("query room keys: %w", err)
	}
	out := make([]api.RoomKey, len(rows))
	for i, s := range rows {
		out[i] = api.RoomKey{
			RoomID: s.RoomID, SessionID: s.SessionID, FirstMessageIndex: s.FirstMessageIndex,
			ForwardedCount: s.ForwardedCount, IsVerified: s.IsVerified, SessionData: s.SessionData,
		}
	}
	return out, nil
}

// DeleteRoomKeys implements api.KeyBackupAPI.
func (u *UserAPI) DeleteRoomKeys(ctx context.Context, userID, version, roomID, sessionID string) (api.KeyBackupCounts, error) {
	var counts api.KeyBackupCounts
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if _, err := storage.LockKeyBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := liveKeyBackup(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		counts = backupCountsOf(b.ETag, b.Count)
		n, err := storage.DeleteBackupSessions(ctx, tx, userID, b.Version, roomID, sessionID)
		if err != nil || n == 0 {
			return err
		}
		etag, count, err := storage.BumpKeyBackup(ctx, tx, userID, b.Version, -n)
		counts = backupCountsOf(etag, count)
		return err
	})
	if err != nil {
		return api.KeyBackupCounts{}, keyBackupError("delete room keys", err)
	}
	return counts, nil
}

// keyBackupError passes the contract's errors through and wraps storage
// failures.
func keyBackupError(op string, err error) error {
	if err == nil || errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrWrongVersion) || errors.Is(err, api.ErrAlgorithmMismatch) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}
