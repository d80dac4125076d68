package storage

import (
	"context"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// DehydratedDevice is a row of user_dehydrated_devices: a user's MSC3814
// dehydrated device and the opaque data a client rehydrates it from.
type DehydratedDevice struct {
	UserID     string
	DeviceID   string
	DeviceData string
}

// SelectDehydratedDevice returns the user's dehydrated device, or
// ErrNotFound.
func SelectDehydratedDevice(ctx context.Context, q sqlutil.Querier, userID string) (*DehydratedDevice, error) {
	d := DehydratedDevice{UserID: userID}
	err := q.QueryRowContext(ctx, `SELECT device_id, device_data FROM user_dehydrated_devices WHERE user_id = ?`, userID).
		Scan(&d.DeviceID, &d.DeviceData)
	if err != nil {
		return nil, sqlutil.NotFound(err)
	}
	return &d, nil
}

// UpsertDehydratedDevice makes d the user's dehydrated device, replacing
// any previous one.
func UpsertDehydratedDevice(ctx context.Context, tx *sqlutil.Tx, d *DehydratedDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_dehydrated_devices (user_id, device_id, device_data) VALUES (?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
		d.UserID, d.DeviceID, d.DeviceData)
	return err
}

// DeleteDehydratedDevices forgets the user's dehydrated device if it is
// one of deviceIDs (deleted devices).
func DeleteDehydratedDevices(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) error {
	return sqlutil.InBatches(deviceIDs, 500, func(batch []string) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM user_dehydrated_devices WHERE user_id = ? AND device_id IN (`+sqlutil.InList(len(batch))+`)`,
			sqlutil.Args(batch, userID)...)
		return err
	})
}
