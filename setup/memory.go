package setup

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/myelin-chat/myelin/config"
)

// ApplyMemoryLimit sets the Go runtime's soft memory limit from
// memory_limit, which overrides GOMEMLIMIT; memory_limit 0 leaves the
// runtime's own setting (GOMEMLIMIT when set, else none). It logs the limit
// in force and returns it in bytes (math.MaxInt64: none). It changes the
// whole process, so only the binary calls it, once, before setup.New.
func ApplyMemoryLimit(cfg *config.Config, log *slog.Logger) int64 {
	source := "none"
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
		source = "memory_limit"
	} else if v := os.Getenv("GOMEMLIMIT"); v != "" && v != "off" {
		source = "GOMEMLIMIT"
	}
	limit := debug.SetMemoryLimit(-1)
	if limit == math.MaxInt64 {
		log.Info("no memory limit (set memory_limit or GOMEMLIMIT to give the garbage collector one)")
	} else {
		log.Info("memory limit", slog.Int64("bytes", limit), slog.String("from", source))
	}
	return limit
}
