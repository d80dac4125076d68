package syncapi

import (
	"context"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// RoomOutput messages taken together are applied in one go, in order; one
// that can never apply (undecodable) is dropped without holding up or
// losing the others, and the consumer position covers the whole batch.
func TestRoomOutputBatchSkipsBadMessage(t *testing.T) {
	s := benchSyncAPI(t)
	ctx := context.Background()
	msgs := benchMessages(t, 1, 5) // create, join, 3 messages
	var batch []*bus.Msg
	for i, m := range msgs {
		batch = append(batch, &bus.Msg{Data: m, Seq: uint64(len(batch) + 1)})
		if i == 2 {
			batch = append(batch, &bus.Msg{Data: []byte(`{"v":1,"new_event":`), Seq: uint64(len(batch) + 1)})
		}
	}
	if err := s.onRoomOutputs(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got := s.pos.pdu.Load(); got != 5 {
		t.Fatalf("position %d, want 5 (five events applied)", got)
	}
	if got := s.applied.roomOutput.Load(); got != 6 {
		t.Errorf("applied sequence %d, want 6", got)
	}
	if seq, err := storage.ConsumerPosition(ctx, s.store.DB(), roomOutputConsumer); err != nil || seq != 6 {
		t.Errorf("stored consumer position %d (%v), want 6", seq, err)
	}
	var ids []string
	for _, m := range msgs {
		pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromTrustedJSON([]byte(gjson.GetBytes(m, "new_event.event").Raw), false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, pdu.EventID())
	}
	evs, err := storage.EventsByID(ctx, s.store.DB(), ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		e, ok := evs[id]
		if !ok {
			t.Fatalf("event %d (%s) not stored", i, id)
		}
		if e.Pos != int64(i+1) {
			t.Errorf("event %d at position %d, want %d", i, e.Pos, i+1)
		}
	}
}
