package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// scripts/bench.sh builds the binary and the driver, runs fresh servers
// (-n 2) through a few tiny scenarios, stops them, and writes the figures
// of each run and a summary.
func TestBenchScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	tiny := []string{"--", "-send-users", "2", "-send-msgs", "3", "-sync-rooms", "2", "-sync-events", "2",
		"-sync-runs", "1", "-idle", "10ms"}
	t.Run("sqlite", func(t *testing.T) {
		out := t.TempDir()
		output := runScript(t, append([]string{"-n", "2", "-s", "send,initialsync,memory", "-l", "script-test", "-o", out}, tiny...)...)
		for _, run := range []string{"run1", "run2"} {
			rep := readFigures(t, filepath.Join(out, run, "figures.json"))
			if rep.Label != "script-test" || len(rep.Results) != 3 || !rep.OK() {
				t.Errorf("%s: label %q, %d results, ok %v", run, rep.Label, len(rep.Results), rep.OK())
			}
			for _, f := range []string{"table.txt", "server.log", "heap-start.pb.gz", "heap-after_idle.pb.gz"} {
				if _, err := os.Stat(filepath.Join(out, run, f)); err != nil {
					t.Errorf("%s: %v", run, err)
				}
			}
			if _, err := os.Stat(filepath.Join(out, run, "data")); !os.IsNotExist(err) {
				t.Errorf("%s: the data directory was not deleted (%v)", run, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(out, "summary.txt")); err != nil || !strings.Contains(string(b), "run 2") {
			t.Errorf("summary.txt: %v\n%s", err, b)
		}
		checkStopped(t, output)
	})
	t.Run("postgres", func(t *testing.T) {
		url := os.Getenv(sqltest.PostgresEnv)
		if url == "" {
			t.Skip(sqltest.PostgresEnv + " not set")
		}
		if _, err := exec.LookPath("psql"); err != nil {
			t.Skip("no psql to create the database with")
		}
		out := t.TempDir()
		output := runScript(t, append([]string{"--postgres", url, "-s", "send", "-o", out}, tiny...)...)
		if rep := readFigures(t, filepath.Join(out, "run1", "figures.json")); !rep.OK() {
			t.Errorf("not ok:\n%s", output)
		}
		if !strings.Contains(output, "(PostgreSQL myelin_bench_") {
			t.Errorf("the run did not use PostgreSQL:\n%s", output)
		}
		checkStopped(t, output)
	})
}

func runScript(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"../../scripts/bench.sh"}, args...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench.sh %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

func readFigures(t *testing.T, path string) *Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &rep
}

// checkStopped checks that the servers the script started have exited.
func checkStopped(t *testing.T, output string) {
	t.Helper()
	ms := regexp.MustCompile(`server pid (\d+)`).FindAllStringSubmatch(output, -1)
	if len(ms) == 0 {
		t.Fatalf("no server pid in the output:\n%s", output)
	}
	for _, m := range ms {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("server %d is still running", pid)
		}
	}
}
