package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/testutil"
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

// BenchmarkFederationJoinLargeRoom measures joining a remote room whose
// state has MYELIN_BENCH_MEMBERS (10,000 by default) members: a user of a
// fresh server joins over federation (make_join, send_join, checking the
// state and auth chain, storing them) until /join returns, then until the
// room is in the user's /sync. Run it with -benchtime 1x (setting the room
// up takes a while).
func BenchmarkFederationJoinLargeRoom(b *testing.B) {
	members := 10000
	if n, err := strconv.Atoi(os.Getenv("MYELIN_BENCH_MEMBERS")); err == nil && n > 0 {
		members = n
	}
	r, n := ingTSetup(b, "11")
	ctx := context.Background()
	auth := []gomatrixserverlib.PDU{r.current(spec.MRoomCreate, ""), r.current(spec.MRoomPowerLevels, ""), r.current(spec.MRoomJoinRules, "")}
	prev := r.latest()
	var batch []json.RawMessage
	for i := range members {
		user := fmt.Sprintf("@m%05d:fake.test", i)
		ev := r.build(nil, user, spec.MRoomMember, &user, map[string]any{"membership": "join"}, prev, auth)
		prev = []gomatrixserverlib.PDU{ev}
		batch = append(batch, ev.JSON())
		if len(batch) == 50 || i == members-1 {
			res, err := r.rm.Send("hs1.test", fmt.Sprint("big", i), batch, nil)
			if err != nil {
				b.Fatal(err)
			}
			for id, pr := range res.PDUs {
				if pr.Error != "" {
					b.Fatalf("%s: %s", id, pr.Error)
				}
			}
			batch = nil
		}
	}
	ids, _ := r.hs.Rooms.QueryCurrentStateIDs(ctx, r.roomID)
	b.Logf("room of %d state events ready", len(ids))
	b.ResetTimer()
	var joinTotal, syncTotal time.Duration
	for i := range b.N {
		b.StopTimer()
		hs := n.Start(fmt.Sprintf("joiner%d.test", i))
		c := testutil.NewClient(b, hs.URL).Register("joiner", "joiner-password")
		b.StartTimer()
		start := time.Now()
		c.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", r.roomID), map[string]any{}, 200)
		joinTotal += time.Since(start)
		for {
			s := c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`), nil, 200)
			if rooms, _ := s["rooms"].(map[string]any); rooms != nil && rooms["join"] != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		syncTotal += time.Since(start)
		b.StopTimer()
		hs.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(joinTotal.Milliseconds())/float64(b.N), "ms/join")
	b.ReportMetric(float64(syncTotal.Milliseconds())/float64(b.N), "ms/join-to-sync")
}
