package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// tinyOptions runs every scenario at a size that takes a few seconds.
func tinyOptions(url string) options {
	o := defaultOptions()
	o.URL = url
	o.SendUsers, o.SendMsgs = 3, 5
	o.Send16Rooms, o.Send16Msgs = 3, 5
	o.FanoutClients, o.FanoutRate, o.FanoutDuration = 3, 20, time.Second
	o.SyncRooms, o.SyncEvents, o.SyncRuns = 3, 3, 2
	o.Joins, o.JoinConcurrency, o.JoinSyncs = 20, 5, 2
	o.Idle = 100 * time.Millisecond
	return o
}

// The driver runs every scenario against a real server (in this process,
// so its /proc is the test's), checks what it measures, and writes its
// figures and heap profiles.
func TestDriverTiny(t *testing.T) {
	maddr := testutil.FreeLoopbackAddr(t)
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.Metrics.Enabled, c.Metrics.Address, c.Metrics.Pprof = true, maddr, true
	}})
	o := tinyOptions(srv.URL)
	o.PID = os.Getpid()
	o.MetricsURL = "http://" + maddr
	o.Out = t.TempDir()
	o.Label = "tiny"
	var log bytes.Buffer
	rep, err := run(context.Background(), o, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	var table bytes.Buffer
	printReport(&table, rep)
	if !rep.OK() {
		t.Fatalf("scenarios failed:\n%s", table.String())
	}
	for _, sc := range o.Scenarios {
		var r *Result
		for _, x := range rep.Results {
			if x.Scenario == sc {
				r = x
			}
		}
		if r == nil || len(r.Figures) == 0 {
			t.Errorf("scenario %s has no figures:\n%s", sc, table.String())
		}
	}
	for _, want := range []struct{ scenario, figure string }{
		{"send", "events_per_s"}, {"send", "send_p99"}, {"send16", "events_per_s"},
		{"fanout", "delivery_p99"}, {"fanout", "server_cpu"}, {"initialsync", "sync_p50"},
		{"initialsync", "sync_lazy_p50"}, {"joins", "joins_per_s"}, {"joins", "newcomer_sync_p50"},
		{"memory", "rss_start"}, {"memory", "rss_after_joins"}, {"memory", "rss_after_idle"},
	} {
		f, ok := figureOf(rep, want.scenario, want.figure)
		if !ok || !(f.Value > 0) {
			t.Errorf("%s %s = %v (present %v), want a positive figure", want.scenario, want.figure, f.Value, ok)
		}
	}
	b, err := os.ReadFile(filepath.Join(o.Out, "figures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || back.Label != "tiny" || len(back.Results) != len(rep.Results) {
		t.Fatalf("figures.json does not read back: %v %+v", err, back)
	}
	for _, p := range []string{"heap-start.pb.gz", "heap-after_scenarios.pb.gz", "heap-after_idle.pb.gz"} {
		if st, err := os.Stat(filepath.Join(o.Out, p)); err != nil || st.Size() == 0 {
			t.Errorf("heap profile %s: %v", p, err)
		}
	}
	var sum bytes.Buffer
	if err := summarizeFiles(&sum, []string{filepath.Join(o.Out, "figures.json"), filepath.Join(o.Out, "figures.json")}); err != nil ||
		!strings.Contains(sum.String(), "events_per_s") || !strings.Contains(sum.String(), "run 2") {
		t.Errorf("summarize: %v\n%s", err, sum.String())
	}
}

// Errors are reported, not hidden: with the message rate limit on, sends
// fail with 429 and the send scenario is not OK, and the CLI exits 1.
func TestDriverReportsErrors(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.RateLimiting.Enabled = true
		c.RateLimiting.Message = config.Rate{PerSecond: 0.01, Burst: 2}
	}})
	var out, errw bytes.Buffer
	code := cli(context.Background(), []string{"-url", srv.URL, "-scenarios", "send", "-send-users", "2", "-send-msgs", "4"}, &out, &errw)
	if code != 1 || !strings.Contains(out.String(), "ERRORS in send") || !strings.Contains(out.String(), "429") {
		t.Fatalf("exit %d, want 1 with the 429s reported:\n%s\n%s", code, out.String(), errw.String())
	}
	if code := cli(context.Background(), []string{"-url", srv.URL, "-scenarios", "nope"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown scenario: exit %d, want 2", code)
	}
}

func figureOf(rep *Report, scenario, name string) (Figure, bool) {
	for _, r := range rep.Results {
		if r.Scenario == scenario {
			return r.figure(name)
		}
	}
	return Figure{}, false
}
