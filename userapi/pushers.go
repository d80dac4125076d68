package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// SetPusher creates or replaces the user's pusher with p's app ID and push
// key. The caller has validated p (kind, data.url...). A replaced pusher
// keeps the device that created it. Without appendPusher the pushers of
// other users with the same app ID and push key are deleted, as the spec
// asks; every user whose pushers changed is announced.
func (u *UserAPI) SetPusher(ctx context.Context, p api.Pusher, appendPusher bool) error {
	if p.UserID == "" || p.AppID == "" || p.PushKey == "" || p.Kind == "" {
		return errors.New("set pusher: user ID, app ID, push key and kind are required")
	}
	data := p.Data
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	created := p.CreatedTS
	if created == 0 {
		created = nowMS()
	}
	var others []string
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if !appendPusher {
			var err error
			if others, err = storage.DeleteOtherUsersPushers(ctx, tx, p.AppID, p.PushKey, p.UserID); err != nil {
				return err
			}
		}
		if err := storage.UpsertPusher(ctx, tx, &storage.Pusher{
			UserID: p.UserID, AppID: p.AppID, PushKey: p.PushKey, DeviceID: p.DeviceID, Kind: p.Kind,
			AppDisplayName: p.AppDisplayName, DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag,
			Lang: p.Lang, Data: data, CreatedTS: created,
		}); err != nil {
			return err
		}
		slices.Sort(others)
		others = append([]string{p.UserID}, slices.Compact(others)...)
		return u.queuePushers(ctx, tx, others...)
	})
	if err != nil {
		return fmt.Errorf("set pusher: %w", err)
	}
	u.announce(ctx, others...)
	return nil
}

// DeletePusher deletes a pusher of the user; an unknown one is no error
// (and no announcement).
func (u *UserAPI) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	var deleted bool
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		if deleted, err = storage.DeletePusher(ctx, tx, userID, appID, pushKey); err != nil || !deleted {
			return err
		}
		return u.queuePushers(ctx, tx, userID)
	})
	if err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	if deleted {
		u.announce(ctx, userID)
	}
	return nil
}

// QueryPushers lists the pushers of each user, oldest first.
func (u *UserAPI) QueryPushers(ctx context.Context, userIDs []string) (map[string][]api.Pusher, error) {
	ps, err := storage.SelectPushers(ctx, u.store.DB(), userIDs)
	if err != nil {
		return nil, fmt.Errorf("query pushers: %w", err)
	}
	out := map[string][]api.Pusher{}
	for _, p := range ps {
		out[p.UserID] = append(out[p.UserID], api.Pusher{
			UserID: p.UserID, DeviceID: p.DeviceID, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, PushKey: p.PushKey,
			Data: p.Data, CreatedTS: p.CreatedTS,
		})
	}
	return out, nil
}

func (u *UserAPI) queuePushers(ctx context.Context, tx *sqlutil.Tx, userIDs ...string) error {
	for _, id := range userIDs {
		if err := u.queue(ctx, tx, api.SubjectPushers, api.PushersUpdate{V: 1, UserID: id}); err != nil {
			return err
		}
	}
	return nil
}

// Local notification settings (MSC3890) are global account data per
// device; they go with the device, as in Synapse.
var localNotificationSettingsPrefixes = []string{
	"org.matrix.msc3890.local_notification_settings.",
	"m.local_notification_settings.",
}

// deviceLeftovers is what was deleted with a user's devices besides them.
type deviceLeftovers struct {
	userID  string
	devices []string
	// pushers deleted: announced when non-zero.
	pushers int64
	// accountData lists the global account data types deleted.
	accountData []string
}

// deleteDeviceLeftovers deletes, in the transaction that deleted the
// devices, their pushers (every pusher of the user with allPushers, for
// deactivation) and their local notification settings.
func (u *UserAPI) deleteDeviceLeftovers(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string, allPushers bool) (*deviceLeftovers, error) {
	l := &deviceLeftovers{userID: userID, devices: deviceIDs}
	// Their end-to-end encryption keys, and the device-list change.
	if err := u.Keys.DevicesDeleted(ctx, tx, userID, deviceIDs); err != nil {
		return nil, err
	}
	// A dehydrated device among them is no more.
	if err := storage.DeleteDehydratedDevices(ctx, tx, userID, deviceIDs); err != nil {
		return nil, err
	}
	if allPushers {
		n, err := storage.DeleteAllPushers(ctx, tx, userID)
		if err != nil {
			return nil, err
		}
		l.pushers = n
	}
	// In batches, to stay far from the engines' limits on parameters.
	for chunk := range slices.Chunk(deviceIDs, 200) {
		if !allPushers {
			n, err := storage.DeleteDevicePushers(ctx, tx, userID, chunk)
			if err != nil {
				return nil, err
			}
			l.pushers += n
		}
		types := make([]string, 0, len(chunk)*len(localNotificationSettingsPrefixes))
		for _, d := range chunk {
			for _, prefix := range localNotificationSettingsPrefixes {
				types = append(types, prefix+d)
			}
		}
		deleted, err := storage.DeleteGlobalAccountData(ctx, tx, userID, types)
		if err != nil {
			return nil, err
		}
		l.accountData = append(l.accountData, deleted...)
	}
	if err := u.queueDevices(ctx, tx, userID, deviceIDs, true); err != nil {
		return nil, err
	}
	if l.pushers > 0 {
		if err := u.queuePushers(ctx, tx, userID); err != nil {
			return nil, err
		}
	}
	slices.Sort(l.accountData)
	for _, typ := range l.accountData {
		if err := u.queue(ctx, tx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: userID, Type: typ, Content: json.RawMessage(`{}`)}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// announceDeviceDeletion publishes what deleteDeviceLeftovers queued: the
// deleted devices and what went with them (their key changes, the
// pushers, and the deleted account data as content {}, how the sync API
// shows a deletion).
func (u *UserAPI) announceDeviceDeletion(ctx context.Context, l *deviceLeftovers) error {
	if l != nil {
		u.announce(ctx, l.userID)
	}
	return nil
}
