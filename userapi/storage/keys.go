package storage

import (
	"context"
	"database/sql"
	"slices"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// DeviceKeys is a row of user_device_keys with the device's display name.
type DeviceKeys struct {
	UserID      string
	DeviceID    string
	KeyJSON     string
	DisplayName *string
}

// SelectDeviceKeyJSON returns a device's stored keys, or ErrNotFound.
func SelectDeviceKeyJSON(ctx context.Context, q sqlutil.Querier, userID, deviceID string) (string, error) {
	var s string
	err := q.QueryRowContext(ctx, `SELECT key_json FROM user_device_keys WHERE user_id = ? AND device_id = ?`, userID, deviceID).Scan(&s)
	return s, sqlutil.NotFound(err)
}

// UpsertDeviceKeys stores (or replaces) a device's keys.
func UpsertDeviceKeys(ctx context.Context, tx *sqlutil.Tx, userID, deviceID, keyJSON string, ts int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_device_keys (user_id, device_id, key_json, added_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, added_ts = excluded.added_ts`,
		userID, deviceID, keyJSON, ts)
	return err
}

// userBatch bounds the users of one query (parameters stay far below the
// engines' limits).
const userBatch = 500

// SelectDeviceKeys returns the keys of every device of the users that has
// keys, with the devices' display names, ordered by user and device.
func SelectDeviceKeys(ctx context.Context, q sqlutil.Querier, userIDs []string) ([]DeviceKeys, error) {
	var out []DeviceKeys
	err := sqlutil.InBatches(userIDs, userBatch, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT k.user_id, k.device_id, k.key_json, d.display_name
			FROM user_device_keys k JOIN user_devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
			WHERE k.user_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var k DeviceKeys
			var name sql.NullString
			if err := rows.Scan(&k.UserID, &k.DeviceID, &k.KeyJSON, &name); err != nil {
				return err
			}
			if name.Valid {
				k.DisplayName = &name.String
			}
			out = append(out, k)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b DeviceKeys) int {
		if c := strings.Compare(a.UserID, b.UserID); c != 0 {
			return c
		}
		return strings.Compare(a.DeviceID, b.DeviceID)
	})
	return out, err
}

// DeleteDeviceKeys deletes the devices' device, one-time and fallback keys
// and the signatures of their device keys.
func DeleteDeviceKeys(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) error {
	return sqlutil.InBatches(deviceIDs, userBatch, func(batch []string) error {
		args := sqlutil.Args(batch, userID)
		in := sqlutil.InList(len(batch))
		for _, table := range []string{"user_device_keys", "user_one_time_keys", "user_fallback_keys"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = ? AND device_id IN (`+in+`)`, args...); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM user_key_signatures WHERE target_user_id = ? AND target_key_id IN (`+in+`)`, args...)
		return err
	})
}

// DeleteDeviceSignatures deletes the signatures over a device's keys (its
// keys changed).
func DeleteDeviceSignatures(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM user_key_signatures WHERE target_user_id = ? AND target_key_id = ?`, userID, deviceID)
	return err
}

// OneTimeKey is a one-time or fallback key of a device.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	KeyJSON   string
}

// InsertOneTimeKeys adds keys to a device in the order given, skipping key
// IDs the device has already; it returns the keys that were skipped.
func InsertOneTimeKeys(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string, keys []OneTimeKey) ([]OneTimeKey, error) {
	inserted := make(map[[2]string]bool, len(keys))
	err := sqlutil.InBatches(keys, 200, func(batch []OneTimeKey) error {
		var sb strings.Builder
		args := make([]any, 0, 5*len(batch))
		for i, k := range batch {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString("(?, ?, ?, ?, ?)")
			args = append(args, userID, deviceID, k.Algorithm, k.KeyID, k.KeyJSON)
		}
		rows, err := tx.QueryContext(ctx, `INSERT INTO user_one_time_keys (user_id, device_id, algorithm, key_id, key_json)
			VALUES `+sb.String()+` ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING RETURNING algorithm, key_id`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var alg, id string
			if err := rows.Scan(&alg, &id); err != nil {
				return err
			}
			inserted[[2]string{alg, id}] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var skipped []OneTimeKey
	for _, k := range keys {
		if !inserted[[2]string{k.Algorithm, k.KeyID}] {
			skipped = append(skipped, k)
		}
	}
	return skipped, nil
}

// SelectOneTimeKeys returns the stored JSON of the device's keys among
// those named (algorithm and key ID), by algorithm and key ID.
func SelectOneTimeKeys(ctx context.Context, q sqlutil.Querier, userID, deviceID string, keys []OneTimeKey) (map[[2]string]string, error) {
	out := make(map[[2]string]string, len(keys))
	err := sqlutil.InBatches(keys, userBatch, func(batch []OneTimeKey) error {
		ids := make([]string, len(batch))
		for i, k := range batch {
			ids[i] = k.KeyID
		}
		rows, err := q.QueryContext(ctx, `SELECT algorithm, key_id, key_json FROM user_one_time_keys
			WHERE user_id = ? AND device_id = ? AND key_id IN (`+sqlutil.InList(len(ids))+`)`, sqlutil.Args(ids, userID, deviceID)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var alg, id, js string
			if err := rows.Scan(&alg, &id, &js); err != nil {
				return err
			}
			out[[2]string{alg, id}] = js
			return nil
		})
	})
	return out, err
}

// CountOneTimeKeys counts a device's one-time keys by algorithm.
func CountOneTimeKeys(ctx context.Context, q sqlutil.Querier, userID, deviceID string) (map[string]int, error) {
	out := map[string]int{}
	rows, err := q.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM user_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm`, userID, deviceID)
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return err
		}
		out[alg] = n
		return nil
	})
	return out, err
}

// KeyClaim names the key wanted of a device.
type KeyClaim struct {
	UserID    string
	DeviceID  string
	Algorithm string
}

// ClaimedKey is a key handed out by a claim.
type ClaimedKey struct {
	KeyClaim
	KeyID   string
	KeyJSON string
}

// claimBatch bounds the devices of one claim statement.
const claimBatch = 1000

func claimValues(batch []KeyClaim) (string, []any) {
	var sb strings.Builder
	args := make([]any, 0, 3*len(batch))
	for i, c := range batch {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?, ?, ?)")
		args = append(args, c.UserID, c.DeviceID, c.Algorithm)
	}
	return sb.String(), args
}

// ClaimOneTimeKeys deletes and returns the oldest one-time key of each
// claim that has one: one statement per batch of claims. Concurrent claims
// never get the same key; a claim that lost a race for a key (PostgreSQL
// re-checks the rows another transaction deleted) is retried, so that it
// gets the next key when there is one.
func ClaimOneTimeKeys(ctx context.Context, tx *sqlutil.Tx, claims []KeyClaim) ([]ClaimedKey, error) {
	var out []ClaimedKey
	pending := dedupeClaims(claims)
	for len(pending) > 0 {
		var got []ClaimedKey
		err := sqlutil.InBatches(pending, claimBatch, func(batch []KeyClaim) error {
			values, args := claimValues(batch)
			rows, err := tx.QueryContext(ctx, `DELETE FROM user_one_time_keys WHERE seq IN (
				SELECT MIN(seq) FROM user_one_time_keys
				WHERE (user_id, device_id, algorithm) IN (VALUES `+values+`)
				GROUP BY user_id, device_id, algorithm)
				RETURNING user_id, device_id, algorithm, key_id, key_json`, args...)
			return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
				var k ClaimedKey
				if err := rows.Scan(&k.UserID, &k.DeviceID, &k.Algorithm, &k.KeyID, &k.KeyJSON); err != nil {
					return err
				}
				got = append(got, k)
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
		if len(got) == 0 {
			break
		}
		out = append(out, got...)
		done := make(map[KeyClaim]bool, len(got))
		for _, k := range got {
			done[k.KeyClaim] = true
		}
		pending = slices.DeleteFunc(pending, func(c KeyClaim) bool { return done[c] })
	}
	return out, nil
}

func dedupeClaims(claims []KeyClaim) []KeyClaim {
	seen := make(map[KeyClaim]bool, len(claims))
	out := make([]KeyClaim, 0, len(claims))
	for _, c := range claims {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// ClaimFallbackKeys marks the fallback keys of the claims used and returns
// them (claims without a fallback key get nothing).
func ClaimFallbackKeys(ctx context.Context, tx *sqlutil.Tx, claims []KeyClaim) ([]ClaimedKey, error) {
	var out []ClaimedKey
	err := sqlutil.InBatches(dedupeClaims(claims), claimBatch, func(batch []KeyClaim) error {
		values, args := claimValues(batch)
		rows, err := tx.QueryContext(ctx, `UPDATE user_fallback_keys SET used = TRUE
			WHERE (user_id, device_id, algorithm) IN (VALUES `+values+`)
			RETURNING user_id, device_id, algorithm, key_id, key_json`, args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var k ClaimedKey
			if err := rows.Scan(&k.UserID, &k.DeviceID, &k.Algorithm, &k.KeyID, &k.KeyJSON); err != nil {
				return err
			}
			out = append(out, k)
			return nil
		})
	})
	return out, err
}

// UpsertFallbackKey sets the device's fallback key of the key's algorithm.
// A different key replaces the old one and is unused; the same key again
// changes nothing (a used key stays used).
func UpsertFallbackKey(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string, k OneTimeKey) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
		VALUES (?, ?, ?, ?, ?, FALSE)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
		WHERE user_fallback_keys.key_id <> excluded.key_id OR user_fallback_keys.key_json <> excluded.key_json`,
		userID, deviceID, k.Algorithm, k.KeyID, k.KeyJSON)
	return err
}

// SelectUnusedFallbackAlgorithms lists the algorithms of the device's
// fallback keys that have not been claimed, sorted.
func SelectUnusedFallbackAlgorithms(ctx context.Context, q sqlutil.Querier, userID, deviceID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT algorithm FROM user_fallback_keys WHERE user_id = ? AND device_id = ? AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}
