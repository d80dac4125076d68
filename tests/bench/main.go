// Command bench drives a running Myelin server over HTTP through the
// scenarios of issue 13 (send rate, fanout to long-polls, initial sync,
// joins into a big room, memory) and prints the figures, with the issue's
// targets, as a table and as JSON.
//
// It talks to the server only through the client API, and reads the
// server's CPU time and memory from /proc/<pid> when given its process ID.
// With -metrics pointing at a metrics listener that has metrics.pprof on,
// it also saves heap profiles. scripts/bench.sh builds the server, starts
// it with a fresh data directory and runs this; see the README's
// "Benchmarks" section.
//
//	go run ./tests/bench -url http://127.0.0.1:8008 -pid 1234 -out /tmp/bench
//	go run ./tests/bench -summarize run1/figures.json run2/figures.json
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

// scenarioNames are the scenarios in the order they run.
var scenarioNames = []string{"send", "send16", "fanout", "initialsync", "joins", "memory"}

// options are the driver's settings; the defaults are issue 13's sizes.
type options struct {
	URL        string
	MetricsURL string
	PID        int
	Scenarios  []string
	Label      string
	Out        string

	SendUsers, SendMsgs     int
	Send16Rooms, Send16Msgs int

	FanoutClients  int
	FanoutRate     float64
	FanoutDuration time.Duration

	SyncRooms, SyncEvents, SyncRuns int

	Joins, JoinConcurrency, JoinSyncs int

	Idle time.Duration
}

func defaultOptions() options {
	return options{
		Scenarios: scenarioNames,
		SendUsers: 10, SendMsgs: 200,
		Send16Rooms: 16, Send16Msgs: 200,
		FanoutClients: 50, FanoutRate: 50, FanoutDuration: 60 * time.Second,
		SyncRooms: 50, SyncEvents: 50, SyncRuns: 5,
		Joins: 1000, JoinConcurrency: 10, JoinSyncs: 5,
		Idle: 2 * time.Minute,
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := defaultOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.URL, "url", "", "base URL of the server's client API (required)")
	fs.StringVar(&o.MetricsURL, "metrics", "", "base URL of its metrics listener, with metrics.pprof on, to save heap profiles")
	fs.IntVar(&o.PID, "pid", 0, "the server's process ID, to read its memory and CPU time from /proc")
	scen := fs.String("scenarios", strings.Join(scenarioNames, ","), "comma-separated scenarios to run: "+strings.Join(scenarioNames, ", "))
	fs.StringVar(&o.Label, "label", "", "a label stored with the figures")
	fs.StringVar(&o.Out, "out", "", "directory for figures.json and heap profiles (default: none written)")
	fs.IntVar(&o.SendUsers, "send-users", o.SendUsers, "send: users sending into one room at once")
	fs.IntVar(&o.SendMsgs, "send-msgs", o.SendMsgs, "send: messages per user")
	fs.IntVar(&o.Send16Rooms, "send16-rooms", o.Send16Rooms, "send16: rooms (one sending user each) at once")
	fs.IntVar(&o.Send16Msgs, "send16-msgs", o.Send16Msgs, "send16: messages per room")
	fs.IntVar(&o.FanoutClients, "fanout-clients", o.FanoutClients, "fanout: long-polling clients in the room")
	fs.Float64Var(&o.FanoutRate, "fanout-rate", o.FanoutRate, "fanout: messages per second")
	fs.DurationVar(&o.FanoutDuration, "fanout-duration", o.FanoutDuration, "fanout: how long the sender sends")
	fs.IntVar(&o.SyncRooms, "sync-rooms", o.SyncRooms, "initialsync: rooms of the user")
	fs.IntVar(&o.SyncEvents, "sync-events", o.SyncEvents, "initialsync: messages per room")
	fs.IntVar(&o.SyncRuns, "sync-runs", o.SyncRuns, "initialsync: initial syncs measured")
	fs.IntVar(&o.Joins, "joins", o.Joins, "joins: users joining the room")
	fs.IntVar(&o.JoinConcurrency, "join-concurrency", o.JoinConcurrency, "joins: joins in flight")
	fs.IntVar(&o.JoinSyncs, "join-syncs", o.JoinSyncs, "joins: newcomers whose first lazy-loaded sync is measured")
	fs.DurationVar(&o.Idle, "idle", o.Idle, "memory: idle time before the last reading")
	summarize := fs.Bool("summarize", false, "print one table of the figures.json files given as arguments, and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *summarize {
		if err := summarizeFiles(stdout, fs.Args()); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		return 0
	}
	if o.URL == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "bench: -url is required and no arguments are taken (but with -summarize)")
		return 2
	}
	o.Scenarios = nil
	for _, s := range strings.Split(*scen, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !contains(scenarioNames, s) {
			fmt.Fprintf(stderr, "bench: unknown scenario %q (have %s)\n", s, strings.Join(scenarioNames, ", "))
			return 2
		}
		o.Scenarios = append(o.Scenarios, s)
	}
	rep, err := run(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	printReport(stdout, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
