package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Cross-signing key types (user_cross_signing_keys.key_type).
const (
	KeyTypeMaster      = "master"
	KeyTypeSelfSigning = "self_signing"
	KeyTypeUserSigning = "user_signing"
)

// CrossSigningKey is a row of user_cross_signing_keys.
type CrossSigningKey struct {
	UserID    string
	KeyType   string
	PublicKey string
	KeyJSON   string
}

// SelectCrossSigningKeys returns the users' cross-signing keys by user and
// key type.
func SelectCrossSigningKeys(ctx context.Context, q sqlutil.Querier, userIDs []string) (map[string]map[string]CrossSigningKey, error) {
	out := map[string]map[string]CrossSigningKey{}
	err := sqlutil.InBatches(userIDs, userBatch, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, key_type, public_key, key_json FROM user_cross_signing_keys
			WHERE user_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var k CrossSigningKey
			if err := rows.Scan(&k.UserID, &k.KeyType, &k.PublicKey, &k.KeyJSON); err != nil {
				return err
			}
			if out[k.UserID] == nil {
				out[k.UserID] = map[string]CrossSigningKey{}
			}
			out[k.UserID][k.KeyType] = k
			return nil
		})
	})
	return out, err
}

// UpsertCrossSigningKey sets one of the user's cross-signing keys.
func UpsertCrossSigningKey(ctx context.Context, tx *sqlutil.Tx, k CrossSigningKey) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
		k.UserID, k.KeyType, k.PublicKey, k.KeyJSON)
	return err
}

// Signature is a row of user_key_signatures.
type Signature struct {
	TargetUserID string
	TargetKeyID  string // a device ID or a cross-signing public key
	SignerUserID string
	SignerKeyID  string // "ed25519:<device ID or public key>"
	Signature    string
}

// UpsertSignatures stores signatures (replacing one by the same key over
// the same target).
func UpsertSignatures(ctx context.Context, tx *sqlutil.Tx, sigs []Signature) error {
	for _, s := range sigs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
			s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature); err != nil {
			return err
		}
	}
	return nil
}

// SelectSignatures returns the signatures over the users' keys made by
// the users themselves or by requester ("" for none).
func SelectSignatures(ctx context.Context, q sqlutil.Querier, userIDs []string, requester string) ([]Signature, error) {
	var out []Signature
	err := sqlutil.InBatches(userIDs, userBatch, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
			FROM user_key_signatures WHERE target_user_id IN (`+sqlutil.InList(len(batch))+`)
			AND (signer_user_id = target_user_id OR signer_user_id = ?)`, append(sqlutil.Args(batch), requester)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var s Signature
			if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	return out, err
}

// NextDeviceStreamIDs assigns n consecutive stream IDs to device changes
// of the user: it returns the last one and the stream ID of the user's
// device change before the first (0 when there was none). The row lock it
// takes orders the user's concurrent changes.
func NextDeviceStreamIDs(ctx context.Context, tx *sqlutil.Tx, userID string, n int) (last, prev int64, err error) {
	err = tx.QueryRowContext(ctx, `INSERT INTO user_key_streams (user_id, stream_id, device_stream_id, prev_device_stream_id)
		VALUES (?, ?, ?, 0)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = user_key_streams.stream_id + ?,
			device_stream_id = user_key_streams.stream_id + ?, prev_device_stream_id = user_key_streams.device_stream_id
		RETURNING stream_id, prev_device_stream_id`, userID, n, n, n, n).Scan(&last, &prev)
	return last, prev, err
}

// NextStreamID assigns the next stream ID of the user to a change that is
// not a device change.
func NextStreamID(ctx context.Context, tx *sqlutil.Tx, userID string) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO user_key_streams (user_id, stream_id, device_stream_id, prev_device_stream_id)
		VALUES (?, 1, 0, 0)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = user_key_streams.stream_id + 1
		RETURNING stream_id`, userID).Scan(&id)
	return id, err
}

// SelectDeviceStreamID returns the stream ID of the user's last device
// change (0 when there was none).
func SelectDeviceStreamID(ctx context.Context, q sqlutil.Querier, userID string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT device_stream_id FROM user_key_streams WHERE user_id = ?`, userID).Scan(&id)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	return id, err
}
