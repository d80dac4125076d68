package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured; it is written as figures.json.
type Report struct {
	Label     string    `json:"label,omitempty"`
	Started   time.Time `json:"started"`
	URL       string    `json:"url"`
	GoVersion string    `json:"driver_go_version"`
	Options   options   `json:"options"`
	Results   []*Result `json:"results"`
	Memory    []memory  `json:"memory,omitempty"`
	Profiles  []string  `json:"heap_profiles,omitempty"`
}

// OK reports whether every scenario ran without errors.
func (rep *Report) OK() bool {
	for _, r := range rep.Results {
		if !r.OK {
			return false
		}
	}
	return true
}

// run runs the chosen scenarios in order, reading the server's memory
// before the first and after each, and writes figures.json into o.Out.
func run(ctx context.Context, o options, log io.Writer) (*Report, error) {
	a := newAPI(o.URL)
	if err := a.waitReady(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return nil, err
		}
	}
	rep := &Report{Label: o.Label, Started: time.Now().UTC(), URL: o.URL, GoVersion: runtime.Version(), Options: o}
	p := proc{pid: o.PID}
	mem := newResult("memory")
	readMem := func(stage string) {
		if o.PID == 0 {
			return
		}
		m, err := p.memory(stage)
		if err != nil {
			mem.fail(err)
			return
		}
		rep.Memory = append(rep.Memory, m)
		fmt.Fprintf(log, "bench: RSS %s: %.1f MB (peak %.1f MB)\n", stage, mb(m.RSSKB), mb(m.HWMKB))
	}
	profile := func(stage string) {
		if o.MetricsURL == "" || o.Out == "" {
			return
		}
		name := "heap-" + stage + ".pb.gz"
		if err := saveProfile(ctx, o.MetricsURL, filepath.Join(o.Out, name)); err != nil {
			mem.failf("heap profile %s: %w", stage, err)
			return
		}
		rep.Profiles = append(rep.Profiles, name)
	}

	readMem("start")
	profile("start")
	ranAny := false
	for _, name := range o.Scenarios {
		if ctx.Err() != nil {
			break
		}
		if name == "memory" {
			continue // last, below
		}
		fmt.Fprintf(log, "bench: %s ...\n", name)
		t0 := time.Now()
		r := runScenario(ctx, a, p, o, name)
		r.Duration = time.Since(t0)
		rep.Results = append(rep.Results, r)
		fmt.Fprintf(log, "bench: %s done in %s (ok=%v)\n", name, r.Duration.Round(time.Millisecond), r.OK)
		readMem("after_" + name)
		ranAny = true
	}
	if ranAny {
		profile("after_scenarios")
	}
	if contains(o.Scenarios, "memory") && ctx.Err() == nil {
		fmt.Fprintf(log, "bench: idle for %s ...\n", o.Idle)
		select {
		case <-time.After(o.Idle):
		case <-ctx.Done():
		}
		readMem("after_idle")
		profile("after_idle")
	}
	if o.PID != 0 {
		all := len(o.Scenarios) == len(scenarioNames)
		for _, m := range rep.Memory {
			target := ""
			switch {
			case m.Stage == "start":
				target = "<30"
			case m.Stage == "after_idle" && all:
				target = "<50"
			case m.Stage == "after_joins" && all:
				target = "<80" // after the whole sequence
			}
			mem.add("rss_"+m.Stage, mb(m.RSSKB), "MB", target)
		}
		if n := len(rep.Memory); n > 0 {
			mem.add("rss_peak", mb(rep.Memory[n-1].HWMKB), "MB", "")
		}
	}
	if len(mem.Figures) > 0 || mem.Errors > 0 {
		rep.Results = append(rep.Results, mem)
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if o.Out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return rep, err
		}
		if err := os.WriteFile(filepath.Join(o.Out, "figures.json"), append(b, '\n'), 0o644); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func runScenario(ctx context.Context, a *api, p proc, o options, name string) *Result {
	switch name {
	case "send":
		return sendScenario(ctx, a, name, o.SendUsers, o.SendMsgs, true, ">=1500", "<5", "<20")
	case "send16":
		return sendScenario(ctx, a, name, o.Send16Rooms, o.Send16Msgs, false, ">=3000", "", "")
	case "fanout":
		return fanoutScenario(ctx, a, p, o.FanoutClients, o.FanoutRate, o.FanoutDuration)
	case "initialsync":
		return initialSyncScenario(ctx, a, o.SyncRooms, o.SyncEvents, o.SyncRuns)
	case "joins":
		return joinsScenario(ctx, a, o.Joins, o.JoinConcurrency, o.JoinSyncs)
	}
	r := newResult(name)
	r.failf("unknown scenario %s", name)
	return r
}

func mb(kb int64) float64 { return math.Round(float64(kb)/1024*10) / 10 }

// saveProfile fetches the heap profile of the metrics listener's pprof
// endpoint into path.
func saveProfile(ctx context.Context, metricsURL, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(metricsURL, "/")+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d (is metrics.pprof on?)", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printReport prints one table: a row per figure, with its target and
// whether it holds, then the errors of failed scenarios.
func printReport(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tfigure\tvalue\tunit\ttarget\t\n")
	for _, r := range rep.Results {
		for _, f := range r.Figures {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, f.Name, num(f.Value), f.Unit, f.Target, verdict(f.Pass))
		}
	}
	tw.Flush()
	for _, r := range rep.Results {
		if !r.OK {
			fmt.Fprintf(w, "ERRORS in %s (%d): %s\n", r.Scenario, r.Errors, strings.Join(r.Messages, "; "))
		}
	}
	if rep.OK() {
		fmt.Fprintln(w, "all scenarios ran without errors")
	}
}

func verdict(p *bool) string {
	switch {
	case p == nil:
		return ""
	case *p:
		return "ok"
	default:
		return "MISS"
	}
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// summarizeFiles prints the figures of several runs side by side.
func summarizeFiles(w io.Writer, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("-summarize needs figures.json files as arguments")
	}
	type key struct{ scenario, name string }
	var order []key
	type row struct {
		unit, target string
		vals         []string
	}
	rows := map[key]*row{}
	var notOK []string
	for i, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range rep.Results {
			if !r.OK {
				notOK = append(notOK, fmt.Sprintf("run %d (%s): %s had %d errors", i+1, path, r.Scenario, r.Errors))
			}
			for _, f := range r.Figures {
				k := key{r.Scenario, f.Name}
				rw := rows[k]
				if rw == nil {
					rw = &row{unit: f.Unit, target: f.Target, vals: make([]string, len(files))}
					rows[k] = rw
					order = append(order, k)
				}
				rw.vals[i] = num(f.Value) + map[bool]string{true: "", false: "!"}[f.Pass == nil || *f.Pass]
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "scenario\tfigure\t")
	for i := range files {
		fmt.Fprintf(tw, "run %d\t", i+1)
	}
	fmt.Fprint(tw, "unit\ttarget\t\n")
	for _, k := range order {
		rw := rows[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", k.scenario, k.name, strings.Join(rw.vals, "\t"), rw.unit, rw.target)
	}
	tw.Flush()
	fmt.Fprintln(w, "(! = misses the target)")
	for _, s := range notOK {
		fmt.Fprintln(w, "ERRORS:", s)
	}
	return nil
}
