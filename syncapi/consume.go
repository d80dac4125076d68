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
	unread  *unreadChange
}

type memberChange struct {
	roomID, userID, membership string
	local                      bool
}

// maxOutputBatch bounds how many RoomOutput messages one transaction of
// the read model applies.
const maxOutputBatch = 64

// onRoomOutputs applies RoomOutput messages to the read model, as many as
// are waiting in one transaction (a transaction per event made the commit
// the cost of every message under load). A message that can never apply
// is dropped (logged) without holding up the others.
func (s *SyncAPI) onRoomOutputs(ctx context.Context, msgs []*bus.Msg) error {
	for len(msgs) > 0 {
		n, err := s.applyRoomOutputs(ctx, msgs)
		if err != nil {
			return err // retried whole after a backoff
		}
		msgs = msgs[n:]
	}
	return nil
}

// applyRoomOutputs applies msgs in one transaction and returns how many
// it consumed: all of them, or, when one fails for good, those before it
// (applied in a transaction of their own) and that one (dropped).
func (s *SyncAPI) applyRoomOutputs(ctx context.Context, msgs []*bus.Msg) (int, error) {
	ws := make([]wakes, len(msgs))
	bad := -1
	var pos int64
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		pos = s.pos.pdu.Load()
		for i, m := range msgs {
			ws[i] = wakes{}
			p, err := s.applyRoomOutput(ctx, tx, m, pos, &ws[i])
			if err != nil {
				if bus.IsPermanent(err) {
					bad = i
				}
				return err
			}
			pos = p
		}
		return storage.SetConsumerPosition(ctx, tx, roomOutputConsumer, msgs[len(msgs)-1].Seq)
	})
	if bad >= 0 {
		if bad > 0 {
			if n, err := s.applyRoomOutputs(ctx, msgs[:bad]); err != nil || n < bad {
				return n, err
			}
		}
		s.log.Error("room output dropped", "seq", msgs[bad].Seq, "error", err.Error())
		return bad + 1, nil
	}
	if err != nil {
		return 0, err
	}
	s.pos.pdu.Store(pos)
	for i := range ws {
		s.afterCommit(&ws[i])
	}
	s.applied.roomOutput.Store(msgs[len(msgs)-1].Seq)
	return len(msgs), nil
}

// applyRoomOutput applies one RoomOutput message in tx after position pos
// and returns the highest position it used.
func (s *SyncAPI) applyRoomOutput(ctx context.Context, tx *sqlutil.Tx, m *bus.Msg, pos int64, w *wakes) (int64, error) {
	var msg rsapi.OutputMessage
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		return 0, bus.Permanent(fmt.Errorf("undecodable room output: %w", err))
	}
	var err error
	switch {
	case msg.NewEvent != nil:
		pos, err = s.applyNewEvent(ctx, tx, msg.NewEvent, pos+1, w)
	case msg.Redaction != nil:
		err = s.applyRedaction(ctx, tx, msg.Redaction, w)
	case msg.Membership != nil:
		pos, err = s.applyOutOfBand(ctx, tx, msg.Membership, pos+1, w)
	case msg.Backfilled != nil:
		err = s.applyBackfilled(ctx, tx, msg.Backfilled)
	case msg.Forget != nil:
		err = storage.SetForgotten(ctx, tx, msg.Forget.UserID, msg.Forget.RoomID, msg.Forget.EventID)
	}
	return pos, err
}

// afterCommit updates the notifier and wakes the syncs concerned.
func (s *SyncAPI) afterCommit(w *wakes) {
	if c := w.unread; c != nil {
		s.applyUnread(context.Background(), c.pos, c.roomID, c.sender, c.senderThread, c.ev)
	}
	for _, mc := range w.members {
		s.notifier.setMember(mc.roomID, mc.userID, mc.membership, mc.local)
		if mc.local && mc.membership != spec.Join && mc.membership != spec.Invite {
			s.unread.forget(mc.userID, mc.roomID) // counts of a room left are of no use
		}
		if mc.membership != spec.Join {
			s.typing.set(mc.roomID, mc.userID, false, 0, mc.local) // leaving ends typing
		}
	}
	for _, u := range w.active {
		s.presence.active(u)
	}
	for _, r := range w.rooms {
		s.notifier.wakeRoom(r)
	}
	s.notifier.wakeUsers(w.users...)
}

func (s *SyncAPI) isLocal(userID string) bool {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	return err == nil && string(domain) == s.cfg.ServerName
}

// eventRow builds the timeline row of an event the sync API receives live
// at pos: its history visibility and the state it replaces come from the
// current state.
func (s *SyncAPI) eventRow(ctx context.Context, tx *sqlutil.Tx, roomID string, pdu gomatrixserverlib.PDU, pos int64) (*storage.Event, error) {
	e := &storage.Event{
		Pos:         pos,
		RoomID:      roomID,
		EventID:     pdu.EventID(),
		Type:        pdu.Type(),
		Sender:      string(pdu.SenderID()),
		StateKey:    pdu.StateKey(),
		OriginTS:    int64(pdu.OriginServerTS()),
		Depth:       pdu.Depth(),
		JSON:        pdu.JSON(),
		ContainsURL: gjson.GetBytes(pdu.Content(), "url").Type == gjson.String,
	}
	if pdu.Type() == spec.MRoomMember {
		e.Membership, _ = pdu.Membership()
	}
	_, hv, err := storage.CurrentStateEvent(ctx, tx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil {
		return nil, err
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
			return nil, err
		}
		if prevID != "" {
			e.ReplacesState = prevID
			e.PrevContent = []byte(gjson.GetBytes(prevJSON, "content").Raw)
			e.PrevSender = gjson.GetBytes(prevJSON, "sender").Str
		}
	}
	return e, nil
}

// applyNewEvent adds an event to the timeline at pos and applies the state
// change it caused. It returns the highest position used (pos, or pos-1
// for an event already stored).
//
// An event already stored came out of band before (an invite received over
// federation, see applyOutOfBand) or is a redelivery: its membership is in
// the read model already, so it is skipped whole.
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
	e, err := s.eventRow(ctx, tx, roomID, pdu, pos)
	if err != nil {
		return 0, err
	}
	e.TxnID, e.DeviceID, e.AfterGap = out.TxnID, out.DeviceID, out.AfterGap
	if err := storage.InsertEvent(ctx, tx, e); errors.Is(err, storage.ErrExists) {
		return pos - 1, nil
	} else if err != nil {
		return 0, err
	}
	if err := indexRelation(ctx, tx, e); err != nil {
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
	if err := s.applyState(ctx, tx, roomID, pdu.EventID(), added, pos, w); err != nil {
		return 0, err
	}
	if err := s.evaluatePush(ctx, tx, roomID, pdu, verImpl, pos, w); err != nil {
		return 0, err
	}
	return pos, nil
}

// applyState makes events current state of a room at pos, a batch of
// statements for all of them (a join over federation adds the whole state
// of the room at once), and applies the membership changes among them.
// Events that are current state already (an out-of-band membership
// arriving in the room, a state resolution that keeps them) change
// nothing. self is the event at pos, which cannot be current yet.
func (s *SyncAPI) applyState(ctx context.Context, tx *sqlutil.Tx, roomID, self string, added []gomatrixserverlib.PDU, pos int64, w *wakes) error {
	if len(added) == 0 {
		return nil
	}
	var others []string
	for _, a := range added {
		if a.EventID() != self {
			others = append(others, a.EventID())
		}
	}
	current := map[string]bool{}
	if len(others) > 0 {
		var err error
		if current, err = storage.CurrentStateEvents(ctx, tx, roomID, others); err != nil {
			return err
		}
	}
	// One event per key: the last one wins, as applying them in order would.
	byKey := map[storage.StateKey]int{}
	var keys []storage.StateKey
	var rows []*storage.StateRow
	var members []gomatrixserverlib.PDU
	for _, a := range added {
		if current[a.EventID()] {
			continue
		}
		k := storage.StateKey{Type: a.Type(), StateKey: *a.StateKey()}
		row := &storage.StateRow{RoomID: roomID, Type: k.Type, StateKey: k.StateKey, EventID: a.EventID(), JSON: a.JSON(), FromPos: pos}
		if a.Type() == spec.MRoomMember {
			row.Membership, _ = a.Membership()
		}
		if i, ok := byKey[k]; ok {
			rows[i] = row
			continue
		}
		byKey[k] = len(rows)
		keys = append(keys, k)
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil
	}
	if err := storage.CloseStateKeys(ctx, tx, roomID, keys, pos); err != nil {
		return err
	}
	if err := storage.InsertStates(ctx, tx, rows); err != nil {
		return err
	}
	if err := s.noteDirectory(ctx, tx, roomID, rows); err != nil {
		return err
	}
	var changes []*storage.MembershipChange
	for _, a := range added {
		if a.Type() != spec.MRoomMember || current[a.EventID()] {
			continue
		}
		k := storage.StateKey{Type: a.Type(), StateKey: *a.StateKey()}
		if rows[byKey[k]].EventID != a.EventID() {
			continue
		}
		members = append(members, a)
		changes = append(changes, &storage.MembershipChange{UserID: k.StateKey, RoomID: roomID, Pos: pos,
			Membership: rows[byKey[k]].Membership, EventID: a.EventID(), Sender: string(a.SenderID())})
	}
	if err := storage.InsertMembershipChanges(ctx, tx, changes); err != nil {
		return err
	}
	for i, m := range members {
		if err := s.noteMembership(ctx, tx, roomID, m, changes[i].Membership, pos, nil, w); err != nil {
			return err
		}
	}
	return nil
}

// stateEvents returns the events added to the state: the new event itself,
// or ones the sync API stored before, or, failing both, the roomserver's.
// Both lookups are batched, whatever the number of events.
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
		if len(pdus) < len(fetch) {
			s.log.Warn("state events the roomserver does not have", "room_id", self.RoomID().String(), "missing", len(fetch)-len(pdus))
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

// noteMembership keeps the notifier's member index after a membership
// change of a user, wakes local users, and records what local invitees
// and knockers may see of the room: stripped, or else the room's stripped
// state as the read model holds it.
func (s *SyncAPI) noteMembership(ctx context.Context, tx *sqlutil.Tx, roomID string, ev gomatrixserverlib.PDU, membership string, pos int64,
	stripped []json.RawMessage, w *wakes) error {
	userID := *ev.StateKey()
	local := s.isLocal(userID)
	w.members = append(w.members, memberChange{roomID, userID, membership, local})
	if !local {
		return nil
	}
	w.users = append(w.users, userID)
	if membership != spec.Invite && membership != spec.Knock {
		return nil
	}
	if stripped == nil {
		rows, err := storage.States(ctx, tx, []storage.StateQuery{{RoomID: roomID, At: pos, Since: -1 << 62, Lazy: true}})
		if err != nil {
			return err
		}
		stripped = []json.RawMessage{}
		for _, r := range rows[roomID] {
			for _, t := range strippedTypes {
				if r.Type == t && r.StateKey == "" {
					stripped = append(stripped, r.JSON)
				}
			}
		}
	}
	// The membership event itself belongs in the stripped state, as
	// Synapse sends it; any other version of it goes.
	out := make([]json.RawMessage, 0, len(stripped)+1)
	for _, st := range stripped {
		if gjson.GetBytes(st, "type").Str == spec.MRoomMember && gjson.GetBytes(st, "state_key").Str == userID {
			continue
		}
		if whole, ok := wholeCreate(roomID, ev.Version(), st); ok {
			out = append(out, whole)
			continue
		}
		out = append(out, strip(st))
	}
	out = append(out, strip(ev.JSON()))
	b, _ := json.Marshal(out)
	return storage.InsertStrippedState(ctx, tx, userID, roomID, pos, b)
}

// applyOutOfBand applies a local user's membership event that came outside
// the room's DAG (an invite received over federation, a knock, or the
// leave that rejects or withdraws them, in rooms this server may not be
// in): it joins the timeline at pos (a left room shows its leave event)
// and becomes the user's current membership, with no other state needed.
// When the same event later arrives as a new event, applyNewEvent finds it
// stored and skips it.
func (s *SyncAPI) applyOutOfBand(ctx context.Context, tx *sqlutil.Tx, out *rsapi.OutputMembership, pos int64, w *wakes) (int64, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(out.RoomVersion))
	if err != nil {
		return 0, bus.Permanent(err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSON(out.Event, false)
	if err != nil {
		return 0, bus.Permanent(fmt.Errorf("undecodable membership event: %w", err))
	}
	membership, err := pdu.Membership()
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || err != nil {
		return 0, bus.Permanent(fmt.Errorf("out-of-band event %s is not a membership event", pdu.EventID()))
	}
	roomID := out.RoomID
	if roomID == "" {
		roomID = pdu.RoomID().String()
	}
	e, err := s.eventRow(ctx, tx, roomID, pdu, pos)
	if err != nil {
		return 0, err
	}
	if err := storage.InsertEvent(ctx, tx, e); errors.Is(err, storage.ErrExists) {
		return pos - 1, nil // known from the room (or delivered before)
	} else if err != nil {
		return 0, err
	}
	userID := *pdu.StateKey()
	if err := storage.CloseStateKey(ctx, tx, roomID, spec.MRoomMember, userID, pos); err != nil {
		return 0, err
	}
	if err := storage.InsertState(ctx, tx, &storage.StateRow{RoomID: roomID, Type: spec.MRoomMember, StateKey: userID,
		EventID: pdu.EventID(), Membership: membership, JSON: pdu.JSON(), FromPos: pos}); err != nil {
		return 0, err
	}
	if err := storage.InsertMembershipChange(ctx, tx, &storage.MembershipChange{UserID: userID, RoomID: roomID, Pos: pos,
		Membership: membership, EventID: pdu.EventID(), Sender: string(pdu.SenderID())}); err != nil {
		return 0, err
	}
	var stripped []json.RawMessage
	if len(out.StrippedState) > 0 {
		stripped = out.StrippedState
	}
	if err := s.noteMembership(ctx, tx, roomID, pdu, membership, pos, stripped, w); err != nil {
		return 0, err
	}
	w.rooms = append(w.rooms, roomID) // local members of a room this server is in see it too
	return pos, nil
}

// applyBackfilled stores history older than a room's timeline below every
// position held, oldest lowest, with the history visibility each event was
// sent under. It changes no current state and wakes no sync: clients reach
// it by paginating. Events already held are skipped, so a redelivery
// changes nothing.
func (s *SyncAPI) applyBackfilled(ctx context.Context, tx *sqlutil.Tx, out *rsapi.OutputBackfilled) error {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(out.RoomVersion))
	if err != nil {
		return bus.Permanent(err)
	}
	type parsed struct {
		pdu gomatrixserverlib.PDU
		vis string
	}
	var evs []parsed
	ids := make([]string, 0, len(out.Events))
	for _, be := range out.Events {
		pdu, err := verImpl.NewEventFromTrustedJSON(be.Event, false)
		if err != nil {
			s.log.Warn("undecodable backfilled event skipped", "room_id", out.RoomID, "error", err.Error())
			continue
		}
		vis := be.HistoryVisibility
		if _, ok := visibilityRank[vis]; !ok {
			vis = "shared"
		}
		if pdu.Type() == spec.MRoomHistoryVisibility && pdu.StateKeyEquals("") {
			if v := historyVisibility(pdu.JSON()); visibilityRank[v] < visibilityRank[vis] {
				vis = v
			}
		}
		evs = append(evs, parsed{pdu, vis})
		ids = append(ids, pdu.EventID())
	}
	known, err := storage.EventsByID(ctx, tx, ids)
	if err != nil {
		return err
	}
	fresh := evs[:0]
	seen := map[string]bool{}
	for _, p := range evs {
		if id := p.pdu.EventID(); known[id] == nil && !seen[id] {
			seen[id] = true
			fresh = append(fresh, p)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	lowest, err := storage.MinEventPos(ctx, tx)
	if err != nil {
		return err
	}
	pos := min(lowest, 0) - int64(len(fresh))
	for _, p := range fresh {
		e := &storage.Event{
			Pos:         pos,
			RoomID:      out.RoomID,
			EventID:     p.pdu.EventID(),
			Type:        p.pdu.Type(),
			Sender:      string(p.pdu.SenderID()),
			StateKey:    p.pdu.StateKey(),
			OriginTS:    int64(p.pdu.OriginServerTS()),
			Depth:       p.pdu.Depth(),
			JSON:        p.pdu.JSON(),
			Visibility:  p.vis,
			ContainsURL: gjson.GetBytes(p.pdu.Content(), "url").Type == gjson.String,
			Redacted:    gjson.GetBytes(p.pdu.JSON(), "unsigned.redacted_because").Exists(),
		}
		if e.Type == spec.MRoomMember {
			e.Membership, _ = p.pdu.Membership()
		}
		if err := storage.InsertEvent(ctx, tx, e); errors.Is(err, storage.ErrExists) {
			pos++
			continue
		} else if err != nil {
			return err
		}
		if err := indexRelation(ctx, tx, e); err != nil {
			return err
		}
		pos++
	}
	return nil
}

// wholeCreate returns the create event of a room whose ID is the hash of
// it (room version 12, told by the room ID's lack of a domain, as MSC4311
// asks) as the PDU it is, without unsigned, so that clients can check it
// against the room ID, as Synapse gives it. A remote server's stripped
// state is untrusted: only the event whose hash is the room ID is kept
// whole.
func wholeCreate(roomID string, version gomatrixserverlib.RoomVersion, st []byte) (json.RawMessage, bool) {
	if strings.Contains(roomID, ":") || gjson.GetBytes(st, "type").Str != spec.MRoomCreate {
		return nil, false
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !verImpl.DomainlessRoomIDs() {
		return nil, false
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(st)
	if err != nil || !pdu.StateKeyEquals("") || pdu.EventID() != "$"+roomID[1:] {
		return nil, false
	}
	out, err := sjson.DeleteBytes(append([]byte(nil), st...), "unsigned")
	if err != nil {
		return nil, false
	}
	return out, true
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
	// A redacted event relates to nothing: it leaves the aggregations.
	if err := storage.DeleteRelation(ctx, tx, red.RedactsEventID); err != nil {
		return err
	}
	return storage.RedactEvent(ctx, tx, red.RedactsEventID, redacted)
}

// onUserOutput applies account data changes.
func (s *SyncAPI) onUserOutput(ctx context.Context, m *bus.Msg) error {
	if strings.HasSuffix(m.Subject, userapi.SubjectPushers) {
		return s.onPushersUpdate(ctx, m)
	}
	if strings.HasSuffix(m.Subject, userapi.SubjectDevices) {
		return s.onDevicesUpdate(ctx, m)
	}
	if strings.HasSuffix(m.Subject, userapi.SubjectKeyChange) {
		return s.onKeyChange(ctx, m, false)
	}
	if strings.HasSuffix(m.Subject, userapi.SubjectRemoteKeyChange) {
		return s.onKeyChange(ctx, m, true)
	}
	if strings.HasSuffix(m.Subject, userapi.SubjectProfile) {
		return s.onProfileUpdate(ctx, m)
	}
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
	if u.RoomID == "" && u.Type == pushRulesType {
		s.push.forgetRules(u.UserID)
	}
	if u.RoomID == "" && u.Type == ignoredUserListType {
		s.push.forgetIgnores(u.UserID)
	}
	s.pos.accountData.Store(pos)
	s.afterCommit(&wakes{users: []string{u.UserID}})
	s.applied.userOutput.Store(m.Seq)
	return nil
}

// setConsumed records a message the consumer has nothing to do with.
func (s *SyncAPI) setConsumed(ctx context.Context, name string, seq uint64, applied interface{ Store(uint64) }) error {
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error { return storage.SetConsumerPosition(ctx, tx, name, seq) })
	if err == nil {
		applied.Store(seq)
	}
	return err
}
