package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Read-your-writes by position: a read right after its caller's write
// (an event sent, account data set) reflects it, and a read with no write
// pending waits for nothing: no round trip to NATS. Failed before: every
// /sync, /messages, /members and /context asked JetStream for the last
// sequence of two streams (two requests on the connection per read) and
// waited for every stream to drain. The suite had only checked what reads
// return, never what they cost on the bus.
func TestReadYourWritesByPosition(t *testing.T) {
	srv := testserver.Start(t)
	alice := testutil.NewClient(t, srv.URL).Register("ryw-alice", "pw")
	bob := testutil.NewClient(t, srv.URL).Register("ryw-bob", "pw")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	since := alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, http.StatusOK)["next_batch"].(string)

	// Each write is read back at once by its writer, by /sync (timeout
	// 0: no long-poll to wait in) and by /messages.
	for i := range 20 {
		body := fmt.Sprintf("ryw %d", i)
		eventID := alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint("ryw", i)),
			map[string]any{"msgtype": "m.text", "body": body}, http.StatusOK)["event_id"].(string)
		r := alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, http.StatusOK)
		if !strings.Contains(fmt.Sprint(r["rooms"]), eventID) {
			t.Fatalf("the sync right after send %d lacks its event %s", i, eventID)
		}
		since = r["next_batch"].(string)
		m := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID)+"?dir=b&limit=1", nil, http.StatusOK)
		if !strings.Contains(fmt.Sprint(m["chunk"]), eventID) {
			t.Fatalf("the /messages right after send %d lacks its event", i)
		}
		alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/user/%s/account_data/%s", alice.UserID, "org.example.ryw"),
			map[string]any{"n": i}, http.StatusOK)
		r = alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, http.StatusOK)
		if !strings.Contains(fmt.Sprint(r["account_data"]), fmt.Sprintf("n:%d", i)) {
			t.Fatalf("the sync right after account data %d lacks it: %v", i, r["account_data"])
		}
		since = r["next_batch"].(string)
	}

	// Reads with no write pending make no request on the bus.
	bobSince := bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, http.StatusOK)["next_batch"].(string)
	waitIdle(t, srv)
	before := srv.Bus.NC.Stats().OutMsgs
	const reads = 20
	for range reads {
		bob.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+bobSince, nil, http.StatusOK)
		bob.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID)+"?dir=b&limit=5", nil, http.StatusOK)
		bob.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/members", roomID), nil, http.StatusOK)
	}
	// Background work (a consumer's pull request) may add a message or
	// two; the old wait added two per read.
	if n := srv.Bus.NC.Stats().OutMsgs - before; n > 5 {
		t.Fatalf("%d reads without writes sent %d messages on the bus", 3*reads, n)
	}
}

// waitIdle waits until the server has run no statement for 200 ms.
func waitIdle(t *testing.T, srv *testserver.Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := srv.DB.Queries()
	for {
		time.Sleep(200 * time.Millisecond)
		n := srv.DB.Queries()
		if n == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never went idle")
		}
		last = n
	}
}
