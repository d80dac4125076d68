package appservice

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/appservice/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/clientevent"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Consumer names, which also key their positions in as_consumers.
const roomOutputConsumer = "appservice-roomoutput"

func (a *AppService) startConsumers(ctx context.Context) error {
	if err := a.startFrom(ctx, rsapi.RoomOutputStream.Name, roomOutputConsumer); err != nil {
		return fmt.Errorf("appservice: room output position: %w", err)
	}
	// One consumer over every partition, strictly in stream order: each
	// service's events keep the order of each room.
	stop, err := a.bus.Consume(ctx, bus.ConsumerSpec{
		Stream:      rsapi.RoomOutputStream.Name,
		Durable:     roomOutputConsumer,
		LastApplied: storage.Consumers.LastApplied(a.store.DB(), roomOutputConsumer),
	}, a.onRoomOutput)
	if err != nil {
		return err
	}
	a.stops = append(a.stops, stop)
	if err := a.startSyncOutput(ctx); err != nil {
		return err
	}
	return a.startUserOutput(ctx)
}

// onRoomOutput queues a new event (or an out-of-band membership) for the
// services interested in it. Backfilled history is not sent (Synapse
// sends services live events only); redactions arrive as their own event.
func (a *AppService) onRoomOutput(ctx context.Context, m *bus.Msg) error {
	var msg rsapi.OutputMessage
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable room output: %w", err))
	}
	var rows []storage.QueueRow
	var observe func()
	switch {
	case msg.NewEvent != nil:
		out := msg.NewEvent
		pdu, err := parsePDU(out.RoomVersion, out.Event)
		if err != nil {
			return err
		}
		services, err := a.interest.servicesFor(ctx, out.RoomID, pdu, true)
		if err != nil {
			return err
		}
		if len(services) > 0 {
			replaced, err := a.replacedState(ctx, pdu, out.RemovesState)
			if err != nil {
				return err
			}
			for _, s := range services {
				rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindEvent,
					Payload: formatEvent(pdu, out.RoomID, replaced, txnIDFor(s, pdu, out), nil)})
			}
		}
		observe = func() { a.interest.observe(out.RoomID, pdu, out.AddsState) }
	case msg.Membership != nil:
		out := msg.Membership
		pdu, err := parsePDU(out.RoomVersion, out.Event)
		if err != nil {
			return err
		}
		services, err := a.interest.servicesFor(ctx, out.RoomID, pdu, false)
		if err != nil {
			return err
		}
		for _, s := range services {
			rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindEvent,
				Payload: formatEvent(pdu, out.RoomID, nil, "", out.StrippedState)})
		}
		observe = func() { a.interest.forget(out.RoomID) }
	}
	if err := a.apply(ctx, roomOutputConsumer, m.Seq, rows); err != nil {
		return err
	}
	if observe != nil {
		observe()
	}
	return nil
}

func parsePDU(version string, js json.RawMessage) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return nil, bus.Permanent(err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSON(js, false)
	if err != nil {
		return nil, bus.Permanent(fmt.Errorf("undecodable event: %w", err))
	}
	return pdu, nil
}

// replacedState returns the state event a state event replaced (for
// unsigned.prev_content), or nil.
func (a *AppService) replacedState(ctx context.Context, pdu gomatrixserverlib.PDU, removes []string) (gomatrixserverlib.PDU, error) {
	if pdu.StateKey() == nil || len(removes) == 0 {
		return nil, nil
	}
	evs, err := a.interest.rooms.QueryEvents(ctx, removes)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if ev.Type() == pdu.Type() && ev.StateKey() != nil && *ev.StateKey() == *pdu.StateKey() {
			return ev, nil
		}
	}
	return nil, nil
}

// txnIDFor is the client transaction ID a service sees on an event: that
// of the request that sent it, when the sender is one of the service's
// users (a bridge recognises its own messages), as Synapse gives it to the
// application service that sent the event.
func txnIDFor(s *asapi.Service, pdu gomatrixserverlib.PDU, out *rsapi.OutputNewEvent) string {
	if out.TxnID == "" || !s.OwnsUser(string(pdu.SenderID())) {
		return ""
	}
	return out.TxnID
}

// formatEvent is an event as a service receives it: a ClientEvent with
// room_id, and in unsigned the content of the state it replaced, the
// transaction ID of its sender's request and, for an invite, the state
// the invitee sees of the room.
func formatEvent(pdu gomatrixserverlib.PDU, roomID string, replaced gomatrixserverlib.PDU, txnID string, stripped []json.RawMessage) json.RawMessage {
	e := clientevent.New(pdu, clientevent.WithRoomID)
	if e.RoomID == "" {
		e.RoomID = roomID
	}
	unsigned := []byte(e.Unsigned)
	if len(unsigned) == 0 {
		unsigned = []byte("{}")
	}
	set := func(path string, v any) {
		if u, err := sjson.SetBytes(unsigned, path, v); err == nil {
			unsigned = u
		}
	}
	if replaced != nil {
		set("prev_content", json.RawMessage(replaced.Content()))
		set("prev_sender", string(replaced.SenderID()))
		set("replaces_state", replaced.EventID())
	}
	if txnID != "" {
		set("transaction_id", txnID)
	}
	if len(stripped) > 0 && pdu.Type() == spec.MRoomMember {
		set("invite_room_state", stripped)
	}
	if string(unsigned) != "{}" {
		e.Unsigned = unsigned
	}
	out, _ := json.Marshal(e)
	return out
}
