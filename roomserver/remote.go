package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/eventrules"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// processEvents stores complete events (already checked for signatures and
// hashes): the outliers first, then the DAG events in order. Each DAG event
// is authorised against its auth events and the state before it (failures
// are stored as rejected), then against the current state (failures are
// soft-failed).
func (d *dbctx) processEvents(ctx context.Context, msg *api.InputMessage, res *api.InputResult) error {
	head, err := d.head(ctx, msg.RoomID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if len(msg.Outliers) > 0 {
		if head, err = d.processOutliers(ctx, head, msg.RoomID, msg.Outliers); err != nil {
			return err
		}
		res.RoomID = head.id
	}
	var backfilled []api.BackfilledEvent
	var backfilledIDs []string
	for _, raw := range msg.Events {
		verImpl, err := d.versionFor(head, raw)
		if err != nil {
			return err
		}
		pdu, err := verImpl.NewEventFromTrustedJSON(raw, false)
		if err != nil {
			return inputError(mxerr.CodeBadJSON, "Invalid event: %v", err)
		}
		if msg.RoomID != "" && pdu.RoomID().String() != msg.RoomID {
			return inputError(mxerr.CodeBadJSON, "Event %s is not in room %s", pdu.EventID(), msg.RoomID)
		}
		if head == nil {
			if pdu.Type() != spec.MRoomCreate {
				return inputError(mxerr.CodeNotFound, "Unknown room %s", msg.RoomID)
			}
			if head, err = d.createRoom(ctx, pdu); err != nil {
				return err
			}
			res.RoomID = head.id
		}
		var r api.EventResult
		var bf *api.BackfilledEvent
		if head, r, bf, err = d.processEvent(ctx, head, pdu, msg); err != nil {
			return err
		}
		res.Events = append(res.Events, r)
		res.EventIDs = append(res.EventIDs, pdu.EventID())
		if bf != nil {
			backfilled = append(backfilled, *bf)
			backfilledIDs = append(backfilledIDs, pdu.EventID())
		}
	}
	if len(backfilled) > 0 {
		return d.queueOutput(ctx, head.id, "backfill:"+backfilledIDs[0], &api.OutputMessage{V: 1, Backfilled: &api.OutputBackfilled{
			RoomID: head.id, RoomVersion: string(head.version), Events: backfilled,
		}})
	}
	return nil
}

// versionFor is the room version of an event of a room: the room's, or the
// one a create event of an unknown room names.
func (d *dbctx) versionFor(head *roomHead, raw json.RawMessage) (gomatrixserverlib.IRoomVersion, error) {
	version := gomatrixserverlib.RoomVersionV1
	if head != nil {
		version = head.version
	} else if v := gjson.GetBytes(raw, "content.room_version"); v.Type == gjson.String {
		version = gomatrixserverlib.RoomVersion(v.Str)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !api.SupportedRoomVersion(version) {
		return nil, inputError(mxerr.CodeUnsupportedRoomVersion, "Unsupported room version %s", version)
	}
	return verImpl, nil
}

// processEvent authorises and stores one complete event in the DAG (or
// moves a stored outlier into it).
func (d *dbctx) processEvent(ctx context.Context, head *roomHead, pdu gomatrixserverlib.PDU, msg *api.InputMessage) (*roomHead, api.EventResult, *api.BackfilledEvent, error) {
	res := api.EventResult{EventID: pdu.EventID()}
	existing, err := d.eventsByID(ctx, []string{pdu.EventID()})
	if err != nil {
		return nil, res, nil, err
	}
	var promote *event
	if e, ok := existing[pdu.EventID()]; ok {
		switch e.Kind {
		case storage.KindOutlier:
			promote = e
		case storage.KindRejected:
			res.Existed, res.Rejected = true, "rejected before"
			return head, res, nil, nil
		default:
			res.Existed, res.SoftFailed = true, e.SoftFailed
			return head, res, nil, nil
		}
	}
	b := &built{pdu: pdu}
	if err := d.stateBeforeRemote(ctx, head, b, msg.StatesBefore[pdu.EventID()]); err != nil {
		return nil, res, nil, err
	}
	o := addOpts{remote: true, sendAs: msg.SendAsServer, historical: msg.Backfilled, promote: promote, gap: b.gap}
	if err := d.authAgainstAuthEvents(ctx, head, pdu); err != nil {
		o.kind, res.Rejected = storage.KindRejected, err.Error()
	} else if err := d.authAgainstState(ctx, pdu, b.before); err != nil {
		o.kind, res.Rejected = storage.KindRejected, err.Error()
	} else if !o.historical {
		cur, err := d.snapshot(ctx, head.snapshot)
		if err != nil {
			return nil, res, nil, err
		}
		o.softFailed = len(head.latest) > 0 && d.authAgainstState(ctx, pdu, cur) != nil
		res.SoftFailed = o.softFailed
	}
	if o.kind == storage.KindRejected {
		d.r.log.Info("rejected event", slog.String("room_id", head.id), slog.String("event_id", pdu.EventID()),
			slog.String("reason", res.Rejected))
	}
	nh, err := d.addEvent(ctx, head, b, o)
	if err != nil || !o.historical || o.kind == storage.KindRejected {
		return nh, res, nil, err
	}
	vis, err := d.historyVisibility(ctx, b.before, pdu)
	if err != nil {
		return nil, res, nil, err
	}
	return nh, res, &api.BackfilledEvent{Event: pdu.JSON(), HistoryVisibility: vis}, nil
}

// stateBeforeRemote sets the state before a complete event: the state after
// its prev events in the DAG, resolved with the given state (when some prev
// events are not in the DAG, the caller must give the state before it).
func (d *dbctx) stateBeforeRemote(ctx context.Context, head *roomHead, b *built, given []string) error {
	prevIDs := b.pdu.PrevEventIDs()
	prevs, err := d.eventsByID(ctx, prevIDs)
	if err != nil {
		return err
	}
	var unknown []string
	for _, id := range prevIDs {
		p, ok := prevs[id]
		// A rejected event in the DAG has the state before it as its state
		// after; a rejected outlier has no state.
		if !ok || p.Kind == storage.KindOutlier || (p.Kind == storage.KindRejected && p.StateBefore == 0) {
			unknown = append(unknown, id)
			continue
		}
		b.prevs = append(b.prevs, p)
	}
	if len(unknown) == 0 {
		if len(b.prevs) == 0 {
			return nil // a create event: nothing before it
		}
		b.before, b.beforeNID, err = d.stateAfterAll(ctx, head, b.prevs)
		return err
	}
	if given == nil {
		return inputError(mxerr.CodeNotFound, "Missing prev event %s", unknown[0])
	}
	b.gap = true
	s, err := d.snapshotOf(ctx, head, given)
	if err != nil {
		return err
	}
	if len(b.prevs) == 0 {
		b.before = s
		b.beforeNID, err = d.storeSnapshot(ctx, s)
		return err
	}
	sets := []state.Snapshot{s}
	seen := map[int64]bool{}
	for _, p := range b.prevs {
		if seen[p.StateAfter] {
			continue
		}
		seen[p.StateAfter] = true
		ps, err := d.snapshot(ctx, p.StateAfter)
		if err != nil {
			return err
		}
		sets = append(sets, ps)
	}
	if b.before, err = d.resolve(ctx, head, sets); err != nil {
		return err
	}
	b.beforeNID, err = d.storeSnapshot(ctx, b.before)
	return err
}

// snapshotOf builds a state from stored state events of the room.
func (d *dbctx) snapshotOf(ctx context.Context, head *roomHead, ids []string) (state.Snapshot, error) {
	evs, err := d.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	entries := make([]state.Entry, 0, len(ids))
	for _, id := range ids {
		e, ok := evs[id]
		if !ok {
			return nil, inputError(mxerr.CodeNotFound, "State event %s is not stored", id)
		}
		if e.RoomNID != head.nid || e.StateKeyNID == 0 && e.pdu.StateKey() == nil {
			return nil, inputError(mxerr.CodeBadJSON, "Event %s is not a state event of room %s", id, head.id)
		}
		if e.Kind == storage.KindRejected {
			continue // never part of a state
		}
		entries = append(entries, state.Entry{Key: state.Key{Type: e.TypeNID, StateKey: e.StateKeyNID}, Event: e.NID})
	}
	return state.FromEntries(entries), nil
}

// processOutliers stores events outside the DAG, each authorised against
// its own auth events (stored, or earlier in the batch once sorted); those
// that fail, or whose auth events are missing or rejected, are stored as
// rejected. An unknown room is created from the create event among them.
func (d *dbctx) processOutliers(ctx context.Context, head *roomHead, roomID string, raws []json.RawMessage) (*roomHead, error) {
	var verImpl gomatrixserverlib.IRoomVersion
	var err error
	if head != nil {
		verImpl, err = d.versionFor(head, nil)
	} else {
		for _, raw := range raws {
			if gjson.GetBytes(raw, "type").Str == spec.MRoomCreate && gjson.GetBytes(raw, "state_key").Str == "" {
				verImpl, err = d.versionFor(nil, raw)
				break
			}
		}
		if verImpl == nil && err == nil {
			return nil, inputError(mxerr.CodeNotFound, "Unknown room %s", roomID)
		}
	}
	if err != nil {
		return nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(raws))
	byID := make(map[string]gomatrixserverlib.PDU, len(raws))
	for _, raw := range raws {
		pdu, err := verImpl.NewEventFromTrustedJSON(raw, false)
		if err != nil {
			return nil, inputError(mxerr.CodeBadJSON, "Invalid event: %v", err)
		}
		if roomID != "" && pdu.RoomID().String() != roomID {
			return nil, inputError(mxerr.CodeBadJSON, "Event %s is not in room %s", pdu.EventID(), roomID)
		}
		if _, dup := byID[pdu.EventID()]; !dup {
			byID[pdu.EventID()] = pdu
			pdus = append(pdus, pdu)
		}
	}
	if head == nil {
		for _, p := range pdus {
			if p.Type() == spec.MRoomCreate && p.StateKeyEquals("") {
				if head, err = d.createRoom(ctx, p); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	implied := ""
	if verImpl.DomainlessRoomIDs() {
		implied = "$" + head.id[1:]
	}
	// What is stored already, and the stored auth events the batch needs.
	want := make([]string, 0, len(pdus))
	for _, p := range pdus {
		want = append(want, p.EventID())
		want = append(want, p.AuthEventIDs()...)
	}
	if implied != "" {
		want = append(want, implied)
	}
	stored, err := d.eventsByID(ctx, want)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(pdus))
	for _, p := range pdus {
		if sk := p.StateKey(); sk != nil {
			keys = append(keys, *sk)
		}
	}
	if _, err := d.stateKeyNIDs(ctx, keys); err != nil {
		return nil, err
	}
	rejected := map[string]bool{}
	for id, e := range stored {
		rejected[id] = e.Kind == storage.KindRejected
	}
	for _, p := range sortByAuth(pdus) {
		if _, ok := stored[p.EventID()]; ok {
			continue
		}
		ids := p.AuthEventIDs()
		if implied != "" && p.Type() != spec.MRoomCreate {
			ids = append(ids, implied)
		}
		kind := storage.KindOutlier
		authPDUs := make([]gomatrixserverlib.PDU, 0, len(ids))
		for _, id := range ids {
			var a gomatrixserverlib.PDU
			if e, ok := stored[id]; ok {
				a = e.pdu
			}
			if a == nil || rejected[id] {
				kind = storage.KindRejected
				break
			}
			authPDUs = append(authPDUs, a)
		}
		if kind == storage.KindOutlier && allowed(p, authPDUs) != nil {
			kind = storage.KindRejected
		}
		e, err := d.insertEvent(ctx, head, p, kind, 0)
		if err != nil {
			return nil, err
		}
		stored[p.EventID()] = e
		rejected[p.EventID()] = kind == storage.KindRejected
	}
	return head, nil
}

// sortByAuth orders events so that each comes after the events of the batch
// it lists in auth_events (Kahn's algorithm; events caught in a cycle,
// which only a broken or hostile server sends, come last).
func sortByAuth(pdus []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	inBatch := make(map[string]bool, len(pdus))
	for _, p := range pdus {
		inBatch[p.EventID()] = true
	}
	pending := make(map[string]int, len(pdus))
	dependents := map[string][]gomatrixserverlib.PDU{}
	var ready []gomatrixserverlib.PDU
	for _, p := range pdus {
		n := 0
		for _, a := range p.AuthEventIDs() {
			if inBatch[a] && a != p.EventID() {
				n++
				dependents[a] = append(dependents[a], p)
			}
		}
		pending[p.EventID()] = n
		if n == 0 {
			ready = append(ready, p)
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for len(ready) > 0 {
		p := ready[0]
		ready = ready[1:]
		out = append(out, p)
		for _, dep := range dependents[p.EventID()] {
			if pending[dep.EventID()]--; pending[dep.EventID()] == 0 {
				ready = append(ready, dep)
			}
		}
	}
	if len(out) < len(pdus) {
		placed := make(map[string]bool, len(out))
		for _, p := range out {
			placed[p.EventID()] = true
		}
		for _, p := range pdus {
			if !placed[p.EventID()] {
				out = append(out, p)
			}
		}
	}
	return out
}

// processOutOfBand stores a local user's membership event in a room this
// server may not be in (an invite from another server, a knock, the leave
// that rejects or withdraws them) as an outlier, records the membership
// when the server has no state of the room, and announces it.
func (d *dbctx) processOutOfBand(ctx context.Context, msg *api.InputMessage, res *api.InputResult) error {
	ob := msg.OutOfBand
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ob.RoomVersion))
	if err != nil || !api.SupportedRoomVersion(verImpl.Version()) {
		return inputError(mxerr.CodeUnsupportedRoomVersion, "Unsupported room version %s", ob.RoomVersion)
	}
	pdu, err := verImpl.NewEventFromTrustedJSON(ob.Event, false)
	if err != nil {
		return inputError(mxerr.CodeBadJSON, "Invalid event: %v", err)
	}
	membership, err := pdu.Membership()
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || err != nil {
		return inputError(mxerr.CodeBadJSON, "Not a membership event")
	}
	userID := *pdu.StateKey()
	if _, domain, err := gomatrixserverlib.SplitID('@', userID); err != nil || domain != d.r.cfg.ServerName {
		return inputError(mxerr.CodeBadJSON, "%s is not a local user", userID)
	}
	roomID := pdu.RoomID().String()
	if msg.RoomID != "" && msg.RoomID != roomID {
		return inputError(mxerr.CodeBadJSON, "Event is not in room %s", msg.RoomID)
	}
	res.RoomID, res.EventIDs = roomID, []string{pdu.EventID()}
	head, err := d.head(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		nid, err := storage.InsertRoom(ctx, d.tx, roomID, ob.RoomVersion)
		if err != nil {
			return err
		}
		head = &roomHead{nid: nid, id: roomID, version: verImpl.Version()}
		d.heads[roomID] = head
	} else if err != nil {
		return err
	}
	existing, err := d.eventsByID(ctx, []string{pdu.EventID()})
	if err != nil {
		return err
	}
	e, ok := existing[pdu.EventID()]
	if ok && e.Kind != storage.KindOutlier {
		return nil // in the DAG already: clients learnt of it from there
	}
	if !ok {
		if _, err := d.stateKeyNIDs(ctx, []string{userID}); err != nil {
			return err
		}
		if e, err = d.insertEvent(ctx, head, pdu, storage.KindOutlier, 0); err != nil {
			return err
		}
	}
	// The DAG decides memberships while a local user is in the room; the
	// out-of-band event does when the server has no state, or only the
	// stale state of a room all its users left.
	inRoom, err := d.localUserJoined(ctx, head)
	if err != nil {
		return err
	}
	if !inRoom {
		if _, err := storage.UpsertMembership(ctx, d.tx, head.nid, userID, membership, e.NID); err != nil {
			return err
		}
	}
	return d.queueOutput(ctx, roomID, "membership:"+pdu.EventID(), &api.OutputMessage{V: 1, Membership: &api.OutputMembership{
		RoomID: roomID, RoomVersion: string(head.version), Event: pdu.JSON(), StrippedState: ob.StrippedState,
	}})
}

// localUserJoined reports whether a user of this server is joined to the
// room.
func (d *dbctx) localUserJoined(ctx context.Context, head *roomHead) (bool, error) {
	if head.snapshot == 0 {
		return false, nil
	}
	return storage.ServerJoined(ctx, d.tx, head.nid, string(d.r.cfg.ServerName))
}

// historyVisibility is the history visibility an event was sent under: the
// setting in the state before it, or the event's own when it makes history
// more visible (as clients see the event that opens history).
func (d *dbctx) historyVisibility(ctx context.Context, before state.Snapshot, pdu gomatrixserverlib.PDU) (string, error) {
	pdus, err := d.lookup(ctx, before, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}})
	if err != nil {
		return "", err
	}
	vis := "shared"
	for _, p := range pdus {
		if v, err := p.HistoryVisibility(); err == nil {
			vis = string(v)
		}
	}
	if pdu.Type() == spec.MRoomHistoryVisibility && pdu.StateKeyEquals("") {
		if v, err := pdu.HistoryVisibility(); err == nil {
			if rank, ok := visibilityRank[string(v)]; ok && rank < visibilityRank[vis] {
				vis = string(v)
			}
		}
	}
	return vis, nil
}

// authAgainstAuthEvents checks an event against the events it lists in
// auth_events (plus the create event its room ID implies).
func (d *dbctx) authAgainstAuthEvents(ctx context.Context, head *roomHead, pdu gomatrixserverlib.PDU) error {
	ids := pdu.AuthEventIDs()
	if verImpl, err := gomatrixserverlib.GetRoomVersion(head.version); err == nil && verImpl.DomainlessRoomIDs() && pdu.Type() != spec.MRoomCreate {
		ids = append(ids, "$"+head.id[1:])
	}
	evs, err := d.eventsByID(ctx, ids)
	if err != nil {
		return err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(evs)+1)
	for _, id := range ids {
		e, ok := evs[id]
		if !ok || e.Kind == storage.KindRejected {
			return fmt.Errorf("auth event %s missing or rejected", id)
		}
		pdus = append(pdus, e.pdu)
	}
	return allowed(pdu, pdus)
}

// authAgainstState checks an event against the auth events a state holds.
func (d *dbctx) authAgainstState(ctx context.Context, pdu gomatrixserverlib.PDU, s state.Snapshot) error {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu})
	pdus, err := d.lookup(ctx, s, needed.Tuples())
	if err != nil {
		return err
	}
	return allowed(pdu, pdus)
}

// allowed applies the auth rules to an event with the given auth events (a
// create event is its own).
func allowed(pdu gomatrixserverlib.PDU, authEvents []gomatrixserverlib.PDU) error {
	if pdu.Type() == spec.MRoomCreate {
		authEvents = append(slices.Clip(authEvents), pdu)
	}
	ae, err := gomatrixserverlib.NewAuthEvents(authEvents)
	if err != nil {
		return err
	}
	return eventrules.Allowed(pdu, ae, userIDForSender)
}
