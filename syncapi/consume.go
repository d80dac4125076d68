package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Consumer names, which also key their positions in sync_consumers.
const (
	roomOutputConsumer = "syncapi-roomoutput"
	userOutputConsumer = "syncapi-useroutput"
)

// strippedTypes are the state types invitees and knockers see.
var strippedTypes = []string{
	spec.MRoomCreate, spec.MRoomName, "m.room.avatar", "m.room.topic", spec.MRoomJoinRules,
	spec.MRoomCanonicalAlias, "m.room.encryption",
}

// visibilityRank orders history visibility settings, most permissive first.
var visibilityRank = map[string]int{"world_readable": 0, "shared": 1, "invited": 2, "joined": 3}

// wakes collects who to wake and which local memberships changed once a
// transaction commits.
type wakes struct {
	rooms   []string
	users   []string
	members []memberChange
	active  []string // local users who sent something: back online
}

type memberChange struct {
	roomID, userID, membership string
}

// onRoomOutput applies a RoomOutput message to the read model.
func (s *SyncAPI) onRoomOutput(ctx context.Context, m *bus.Msg) error {
	var msg rsapi.OutputMessage
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable room output: %w", err))
	}
	var w wakes
	pos := s.pos.pdu.Load()
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		w = wakes{}
		var err error
		switch {
		case msg.NewEvent != nil:
			pos, err = s.applyNewEvent(ctx, tx, msg.NewEvent, s.pos.pdu.Load()+1, &w)
		case msg.Redaction != nil:
			err = s.applyRedaction(ctx, tx, msg.Redaction, &w)
		}
		if err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, roomOutputConsumer, m.Seq)
	})
	if err != nil {
		return err
	}
	s.pos.pdu.Store(pos)
	s.applied.roomOutput.Store(m.Seq)
	s.afterCommit(&w)
	return nil
}

// afterCommit updates the notifier and wakes the syncs concerned.
func (s *SyncAPI) afterCommit(w *wakes) {
	for _, mc := range w.members {
		s.notifier.setMember(mc.roomID, mc.userID, mc.membership)
		if mc.membership != spec.Join {
			s.typing.set(mc.roomID, mc.userID, false, 0) // leaving ends typing
		}
	}
	for _, u := range w.active {
		s.presence.active(u)
	}
	for _, r := range w.rooms {
		s.notifier.wakeRoom(r)
	}
	s.notifier.wakeUsers(w.users...)
	s.waitMu.Lock()
	s.waitCond.Broadcast()
	s.waitMu.Unlock()
}

func (s *SyncAPI) isLocal(userID string) bool {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	return err == nil && string(domain) == s.cfg.ServerName
}

// applyNewEvent adds an event to the timeline at pos and applies the state
// change it caused. It returns the highest position used (pos, or pos-1
// for an event already stored).
func (s *SyncAPI) applyNewEvent(ctx context.Context, tx *sqlutil.Tx, out *rsapi.OutputNewEvent, pos int64, w *wakes) (int64, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(out.RoomVersion))
	if err != nil {
		return 0, bus.Permanent(err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSON(out.Event, false)
	if err != nil {
		return 0, bus.Permanent(fmt.Errorf("undecodable event: %w", err))
	}
	roomID := out.RoomID
	e := &storage.Event{
		Pos:         pos,
		RoomID:      roomID,
		EventID:     pdu.EventID(),
		Type:        pdu.Type(),
		Sender:      string(pdu.SenderID()),
		StateKey:    pdu.StateKey(),
		OriginTS:    int64(pdu.OriginServerTS()),
		JSON:        pdu.JSON(),
		TxnID:       out.TxnID,
		DeviceID:    out.DeviceID,
		ContainsURL: gjson.GetBytes(pdu.Content(), "url").Type == gjson.String,
	}
	if pdu.Type() == spec.MRoomMember {
		e.Membership, _ = pdu.Membership()
	}
	_, hv, err := storage.CurrentStateEvent(ctx, tx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil {
		return 0, err
	}
	e.Visibility = historyVisibility(hv)
	if pdu.Type() == spec.MRoomHistoryVisibility && pdu.StateKeyEquals("") {
		if v := historyVisibility(pdu.JSON()); visibilityRank[v] < visibilityRank[e.Visibility] {
			e.Visibility = v
		}
	}
	if sk := pdu.StateKey(); sk != nil {
		prevID, prevJSON, err := storage.CurrentStateEvent(ctx, tx, roomID, pdu.Type(), *sk)
		if err != nil {
			return 0, err
		}
		if prevID != "" {
			e.ReplacesState = prevID
			e.PrevContent = []byte(gjson.GetBytes(prevJSON, "content").Raw)
		}
	}
	if err := storage.InsertEvent(ctx, tx, e); errors.Is(err, storage.ErrExists) {
		return pos - 1, nil
	} else if err != nil {
		return 0, err
	}
	w.rooms = append(w.rooms, roomID)
	if out.DeviceID != "" {
		w.active = append(w.active, e.Sender)
	}

	// The state change.
	if err := storage.CloseState(ctx, tx, roomID, out.RemovesState, pos); err != nil {
		return 0, err
	}
	added, err := s.stateEvents(ctx, tx, verImpl, pdu, out.AddsState)
	if err != nil {
		return 0, err
	}
	for _, a := range added {
		sk := *a.StateKey()
		if err := storage.CloseStateKey(ctx, tx, roomID, a.Type(), sk, pos); err != nil {
			return 0, err
		}
		row := &storage.StateRow{RoomID: roomID, Type: a.Type(), StateKey: sk, EventID: a.EventID(), JSON: a.JSON(), FromPos: pos}
		if a.Type() == spec.MRoomMember {
			row.Membership, _ = a.Membership()
		}
		if err := storage.InsertState(ctx, tx, row); err != nil {
			return 0, err
		}
		if a.Type() == spec.MRoomMember {
			if err := s.applyMembership(ctx, tx, roomID, a, row.Membership, pos, w); err != nil {
				return 0, err
			}
		}
	}
	return pos, nil
}

// stateEvents returns the events added to the state: the new event itself,
// or ones the sync API stored before, or, failing both, the roomserver's.
func (s *SyncAPI) stateEvents(ctx context.Context, q sqlutil.Querier, verImpl gomatrixserverlib.IRoomVersion, self gomatrixserverlib.PDU, ids []string) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	var missing []string
	for _, id := range ids {
		if id == self.EventID() {
			out = append(out, self)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	known, err := storage.EventsByID(ctx, q, missing)
	if err != nil {
		return nil, err
	}
	var fetch []string
	for _, id := range missing {
		if e, ok := known[id]; ok {
			p, err := verImpl.NewEventFromTrustedJSONWithEventID(id, e.JSON, e.Redacted)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		} else {
			fetch = append(fetch, id)
		}
	}
	if len(fetch) > 0 {
		pdus, err := s.rooms.QueryEvents(ctx, fetch)
		if err != nil {
			return nil, err
		}
		out = append(out, pdus...)
	}
	var state []gomatrixserverlib.PDU
	for _, p := range out {
		if p.StateKey() != nil {
			state = append(state, p)
		}
	}
	return state, nil
}

// applyMembership logs a membership change, keeps the notifier's member
// index, and records what invitees and knockers may see of the room.
func (s *SyncAPI) applyMembership(ctx context.Context, tx *sqlutil.Tx, roomID string, ev gomatrixserverlib.PDU, membership string, pos int64, w *wakes) error {
	userID := *ev.StateKey()
	if err := storage.InsertMembershipChange(ctx, tx, &storage.MembershipChange{
		UserID: userID, RoomID: roomID, Pos: pos, Membership: membership, EventID: ev.EventID(), Sender: string(ev.SenderID()),
	}); err != nil {
		return err
	}
	if !s.isLocal(userID) {
		return nil
	}
	w.users = append(w.users, userID)
	w.members = append(w.members, memberChange{roomID, userID, membership})
	if membership != spec.Invite && membership != spec.Knock {
		return nil
	}
	rows, err := storage.States(ctx, tx, []storage.StateQuery{{RoomID: roomID, At: pos, Since: -1 << 62, Lazy: true}})
	if err != nil {
		return err
	}
	stripped := []json.RawMessage{}
	for _, r := range rows[roomID] {
		for _, t := range strippedTypes {
			if r.Type == t && r.StateKey == "" {
				stripped = append(stripped, strip(r.JSON))
			}
		}
	}
	stripped = append(stripped, strip(ev.JSON()))
	b, _ := json.Marshal(stripped)
	return storage.InsertStrippedState(ctx, tx, userID, roomID, pos, b)
}

// strip keeps the fields of a stripped state event.
func strip(eventJSON []byte) json.RawMessage {
	out := []byte(`{}`)
	for _, k := range []string{"content", "sender", "state_key", "type"} {
		if v := gjson.GetBytes(eventJSON, k); v.Exists() {
			out, _ = sjson.SetRawBytes(out, k, []byte(v.Raw))
		}
	}
	return out
}

// historyVisibility reads the setting of a history visibility event
// ("shared" without one, as the spec says).
func historyVisibility(eventJSON []byte) string {
	v := gjson.GetBytes(eventJSON, "content.history_visibility").Str
	if _, ok := visibilityRank[v]; !ok {
		return "shared"
	}
	return v
}

// applyRedaction replaces a redacted event's stored JSON.
func (s *SyncAPI) applyRedaction(ctx context.Context, tx *sqlutil.Tx, red *rsapi.OutputRedaction, w *wakes) error {
	evs, err := storage.EventsByID(ctx, tx, []string{red.RedactsEventID, red.RedactionEventID})
	if err != nil {
		return err
	}
	target, ok := evs[red.RedactsEventID]
	if !ok || target.Redacted {
		return nil
	}
	info, err := s.rooms.QueryRoomInfo(ctx, red.RoomID)
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	if err != nil {
		return err
	}
	redacted, err := verImpl.RedactEventJSON(target.JSON)
	if err != nil {
		return err
	}
	if because, ok := evs[red.RedactionEventID]; ok {
		b, _ := sjson.SetBytes(because.JSON, "event_id", because.EventID)
		redacted, _ = sjson.SetRawBytes(redacted, "unsigned.redacted_because", b)
	}
	w.rooms = append(w.rooms, red.RoomID)
	return storage.RedactEvent(ctx, tx, red.RedactsEventID, redacted)
}

// onUserOutput applies account data changes.
func (s *SyncAPI) onUserOutput(ctx context.Context, m *bus.Msg) error {
	if !strings.HasSuffix(m.Subject, userapi.SubjectAccountData) {
		return s.setConsumed(ctx, userOutputConsumer, m.Seq, &s.applied.userOutput)
	}
	var u userapi.AccountDataUpdate
	if err := json.Unmarshal(m.Data, &u); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable account data update: %w", err))
	}
	pos := s.pos.accountData.Load() + 1
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.UpsertAccountData(ctx, tx, u.UserID, &storage.AccountData{RoomID: u.RoomID, Type: u.Type, Content: u.Content, Pos: pos}); err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, userOutputConsumer, m.Seq)
	})
	if err != nil {
		return err
	}
	s.pos.accountData.Store(pos)
	s.applied.userOutput.Store(m.Seq)
	s.afterCommit(&wakes{users: []string{u.UserID}})
	return nil
}

// setConsumed records a message the consumer has nothing to do with.
func (s *SyncAPI) setConsumed(ctx context.Context, name string, seq uint64, applied interface{ Store(uint64) }) error {
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error { return storage.SetConsumerPosition(ctx, tx, name, seq) })
	if err == nil {
		applied.Store(seq)
		s.waitMu.Lock()
		s.waitCond.Broadcast()
		s.waitMu.Unlock()
	}
	return err
}
