package tests

import (
	"fmt"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
)

type configT = config.Config

// concurrently runs n requests at once and returns their responses in
// order.
func concurrently(n int, do func(i int) *testutil.Response) []*testutil.Response {
	results := make([]*testutil.Response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = do(i)
		}()
	}
	wg.Wait()
	return results
}

// messageBodies pages /messages backwards from the end of roomID, limit
// events a page and at most maxPages pages, and returns the bodies of its
// m.room.message events, newest first.
func messageBodies(t *testing.T, c *testutil.Client, roomID string, limit, maxPages int) []string {
	t.Helper()
	var bodies []string
	from := ""
	for range maxPages {
		q := []string{"dir", "b", "limit", fmt.Sprint(limit)}
		if from != "" {
			q = append(q, "from", from)
		}
		r := c.Do("GET", testutil.Path("/_matrix/client/v3/rooms/%s/messages", roomID)+"?"+syncTQuery(q...), nil)
		if r.Status != 200 {
			t.Fatalf("messages: %d %s", r.Status, r.Body)
		}
		var page struct {
			Chunk []map[string]any `json:"chunk"`
			End   string           `json:"end"`
		}
		r.Decode(t, &page)
		for _, e := range page.Chunk {
			if e["type"] == "m.room.message" {
				bodies = append(bodies, e["content"].(map[string]any)["body"].(string))
			}
		}
		if page.End == "" {
			break
		}
		from = page.End
	}
	return bodies
}
