package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Figure is one measured number, with the target of issue 13 when it has
// one (">=1500" or "<20").
type Figure struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target,omitempty"`
	// Pass is whether Value meets Target (absent without a target).
	Pass *bool `json:"pass,omitempty"`
}

// Result is the outcome of one scenario. A scenario with errors is not OK
// and its figures must not be trusted.
type Result struct {
	Scenario string        `json:"scenario"`
	OK       bool          `json:"ok"`
	Errors   int           `json:"errors"`
	Messages []string      `json:"error_messages,omitempty"`
	Figures  []Figure      `json:"figures"`
	Duration time.Duration `json:"duration_ns"`
	mu       sync.Mutex
}

func newResult(name string) *Result { return &Result{Scenario: name, OK: true} }

// fail records an error; only the first few messages are kept.
func (r *Result) fail(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.OK = false
	r.Errors++
	if len(r.Messages) < 5 {
		r.Messages = append(r.Messages, err.Error())
	}
}

func (r *Result) failf(format string, args ...any) { r.fail(fmt.Errorf(format, args...)) }

// add records a figure; target is "" or an operator (>=, >, <=, <)
// followed by a number.
func (r *Result) add(name string, v float64, unit, target string) {
	f := Figure{Name: name, Value: v, Unit: unit, Target: target}
	if target != "" {
		p := meets(v, target)
		f.Pass = &p
	}
	r.mu.Lock()
	r.Figures = append(r.Figures, f)
	r.mu.Unlock()
}

// addLatencies adds p50 and p99 (and max) of ds in milliseconds.
func (r *Result) addLatencies(prefix string, ds []time.Duration, p50Target, p99Target string) {
	l := latencies(ds)
	r.add(prefix+"_p50", l.pct(50), "ms", p50Target)
	r.add(prefix+"_p99", l.pct(99), "ms", p99Target)
	r.add(prefix+"_max", l.pct(100), "ms", "")
}

func (r *Result) figure(name string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f, true
		}
	}
	return Figure{}, false
}

func meets(v float64, target string) bool {
	for _, op := range []string{">=", "<=", ">", "<"} {
		if rest, ok := strings.CutPrefix(target, op); ok {
			t, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				return false
			}
			switch op {
			case ">=":
				return v >= t
			case "<=":
				return v <= t
			case ">":
				return v > t
			default:
				return v < t
			}
		}
	}
	return false
}

// latencies are sorted durations, in milliseconds.
type latencySet []float64

func latencies(ds []time.Duration) latencySet {
	l := make(latencySet, len(ds))
	for i, d := range ds {
		l[i] = float64(d) / float64(time.Millisecond)
	}
	sort.Float64s(l)
	return l
}

// pct is the nearest-rank percentile p (0 < p <= 100); NaN when empty.
func (l latencySet) pct(p float64) float64 {
	if len(l) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(l)))) - 1
	return l[max(0, min(i, len(l)-1))]
}

// collector gathers durations from many goroutines.
type collector struct {
	mu sync.Mutex
	ds []time.Duration
}

func (c *collector) add(d time.Duration) {
	c.mu.Lock()
	c.ds = append(c.ds, d)
	c.mu.Unlock()
}

func (c *collector) all() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.ds...)
}

// proc reads the server process's figures from /proc/<pid>. A zero pid
// (the server's process is not known) reads nothing.
type proc struct{ pid int }

// memory is VmRSS and VmHWM (peak RSS) in kB.
type memory struct {
	Stage string `json:"stage"`
	RSSKB int64  `json:"rss_kb"`
	HWMKB int64  `json:"hwm_kb"`
}

func (p proc) memory(stage string) (memory, error) {
	m := memory{Stage: stage}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSSKB
		case "VmHWM":
			dst = &m.HWMKB
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status %s: %w", p.pid, k, err)
		}
		*dst = n
	}
	if m.RSSKB == 0 {
		return m, fmt.Errorf("/proc/%d/status has no VmRSS", p.pid)
	}
	return m, sc.Err()
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpu returns the process's user plus system CPU time so far.
func (p proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain
	// spaces; utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", p.pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", p.pid)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", p.pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuIfKnown is cpu, or zero without a process ID.
func (p proc) cpuIfKnown() (time.Duration, error) {
	if p.pid == 0 {
		return 0, nil
	}
	return p.cpu()
}
