package storage

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// SelectProfile returns every profile field of the user.
func SelectProfile(ctx context.Context, q sqlutil.Querier, userID string) (map[string]json.RawMessage, error) {
	rows, err := q.QueryContext(ctx, `SELECT field, value FROM user_profiles WHERE user_id = ?`, userID)
	out := map[string]json.RawMessage{}
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		out[k] = json.RawMessage(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpsertProfileField sets one field.
func UpsertProfileField(ctx context.Context, q sqlutil.Querier, userID, key string, value json.RawMessage) error {
	_, err := q.ExecContext(ctx, `INSERT INTO user_profiles (user_id, field, value) VALUES (?, ?, ?)
		ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, userID, key, string(value))
	return err
}

// DeleteProfileFields deletes fields; no keys deletes the whole profile.
func DeleteProfileFields(ctx context.Context, q sqlutil.Querier, userID string, keys ...string) error {
	if len(keys) == 0 {
		_, err := q.ExecContext(ctx, `DELETE FROM user_profiles WHERE user_id = ?`, userID)
		return err
	}
	args := []any{userID}
	for _, k := range keys {
		args = append(args, k)
	}
	_, err := q.ExecContext(ctx, `DELETE FROM user_profiles WHERE user_id = ? AND field IN (`+sqlutil.InList(len(keys))+`)`, args...)
	return err
}

// SelectAccountData returns one account data item, or ErrNotFound.
func SelectAccountData(ctx context.Context, q sqlutil.Querier, userID, roomID, dataType string) (json.RawMessage, error) {
	var content string
	err := q.QueryRowContext(ctx, `SELECT content FROM user_account_data WHERE user_id = ? AND room_id = ? AND type = ?`,
		userID, roomID, dataType).Scan(&content)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	return json.RawMessage(content), nil
}

// DeleteAccountData deletes one account data item and reports whether it
// was set.
func DeleteAccountData(ctx context.Context, q sqlutil.Querier, userID, roomID, dataType string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM user_account_data WHERE user_id = ? AND room_id = ? AND type = ?`,
		userID, roomID, dataType)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// LockAccountData creates an account data item with content initial
// unless it is set, and locks it until the transaction ends (PostgreSQL's
// ON CONFLICT DO UPDATE takes the row lock; SQLite has a single writer),
// so that a read-modify-write of it in tx is atomic.
func LockAccountData(ctx context.Context, tx *sqlutil.Tx, userID, roomID, dataType string, initial json.RawMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_account_data (user_id, room_id, type, content) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = user_account_data.content`, userID, roomID, dataType, string(initial))
	return err
}

// UpsertAccountData sets one account data item.
func UpsertAccountData(ctx context.Context, q sqlutil.Querier, userID, roomID, dataType string, content json.RawMessage) error {
	_, err := q.ExecContext(ctx, `INSERT INTO user_account_data (user_id, room_id, type, content) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content`, userID, roomID, dataType, string(content))
	return err
}
