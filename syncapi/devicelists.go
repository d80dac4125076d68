package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// deviceLists is the body of /keys/changes (both lists always there, as
// in Synapse).
type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// onKeyChange puts a change of a user's device list or cross-signing keys
// (a local user's KeyChange, or a remote user's RemoteKeyChange) on the
// device-list stream and wakes the syncs of those sharing a room with
// them.
func (s *SyncAPI) onKeyChange(ctx context.Context, m *bus.Msg, remote bool) error {
	var userID string
	shared := true
	if remote {
		var c userapi.RemoteKeyChange
		if err := json.Unmarshal(m.Data, &c); err != nil || c.UserID == "" {
			return bus.Permanent(fmt.Errorf("undecodable remote key change: %v", err))
		}
		if s.isLocal(c.UserID) {
			return s.setConsumed(ctx, userOutputConsumer, m.Seq, &s.applied.userOutput)
		}
		userID = c.UserID
	} else {
		var c userapi.KeyChange
		if err := json.Unmarshal(m.Data, &c); err != nil || c.UserID == "" {
			return bus.Permanent(fmt.Errorf("undecodable key change: %v", err))
		}
		userID = c.UserID
		// A user-signing key concerns the user's own devices only.
		shared = c.Kind != userapi.KeyChangeUserSigning
	}
	pos := s.pos.deviceList.Load() + 1
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.MarkDeviceListChanged(ctx, tx, userID, pos, shared); err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, userOutputConsumer, m.Seq)
	})
	if err != nil {
		return err
	}
	s.pos.deviceList.Store(pos)
	if shared {
		s.notifier.wakeSharers(userID)
	} else {
		s.notifier.wakeUsers(userID)
	}
	s.applied.userOutput.Store(m.Seq)
	return nil
}

// deviceListChanges computes device_lists between two tokens for a user:
// changed holds the users sharing a room with them (and themselves) whose
// device list or cross-signing keys changed, and the users who began to
// share a room with them (joins to their rooms; every member of a room
// they joined); left holds the users with whom they no longer share any
// room (who left their rooms; the members of rooms they left). own are the
// user's membership changes in the range, joined the rooms they are
// joined to now. It costs at most three statements.
func (s *SyncAPI) deviceListChanges(ctx context.Context, userID string, from, to StreamPos, own []storage.MembershipChange, joined []string) (changed, left []string, err error) {
	db := s.store.DB()
	sharers := s.notifier.sharers(userID)
	changedSet, leftSet := map[string]bool{}, map[string]bool{}
	if to.DeviceList > from.DeviceList {
		rows, err := storage.DeviceListChanges(ctx, db, from.DeviceList, to.DeviceList)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rows {
			if r.UserID == userID || (r.SharedPos > from.DeviceList && sharers[r.UserID]) {
				changedSet[r.UserID] = true
			}
		}
	}
	if to.PDU > from.PDU {
		isJoined := map[string]bool{}
		for _, r := range joined {
			isJoined[r] = true
		}
		newlyJoined, newlyLeft := map[string]bool{}, map[string]bool{}
		for _, c := range own {
			switch {
			case c.Membership == spec.Join && isJoined[c.RoomID]:
				newlyJoined[c.RoomID] = true
			case (c.Membership == spec.Leave || c.Membership == spec.Ban) && !isJoined[c.RoomID]:
				newlyLeft[c.RoomID] = true
			}
		}
		var others []string
		for _, r := range joined {
			if newlyJoined[r] {
				for _, u := range s.notifier.joinedMembers(r) {
					changedSet[u] = true
				}
			} else {
				others = append(others, r)
			}
		}
		// Joins and departures in the rooms the user was in all along.
		if len(others) > 0 {
			changes, err := storage.RoomMembershipChanges(ctx, db, others, from.PDU, to.PDU)
			if err != nil {
				return nil, nil, err
			}
			for _, c := range changes {
				switch c.Membership {
				case spec.Join:
					changedSet[c.UserID] = true
				case spec.Leave, spec.Ban:
					leftSet[c.UserID] = true
				}
			}
		}
		// The members of the rooms the user left.
		if len(newlyLeft) > 0 {
			members, err := storage.RoomMemberships(ctx, db, mapKeys(newlyLeft))
			if err != nil {
				return nil, nil, err
			}
			for _, m := range members {
				if m.Membership == spec.Join {
					leftSet[m.UserID] = true
				}
			}
		}
	}
	changed, left = []string{}, []string{}
	for u := range changedSet {
		if u == userID || sharers[u] {
			changed = append(changed, u)
		}
	}
	for u := range leftSet {
		if u != userID && !sharers[u] {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}

func mapKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// fillDeviceLists adds device_lists to an incremental sync, and the
// device's one-time key counts and unused fallback key types to every
// sync (as Synapse does, the counts are always there).
func (s *SyncAPI) fillDeviceLists(ctx context.Context, dev *httputil.Device, since, now StreamPos, initial bool,
	own []storage.MembershipChange, joined []string, resp *syncResponse) error {
	if !initial && (now.DeviceList > since.DeviceList || now.PDU > since.PDU) {
		changed, left, err := s.deviceListChanges(ctx, dev.UserID, since, now, own, joined)
		if err != nil {
			return err
		}
		if len(changed) > 0 || len(left) > 0 {
			resp.DeviceLists = &syncDeviceLists{Changed: changed, Left: left}
		}
	}
	counts := map[string]int{}
	fallback := []string{}
	if s.keys != nil {
		c, err := s.keys.OneTimeKeyCounts(ctx, dev.UserID, dev.DeviceID)
		if err != nil {
			return err
		}
		if c != nil {
			if c.Counts != nil {
				counts = c.Counts
			}
			if c.UnusedFallbackKeyTypes != nil {
				fallback = c.UnusedFallbackKeyTypes
			}
		}
	}
	resp.OneTimeKeyCounts = counts
	resp.UnusedFallbackKeyTypes = fallback
	return nil
}

// GET /_matrix/client/v3/keys/changes: the users whose device lists
// changed between two sync tokens, as device_lists would say (to defaults
// to now, as in Synapse).
func (s *SyncAPI) getKeyChanges(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	if q.Get("from") == "" {
		return nil, mxerr.MissingParam("Missing from token")
	}
	from, err := ParseStreamPos(q.Get("from"))
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid from token")
	}
	if err := s.catchUp(ctx, dev.UserID); err != nil {
		return nil, err
	}
	to := s.currentPos()
	if v := q.Get("to"); v != "" {
		if to, err = ParseStreamPos(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid to token")
		}
	}
	db := s.store.DB()
	memberships, err := storage.CurrentMemberships(ctx, db, dev.UserID)
	if err != nil {
		return nil, err
	}
	var joined []string
	for _, m := range memberships {
		if m.Membership == spec.Join {
			joined = append(joined, m.RoomID)
		}
	}
	var own []storage.MembershipChange
	if to.PDU > from.PDU {
		if own, err = storage.MembershipChanges(ctx, db, dev.UserID, from.PDU, to.PDU, nil); err != nil {
			return nil, err
		}
	}
	changed, left, err := s.deviceListChanges(ctx, dev.UserID, from, to, own, joined)
	if err != nil {
		return nil, err
	}
	return &deviceLists{Changed: changed, Left: left}, nil
}
