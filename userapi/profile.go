package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// QueryProfile returns the profile fields of a local user.
func (u *UserAPI) QueryProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	if _, err := storage.SelectAccount(ctx, u.store.DB(), userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, api.ErrNotFound
		}
		return nil, err
	}
	return storage.SelectProfile(ctx, u.store.DB(), userID)
}

// SetProfileField sets one field, keeping the whole profile under 64 KiB.
func (u *UserAPI) SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if _, err := storage.SelectAccount(ctx, tx, userID); err != nil {
			return err
		}
		profile, err := storage.SelectProfile(ctx, tx, userID)
		if err != nil {
			return err
		}
		profile[key] = value
		if b, _ := json.Marshal(profile); len(b) > api.MaxProfileBytes {
			return api.ErrProfileTooLarge
		}
		if err := storage.UpsertProfileField(ctx, tx, userID, key, value); err != nil {
			return err
		}
		return u.queue(ctx, tx, api.SubjectProfile, api.ProfileUpdate{V: 1, UserID: userID, Key: key, Value: value})
	})
	if errors.Is(err, storage.ErrNotFound) {
		return api.ErrNotFound
	}
	if err != nil {
		return err
	}
	u.announce(ctx, userID)
	return nil
}

// DeleteProfileField removes one field.
func (u *UserAPI) DeleteProfileField(ctx context.Context, userID, key string) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.DeleteProfileFields(ctx, tx, userID, key); err != nil {
			return err
		}
		return u.queue(ctx, tx, api.SubjectProfile, api.ProfileUpdate{V: 1, UserID: userID, Key: key})
	})
	if err != nil {
		return fmt.Errorf("delete profile field: %w", err)
	}
	u.announce(ctx, userID)
	return nil
}

// QueryAccountData returns one account data item or api.ErrNotFound. The
// global m.push_rules is the user's effective push rules, which are always
// set.
func (u *UserAPI) QueryAccountData(ctx context.Context, userID, roomID, dataType string) (json.RawMessage, error) {
	if roomID == "" && dataType == PushRulesType {
		rs, err := u.QueryPushRules(ctx, userID)
		if err != nil {
			return nil, err
		}
		return pushRulesContent(rs)
	}
	c, err := storage.SelectAccountData(ctx, u.store.DB(), userID, roomID, dataType)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	return c, err
}

// PutAccountData stores an account data item and announces it.
func (u *UserAPI) PutAccountData(ctx context.Context, userID, roomID, dataType string, content json.RawMessage) error {
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.UpsertAccountData(ctx, tx, userID, roomID, dataType, content); err != nil {
			return err
		}
		return u.queue(ctx, tx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: userID, RoomID: roomID, Type: dataType, Content: content})
	})
	if err != nil {
		return fmt.Errorf("put account data: %w", err)
	}
	u.announce(ctx, userID)
	return nil
}

// DeleteAccountData removes an account data item and announces it with
// content {}, which syncs show for a deleted item; an item never set
// changes nothing.
func (u *UserAPI) DeleteAccountData(ctx context.Context, userID, roomID, dataType string) error {
	var deleted bool
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		var err error
		if deleted, err = storage.DeleteAccountData(ctx, tx, userID, roomID, dataType); err != nil || !deleted {
			return err
		}
		return u.queue(ctx, tx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: userID, RoomID: roomID, Type: dataType, Content: json.RawMessage(`{}`)})
	})
	if err != nil || !deleted {
		return err
	}
	u.announce(ctx, userID)
	return nil
}

// UpdateRoomTag sets or (content nil) removes one tag in the user's m.tag
// account data of the room, under the item's lock, and announces the new
// m.tag. Removing a tag that is not set still announces it, as Synapse's
// tag stream does.
func (u *UserAPI) UpdateRoomTag(ctx context.Context, userID, roomID, tag string, content json.RawMessage) error {
	var next json.RawMessage
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.LockAccountData(ctx, tx, userID, roomID, api.RoomTagType, json.RawMessage(`{"tags":{}}`)); err != nil {
			return err
		}
		old, err := storage.SelectAccountData(ctx, tx, userID, roomID, api.RoomTagType)
		if err != nil {
			return err
		}
		var item map[string]json.RawMessage
		var tags map[string]json.RawMessage
		// A malformed m.tag (written through the account data API) is
		// replaced rather than refused: its tags cannot be read anyway.
		if json.Unmarshal(old, &item) != nil || item == nil {
			item = map[string]json.RawMessage{}
		}
		if json.Unmarshal(item["tags"], &tags) != nil || tags == nil {
			tags = map[string]json.RawMessage{}
		}
		if content == nil {
			delete(tags, tag)
		} else {
			tags[tag] = content
		}
		if item["tags"], err = json.Marshal(tags); err != nil {
			return err
		}
		if next, err = json.Marshal(item); err != nil {
			return err
		}
		if len(next) > api.MaxAccountDataBytes {
			return api.ErrAccountDataTooLarge
		}
		if err := storage.UpsertAccountData(ctx, tx, userID, roomID, api.RoomTagType, next); err != nil {
			return err
		}
		return u.queue(ctx, tx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: userID, RoomID: roomID, Type: api.RoomTagType, Content: next})
	})
	if errors.Is(err, api.ErrAccountDataTooLarge) {
		return err
	}
	if err != nil {
		return fmt.Errorf("update room tag: %w", err)
	}
	u.announce(ctx, userID)
	return nil
}
