package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// SelectPushRules returns the stored push rules of a user (JSON of
// pushrules.UserRules), or nil when the user never changed any.
func SelectPushRules(ctx context.Context, q sqlutil.Querier, userID string) (json.RawMessage, error) {
	var rules string
	err := q.QueryRowContext(ctx, `SELECT rules FROM user_push_rules WHERE user_id = ?`, userID).Scan(&rules)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(rules), nil
}

// LockPushRules returns the stored push rules of a user ({} for a user who
// never changed any) and holds the user's row until tx ends, so that
// concurrent edits of one user's rules run one after the other. (The no-op
// upsert takes the row lock on PostgreSQL; SQLite has a single writer.)
func LockPushRules(ctx context.Context, tx *sqlutil.Tx, userID string) (json.RawMessage, error) {
	var rules string
	err := tx.QueryRowContext(ctx, `INSERT INTO user_push_rules (user_id, rules) VALUES (?, '{}')
		ON CONFLICT (user_id) DO UPDATE SET rules = user_push_rules.rules RETURNING rules`, userID).Scan(&rules)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(rules), nil
}

// UpdatePushRules stores a user's push rules.
func UpdatePushRules(ctx context.Context, tx *sqlutil.Tx, userID string, rules json.RawMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_push_rules (user_id, rules) VALUES (?, ?)
		ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules`, userID, string(rules))
	return err
}

// Pusher is a row of user_pushers.
type Pusher struct {
	UserID            string
	AppID             string
	PushKey           string
	DeviceID          string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              json.RawMessage
	CreatedTS         int64
}

// UpsertPusher creates a pusher or replaces the one of the same user, app
// ID and push key. A replaced pusher keeps its device and creation time:
// one device may edit the pusher of another (as Synapse), and the pusher
// still goes with the device that created it.
func UpsertPusher(ctx context.Context, q sqlutil.Querier, p *Pusher) error {
	_, err := q.ExecContext(ctx, `INSERT INTO user_pushers (user_id, app_id, pushkey, device_id, kind, app_display_name,
			device_display_name, profile_tag, lang, data, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
			data = excluded.data`,
		p.UserID, p.AppID, p.PushKey, p.DeviceID, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang,
		string(p.Data), p.CreatedTS)
	return err
}

// DeletePusher deletes one pusher and reports whether it existed.
func DeletePusher(ctx context.Context, q sqlutil.Querier, userID, appID, pushKey string) (bool, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM user_pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?`, userID, appID, pushKey)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeleteOtherUsersPushers deletes the pushers with the app ID and push key
// of users other than userID and returns those users.
func DeleteOtherUsersPushers(ctx context.Context, tx *sqlutil.Tx, appID, pushKey, userID string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `DELETE FROM user_pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ? RETURNING user_id`,
		appID, pushKey, userID)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}

// DeleteDevicePushers deletes the pushers of the listed devices and
// reports how many there were.
func DeleteDevicePushers(ctx context.Context, q sqlutil.Querier, userID string, deviceIDs []string) (int64, error) {
	if len(deviceIDs) == 0 {
		return 0, nil
	}
	res, err := q.ExecContext(ctx, `DELETE FROM user_pushers WHERE user_id = ? AND device_id IN (`+sqlutil.InList(len(deviceIDs))+`)`,
		sqlutil.Args(deviceIDs, userID)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// DeleteAllPushers deletes every pusher of the user and reports how many
// there were.
func DeleteAllPushers(ctx context.Context, q sqlutil.Querier, userID string) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM user_pushers WHERE user_id = ?`, userID)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// SelectPushers lists the pushers of the users, by user and then in the
// order they were created.
func SelectPushers(ctx context.Context, q sqlutil.Querier, userIDs []string) ([]Pusher, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name,
			profile_tag, lang, data, created_ts FROM user_pushers WHERE user_id IN (`+sqlutil.InList(len(userIDs))+`)
		ORDER BY user_id, created_ts, app_id, pushkey`, sqlutil.Args(userIDs)...)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Pusher, error) {
		var p Pusher
		var data string
		err := rows.Scan(&p.UserID, &p.AppID, &p.PushKey, &p.DeviceID, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName,
			&p.ProfileTag, &p.Lang, &data, &p.CreatedTS)
		p.Data = json.RawMessage(data)
		return p, err
	})
}

// DeleteGlobalAccountData deletes global account data of the listed types
// and returns the types that were set.
func DeleteGlobalAccountData(ctx context.Context, tx *sqlutil.Tx, userID string, types []string) ([]string, error) {
	if len(types) == 0 {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, `DELETE FROM user_account_data WHERE user_id = ? AND room_id = '' AND type IN (`+
		sqlutil.InList(len(types))+`) RETURNING type`, sqlutil.Args(types, userID)...)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}
