//go:build !race

package tests

// syncPRace reports whether the race detector is on (see
// sync_perf_race_test.go).
const syncPRace = false
