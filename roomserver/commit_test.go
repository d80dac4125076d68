package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"

	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
)

// Inputs queued on two partitions while the roomserver is down are stored
// in shared transactions when it starts, and each gets the result it
// would have got alone: a refused input in the middle costs the others
// nothing, a repeated transaction ID in the same transaction returns the
// first event, and each room's events form a chain in publication order.
func TestGroupCommitKeepsOrderAndOutcomes(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		h := newHarness(t, db)
		ctx := context.Background()
		alice, mallory := "@alice:"+testServer, "@mallory:"+testServer
		roomA := h.createRoom("10", alice, "invite")
		roomB := h.createRoom("10", alice, "invite")
		for api.Partition(roomB) == api.Partition(roomA) {
			roomB = h.createRoom("10", alice, "invite")
		}
		h.rs.Close()

		type input struct {
			room, sender, body, txn string
		}
		inputs := []input{
			{roomA, alice, "a0", "send|t0"},
			{roomB, alice, "b0", ""},
			{roomA, alice, "a1", ""},
			{roomA, mallory, "m", ""}, // not in the room: refused
			{roomB, alice, "b1", ""},
			{roomA, alice, "a0 again", "send|t0"}, // the same transaction: a0
			{roomA, alice, "a2", ""},
		}
		var mu sync.Mutex
		results := map[string]*api.InputResult{}
		sub, err := h.b.NC.Subscribe("_INBOX.grouptest.*", func(m *nats.Msg) {
			var res api.InputResult
			if err := json.Unmarshal(m.Data, &res); err == nil {
				mu.Lock()
				results[m.Subject] = &res
				mu.Unlock()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		for i, in := range inputs {
			msg := &api.InputMessage{V: 1, ID: fmt.Sprint("group-", i), RoomID: in.room, ReplyTo: fmt.Sprint("_INBOX.grouptest.", i),
				Local: &api.LocalInput{TxnKey: in.txn, DeviceID: "DEV", Events: []api.ProtoEvent{proto(in.sender, "m.room.message", nil, map[string]any{"body": in.body})}}}
			if _, err := h.b.Publish(ctx, api.InputSubject(api.Partition(in.room)), msg, msg.ID, nil); err != nil {
				t.Fatal(err)
			}
		}

		rs, err := New(ctx, h.rs.cfg, db, h.b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := len(results)
			mu.Unlock()
			if n == len(inputs) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %d results, want %d", n, len(inputs))
			}
			time.Sleep(10 * time.Millisecond)
		}
		res := func(i int) *api.InputResult { return results[fmt.Sprint("_INBOX.grouptest.", i)] }
		for _, i := range []int{0, 1, 2, 4, 5, 6} {
			if r := res(i); r.Error != nil || len(r.EventIDs) != 1 {
				t.Fatalf("input %d (%s): %+v, want one event", i, inputs[i].body, r)
			}
		}
		if r := res(3); r.Error == nil || r.Error.Code != mxerr.CodeForbidden {
			t.Fatalf("mallory's input: %+v, want M_FORBIDDEN", r)
		}
		if res(5).EventIDs[0] != res(0).EventIDs[0] {
			t.Fatalf("repeated transaction ID got %s, want a0's %s", res(5).EventIDs[0], res(0).EventIDs[0])
		}
		chain := func(ids ...string) {
			t.Helper()
			evs, err := rs.QueryEvents(ctx, ids)
			if err != nil || len(evs) != len(ids) {
				t.Fatalf("events %v: %d, %v", ids, len(evs), err)
			}
			byID := map[string]int{}
			for i, id := range ids {
				byID[id] = i
			}
			for _, ev := range evs {
				i := byID[ev.EventID()]
				if i > 0 && (len(ev.PrevEventIDs()) != 1 || ev.PrevEventIDs()[0] != ids[i-1]) {
					t.Errorf("event %d of %v has prev_events %v, want [%s]", i, ids, ev.PrevEventIDs(), ids[i-1])
				}
			}
			latest, err := rs.QueryLatestEvents(ctx, evs[0].RoomID().String())
			if err != nil || len(latest) != 1 || latest[0] != ids[len(ids)-1] {
				t.Errorf("forward extremities %v (%v), want [%s]", latest, err, ids[len(ids)-1])
			}
		}
		chain(res(0).EventIDs[0], res(2).EventIDs[0], res(6).EventIDs[0])
		chain(res(1).EventIDs[0], res(4).EventIDs[0])

		var m dto.Metric
		if err := rs.metrics.batch.Write(&m); err != nil {
			t.Fatal(err)
		}
		if h := m.GetHistogram(); h.GetSampleSum() < float64(len(inputs)-1) || float64(h.GetSampleCount()) >= h.GetSampleSum() {
			t.Errorf("%d transactions stored %v inputs: want all but the refused one, in fewer transactions", h.GetSampleCount(), h.GetSampleSum())
		}
	})
}
