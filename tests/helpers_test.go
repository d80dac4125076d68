package tests

import (
	"sync"

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
