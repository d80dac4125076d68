package setup

import (
	"io"
	"log/slog"
	"os"

	"github.com/myelin-chat/myelin/config"
)

// NewLogger builds the process logger from the logging configuration,
// writing to w (stderr when nil).
func NewLogger(c config.Logging, w io.Writer) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
