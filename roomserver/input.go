package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// maxInputAttempts bounds how often an input that fails for an internal
// reason is retried before the caller is told and the partition moves on.
const maxInputAttempts = 3

// Start publishes any output committed before a crash, starts the
// committer and one consumer per RoomInput partition.
func (r *Roomserver) Start(ctx context.Context) error {
	if err := r.flushOutbox(ctx); err != nil {
		return fmt.Errorf("roomserver: publish pending output: %w", err)
	}
	stopRelay := r.outbox.Relay(r.bus, outboxRetry, r.log)
	r.stopMu.Lock()
	r.stops = append(r.stops, stopRelay)
	r.stopMu.Unlock()
	// The committer outlives the consumers, which wait for it: it stops
	// last (Close).
	r.startCommitter(context.WithoutCancel(ctx))
	for p := range api.Partitions {
		stop, err := r.bus.ConsumeBatch(ctx, bus.ConsumerSpec{
			Stream:         api.RoomInputStream.Name,
			Durable:        fmt.Sprintf("roomserver-input-%d", p),
			FilterSubjects: []string{api.InputSubject(p)},
			LastApplied: func(ctx context.Context) (uint64, error) {
				return storage.SelectInputPosition(ctx, r.store.DB(), p)
			},
		}, maxPartitionBatch, func(ctx context.Context, msgs []*bus.Msg) error { return r.handleInputs(ctx, p, msgs) })
		if err != nil {
			r.Close()
			return err
		}
		r.stopMu.Lock()
		r.stops = append(r.stops, stop)
		r.stopMu.Unlock()
	}
	return nil
}

func (r *Roomserver) reply(to string, res *api.InputResult) {
	if to == "" {
		return
	}
	b, _ := json.Marshal(res)
	if err := r.bus.NC.Publish(to, b); err != nil {
		r.log.Warn("could not reply to input", slog.String("error", err.Error()))
	}
}

// processInput runs one input in the transaction of d. A refusal is an
// *api.InputError; the caller rolls the transaction back.
func (d *dbctx) processInput(ctx context.Context, msg *api.InputMessage) (*api.InputResult, error) {
	res := &api.InputResult{RoomID: msg.RoomID}
	var err error
	switch {
	case msg.Local != nil:
		err = d.processLocal(ctx, msg, res)
	case msg.OutOfBand != nil:
		err = d.processOutOfBand(ctx, msg, res)
	case len(msg.Events) > 0 || len(msg.Outliers) > 0:
		err = d.processEvents(ctx, msg, res)
	default:
		err = inputError(mxerr.CodeBadJSON, "Empty input")
	}
	return res, err
}

// outboxRetry is how often the outbox is retried after a publish failed.
const outboxRetry = 2 * time.Second

// announce publishes committed output and marks its position for keys
// (the room and the local users who wrote), so that their next reads wait
// for it. A failed publish is logged: the output is committed and the
// outbox relay sends it.
func (r *Roomserver) announce(ctx context.Context, keys ...string) {
	if err := r.flushOutbox(ctx); err != nil {
		r.log.Warn("publishing room output failed", slog.String("error", err.Error()))
		return
	}
	r.cfg.Marks.Wrote(api.RoomOutputStream.Name, r.outbox.Published(), keys...)
}

// writers are the keys whose reads must see an input's output: the room,
// the local users who sent its events and those whose membership they
// change (an invite, a kick: the user may not be in the room yet, or any
// longer).
func (r *Roomserver) writers(msg *api.InputMessage, res *api.InputResult) []string {
	keys := []string{res.RoomID}
	if res.RoomID == "" {
		keys[0] = msg.RoomID
	}
	local := func(userID string) {
		if _, domain, err := gomatrixserverlib.SplitID('@', userID); err == nil && domain == r.cfg.ServerName && !slices.Contains(keys, userID) {
			keys = append(keys, userID)
		}
	}
	if msg.Local != nil {
		for _, e := range msg.Local.Events {
			local(e.Sender)
			if e.Type == spec.MRoomMember && e.StateKey != nil {
				local(*e.StateKey)
			}
		}
	}
	for _, raw := range msg.Events {
		local(gjson.GetBytes(raw, "sender").Str)
		if gjson.GetBytes(raw, "type").Str == spec.MRoomMember {
			local(gjson.GetBytes(raw, "state_key").Str)
		}
	}
	if oob := msg.OutOfBand; oob != nil {
		local(gjson.GetBytes(oob.Event, "sender").Str)
		local(gjson.GetBytes(oob.Event, "state_key").Str)
	}
	return keys
}

// processLocal builds and stores local users' events in order.
func (d *dbctx) processLocal(ctx context.Context, msg *api.InputMessage, res *api.InputResult) error {
	li := msg.Local
	if len(li.Events) == 0 {
		return inputError(mxerr.CodeBadJSON, "No events")
	}
	if li.TxnKey != "" {
		id, err := storage.SelectTxn(ctx, d.tx, li.Events[0].Sender, li.DeviceID, li.TxnKey)
		if err != nil || id != "" {
			res.EventIDs = []string{id}
			return err
		}
	}
	var head *roomHead
	if li.CreateVersion == "" {
		var err error
		if head, err = d.head(ctx, msg.RoomID); errors.Is(err, storage.ErrNotFound) {
			return inputError(mxerr.CodeNotFound, "Unknown room %s", msg.RoomID)
		} else if err != nil {
			return err
		}
		if len(head.latest) == 0 {
			return inputError(mxerr.CodeNotFound, "This server is not in room %s", msg.RoomID)
		}
	}
	now := time.Now()
	for i, p := range li.Events {
		if li.SkipUnchangedState && head != nil && p.StateKey != nil {
			if id, err := d.unchangedState(ctx, head, p); err != nil || id != "" {
				res.EventIDs = append(res.EventIDs, id)
				if err == nil && li.TxnKey != "" {
					err = storage.InsertTxn(ctx, d.tx, p.Sender, li.DeviceID, li.TxnKey, id, now.UnixMilli())
				}
				return err
			}
		}
		create := ""
		if i == 0 {
			create = li.CreateVersion
		}
		b, err := d.buildLocal(ctx, head, p, create, li.MaxPrevEvents, now)
		if err != nil {
			return err
		}
		if head == nil {
			if head, err = d.createRoom(ctx, b.pdu); err != nil {
				return err
			}
			res.RoomID = head.id
		}
		if b.pdu.Type() == spec.MRoomRedaction {
			if err := d.checkLocalRedaction(ctx, head, b); err != nil {
				return err
			}
		}
		txnID := ""
		if i == len(li.Events)-1 {
			txnID = li.TxnKey
		}
		if head, err = d.addEvent(ctx, head, b, addOpts{txnID: txnIDOf(txnID), deviceID: li.DeviceID, sendAs: string(d.r.cfg.ServerName)}); err != nil {
			return err
		}
		res.EventIDs = append(res.EventIDs, b.pdu.EventID())
	}
	if li.TxnKey != "" {
		return storage.InsertTxn(ctx, d.tx, li.Events[0].Sender, li.DeviceID, li.TxnKey, res.EventIDs[0], now.UnixMilli())
	}
	return nil
}

// txnIDOf extracts the client's transaction ID from a transaction key
// ("<endpoint>|...|<txnId>"), for unsigned.transaction_id.
func txnIDOf(key string) string {
	if i := bytes.LastIndexByte([]byte(key), '|'); i >= 0 {
		return key[i+1:]
	}
	return key
}

// createRoom stores a new room for its create event.
func (d *dbctx) createRoom(ctx context.Context, create gomatrixserverlib.PDU) (*roomHead, error) {
	roomID := create.RoomID().String()
	nid, err := storage.InsertRoom(ctx, d.tx, roomID, string(create.Version()))
	if errors.Is(err, storage.ErrExists) {
		return nil, inputError(mxerr.CodeRoomInUse, "Room %s already exists", roomID)
	}
	if err != nil {
		return nil, err
	}
	h := &roomHead{nid: nid, id: roomID, version: create.Version()}
	d.heads[roomID] = h
	return h, nil
}

// unchangedState returns the current event of a state key when it has the
// same sender and content as p (so that sending it again changes nothing).
func (d *dbctx) unchangedState(ctx context.Context, head *roomHead, p api.ProtoEvent) (string, error) {
	cur, err := d.snapshot(ctx, head.snapshot)
	if err != nil {
		return "", err
	}
	pdus, err := d.lookup(ctx, cur, []gomatrixserverlib.StateKeyTuple{{EventType: p.Type, StateKey: *p.StateKey}})
	if err != nil || len(pdus) == 0 || string(pdus[0].SenderID()) != p.Sender {
		return "", err
	}
	a, err1 := gomatrixserverlib.CanonicalJSON(pdus[0].Content())
	b, err2 := gomatrixserverlib.CanonicalJSON(p.Content)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		return "", nil
	}
	return pdus[0].EventID(), nil
}

// checkLocalRedaction refuses what Synapse refuses of a client: redacting
// an event of another room, or another user's event without the redact
// power level.
func (d *dbctx) checkLocalRedaction(ctx context.Context, head *roomHead, b *built) error {
	targets, err := d.eventsByID(ctx, []string{redactsOf(b.pdu)})
	if err != nil {
		return err
	}
	target, ok := targets[redactsOf(b.pdu)]
	if !ok {
		return nil // applied if it ever arrives
	}
	if target.RoomNID != head.nid {
		return inputError(mxerr.CodeBadJSON, "Cannot redact an event of another room")
	}
	red := &event{Event: storage.Event{Sender: string(b.pdu.SenderID())}, pdu: b.pdu}
	allowed, err := d.mayRedact(ctx, red, target, b.before)
	if err != nil {
		return err
	}
	if !allowed {
		return inputError(mxerr.CodeForbidden, "You don't have permission to redact events of other users")
	}
	return nil
}

// flushOutbox publishes committed output in commit order (rs_outbox).
func (r *Roomserver) flushOutbox(ctx context.Context) error { return r.outbox.Flush(ctx, r.bus) }
