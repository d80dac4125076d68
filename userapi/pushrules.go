package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/myelin-chat/myelin/internal/pushrules"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// PushRulesType is the global account data type as which a user's push
// rules are announced and read ({"global": ruleset}).
const PushRulesType = "m.push_rules"

// errUnchanged ends an edit that changed nothing: no write, no
// announcement.
var errUnchanged = errors.New("unchanged")

// userLocks serialises work per user in this process. Push rule edits
// hold a user's lock from the read to the announcement, so that the
// announcements (which carry the whole ruleset) leave in commit order and
// the last one is the stored state. The database row lock alone orders
// the commits, not the publishes after them.
type userLocks [64]sync.Mutex

func (l *userLocks) lock(userID string) (unlock func()) {
	h := fnv.New32a()
	h.Write([]byte(userID))
	m := &l[h.Sum32()%uint32(len(l))]
	m.Lock()
	return m.Unlock
}

// decodeUserRules decodes stored rules; nil is a user who changed nothing.
func decodeUserRules(raw json.RawMessage) (*pushrules.UserRules, error) {
	var r pushrules.UserRules
	if len(raw) == 0 {
		return &r, nil
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode stored push rules: %w", err)
	}
	return &r, nil
}

// effectiveRules is the ruleset clients see (Merge: every kind a list,
// never null).
func effectiveRules(userID string, r *pushrules.UserRules) *pushrules.Ruleset {
	rs := r.Merge(userID)
	return &rs
}

// pushRulesContent is the content of the m.push_rules account data.
func pushRulesContent(rs *pushrules.Ruleset) (json.RawMessage, error) {
	return json.Marshal(map[string]*pushrules.Ruleset{"global": rs})
}

// QueryPushRules returns the user's effective global ruleset: the
// server-default rules with the user's changes, and the user's own rules.
func (u *UserAPI) QueryPushRules(ctx context.Context, userID string) (*pushrules.Ruleset, error) {
	raw, err := storage.SelectPushRules(ctx, u.store.DB(), userID)
	if err != nil {
		return nil, fmt.Errorf("query push rules: %w", err)
	}
	r, err := decodeUserRules(raw)
	if err != nil {
		return nil, err
	}
	return effectiveRules(userID, r), nil
}

// editPushRules applies edit to the user's stored rules in one transaction
// and announces the new ruleset. edit reports whether it changed anything;
// its error (pushrules.ErrNotFound, ErrInvalid, ErrBadJSON) is returned
// as is.
func (u *UserAPI) editPushRules(ctx context.Context, userID string, edit func(r *pushrules.UserRules) (bool, error)) error {
	defer u.pushLocks.lock(userID)()
	var content json.RawMessage
	err := u.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		raw, err := storage.LockPushRules(ctx, tx, userID)
		if err != nil {
			return err
		}
		r, err := decodeUserRules(raw)
		if err != nil {
			return err
		}
		changed, err := edit(r)
		if err != nil {
			return err
		}
		if !changed {
			return errUnchanged
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := storage.UpdatePushRules(ctx, tx, userID, b); err != nil {
			return err
		}
		if content, err = pushRulesContent(effectiveRules(userID, r)); err != nil {
			return err
		}
		return u.queue(ctx, tx, api.SubjectAccountData, api.AccountDataUpdate{V: 1, UserID: userID, Type: PushRulesType, Content: content})
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err != nil {
		return err
	}
	u.announce(ctx, userID)
	return nil
}

// changed adapts an edit that always changes the rules when it succeeds.
func changed(err error) (bool, error) { return err == nil, err }

// PutPushRule adds or replaces one of the user's rules (the body of PUT
// /pushrules/global/{kind}/{ruleId}), placed before or after another rule
// of the kind when asked.
func (u *UserAPI) PutPushRule(ctx context.Context, userID, kind, ruleID string, body json.RawMessage, before, after string) error {
	return u.editPushRules(ctx, userID, func(r *pushrules.UserRules) (bool, error) {
		return changed(r.Put(userID, kind, ruleID, body, before, after))
	})
}

// DeletePushRule deletes one of the user's rules (server-default rules
// cannot be deleted).
func (u *UserAPI) DeletePushRule(ctx context.Context, userID, kind, ruleID string) error {
	return u.editPushRules(ctx, userID, func(r *pushrules.UserRules) (bool, error) {
		return changed(r.Delete(userID, kind, ruleID))
	})
}

// SetPushRuleEnabled enables or disables a rule, the user's own or a
// server-default one.
func (u *UserAPI) SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return u.editPushRules(ctx, userID, func(r *pushrules.UserRules) (bool, error) {
		return changed(r.SetEnabled(userID, kind, ruleID, enabled))
	})
}

// SetPushRuleActions replaces the actions of a rule, the user's own or a
// server-default one.
func (u *UserAPI) SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error {
	return u.editPushRules(ctx, userID, func(r *pushrules.UserRules) (bool, error) {
		return changed(r.SetActions(userID, kind, ruleID, actions))
	})
}

// CopyRoomPushRules gives newRoomID the user's rules of oldRoomID (after
// a room upgrade). Nothing is written or announced when there are none.
func (u *UserAPI) CopyRoomPushRules(ctx context.Context, userID, oldRoomID, newRoomID string) error {
	return u.editPushRules(ctx, userID, func(r *pushrules.UserRules) (bool, error) {
		return r.CopyRoom(oldRoomID, newRoomID), nil
	})
}
