package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Device is a row of user_devices.
type Device struct {
	UserID            string
	DeviceID          string
	DisplayName       *string
	CreatedTS         int64
	LastSeenTS        int64
	LastSeenIP        string
	LastSeenUserAgent string
}

// InsertDevice creates the device unless it exists; it reports whether it
// was created.
func InsertDevice(ctx context.Context, q sqlutil.Querier, d *Device) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO user_devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO NOTHING`,
		d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

const deviceColumns = `user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent`

func scanDevice(sc interface{ Scan(...any) error }) (*Device, error) {
	var d Device
	var name sql.NullString
	if err := sc.Scan(&d.UserID, &d.DeviceID, &name, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP, &d.LastSeenUserAgent); err != nil {
		return nil, err
	}
	if name.Valid {
		d.DisplayName = &name.String
	}
	return &d, nil
}

// SelectDevices lists the user's devices by device ID.
func SelectDevices(ctx context.Context, q sqlutil.Querier, userID string) ([]Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deviceColumns+` FROM user_devices WHERE user_id = ? ORDER BY device_id`, userID)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (Device, error) {
		d, err := scanDevice(rows)
		if err != nil {
			return Device{}, err
		}
		return *d, nil
	})
}

// SelectDevicesOfUsers lists the devices of several users, by user and
// device ID, a batch of users per statement.
func SelectDevicesOfUsers(ctx context.Context, q sqlutil.Querier, userIDs []string) ([]Device, error) {
	const batch = 500
	var out []Device
	for len(userIDs) > 0 {
		n := min(len(userIDs), batch)
		rows, err := q.QueryContext(ctx, `SELECT `+deviceColumns+` FROM user_devices WHERE user_id IN (`+sqlutil.InList(n)+`)
			ORDER BY user_id, device_id`, sqlutil.Args(userIDs[:n])...)
		ds, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (Device, error) {
			d, err := scanDevice(rows)
			if err != nil {
				return Device{}, err
			}
			return *d, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
		userIDs = userIDs[n:]
	}
	return out, nil
}

// SelectDevice returns one device, or ErrNotFound.
func SelectDevice(ctx context.Context, q sqlutil.Querier, userID, deviceID string) (*Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM user_devices WHERE user_id = ? AND device_id = ?`, userID, deviceID))
	return d, sqlutil.NotFound(err)
}

// UpdateDeviceName renames a device; ErrNotFound for an unknown one.
func UpdateDeviceName(ctx context.Context, q sqlutil.Querier, userID, deviceID string, name *string) error {
	res, err := q.ExecContext(ctx, `UPDATE user_devices SET display_name = ? WHERE user_id = ? AND device_id = ?`, name, userID, deviceID)
	return affected(res, err)
}

// UpdateDeviceLastSeen records where and when the device was last used.
func UpdateDeviceLastSeen(ctx context.Context, q sqlutil.Querier, userID, deviceID string, ts int64, ip, userAgent string) error {
	_, err := q.ExecContext(ctx, `UPDATE user_devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?
		WHERE user_id = ? AND device_id = ?`, ts, ip, userAgent, userID, deviceID)
	return err
}

// DeleteDevices deletes the listed devices with their access and refresh
// tokens and returns the IDs of the devices that existed.
func DeleteDevices(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) ([]string, error) {
	if len(deviceIDs) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(deviceIDs)+1)
	args = append(args, userID)
	for _, id := range deviceIDs {
		args = append(args, id)
	}
	in := sqlutil.InList(len(deviceIDs))
	for _, table := range []string{"user_access_tokens", "user_refresh_tokens"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = ? AND device_id IN (`+in+`)`, args...); err != nil {
			return nil, err
		}
	}
	rows, err := tx.QueryContext(ctx, `DELETE FROM user_devices WHERE user_id = ? AND device_id IN (`+in+`) RETURNING device_id`, args...)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}

// DeleteAllDevices deletes every device of the user except the one named
// (if any), with their tokens, and returns the deleted device IDs.
func DeleteAllDevices(ctx context.Context, tx *sqlutil.Tx, userID, except string) ([]string, error) {
	for _, table := range []string{"user_access_tokens", "user_refresh_tokens"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = ? AND device_id <> ?`, userID, except); err != nil {
			return nil, err
		}
	}
	rows, err := tx.QueryContext(ctx, `DELETE FROM user_devices WHERE user_id = ? AND device_id <> ? RETURNING device_id`, userID, except)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}
