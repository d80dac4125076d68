package keys

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// Key changes: every change of a local user's device list or published
// cross-signing keys takes the user's next stream ID and goes to the outbox
// as an api.KeyChange, in the transaction of the change.

// deviceChange is a change of one device.
type deviceChange struct {
	deviceID    string
	deleted     bool
	keys        []byte // the device keys with their signatures; nil: none
	displayName *string
}

// msgID is the message ID of a change (NATS dedupes repeated publishes).
func msgID(userID string, streamID int64) string {
	return fmt.Sprintf("key:%s:%d", userID, streamID)
}

func queue(ctx context.Context, tx *sqlutil.Tx, msg *api.KeyChange) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return storage.InsertOutbox(ctx, tx, api.SubjectKeyChange, msgID(msg.UserID, msg.StreamID), payload)
}

// queueDeviceChanges queues changes of the user's devices, chained by
// prev_id, after taking their stream IDs (and so the lock that orders the
// user's changes).
func (k *Keys) queueDeviceChanges(ctx context.Context, tx *sqlutil.Tx, userID string, changes []deviceChange) error {
	if len(changes) == 0 {
		return nil
	}
	last, prev, err := storage.NextDeviceStreamIDs(ctx, tx, userID, len(changes))
	if err != nil {
		return err
	}
	id := last - int64(len(changes))
	for _, c := range changes {
		id++
		msg := &api.KeyChange{V: 1, Kind: api.KeyChangeDevice, UserID: userID, StreamID: id,
			DeviceID: c.deviceID, Deleted: c.deleted, DeviceDisplayName: c.displayName}
		if !c.deleted && c.keys != nil {
			msg.Keys = c.keys
		}
		if prev != 0 {
			msg.PrevID = []int64{prev}
		}
		prev = id
		if err := queue(ctx, tx, msg); err != nil {
			return err
		}
	}
	return nil
}

// queueKeyChange queues a change of the user's cross-signing keys (kind
// api.KeyChangeCrossSigning, with the current master and self-signing keys,
// or api.KeyChangeUserSigning, with the current user-signing key).
func (k *Keys) queueKeyChange(ctx context.Context, tx *sqlutil.Tx, userID, kind string) error {
	id, err := storage.NextStreamID(ctx, tx, userID)
	if err != nil {
		return err
	}
	cross, err := storage.SelectCrossSigningKeys(ctx, tx, []string{userID})
	if err != nil {
		return err
	}
	msg := &api.KeyChange{V: 1, Kind: kind, UserID: userID, StreamID: id}
	raw := func(typ string) json.RawMessage {
		if key, ok := cross[userID][typ]; ok {
			return json.RawMessage(key.KeyJSON)
		}
		return nil
	}
	if kind == api.KeyChangeUserSigning {
		msg.UserSigningKey = raw(storage.KeyTypeUserSigning)
	} else {
		msg.MasterKey = raw(storage.KeyTypeMaster)
		msg.SelfSigningKey = raw(storage.KeyTypeSelfSigning)
	}
	return queue(ctx, tx, msg)
}

// devicesWithKeys returns the named devices of the user that exist as
// changes carrying their current keys (with the user's signatures) and
// display names.
func (k *Keys) devicesWithKeys(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) ([]deviceChange, error) {
	devs, err := storage.SelectDeviceKeys(ctx, tx, []string{userID})
	if err != nil {
		return nil, err
	}
	sigs, err := storage.SelectSignatures(ctx, tx, []string{userID}, "")
	if err != nil {
		return nil, err
	}
	idx := indexSignatures(sigs)
	byID := make(map[string]storage.DeviceKeys, len(devs))
	for _, d := range devs {
		byID[d.DeviceID] = d
	}
	out := make([]deviceChange, 0, len(deviceIDs))
	for _, id := range deviceIDs {
		d, ok := byID[id]
		if !ok {
			continue
		}
		js, err := withSignatures([]byte(d.KeyJSON), idx.own(userID, id), nil)
		if err != nil {
			return nil, err
		}
		out = append(out, deviceChange{deviceID: id, keys: js, displayName: d.DisplayName})
	}
	return out, nil
}

// DevicesDeleted deletes, in the transaction that deleted the devices,
// their keys, and queues their deletion. The caller publishes the outbox
// (Flush) after commit.
func (k *Keys) DevicesDeleted(ctx context.Context, tx *sqlutil.Tx, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	if err := storage.DeleteDeviceKeys(ctx, tx, userID, deviceIDs); err != nil {
		return err
	}
	changes := make([]deviceChange, len(deviceIDs))
	for i, id := range deviceIDs {
		changes[i] = deviceChange{deviceID: id, deleted: true}
	}
	return k.queueDeviceChanges(ctx, tx, userID, changes)
}

// DeviceRenamed queues, in the transaction that renamed the device, the
// change of its display name (with its keys, if it has any).
func (k *Keys) DeviceRenamed(ctx context.Context, tx *sqlutil.Tx, userID, deviceID string, name *string) error {
	changes, err := k.devicesWithKeys(ctx, tx, userID, []string{deviceID})
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		changes = []deviceChange{{deviceID: deviceID}}
	}
	changes[0].displayName = name
	return k.queueDeviceChanges(ctx, tx, userID, changes)
}

// Flush publishes what committed transactions queued.
func (k *Keys) Flush(ctx context.Context) { k.publish(ctx) }
