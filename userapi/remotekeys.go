package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// The remote device cache (api.RemoteKeysAPI): what this server knows of
// the device lists and cross-signing keys of remote users, kept up to date
// by the m.device_list_update chain (each update names the stream IDs it
// follows) and replaced whole by a resync when updates were missed.

var _ api.RemoteKeysAPI = (*UserAPI)(nil)

// queueRemote queues, in the transaction of the change, the news for the
// sync API that a remote user's keys changed.
func queueRemote(ctx context.Context, tx *sqlutil.Tx, userID, msgID string) error {
	payload, err := json.Marshal(api.RemoteKeyChange{V: 1, UserID: userID})
	if err != nil {
		return err
	}
	return storage.InsertOutbox(ctx, tx, api.SubjectRemoteKeyChange, msgID, payload)
}

// follows reports whether an update with these prev_ids follows a list at
// streamID: every ID it follows is the one the cache is at (an update
// that follows nothing is a first update, or one after a gap the sender
// knows of: a resync either way).
func follows(prev []int64, streamID int64) bool {
	if len(prev) == 0 {
		return false
	}
	for _, p := range prev {
		if p != streamID {
			return false
		}
	}
	return true
}

// ApplyRemoteDeviceUpdate implements api.RemoteKeysAPI.
func (u *UserAPI) ApplyRemoteDeviceUpdate(ctx context.Context, up *api.RemoteDeviceUpdate) (resync bool, err error) {
	if up.UserID == "" || up.DeviceID == "" {
		return false, fmt.Errorf("device list update without user or device")
	}
	unlock := u.remoteLocks.lock(up.UserID)
	defer unlock()
	// announce: whether local users sharing a room with the user learn of
	// a change. Not for a restatement: an update that names its own
	// stream ID among those it follows is no change, just the device as
	// it is. Myelin sends those when its user joins a room shared with a
	// server for the first time (federationapi's memberDeviceLists); the
	// local users learnt of the user from the join itself (the sync API
	// lists joiners in device_lists.changed), and announcing it would
	// list the user a second time. (A restatement that shows the cached
	// list missed updates is announced: the list changed.)
	restatement := slices.Contains(up.PrevID, up.StreamID)
	announce := true
	err = u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		resync, announce = false, !restatement
		l, err := storage.SelectRemoteDeviceList(ctx, tx, up.UserID)
		cached := err == nil
		if errors.Is(err, storage.ErrNotFound) {
			l, err = &storage.RemoteDeviceList{UserID: up.UserID, Stale: true}, nil
		}
		if err != nil {
			return err
		}
		switch {
		case !l.Stale && up.StreamID <= l.StreamID:
			// Applied already (a redelivery, or a resync that read the
			// list first): announced again, the message ID dropping a
			// repeat.
			return queueRemote(ctx, tx, up.UserID, "rkey:"+up.UserID+":"+strconv.FormatInt(up.StreamID, 10))
		case !l.Stale && follows(up.PrevID, l.StreamID):
			if up.Deleted {
				err = storage.DeleteRemoteDevice(ctx, tx, up.UserID, up.DeviceID)
			} else {
				keys := up.Keys
				if len(keys) == 0 || string(keys) == "null" {
					keys = nil
				}
				err = storage.UpsertRemoteDevice(ctx, tx, &storage.RemoteDevice{UserID: up.UserID, DeviceID: up.DeviceID,
					DisplayName: up.DeviceDisplayName, Keys: keys})
			}
			if err != nil {
				return err
			}
			l.StreamID, l.SeenID = up.StreamID, max(l.SeenID, up.StreamID)
		default:
			// Updates were missed (or the user was never fetched): the
			// list is stale until a resync.
			resync = true
			announce = announce || cached
			l.Stale, l.SeenID = true, max(l.SeenID, up.StreamID)
		}
		if err := storage.UpsertRemoteDeviceList(ctx, tx, l); err != nil || !announce {
			return err
		}
		return queueRemote(ctx, tx, up.UserID, "rkey:"+up.UserID+":"+strconv.FormatInt(up.StreamID, 10))
	})
	if err != nil || !announce {
		return resync, err
	}
	u.announce(ctx, bus.EveryReader)
	return resync, nil
}

// ApplyRemoteSigningKeyUpdate implements api.RemoteKeysAPI.
func (u *UserAPI) ApplyRemoteSigningKeyUpdate(ctx context.Context, up *api.RemoteSigningKeyUpdate) error {
	if up.UserID == "" {
		return fmt.Errorf("signing key update without user")
	}
	unlock := u.remoteLocks.lock(up.UserID)
	defer unlock()
	// No stream ID to dedupe by: the keys themselves tell one update
	// from another.
	id := fmt.Sprintf("rsk:%s:%x", up.UserID, fnv64(string(up.MasterKey)+"\x00"+string(up.SelfSigningKey)))
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		l, err := storage.SelectRemoteDeviceList(ctx, tx, up.UserID)
		if errors.Is(err, storage.ErrNotFound) {
			// Not cached: read from its server when asked.
			return queueRemote(ctx, tx, up.UserID, id)
		}
		if err != nil {
			return err
		}
		if len(up.MasterKey) > 0 && string(up.MasterKey) != "null" {
			l.MasterKey = up.MasterKey
		}
		if len(up.SelfSigningKey) > 0 && string(up.SelfSigningKey) != "null" {
			l.SelfSigningKey = up.SelfSigningKey
		}
		if err := storage.UpsertRemoteDeviceList(ctx, tx, l); err != nil {
			return err
		}
		return queueRemote(ctx, tx, up.UserID, id)
	})
	if err != nil {
		return err
	}
	u.announce(ctx, bus.EveryReader)
	return nil
}

// StoreRemoteDevices implements api.RemoteKeysAPI.
func (u *UserAPI) StoreRemoteDevices(ctx context.Context, list *api.UserDevices) error {
	if list.UserID == "" {
		return fmt.Errorf("device list without user")
	}
	unlock := u.remoteLocks.lock(list.UserID)
	defer unlock()
	return u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		l, err := storage.SelectRemoteDeviceList(ctx, tx, list.UserID)
		if errors.Is(err, storage.ErrNotFound) {
			l, err = &storage.RemoteDeviceList{UserID: list.UserID}, nil
		}
		if err != nil {
			return err
		}
		if !l.Stale && l.StreamID > list.StreamID {
			return nil // the cache is ahead of this answer
		}
		if err := storage.DeleteRemoteDevices(ctx, tx, []string{list.UserID}); err != nil {
			return err
		}
		devs := make([]storage.RemoteDevice, 0, len(list.Devices))
		for _, d := range list.Devices {
			if d.DeviceID == "" {
				continue
			}
			keys := d.Keys
			if len(keys) == 0 || string(keys) == "null" {
				keys = nil
			}
			devs = append(devs, storage.RemoteDevice{UserID: list.UserID, DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: keys})
		}
		if err := storage.InsertRemoteDevices(ctx, tx, devs); err != nil {
			return err
		}
		// The answer is the list as its server has it now: up to date.
		// (An update that came while it was fetched and does not follow
		// it asks for a resync of its own; a remote's made-up stream ID
		// must not keep the list stale forever, so seen_id does not
		// count here.)
		l.Stale = false
		l.StreamID, l.SeenID = list.StreamID, list.StreamID
		l.MasterKey, l.SelfSigningKey = list.MasterKey, list.SelfSigningKey
		return storage.UpsertRemoteDeviceList(ctx, tx, l)
	})
}

// ForgetRemoteDevices implements api.RemoteKeysAPI.
func (u *UserAPI) ForgetRemoteDevices(ctx context.Context, userIDs []string) error {
	if len(userIDs) == 0 {
		return nil
	}
	return u.store.WithTx(ctx, func(tx *sqlutil.Tx) error { return storage.DeleteRemoteDeviceLists(ctx, tx, userIDs) })
}

// StaleRemoteUsers implements api.RemoteKeysAPI.
func (u *UserAPI) StaleRemoteUsers(ctx context.Context, limit int) ([]string, error) {
	return storage.StaleRemoteDeviceLists(ctx, u.store.DB(), limit)
}

// QueryRemoteKeys implements api.RemoteKeysAPI.
func (u *UserAPI) QueryRemoteKeys(ctx context.Context, deviceKeys map[string][]string) (*api.QueryKeysResponse, map[string][]string, error) {
	resp := &api.QueryKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{}}
	missing := map[string][]string{}
	users := make([]string, 0, len(deviceKeys))
	for user := range deviceKeys {
		users = append(users, user)
	}
	lists, err := storage.FreshRemoteDeviceLists(ctx, u.store.DB(), users)
	if err != nil {
		return nil, nil, err
	}
	fresh := make([]string, 0, len(lists))
	for _, l := range lists {
		fresh = append(fresh, l.UserID)
		resp.DeviceKeys[l.UserID] = map[string]json.RawMessage{}
		if len(l.MasterKey) > 0 {
			if resp.MasterKeys == nil {
				resp.MasterKeys = map[string]json.RawMessage{}
			}
			resp.MasterKeys[l.UserID] = l.MasterKey
		}
		if len(l.SelfSigningKey) > 0 {
			if resp.SelfSigningKeys == nil {
				resp.SelfSigningKeys = map[string]json.RawMessage{}
			}
			resp.SelfSigningKeys[l.UserID] = l.SelfSigningKey
		}
	}
	for user, ids := range deviceKeys {
		if _, ok := resp.DeviceKeys[user]; !ok {
			missing[user] = ids
		}
	}
	if len(fresh) == 0 {
		return resp, missing, nil
	}
	devs, err := storage.RemoteDevicesOf(ctx, u.store.DB(), fresh)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range devs {
		if d.Keys == nil || !wanted(deviceKeys[d.UserID], d.DeviceID) {
			continue
		}
		keys := d.Keys
		if d.DisplayName != nil {
			if b, err := sjson.SetBytes(keys, "unsigned.device_display_name", *d.DisplayName); err == nil {
				keys = b
			}
		}
		resp.DeviceKeys[d.UserID][d.DeviceID] = keys
	}
	return resp, missing, nil
}

// wanted reports whether a device is among those asked for (all when
// none is named).
func wanted(ids []string, deviceID string) bool {
	if len(ids) == 0 {
		return true
	}
	for _, id := range ids {
		if id == deviceID {
			return true
		}
	}
	return false
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
