package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// RemoteDeviceList is a row of user_remote_device_lists.
type RemoteDeviceList struct {
	UserID                    string
	StreamID, SeenID          int64
	Stale                     bool
	MasterKey, SelfSigningKey json.RawMessage
}

// RemoteDevice is a row of user_remote_devices; Keys is nil for a device
// without keys.
type RemoteDevice struct {
	UserID, DeviceID string
	DisplayName      *string
	Keys             json.RawMessage
}

func nullJSON(b json.RawMessage) any {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return string(b)
}

func scanRemoteList(sc interface{ Scan(...any) error }) (*RemoteDeviceList, error) {
	var l RemoteDeviceList
	var mk, ssk sql.NullString
	if err := sc.Scan(&l.UserID, &l.StreamID, &l.SeenID, &l.Stale, &mk, &ssk); err != nil {
		return nil, err
	}
	if mk.Valid {
		l.MasterKey = json.RawMessage(mk.String)
	}
	if ssk.Valid {
		l.SelfSigningKey = json.RawMessage(ssk.String)
	}
	return &l, nil
}

const remoteListColumns = `user_id, stream_id, seen_id, stale, master_key, self_signing_key`

// SelectRemoteDeviceList returns a user's cached list header, or
// ErrNotFound.
func SelectRemoteDeviceList(ctx context.Context, q sqlutil.Querier, userID string) (*RemoteDeviceList, error) {
	l, err := scanRemoteList(q.QueryRowContext(ctx, `SELECT `+remoteListColumns+` FROM user_remote_device_lists WHERE user_id = ?`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return l, err
}

// UpsertRemoteDeviceList writes a user's list header.
func UpsertRemoteDeviceList(ctx context.Context, tx *sqlutil.Tx, l *RemoteDeviceList) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_remote_device_lists (`+remoteListColumns+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, seen_id = excluded.seen_id, stale = excluded.stale,
		master_key = excluded.master_key, self_signing_key = excluded.self_signing_key`,
		l.UserID, l.StreamID, l.SeenID, l.Stale, nullJSON(l.MasterKey), nullJSON(l.SelfSigningKey))
	return err
}

// UpsertRemoteDevice writes a cached device.
func UpsertRemoteDevice(ctx context.Context, tx *sqlutil.Tx, d *RemoteDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_remote_devices (user_id, device_id, display_name, keys) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, keys = excluded.keys`,
		d.UserID, d.DeviceID, d.DisplayName, nullJSON(d.Keys))
	return err
}

// InsertRemoteDevices writes a user's devices (after DeleteRemoteDevices),
// a batch of rows per statement.
func InsertRemoteDevices(ctx context.Context, tx *sqlutil.Tx, devs []RemoteDevice) error {
	return sqlutil.InBatches(devs, 200, func(batch []RemoteDevice) error {
		query := `INSERT INTO user_remote_devices (user_id, device_id, display_name, keys) VALUES `
		args := make([]any, 0, 4*len(batch))
		for i, d := range batch {
			if i > 0 {
				query += `, `
			}
			query += `(?, ?, ?, ?)`
			args = append(args, d.UserID, d.DeviceID, d.DisplayName, nullJSON(d.Keys))
		}
		_, err := tx.ExecContext(ctx, query+` ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, keys = excluded.keys`, args...)
		return err
	})
}

// DeleteRemoteDevice removes a cached device.
func DeleteRemoteDevice(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM user_remote_devices WHERE user_id = ? AND device_id = ?`, userID, deviceID)
	return err
}

// DeleteRemoteDevices removes the cached devices of users.
func DeleteRemoteDevices(ctx context.Context, tx *sqlutil.Tx, users []string) error {
	return sqlutil.InBatches(users, 500, func(batch []string) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM user_remote_devices WHERE user_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return err
	})
}

// DeleteRemoteDeviceLists removes the cached lists of users, devices
// included.
func DeleteRemoteDeviceLists(ctx context.Context, tx *sqlutil.Tx, users []string) error {
	if err := DeleteRemoteDevices(ctx, tx, users); err != nil {
		return err
	}
	return sqlutil.InBatches(users, 500, func(batch []string) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM user_remote_device_lists WHERE user_id IN (`+sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch)...)
		return err
	})
}

// FreshRemoteDeviceLists returns the headers of the up-to-date lists among
// users'.
func FreshRemoteDeviceLists(ctx context.Context, q sqlutil.Querier, users []string) ([]*RemoteDeviceList, error) {
	var out []*RemoteDeviceList
	err := sqlutil.InBatches(users, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT `+remoteListColumns+` FROM user_remote_device_lists WHERE stale = ? AND user_id IN (`+
			sqlutil.InList(len(batch))+`)`, sqlutil.Args(batch, false)...)
		ls, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (*RemoteDeviceList, error) { return scanRemoteList(rows) })
		out = append(out, ls...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RemoteDevicesOf returns the cached devices of users.
func RemoteDevicesOf(ctx context.Context, q sqlutil.Querier, users []string) ([]RemoteDevice, error) {
	var out []RemoteDevice
	err := sqlutil.InBatches(users, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, device_id, display_name, keys FROM user_remote_devices WHERE user_id IN (`+
			sqlutil.InList(len(batch))+`) ORDER BY user_id, device_id`, sqlutil.Args(batch)...)
		ds, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (RemoteDevice, error) {
			var d RemoteDevice
			var name, keys sql.NullString
			if err := rows.Scan(&d.UserID, &d.DeviceID, &name, &keys); err != nil {
				return d, err
			}
			if name.Valid {
				d.DisplayName = &name.String
			}
			if keys.Valid {
				d.Keys = json.RawMessage(keys.String)
			}
			return d, nil
		})
		out = append(out, ds...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StaleRemoteDeviceLists lists up to limit users whose cached list is
// stale.
func StaleRemoteDeviceLists(ctx context.Context, q sqlutil.Querier, limit int) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id FROM user_remote_device_lists WHERE stale = ? ORDER BY user_id LIMIT ?`, true, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (string, error) {
		var u string
		err := rows.Scan(&u)
		return u, err
	})
}
