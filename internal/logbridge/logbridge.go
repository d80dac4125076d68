// Package logbridge sends what libraries log through logrus (gomatrixserverlib
// and matrix-org/util use its global logger) to the process's slog logger. The
// command calls Logrus once at start, before building the server, so the
// bridge holds whatever the configuration (federation on or off) and no server
// mutates the global logger.
package logbridge

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// target is the logger logrus entries go to; nil until Logrus is called.
var target atomic.Pointer[slog.Logger]

// Logrus routes logrus's global logger to log: each entry becomes one slog
// record at debug level (gomatrixserverlib's warnings are about remote
// servers' mistakes, which Myelin reports itself where it handles them),
// with the entry's fields as attributes and from=gomatrixserverlib. A later
// call replaces the target rather than adding a second route.
func Logrus(log *slog.Logger) {
	target.Store(log)
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetFormatter(nullFormatter{})
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(hook{})
}

type hook struct{}

func (hook) Levels() []logrus.Level { return logrus.AllLevels }

func (hook) Fire(e *logrus.Entry) error {
	log := target.Load()
	if log == nil {
		return nil
	}
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if !log.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(e.Data)+2)
	attrs = append(attrs, slog.String("from", "gomatrixserverlib"), slog.String("logrus_level", e.Level.String()))
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	log.LogAttrs(ctx, slog.LevelDebug, e.Message, attrs...)
	return nil
}

// nullFormatter skips formatting: the hook already took the entry and the
// output is discarded.
type nullFormatter struct{}

func (nullFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }
