package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// addOpts describe how an event enters the room.
type addOpts struct {
	kind       int  // storage.KindNormal or storage.KindRejected
	softFailed bool // in the DAG but not an extremity and not sent to clients
	remote     bool // from another server: pending redactions may target it
	txnID      string
	deviceID   string
	// sendAs is the server that sends the event to the room's servers.
	sendAs string
	// historical events (backfill) move neither the forward extremities
	// nor the current state, and are announced by the caller.
	historical bool
	// promote is the stored outlier this event moves into the DAG.
	promote *event
	// gap: the event's prev events are not all in the DAG.
	gap bool
}

// insertEvent stores an event row (in the DAG with the given state before,
// or as an outlier or rejected event with 0) and returns it with its parsed
// form. The state key's numeric ID must be known to the transaction or
// created (stateKeyNIDs) beforehand for speed; it is created here if not.
func (d *dbctx) insertEvent(ctx context.Context, head *roomHead, ev gomatrixserverlib.PDU, kind int, stateBefore int64) (*event, error) {
	typeNID, _, err := d.typeNID(ctx, ev.Type())
	if err != nil {
		return nil, err
	}
	row := storage.Event{
		RoomNID:     head.nid,
		EventID:     ev.EventID(),
		TypeNID:     typeNID,
		Depth:       ev.Depth(),
		Kind:        kind,
		StateBefore: stateBefore,
		StateAfter:  stateBefore,
		Sender:      string(ev.SenderID()),
		OriginTS:    int64(ev.OriginServerTS()),
		JSON:        ev.JSON(),
	}
	if sk := ev.StateKey(); sk != nil {
		m, err := d.stateKeyNIDs(ctx, []string{*sk})
		if err != nil {
			return nil, err
		}
		row.StateKeyNID = m[*sk]
	}
	nid, err := storage.InsertEvent(ctx, d.tx, &row)
	if err != nil {
		return nil, err
	}
	row.NID = nid
	row.JSON = nil
	e := &event{Event: row, pdu: ev}
	d.events[nid] = e
	d.ids[ev.EventID()] = nid
	return e, nil
}

// addEvent stores an event whose state before is known, moves the room's
// forward extremities and current state, updates memberships, applies
// redactions and queues the RoomOutput message. It returns the room's new
// head (also kept in the transaction's working copies). An event already
// stored is left alone.
func (d *dbctx) addEvent(ctx context.Context, head *roomHead, b *built, o addOpts) (*roomHead, error) {
	ev := b.pdu
	if o.kind == 0 {
		o.kind = storage.KindNormal
	}
	var e *event
	if o.promote != nil {
		e = &event{Event: o.promote.Event, pdu: ev}
		e.Kind, e.SoftFailed, e.StateBefore, e.StateAfter = o.kind, o.softFailed, b.beforeNID, b.beforeNID
		d.events[e.NID] = e
		d.uncache = append(d.uncache, e.NID)
	} else {
		var err error
		if e, err = d.insertEvent(ctx, head, ev, o.kind, b.beforeNID); errors.Is(err, storage.ErrExists) {
			return head, nil
		} else if err != nil {
			return nil, err
		}
		if o.softFailed {
			e.SoftFailed = true
		}
	}
	nid := e.NID
	if err := storage.InsertPrevEvents(ctx, d.tx, nid, ev.PrevEventIDs()); err != nil {
		return nil, err
	}
	after := b.before
	if e.StateKeyNID != 0 && o.kind == storage.KindNormal {
		var err error
		after = b.before.With(state.Entry{Key: state.Key{Type: e.TypeNID, StateKey: e.StateKeyNID}, Event: nid})
		if e.StateAfter, err = d.storeSnapshot(ctx, after); err != nil {
			return nil, err
		}
	}
	if o.promote != nil || e.StateAfter != e.StateBefore || e.SoftFailed {
		if err := storage.UpdateEventPlacement(ctx, d.tx, nid, o.kind, e.SoftFailed, e.StateBefore, e.StateAfter); err != nil {
			return nil, err
		}
	}
	if o.kind != storage.KindNormal {
		return head, nil // rejected: stored, never applied
	}
	if o.historical {
		if ev.Type() == spec.MRoomRedaction {
			if err := d.applyRedaction(ctx, head, e, b.before); err != nil {
				return nil, err
			}
		}
		return head, nil
	}

	nh := head.clone()
	prevSet := make(map[int64]bool, len(b.prevs))
	for _, p := range b.prevs {
		prevSet[p.NID] = true
	}
	nh.latest = slices.DeleteFunc(nh.latest, func(n int64) bool { return prevSet[n] })
	if !o.softFailed {
		referenced, err := o.referenced(ctx, d, ev.EventID())
		if err != nil {
			return nil, err
		}
		if !referenced {
			nh.latest = append(nh.latest, nid)
		}
	}
	if len(nh.latest) == 0 {
		nh.latest = append(nh.latest, nid)
	}

	oldCurrent, err := d.snapshot(ctx, head.snapshot)
	if err != nil {
		return nil, err
	}
	var current state.Snapshot
	if len(nh.latest) == 1 && nh.latest[0] == nid {
		current, nh.snapshot = after, e.StateAfter
	} else {
		latest, err := d.eventsByNID(ctx, nh.latest)
		if err != nil {
			return nil, err
		}
		evs := make([]*event, 0, len(latest))
		for _, n := range nh.latest {
			if le, ok := latest[n]; ok {
				evs = append(evs, le)
			}
		}
		if current, nh.snapshot, err = d.stateAfterAll(ctx, nh, evs); err != nil {
			return nil, err
		}
	}
	added, removed := state.Diff(oldCurrent, current)
	if err := d.applyMembership(ctx, nh, added); err != nil {
		return nil, err
	}
	if err := storage.UpdateRoom(ctx, d.tx, &storage.Room{NID: nh.nid, SnapshotNID: nh.snapshot, LatestNIDs: nh.latest, JoinedMembers: nh.joined}); err != nil {
		return nil, err
	}
	d.heads[nh.id] = nh
	if o.softFailed {
		return nh, nil
	}

	if err := d.queueNewEvent(ctx, nh, e, added, removed, o); err != nil {
		return nil, err
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := d.applyRedaction(ctx, nh, e, b.before); err != nil {
			return nil, err
		}
	}
	if o.remote {
		pending, err := storage.SelectPendingRedactions(ctx, d.tx, ev.EventID())
		if err != nil {
			return nil, err
		}
		redactions, err := d.eventsByID(ctx, pending)
		if err != nil {
			return nil, err
		}
		for _, red := range redactions {
			before, err := d.snapshot(ctx, red.StateBefore)
			if err != nil {
				return nil, err
			}
			if err := d.applyRedaction(ctx, nh, red, before); err != nil {
				return nil, err
			}
		}
	}
	return nh, nil
}

// referenced reports whether a stored event already names this one as a
// prev_event (it arrived late): then it is not a forward extremity. Local
// events are new, so nothing can reference them.
func (o addOpts) referenced(ctx context.Context, d *dbctx, eventID string) (bool, error) {
	if !o.remote {
		return false, nil
	}
	refs, err := storage.SelectReferencingEvents(ctx, d.tx, eventID)
	return len(refs) > 0, err
}

// applyMembership records the current membership of users whose member
// event entered the current state.
func (d *dbctx) applyMembership(ctx context.Context, h *roomHead, added []state.Entry) error {
	memberType, ok, err := d.typeNID(ctx, spec.MRoomMember)
	if err != nil || !ok {
		return err
	}
	var nids []int64
	for _, e := range added {
		if e.Type == memberType {
			nids = append(nids, e.Event)
		}
	}
	if len(nids) == 0 {
		return nil
	}
	evs, err := d.eventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	for _, n := range nids {
		ev := evs[n]
		membership, err := ev.pdu.Membership()
		if err != nil || ev.pdu.StateKey() == nil {
			continue
		}
		prev, err := storage.UpsertMembership(ctx, d.tx, h.nid, *ev.pdu.StateKey(), membership, n)
		if err != nil {
			return err
		}
		if prev == spec.Join {
			h.joined--
		}
		if membership == spec.Join {
			h.joined++
		}
	}
	return nil
}

// queueNewEvent queues the RoomOutput message of a stored event, with the
// current state change it caused.
func (d *dbctx) queueNewEvent(ctx context.Context, h *roomHead, e *event, added, removed []state.Entry, o addOpts) error {
	ids, err := d.eventIDs(ctx, append(append(entryEvents(added), entryEvents(removed)...), h.latest...))
	if err != nil {
		return err
	}
	out := &api.OutputNewEvent{
		RoomID:       h.id,
		RoomVersion:  string(h.version),
		Event:        e.pdu.JSON(),
		TxnID:        o.txnID,
		DeviceID:     o.deviceID,
		SendAsServer: o.sendAs,
		AfterGap:     o.gap,
	}
	for _, a := range added {
		out.AddsState = append(out.AddsState, ids[a.Event])
	}
	for _, r := range removed {
		out.RemovesState = append(out.RemovesState, ids[r.Event])
	}
	for _, n := range h.latest {
		out.LatestEvents = append(out.LatestEvents, ids[n])
	}
	return d.queueOutput(ctx, h.id, "new:"+e.EventID, &api.OutputMessage{V: 1, NewEvent: out})
}

func entryEvents(es []state.Entry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.Event
	}
	return out
}

// eventIDs maps numeric event IDs to event IDs.
func (d *dbctx) eventIDs(ctx context.Context, nids []int64) (map[int64]string, error) {
	evs, err := d.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]string, len(evs))
	for n, e := range evs {
		out[n] = e.EventID
	}
	return out, nil
}

func (d *dbctx) queueOutput(ctx context.Context, roomID, msgID string, msg *api.OutputMessage) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	d.outputs++
	return storage.InsertOutbox(ctx, d.tx, api.OutputSubject(roomID), msgID, payload)
}

// applyRedaction redacts the target of a redaction event when it is known
// and the redaction may apply: the sender has the redact power level, or
// sent (or, over federation, shares the server of) the original event.
// Otherwise the redaction waits for its target.
func (d *dbctx) applyRedaction(ctx context.Context, h *roomHead, red *event, before state.Snapshot) error {
	targetID := redactsOf(red.pdu)
	if targetID == "" {
		return nil
	}
	targets, err := d.eventsByID(ctx, []string{targetID})
	if err != nil {
		return err
	}
	target, ok := targets[targetID]
	if !ok || target.RoomNID != h.nid {
		return storage.InsertRedaction(ctx, d.tx, red.EventID, targetID, false)
	}
	allowed, err := d.mayRedact(ctx, red, target, before)
	if err != nil || !allowed {
		return err
	}
	if target.Redacted {
		return storage.InsertRedaction(ctx, d.tx, red.EventID, targetID, true)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(h.version)
	if err != nil {
		return err
	}
	redacted, err := verImpl.RedactEventJSON(target.pdu.JSON())
	if err != nil {
		return err
	}
	// Room versions 3 and later leave the event ID out of the JSON:
	// clients need it in redacted_because.
	because, err := sjson.SetBytes(red.pdu.JSON(), "event_id", red.EventID)
	if err != nil {
		return err
	}
	if redacted, err = sjson.SetRawBytes(redacted, "unsigned.redacted_because", because); err != nil {
		return err
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(target.EventID, redacted, true)
	if err != nil {
		return err
	}
	if err := storage.UpdateEventJSON(ctx, d.tx, target.NID, redacted, true); err != nil {
		return err
	}
	if err := storage.InsertRedaction(ctx, d.tx, red.EventID, targetID, true); err != nil {
		return err
	}
	updated := &event{Event: target.Event, pdu: pdu}
	updated.Redacted = true
	d.events[target.NID] = updated
	d.uncache = append(d.uncache, target.NID)
	return d.queueOutput(ctx, h.id, "redact:"+red.EventID, &api.OutputMessage{V: 1, Redaction: &api.OutputRedaction{
		RoomID: h.id, RedactionEventID: red.EventID, RedactsEventID: targetID,
	}})
}

// mayRedact applies the redaction rules: the redact power level, or the
// same sender (same server, for events from other servers).
func (d *dbctx) mayRedact(ctx context.Context, red, target *event, before state.Snapshot) (bool, error) {
	if red.Sender == target.Sender {
		return true, nil
	}
	pl, err := d.powerLevels(ctx, before)
	if err != nil {
		return false, err
	}
	if pl != nil && pl.UserLevel(red.Sender) >= pl.Redact {
		return true, nil
	}
	_, rs, err1 := gomatrixserverlib.SplitID('@', red.Sender)
	_, ts, err2 := gomatrixserverlib.SplitID('@', target.Sender)
	return err1 == nil && err2 == nil && rs == ts && rs != d.r.cfg.ServerName, nil
}

// powerLevels returns the power levels of a state, or nil without a
// create event.
func (d *dbctx) powerLevels(ctx context.Context, s state.Snapshot) (*api.PowerLevels, error) {
	pdus, err := d.lookup(ctx, s, []gomatrixserverlib.StateKeyTuple{
		{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels},
	})
	if err != nil {
		return nil, err
	}
	return api.PowerLevelsFromState(pdus)
}
