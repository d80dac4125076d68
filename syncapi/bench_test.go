package syncapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Benchmarks of the sync API's ingestion of RoomOutput and of its read
// queries, on SQLite, without HTTP or NATS.

const benchServer = "bench.test"

// benchRoom builds the events of one room (version 10) as RoomOutput
// messages: create, the creator's join, then messages.
type benchRoom struct {
	id     string
	key    ed25519.PrivateKey
	sender string
	prev   string
	depth  int64
	create string
	member string
}

func newBenchRoom(i int, key ed25519.PrivateKey) *benchRoom {
	return &benchRoom{id: fmt.Sprintf("!room%d:%s", i, benchServer), key: key, sender: "@alice:" + benchServer}
}

// next builds the room's next event and its output message.
func (r *benchRoom) next(tb testing.TB, typ string, stateKey *string, content any) []byte {
	tb.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		tb.Fatal(err)
	}
	prev, auth := []string{}, []string{}
	if r.prev != "" {
		prev, auth = []string{r.prev}, []string{r.create}
		if r.member != "" {
			auth = append(auth, r.member)
		}
	}
	proto := gomatrixserverlib.ProtoEvent{SenderID: r.sender, RoomID: r.id, Type: typ, StateKey: stateKey, Content: raw,
		PrevEvents: prev, AuthEvents: auth, Depth: r.depth + 1}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), benchServer, "ed25519:b", r.key)
	if err != nil {
		tb.Fatal(err)
	}
	out := &rsapi.OutputNewEvent{RoomID: r.id, RoomVersion: "10", Event: ev.JSON(), LatestEvents: []string{ev.EventID()}}
	if stateKey != nil {
		out.AddsState = []string{ev.EventID()}
	}
	switch typ {
	case spec.MRoomCreate:
		r.create = ev.EventID()
	case spec.MRoomMember:
		r.member = ev.EventID()
	}
	r.prev, r.depth = ev.EventID(), r.depth+1
	msg, err := json.Marshal(&rsapi.OutputMessage{V: 1, NewEvent: out})
	if err != nil {
		tb.Fatal(err)
	}
	return msg
}

func benchSyncAPI(tb testing.TB) *SyncAPI {
	tb.Helper()
	db := sqltest.Open(tb, sqlutil.SQLite)
	s, err := New(context.Background(), Config{ServerName: benchServer}, db, nil, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// benchMessages returns n RoomOutput messages over rooms rooms: each
// room's create and join, then text messages round-robin.
func benchMessages(tb testing.TB, rooms, n int) [][]byte {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	rs := make([]*benchRoom, rooms)
	var out [][]byte
	empty, alice := "", "@alice:"+benchServer
	for i := range rs {
		rs[i] = newBenchRoom(i, key)
		out = append(out,
			rs[i].next(tb, spec.MRoomCreate, &empty, map[string]any{"room_version": "10", "creator": alice}),
			rs[i].next(tb, spec.MRoomMember, &alice, map[string]any{"membership": "join"}))
	}
	for i := 0; len(out) < n; i++ {
		out = append(out, rs[i%rooms].next(tb, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}))
	}
	return out[:n]
}

// BenchmarkConsumeRoomOutput measures how many RoomOutput events per second
// the sync API applies to its read model over 10 rooms: one transaction
// each (batch=1, as when messages come one at a time) and up to 64 a
// transaction (as the consumer takes them under load).
func BenchmarkConsumeRoomOutput(b *testing.B) {
	for _, batch := range []int{1, maxOutputBatch} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s := benchSyncAPI(b)
			msgs := benchMessages(b, 10, b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < len(msgs); i += batch {
				var group []*bus.Msg
				for j := i; j < min(i+batch, len(msgs)); j++ {
					group = append(group, &bus.Msg{Data: msgs[j], Seq: uint64(j + 1)})
				}
				if err := s.onRoomOutputs(ctx, group); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if got := s.pos.pdu.Load(); got != int64(b.N) {
				b.Fatalf("applied %d events, want %d", got, b.N)
			}
		})
	}
}

// BenchmarkTimelinesLongHistory is the timeline query of an initial sync
// (10 events per room) for 50 rooms, as the rooms' histories grow: its
// cost should follow the page size, not the history.
func BenchmarkTimelinesLongHistory(b *testing.B) {
	for _, perRoom := range []int{50, 500, 2000} {
		b.Run(fmt.Sprintf("%d-events-per-room", perRoom), func(b *testing.B) {
			db := sqltest.Open(b, sqlutil.SQLite)
			ctx := context.Background()
			st, err := storage.New(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			var ranges []storage.Range
			err = st.WithTx(ctx, func(tx *sqlutil.Tx) error {
				pos := int64(0)
				body := []byte(`{"type":"m.room.message","content":{"msgtype":"m.text","body":"` + fmt.Sprintf("%0400d", 0) + `"}}`)
				for r := range 50 {
					room := fmt.Sprintf("!r%d:x", r)
					ranges = append(ranges, storage.Range{RoomID: room, From: math.MinInt64 / 2, To: math.MaxInt64 / 2})
					for e := range perRoom {
						pos++
						if err := storage.InsertEvent(ctx, tx, &storage.Event{Pos: pos, RoomID: room, EventID: fmt.Sprintf("$%d-%d", r, e),
							Type: "m.room.message", Sender: "@a:x", OriginTS: pos, JSON: body, Visibility: "shared"}); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				evs, _, err := storage.Timelines(ctx, st.DB(), ranges, 10, "", nil)
				if err != nil || len(evs) != 50 {
					b.Fatalf("%d timelines, %v", len(evs), err)
				}
			}
		})
	}
}
