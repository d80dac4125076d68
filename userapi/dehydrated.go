package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// Dehydrated devices (MSC3814): a device with keys but no access token,
// whose to-device messages a client later reads to rehydrate it. The
// device is an ordinary row of user_devices; user_dehydrated_devices
// marks it as the user's (single) dehydrated device and holds its data.
// Deleting the device by any path forgets the mark (deleteDeviceLeftovers).

var _ api.DehydratedDevicesAPI = (*UserAPI)(nil)

// StoreDehydratedDevice implements api.DehydratedDevicesAPI. The device is
// created first, so that UploadKeys (which needs it) can check and store
// the keys; when they are refused, a device created here is deleted again
// and the previous dehydrated device stays. The data and the deletion of
// the previous device are then one transaction.
func (u *UserAPI) StoreDehydratedDevice(ctx context.Context, req api.StoreDehydratedDevice) error {
	defer u.dehydratedLocks.lock(req.UserID)()
	old, err := storage.SelectDehydratedDevice(ctx, u.store.DB(), req.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if old != nil && old.DeviceID == req.DeviceID {
		// The same device again: the old one goes first with its keys
		// and inbox, and comes back fresh (as Synapse does).
		if err := u.DeleteDevices(ctx, req.UserID, []string{old.DeviceID}); err != nil {
			return err
		}
		old = nil
	}

	var created bool
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		created, err = storage.InsertDevice(ctx, tx, &storage.Device{UserID: req.UserID, DeviceID: req.DeviceID, DisplayName: req.DisplayName, CreatedTS: nowMS()})
		if err != nil || !created {
			return err
		}
		return u.queueDevices(ctx, tx, req.UserID, []string{req.DeviceID}, false)
	})
	if err != nil {
		return fmt.Errorf("dehydrated device: %w", err)
	}
	if created {
		u.announce(ctx, req.UserID)
	}
	if _, err := u.UploadKeys(ctx, api.UploadKeysRequest{
		UserID: req.UserID, DeviceID: req.DeviceID,
		DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys,
	}); err != nil {
		if created {
			if derr := u.DeleteDevices(ctx, req.UserID, []string{req.DeviceID}); derr != nil {
				u.log.Warn("could not delete a dehydrated device whose keys were refused", slog.String("error", derr.Error()))
			}
		}
		return err
	}

	var gone *deviceLeftovers
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if old != nil {
			deleted, err := storage.DeleteDevices(ctx, tx, req.UserID, []string{old.DeviceID})
			if err != nil {
				return err
			}
			if gone, err = u.deleteDeviceLeftovers(ctx, tx, req.UserID, deleted, false); err != nil {
				return err
			}
		}
		return storage.UpsertDehydratedDevice(ctx, tx, &storage.DehydratedDevice{UserID: req.UserID, DeviceID: req.DeviceID, DeviceData: string(req.DeviceData)})
	})
	if err != nil {
		return fmt.Errorf("dehydrated device: %w", err)
	}
	if old != nil {
		u.tokens.purgeDevices(req.UserID, old.DeviceID)
	}
	return u.announceDeviceDeletion(ctx, gone)
}

// QueryDehydratedDevice implements api.DehydratedDevicesAPI.
func (u *UserAPI) QueryDehydratedDevice(ctx context.Context, userID string) (*api.DehydratedDevice, error) {
	d, err := storage.SelectDehydratedDevice(ctx, u.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &api.DehydratedDevice{UserID: userID, DeviceID: d.DeviceID, DeviceData: json.RawMessage(d.DeviceData)}, nil
}

// DeleteDehydratedDevice implements api.DehydratedDevicesAPI.
func (u *UserAPI) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	defer u.dehydratedLocks.lock(userID)()
	d, err := storage.SelectDehydratedDevice(ctx, u.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", api.ErrNotFound
	}
	if err != nil {
		return "", err
	}
	var gone *deviceLeftovers
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		deleted, err := storage.DeleteDevices(ctx, tx, userID, []string{d.DeviceID})
		if err != nil {
			return err
		}
		if gone, err = u.deleteDeviceLeftovers(ctx, tx, userID, deleted, false); err != nil {
			return err
		}
		// Also when the device itself was gone already.
		return storage.DeleteDehydratedDevices(ctx, tx, userID, []string{d.DeviceID})
	})
	if err != nil {
		return "", fmt.Errorf("delete dehydrated device: %w", err)
	}
	u.tokens.purgeDevices(userID, d.DeviceID)
	return d.DeviceID, u.announceDeviceDeletion(ctx, gone)
}
