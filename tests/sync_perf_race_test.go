//go:build race

package tests

// syncPRace reports whether the race detector is on: it slows everything
// several times, so the sync performance tests then log their latencies
// instead of asserting them.
const syncPRace = true
