package tests

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// relTRootsFilter selects the roots of relTWorld's room: its messages
// with no relation of their own.
const relTRootsFilter = `{"types":["m.room.message"],"org.matrix.msc3874.not_rel_types":["m.thread","m.replace","m.reference"]}`

// relTWorld is a room of n messages, each with a thread reply, an edit
// and a reference.
func relTWorld(tb testing.TB, n int) (*testserver.Server, *testutil.Client, string) {
	tb.Helper()
	srv := testserver.Start(tb)
	alice := testutil.NewClient(tb, srv.URL).Register(fmt.Sprintf("alice.%d", roomTSeq.Add(1)), "pw")
	roomID := roomTCreate(alice, map[string]any{"preset": "private_chat"})
	for i := range n {
		root := roomTSend(alice, roomID, fmt.Sprintf("root %d", i))
		relTReply(alice, roomID, "m.thread", root, "reply")
		relTEdit(alice, roomID, root, "edited")
		relTReply(alice, roomID, "m.reference", root, "ref")
	}
	return srv, alice, roomID
}

func relTRootsPath(roomID string, limit int) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID) +
		fmt.Sprintf("?dir=b&limit=%d&filter=%s", limit, url.QueryEscape(relTRootsFilter))
}

// BenchmarkMessagesWithAggregations is a /messages page of 50 events that
// each bundle a thread, an edit and a reference.
func BenchmarkMessagesWithAggregations(b *testing.B) {
	srv, alice, roomID := relTWorld(b, 50)
	path := relTRootsPath(roomID, 50)
	q := srv.DB.Queries()
	b.ResetTimer()
	for range b.N {
		if r := alice.Do("GET", path, nil); r.Status != http.StatusOK {
			b.Fatalf("messages: %d %s", r.Status, r.Body)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(srv.DB.Queries()-q)/float64(b.N), "stmts/op")
}

// TestRelationsAggregationsBatched: the statements of a /messages page do
// not grow with the number of events bundling aggregations (a query per
// kind of aggregation for the whole page, none per event).
func TestRelationsAggregationsBatched(t *testing.T) {
	srv, alice, roomID := relTWorld(t, 50)
	stmts := func(limit int) uint64 {
		best := ^uint64(0)
		for range 3 {
			start := srv.DB.Queries()
			m := alice.MustDo("GET", relTRootsPath(roomID, limit), nil, http.StatusOK)
			best = min(best, srv.DB.Queries()-start)
			chunk := msgTObjects(t, m["chunk"], "chunk")
			if len(chunk) != limit {
				t.Fatalf("%d events, want %d", len(chunk), limit)
			}
			for _, e := range chunk {
				rel := relTDig(e, "unsigned", "m.relations")
				if relTDig(rel, "m.thread", "count") != float64(1) || relTDig(rel, "m.replace") == nil || relTDig(rel, "m.reference") == nil {
					t.Fatalf("event without its aggregations: %v", e)
				}
			}
		}
		return best
	}
	small, large := stmts(5), stmts(50)
	t.Logf("statements: %d for 5 events, %d for 50", small, large)
	if large > small {
		t.Fatalf("a page of 50 events takes %d statements, one of 5 takes %d: aggregations are read per event", large, small)
	}
}
