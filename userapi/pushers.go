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
		return storage.UpsertPusher(ctx, tx, &storage.Pusher{
			UserID: p.UserID, AppID: p.AppID, PushKey: p.PushKey, DeviceID: p.DeviceID, Kind: p.Kind,
			AppDisplayName: p.AppDisplayName, DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag,
			Lang: p.Lang, Data: data, CreatedTS: created,
		})
	})
	if err != nil {
		return fmt.Errorf("set pusher: %w", err)
	}
	slices.Sort(others)
	return u.publishPushers(ctx, append([]string{p.UserID}, slices.Compact(others)...)...)
}

// DeletePusher deletes a pusher of the user; an unknown one is no error
// (and no announcement).
func (u *UserAPI) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	deleted, err := storage.DeletePusher(ctx, u.store.DB(), userID, appID, pushKey)
	if err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	if !deleted {
		return nil
	}
	return u.publishPushers(ctx, userID)
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

func (u *UserAPI) publishPushers(ctx context.Context, userIDs ...string) error {
	for _, id := range userIDs {
		if err := u.publish(ctx, api.SubjectPushers, api.PushersUpdate{V: 1, UserID: id}); err != nil {
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
	return l, nil
}

// announceDeviceDeletion announces deleted devices and what went with
// them: the key changes queued in the outbox, the pushers, and the deleted
// account data as content {} (how the sync API shows a deletion).
func (u *UserAPI) announceDeviceDeletion(ctx context.Context, l *deviceLeftovers) error {
	if l == nil {
		return nil
	}
	u.Keys.Flush(ctx)
	if err := u.publishDevices(ctx, l.userID, l.devices, true); err != nil {
		return err
	}
	if l.pushers > 0 {
		if err := u.publishPushers(ctx, l.userID); err != nil {
			return err
		}
	}
	slices.Sort(l.accountData)
	for _, typ := range l.accountData {
		if err := u.publish(ctx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: l.userID, Type: typ, Content: json.RawMessage(`{}`)}); err != nil {
			return err
		}
	}
	return nil
}
