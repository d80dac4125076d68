package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/appservice/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
)

const syncOutputConsumer = "appservice-syncoutput"

// Ephemeral events and to-device messages (MSC2409, MSC4203) go to the
// services with ReceiveEphemeral, queued in as_queue like events: typing
// and receipts of rooms where one of the service's users is joined (as
// Synapse's matches_user_in_member_list; private receipts never), the
// presence of users who share a room with one of them (or are one), and
// the to-device messages of its users' devices. Receipts, presence and
// to-device messages reach this component persisted (the sync API's
// outbox), so they survive restarts like events; typing is best effort
// up to the stream.

func (a *AppService) ephemeralServices() []*asapi.Service {
	var out []*asapi.Service
	for _, s := range a.interest.services {
		if s.ReceiveEphemeral {
			out = append(out, s)
		}
	}
	return out
}

func (a *AppService) startSyncOutput(ctx context.Context) error {
	if len(a.ephemeralServices()) == 0 {
		return nil
	}
	if err := a.startFrom(ctx, syncout.SyncOutputStream.Name, syncOutputConsumer); err != nil {
		return fmt.Errorf("appservice: sync output position: %w", err)
	}
	stop, err := a.bus.Consume(ctx, bus.ConsumerSpec{
		Stream:      syncout.SyncOutputStream.Name,
		Durable:     syncOutputConsumer,
		LastApplied: storage.Consumers.LastApplied(a.store.DB(), syncOutputConsumer),
	}, a.onSyncOutput)
	if err != nil {
		return err
	}
	a.stops = append(a.stops, stop)
	return nil
}

func (a *AppService) onSyncOutput(ctx context.Context, m *bus.Msg) error {
	var (
		rows []storage.QueueRow
		err  error
	)
	switch m.Subject {
	case a.bus.Name(syncout.SubjectTyping):
		rows, err = a.typingRows(ctx, m.Data)
	case a.bus.Name(syncout.SubjectReceipt):
		rows, err = a.receiptRows(ctx, m.Data)
	case a.bus.Name(syncout.SubjectPresence):
		rows, err = a.presenceRows(ctx, m.Data)
	case a.bus.Name(syncout.SubjectToDevice):
		rows, err = a.toDeviceRows(m.Data)
	}
	if err != nil {
		return err
	}
	return a.apply(ctx, syncOutputConsumer, m.Seq, rows)
}

func decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable sync output: %w", err))
	}
	return nil
}

// roomRows queues payload for the ephemeral services with a user joined
// to the room.
func (a *AppService) roomRows(ctx context.Context, roomID string, payload any) ([]storage.QueueRow, error) {
	var rows []storage.QueueRow
	var js []byte
	for _, s := range a.ephemeralServices() {
		ok, err := a.interest.hasJoined(ctx, roomID, s)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if js == nil {
			js, _ = json.Marshal(payload)
		}
		rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindEphemeral, Payload: js})
	}
	return rows, nil
}

func (a *AppService) typingRows(ctx context.Context, data []byte) ([]storage.QueueRow, error) {
	var t syncout.TypingUpdate
	if err := decode(data, &t); err != nil {
		return nil, err
	}
	if t.UserIDs == nil {
		t.UserIDs = []string{}
	}
	return a.roomRows(ctx, t.RoomID, map[string]any{"type": "m.typing", "room_id": t.RoomID,
		"content": map[string]any{"user_ids": t.UserIDs}})
}

func (a *AppService) receiptRows(ctx context.Context, data []byte) ([]storage.QueueRow, error) {
	var r syncout.ReceiptUpdate
	if err := decode(data, &r); err != nil {
		return nil, err
	}
	if r.Type != "m.read" {
		return nil, nil // private receipts are for their user's devices only
	}
	receipt := map[string]any{"ts": r.TS}
	if r.ThreadID != "" {
		receipt["thread_id"] = r.ThreadID
	}
	return a.roomRows(ctx, r.RoomID, map[string]any{"type": "m.receipt", "room_id": r.RoomID,
		"content": map[string]any{r.EventID: map[string]any{r.Type: map[string]any{r.UserID: receipt}}}})
}

func (a *AppService) presenceRows(ctx context.Context, data []byte) ([]storage.QueueRow, error) {
	var p syncout.PresenceUpdate
	if err := decode(data, &p); err != nil {
		return nil, err
	}
	var rooms []string
	var roomsLoaded bool
	var rows []storage.QueueRow
	var js []byte
	for _, s := range a.ephemeralServices() {
		ok := s.IsInterestedInUser(p.UserID)
		if !ok && !roomsLoaded {
			members, err := a.interest.rooms.QueryRoomsForUser(ctx, p.UserID, spec.Join)
			if err != nil {
				return nil, err
			}
			for _, m := range members {
				rooms = append(rooms, m.RoomID)
			}
			roomsLoaded = true
		}
		for _, roomID := range rooms {
			if ok {
				break
			}
			var err error
			if ok, err = a.interest.hasJoined(ctx, roomID, s); err != nil {
				return nil, err
			}
		}
		if !ok {
			continue
		}
		if js == nil {
			content := map[string]any{"presence": p.Presence, "currently_active": p.CurrentlyActive}
			if p.LastActiveTS > 0 {
				content["last_active_ago"] = max(time.Now().UnixMilli()-p.LastActiveTS, 0)
			}
			if p.StatusMsg != nil {
				content["status_msg"] = *p.StatusMsg
			}
			js, _ = json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": content})
		}
		rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindEphemeral, Payload: js})
	}
	return rows, nil
}

func (a *AppService) toDeviceRows(data []byte) ([]storage.QueueRow, error) {
	var t syncout.ToDeviceMessage
	if err := decode(data, &t); err != nil {
		return nil, err
	}
	var rows []storage.QueueRow
	for _, s := range a.ephemeralServices() {
		if !s.IsInterestedInUser(t.UserID) {
			continue
		}
		js, _ := json.Marshal(map[string]any{"type": t.Type, "sender": t.Sender, "content": t.Content,
			"to_user_id": t.UserID, "to_device_id": t.DeviceID})
		rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindToDevice, Payload: js})
	}
	return rows, nil
}
