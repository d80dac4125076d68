package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// BenchmarkSendThenSync is a message sent and read back at once by its
// sender with an incremental /sync (timeout 0), which must hold it: the
// cost of read-your-writes on the hot path.
func BenchmarkSendThenSync(b *testing.B) {
	srv := testserver.Start(b)
	alice := testutil.NewClient(b, srv.URL).Register("rywb-alice", "pw")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)
	since := alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, http.StatusOK)["next_batch"].(string)
	b.ResetTimer()
	for i := range b.N {
		eventID := alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint("b", i)),
			map[string]any{"msgtype": "m.text", "body": "hi"}, http.StatusOK)["event_id"].(string)
		r := alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&since="+since, nil, http.StatusOK)
		if !strings.Contains(fmt.Sprint(r["rooms"]), eventID) {
			b.Fatalf("sync after send %d lacks its event", i)
		}
		since = r["next_batch"].(string)
	}
}
