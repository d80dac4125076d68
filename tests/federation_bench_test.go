package tests

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// BenchmarkFederationSend measures inbound /send throughput into one room:
// transactions of 50 messages from a remote server (signature and hash
// checks, auth, storage, sync read model).
func BenchmarkFederationSend(b *testing.B) {
	r, _ := ingTSetup(b, "10")
	fuser := "@fuser:fake.test"
	join := r.join(fuser)
	prev := []gomatrixserverlib.PDU{join}
	// Build every event first: the benchmark times hs1, not the fake.
	total := b.N * 50
	evs := make([]gomatrixserverlib.PDU, 0, total)
	for i := range total {
		e := r.message(fuser, prev, fmt.Sprint("m", i))
		evs = append(evs, e)
		prev = []gomatrixserverlib.PDU{e}
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		batch := evs[i*50 : (i+1)*50]
		raws := make([]json.RawMessage, len(batch))
		for j, e := range batch {
			raws[j] = e.JSON()
		}
		res, err := r.rm.Send("hs1.test", fmt.Sprint("bench", i), raws, nil)
		if err != nil {
			b.Fatal(err)
		}
		for id, pr := range res.PDUs {
			if pr.Error != "" {
				b.Fatalf("%s: %s", id, pr.Error)
			}
		}
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "pdus/s")
}
