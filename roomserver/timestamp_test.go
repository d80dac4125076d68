package roomserver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
)

func TestQueryEventAtTimestamp(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		alice := "@alice:" + testServer
		roomID := h.createRoom("11", alice, "public")
		var sent []string
		for i := range 4 {
			time.Sleep(3 * time.Millisecond) // distinct timestamps
			sent = append(sent, h.mustSend(roomID, proto(alice, "m.room.message", nil, map[string]any{"body": fmt.Sprint(i)})))
		}
		evs, err := h.rs.QueryEvents(ctx, sent)
		if err != nil || len(evs) != len(sent) {
			t.Fatalf("events %v %v", evs, err)
		}
		ts := make([]int64, len(evs))
		for i, e := range evs {
			ts[i] = int64(e.OriginServerTS())
		}
		for _, c := range []struct {
			ts      int64
			forward bool
			want    int // index in sent; -1: none
		}{
			{ts[1], true, 1}, {ts[1], false, 1},
			{ts[1] + 1, true, 2}, {ts[2] - 1, false, 1},
			{ts[3] + 1, true, -1}, {ts[3] + 1000, false, 3},
		} {
			id, got, err := h.rs.QueryEventAtTimestamp(ctx, roomID, c.ts, c.forward)
			if c.want < 0 {
				if !errors.Is(err, api.ErrEventNotFound) {
					t.Fatalf("ts %d forward %v: %s %v, want none", c.ts, c.forward, id, err)
				}
				continue
			}
			if err != nil || id != sent[c.want] || got != ts[c.want] {
				t.Fatalf("ts %d forward %v: %s %d %v, want %s %d", c.ts, c.forward, id, got, err, sent[c.want], ts[c.want])
			}
		}
		// Backward from before the room existed: nothing.
		if _, _, err := h.rs.QueryEventAtTimestamp(ctx, roomID, 1, false); !errors.Is(err, api.ErrEventNotFound) {
			t.Fatalf("before the room: %v", err)
		}
		// Forward from the beginning of time: the create event.
		if id, _, err := h.rs.QueryEventAtTimestamp(ctx, roomID, 0, true); err != nil || id == "" || id == sent[0] {
			t.Fatalf("from the beginning: %s %v", id, err)
		}
		if _, _, err := h.rs.QueryEventAtTimestamp(ctx, "!nope:x", 0, true); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("unknown room: %v", err)
		}
	})
}
