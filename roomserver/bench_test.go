package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/lru"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
)

// Benchmarks run on SQLite (on PostgreSQL with MYELIN_BENCH_POSTGRES=1 and
// MYELIN_TEST_POSTGRES set):
//
//	go test -run XXX -bench . -benchtime 1x ./roomserver/
//
// Each op is a fixed amount of work (see each benchmark) so that even
// -benchtime 1x gives meaningful rates.

func benchHarness(b *testing.B) *harness {
	b.Helper()
	if os.Getenv("MYELIN_BENCH_POSTGRES") != "" {
		return newHarness(b, sqltest.Open(b, sqlutil.Postgres))
	}
	return newHarness(b, sqltest.Open(b, sqlutil.SQLite))
}

// rows counts the rows of a roomserver table.
func (h *harness) rows(table string) int64 {
	h.t.Helper()
	var n int64
	if err := h.rs.store.DB().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// bytes sums the size of a blob column.
func (h *harness) bytes(table, column string) int64 {
	h.t.Helper()
	var n int64
	if err := h.rs.store.DB().QueryRowContext(context.Background(), `SELECT COALESCE(SUM(LENGTH(`+column+`)), 0) FROM `+table).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) blockBytes() int64    { return h.bytes("rs_state_blocks", "entries") }
func (h *harness) snapshotBytes() int64 { return h.bytes("rs_state_snapshots", "blocks") }

func message(sender string, i int) api.ProtoEvent {
	return proto(sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)})
}

// BenchmarkSendOneRoom: sequential local messages into one room through the
// Inputer (RoomInput, one partition). One op is 100 messages.
func BenchmarkSendOneRoom(b *testing.B) {
	const perOp = 100
	h := benchHarness(b)
	alice := "@alice:" + testServer
	roomID := h.createRoom("10", alice, "public")
	h.mustSend(roomID, message(alice, -1)) // warm the caches
	events := 0
	start := time.Now()
	for b.Loop() {
		for range perOp {
			h.mustSend(roomID, message(alice, events))
			events++
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(elapsed.Microseconds())/1000/float64(events), "ms/event")
}

// BenchmarkSendManyRooms: local messages spread over 1,000 rooms, sent by 16
// concurrent senders. One op is 1,000 messages, one per room.
func BenchmarkSendManyRooms(b *testing.B) {
	const rooms, workers = 1000, 16
	h := benchHarness(b)
	alice := "@alice:" + testServer
	ids := make([]string, rooms)
	setup := time.Now()
	parallel(workers, rooms, func(i int) { ids[i] = h.createRoom("10", alice, "public") })
	setupTime := time.Since(setup)

	var failed atomic.Int64
	events := 0
	start := time.Now()
	for b.Loop() {
		parallel(workers, rooms, func(i int) {
			if _, err := h.send(ids[i], message(alice, i)); err != nil {
				failed.Add(1)
			}
		})
		events += rooms
	}
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sends failed", n)
	}
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	// Reported after the loop: b.Loop resets the metrics when it starts.
	b.ReportMetric(float64(setupTime.Microseconds())/1000/rooms, "setup-ms/createRoom")
}

// parallel runs do(0..n-1) on a pool of workers.
func parallel(workers, n int, do func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				do(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func member(i int) string { return fmt.Sprintf("@u%06d:%s", i, testServer) }

// joinMany joins users [from, from+n) to a public room, 500 joins per
// input (one transaction each).
func (h *harness) joinMany(roomID string, from, n int) {
	h.t.Helper()
	for start := from; start < from+n; start += 500 {
		var evs []api.ProtoEvent
		for i := start; i < min(start+500, from+n); i++ {
			u := member(i)
			evs = append(evs, proto(u, spec.MRoomMember, sk(u), map[string]any{"membership": "join"}))
		}
		if _, err := h.in.Input(context.Background(), &api.InputMessage{RoomID: roomID, Local: &api.LocalInput{Events: evs}}); err != nil {
			h.t.Fatalf("joins %d..%d: %v", start, start+len(evs), err)
		}
	}
}

// BenchmarkJoinLargeRoom: single joins into (and messages in) a public room
// with 10,000 members. It reports how many state block rows (and bytes)
// each new event writes: state is shared, so a join must write a block or
// two and never copy the 10,000 member entries.
func BenchmarkJoinLargeRoom(b *testing.B) {
	const members = 10000
	h := benchHarness(b)
	alice := "@alice:" + testServer
	roomID := h.createRoom("10", alice, "public")
	setup := time.Now()
	h.joinMany(roomID, 0, members)
	setupTime := time.Since(setup)
	head, err := h.rs.reader().roomHead(context.Background(), roomID)
	if err != nil {
		b.Fatal(err)
	}
	if head.joined != members+1 {
		b.Fatalf("%d joined members after setup, want %d", head.joined, members+1)
	}
	b.Logf("setup: %d joins in %v (%.2f ms/join in batches of 500); %d block rows, %d snapshot rows, %d KiB of blocks",
		members, setupTime, float64(setupTime.Microseconds())/1000/members, h.rows("rs_state_blocks"), h.rows("rs_state_snapshots"), h.blockBytes()/1024)

	next := members
	b.Run("join", func(b *testing.B) {
		blocks, snaps, bytes, snapBytes := h.rows("rs_state_blocks"), h.rows("rs_state_snapshots"), h.blockBytes(), h.snapshotBytes()
		n := 0
		start := time.Now()
		for b.Loop() {
			u := member(next)
			next++
			h.mustSend(roomID, proto(u, spec.MRoomMember, sk(u), map[string]any{"membership": "join"}))
			n++
		}
		elapsed := time.Since(start)
		b.ReportMetric(float64(elapsed.Microseconds())/1000/float64(n), "ms/join")
		b.ReportMetric(float64(h.rows("rs_state_blocks")-blocks)/float64(n), "block-rows/join")
		b.ReportMetric(float64(h.rows("rs_state_snapshots")-snaps)/float64(n), "snapshot-rows/join")
		b.ReportMetric(float64(h.blockBytes()-bytes)/float64(n), "block-bytes/join")
		// A snapshot row lists every block of the state (~N/32 IDs).
		b.ReportMetric(float64(h.snapshotBytes()-snapBytes)/float64(n), "snapshot-bytes/join")
		if grew := float64(h.rows("rs_state_blocks")-blocks) / float64(n); grew > 3 {
			b.Errorf("a join into a %d-member room wrote %.1f state block rows, want <= 3", members, grew)
		}
	})
	b.Run("message", func(b *testing.B) {
		blocks, snaps := h.rows("rs_state_blocks"), h.rows("rs_state_snapshots")
		n := 0
		start := time.Now()
		for b.Loop() {
			h.mustSend(roomID, message(alice, n))
			n++
		}
		elapsed := time.Since(start)
		b.ReportMetric(float64(elapsed.Microseconds())/1000/float64(n), "ms/message")
		b.ReportMetric(float64(h.rows("rs_state_blocks")-blocks+h.rows("rs_state_snapshots")-snaps)/float64(n), "state-rows/message")
		if h.rows("rs_state_blocks") != blocks || h.rows("rs_state_snapshots") != snaps {
			b.Errorf("messages wrote state rows (blocks %d -> %d, snapshots %d -> %d)", blocks, h.rows("rs_state_blocks"), snaps, h.rows("rs_state_snapshots"))
		}
	})
}

// BenchmarkStateResolutionFork: two branches of 1,000 state events each
// (distinct state keys, sent by a remote user with power 50) from a common
// parent, then the resolution of the two branch tips' states, with warm
// caches and with the event cache emptied first (as after a restart).
func BenchmarkStateResolutionFork(b *testing.B) {
	for _, v := range []string{"10", "12"} {
		b.Run("v"+v, func(b *testing.B) { benchFork(b, v) })
	}
}

func benchFork(b *testing.B, version string) {
	const branchLen, batch = 1000, 100
	ctx := context.Background()
	h := benchHarness(b)
	roomID, rm, base, auth, carol := forkedRoom(b, h, version)
	branch := func(prefix string) []gomatrixserverlib.PDU {
		evs := make([]gomatrixserverlib.PDU, 0, branchLen)
		prev := base
		for i := range branchLen {
			prev = rm.event(carol, "m.fork", sk(fmt.Sprintf("%s%d", prefix, i)), map[string]any{"i": i}, []gomatrixserverlib.PDU{prev}, auth)
			evs = append(evs, prev)
		}
		return evs
	}
	a, c := branch("a"), branch("b")
	feed := func(evs []gomatrixserverlib.PDU) time.Duration {
		start := time.Now()
		for i := 0; i < len(evs); i += batch {
			h.inputEvents(roomID, evs[i:min(i+batch, len(evs))]...)
		}
		return time.Since(start)
	}
	linear := feed(a)
	forked := feed(c)
	b.Logf("v%s setup: branch A (no fork) %.2f ms/event, branch B (forked: every event re-resolves the head) %.2f ms/event",
		version, float64(linear.Microseconds())/1000/branchLen, float64(forked.Microseconds())/1000/branchLen)

	latest, err := h.rs.QueryLatestEvents(ctx, roomID)
	if err != nil || len(latest) != 2 {
		b.Fatalf("latest %v %v, want the two branch tips", latest, err)
	}
	d := h.rs.reader()
	head, err := d.roomHead(ctx, roomID)
	if err != nil {
		b.Fatal(err)
	}
	tips, err := d.eventsByID(ctx, []string{a[branchLen-1].EventID(), c[branchLen-1].EventID()})
	if err != nil || len(tips) != 2 {
		b.Fatalf("tips %v %v", tips, err)
	}
	sa, err := d.snapshot(ctx, tips[a[branchLen-1].EventID()].StateAfter)
	if err != nil {
		b.Fatal(err)
	}
	sb, err := d.snapshot(ctx, tips[c[branchLen-1].EventID()].StateAfter)
	if err != nil {
		b.Fatal(err)
	}
	resolve := func(b *testing.B) {
		b.Helper()
		res, err := h.rs.reader().resolve(ctx, head, []state.Snapshot{sa, sb})
		if err != nil {
			b.Fatal(err)
		}
		if len(res) != len(sa)+branchLen {
			b.Fatalf("resolved state has %d entries, want %d", len(res), len(sa)+branchLen)
		}
	}
	b.Run("warm", func(b *testing.B) {
		n := 0
		start := time.Now()
		for b.Loop() {
			resolve(b)
			n++
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(n), "ms/resolution")
		b.ReportMetric(float64(forked.Microseconds())/1000/branchLen, "setup-ms/forked-event")
		b.ReportMetric(float64(linear.Microseconds())/1000/branchLen, "setup-ms/linear-event")
	})
	b.Run("cold", func(b *testing.B) {
		var total time.Duration
		n := 0
		for b.Loop() {
			b.StopTimer()
			h.rs.events = lru.New[int64, *event](20000, nil)
			b.StartTimer()
			start := time.Now()
			resolve(b)
			total += time.Since(start)
			n++
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms/resolution")
	})
	// The resolved state is the one the room holds.
	cur, err := h.rs.QueryCurrentState(ctx, roomID, api.StateKeyTuple{EventType: "m.fork", StateKey: "a0"}, api.StateKeyTuple{EventType: "m.fork", StateKey: "b999"})
	if err != nil || len(cur) != 2 {
		raw, _ := json.Marshal(cur)
		b.Fatalf("current state lacks a branch's keys: %s %v", raw, err)
	}
}
