package tests

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// BenchmarkSendWithPush sends messages through the client API into a room
// of local members with the default push rules, and measures the events
// per second until the last one is counted in a member's unread
// notifications (roomserver, sync API and push evaluation together, on
// SQLite): a room of 1,000 members and one of 10.
func BenchmarkSendWithPush(b *testing.B) {
	for _, members := range []int{1000, 10} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			srv := testserver.Start(b)
			alice := srv.Client().Register("alice", "password1")
			roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
			var first *testutil.Client
			var wg sync.WaitGroup
			var mu sync.Mutex
			sem := make(chan struct{}, 8)
			for i := range members {
				wg.Add(1)
				sem <- struct{}{}
				go func(i int) {
					defer func() { <-sem; wg.Done() }()
					u := srv.Client().Register(fmt.Sprintf("member%d", i), "password1")
					u.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
					if i == 0 {
						mu.Lock()
						first = u
						mu.Unlock()
					}
				}(i)
			}
			wg.Wait()
			flt := `{"room":{"rooms":["` + roomID + `"],"timeline":{"limit":1}},"presence":{"types":[]},"account_data":{"types":[]}}`
			unread := func() int {
				s := syncPush(b, first, "", flt, 0)
				if jr := s.Rooms.Join[roomID]; jr != nil && jr.Unread != nil {
					return jr.Unread.Notifications
				}
				return 0
			}
			base := unread()
			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint(n)),
							text(fmt.Sprintf("hello everyone, message %d", n)), http.StatusOK)
					}
				}()
			}
			wg.Wait()
			deadline := time.Now().Add(2 * time.Minute)
			for unread() < base+b.N {
				if time.Now().After(deadline) {
					b.Fatalf("member0 has %d unread, want %d", unread(), base+b.N)
				}
				time.Sleep(5 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}
