package tests

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// metricsScrape is one read of a /metrics endpoint: sample lines by name
// and labels.
type metricsScrape map[string]float64

var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

func scrapeMetrics(t *testing.T, addr string) metricsScrape {
	t.Helper()
	r := rawRequest(t, "GET", "http://"+addr+"/metrics", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", r.Status)
	}
	s := metricsScrape{}
	for _, line := range strings.Split(string(r.Body), "\n") {
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s[m[1]+m[2]] = v
	}
	return s
}

// get returns the sample of name whose labels include every label given
// ("k=v"), summed over the others; ok is false when there is none.
func (s metricsScrape) get(name string, labels ...string) (sum float64, ok bool) {
	for key, v := range s {
		n, rest, _ := strings.Cut(key, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			k, val, _ := strings.Cut(l, "=")
			if !strings.Contains(rest, k+`="`+val+`"`) {
				match = false
			}
		}
		if match {
			sum, ok = sum+v, true
		}
	}
	return sum, ok
}

// The operational metrics DESIGN.md promises are on the metrics endpoint
// with plausible values after activity: consumer lag per stream and
// consumer, roomserver input latency, database time, waiting long-polls,
// and the federation queue's depth and send latency by destination class
// (ok, backoff, down; never a server name). Before, only the queue's total
// depth existed (the suite had only checked the HTTP metrics).
func TestOperationalMetrics(t *testing.T) {
	addr := testutil.FreeLoopbackAddr(t)
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test", testserver.Options{Configure: func(c *configT) {
		c.Metrics.Enabled = true
		c.Metrics.Address = addr
	}})
	hs2 := n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", roomID), map[string]any{}, 200)
	fedTWaitMembers(t, alice, roomID, "@alice:hs1.test", "@bob:hs2.test")
	for i := range 3 {
		roomTSend(alice, roomID, fmt.Sprint("hello ", i))
	}
	fedTWaitBodies(t, bob, roomID, "hello 0", "hello 1", "hello 2")

	// A long-poll waiting for news counts while it waits.
	first := alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, 200)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		alice.Do("GET", "/_matrix/client/v3/sync?timeout=20000&since="+first["next_batch"].(string), nil)
	}()
	testutil.Eventually(t, 10*time.Second, "a waiting long-poll to be counted", func() bool {
		v, _ := scrapeMetrics(t, addr).get("myelin_syncapi_long_polls")
		return v == 1
	})
	roomTSend(alice, roomID, "wake up")
	<-polled
	testutil.Eventually(t, 10*time.Second, "the long-poll to be uncounted", func() bool {
		v, ok := scrapeMetrics(t, addr).get("myelin_syncapi_long_polls")
		return ok && v == 0
	})

	// hs2 goes away: sends to it fail and its queue is in backoff.
	n.Partition("hs2.test")
	roomTSend(alice, roomID, "into the void")
	var s metricsScrape
	testutil.Eventually(t, 20*time.Second, "hs2's queue to be counted in backoff", func() bool {
		s = scrapeMetrics(t, addr)
		items, _ := s.get("myelin_federationapi_queue_items", "class=backoff")
		dests, _ := s.get("myelin_federationapi_queue_destinations", "class=backoff")
		return items >= 1 && dests == 1
	})
	if v, ok := s.get("myelin_federationapi_queue_items", "class=ok"); !ok || v != 0 {
		t.Errorf("queue items of destinations that are up: %v (reported %v)", v, ok)
	}
	if v, ok := s.get("myelin_federationapi_queue_items", "class=down"); !ok || v != 0 {
		t.Errorf("queue items of destinations that are down: %v (reported %v)", v, ok)
	}
	okSends, _ := s.get("myelin_federationapi_send_duration_seconds_count", "class=ok", "result=ok")
	failedSends, _ := s.get("myelin_federationapi_send_duration_seconds_count", "class=ok", "result=failed")
	sendSum, _ := s.get("myelin_federationapi_send_duration_seconds_sum")
	if okSends < 3 || failedSends < 1 || sendSum <= 0 || sendSum > 60 {
		t.Errorf("sends: %v ok and %v failed to a destination that was up, %vs in all", okSends, failedSends, sendSum)
	}
	for key := range s {
		if strings.Contains(key, "hs2.test") {
			t.Errorf("a metric is labelled with a server name: %s", key)
		}
	}

	// Roomserver inputs: the local sends, timed from publication.
	inputs, _ := s.get("myelin_roomserver_input_latency_seconds_count", "kind=local", "result=ok")
	latency, _ := s.get("myelin_roomserver_input_latency_seconds_sum", "kind=local", "result=ok")
	processing, _ := s.get("myelin_roomserver_input_duration_seconds_sum", "kind=local", "result=ok")
	if inputs < 5 || latency <= 0 || latency/inputs > 5 || processing <= 0 || processing > latency {
		t.Errorf("local inputs: %v, latency %vs, processing %vs in all", inputs, latency, processing)
	}
	if fed, _ := s.get("myelin_roomserver_input_latency_seconds_count", "kind=federation"); fed < 1 {
		t.Errorf("federation inputs (bob's join): %v", fed)
	}

	// Database time by op.
	for _, op := range []string{"exec", "query", "transaction"} {
		count, _ := s.get("myelin_db_query_duration_seconds_count", "op="+op)
		sum, _ := s.get("myelin_db_query_duration_seconds_sum", "op="+op)
		if count < 1 || sum <= 0 || sum/count > 1 {
			t.Errorf("database %s: %v statements, %vs in all", op, count, sum)
		}
	}

	// Consumer lag, per stream and consumer: every roomserver partition is
	// there and caught up.
	partitions := 0
	for key, v := range s {
		if strings.HasPrefix(key, "myelin_bus_consumer_lag_messages{") && strings.Contains(key, `stream="RoomInput"`) {
			partitions++
			if v != 0 {
				t.Errorf("%s = %v after the inputs were answered", key, v)
			}
		}
	}
	if partitions != 16 {
		t.Errorf("lag of %d RoomInput consumers, want 16", partitions)
	}
	if _, ok := s.get("myelin_bus_consumer_lag_messages", "stream=RoomOutput", "consumer=fedapi-roomoutput"); !ok {
		t.Error("no lag for the federation API's room output consumer")
	}
}

// metrics.pprof serves Go's profiles on the metrics listener, and only
// there; without it the listener has no /debug/pprof/.
func TestMetricsPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		addr := testutil.FreeLoopbackAddr(t)
		srv := testserver.Start(t, testserver.Options{Configure: func(c *configT) {
			c.Metrics.Enabled = true
			c.Metrics.Address = addr
			c.Metrics.Pprof = on
		}})
		heap := rawRequest(t, "GET", "http://"+addr+"/debug/pprof/heap", nil, nil)
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; heap.Status != want {
			t.Errorf("pprof %v: GET /debug/pprof/heap: status %d, want %d", on, heap.Status, want)
		}
		if on && !strings.HasPrefix(string(heap.Body), "\x1f\x8b") {
			t.Errorf("pprof on: the heap profile is not gzipped protobuf: %q", heap.Body[:min(len(heap.Body), 20)])
		}
		if r := rawRequest(t, "GET", srv.URL+"/debug/pprof/heap", nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("pprof %v: the client listener serves /debug/pprof/heap: status %d", on, r.Status)
		}
		if r := rawRequest(t, "GET", "http://"+addr+"/metrics", nil, nil); r.Status != http.StatusOK {
			t.Errorf("pprof %v: /metrics: status %d", on, r.Status)
		}
	}
}
