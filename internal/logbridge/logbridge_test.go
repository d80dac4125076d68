package logbridge

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/matrix-org/util"
	"github.com/sirupsen/logrus"
)

func TestLogrusGoesToSlog(t *testing.T) {
	var first, second bytes.Buffer
	Logrus(slog.New(slog.NewTextHandler(&first, &slog.HandlerOptions{Level: slog.LevelDebug})))
	// util.GetLogger is what gomatrixserverlib logs through.
	util.GetLogger(t.Context()).WithError(errors.New("bad signature")).Warn("Signature validation failed")
	out := first.String()
	for _, want := range []string{"level=DEBUG", `msg="Signature validation failed"`, "from=gomatrixserverlib", "logrus_level=warning", `error="bad signature"`} {
		if !strings.Contains(out, want) {
			t.Errorf("slog output lacks %s:\n%s", want, out)
		}
	}

	// A second call replaces the target instead of logging twice.
	Logrus(slog.New(slog.NewTextHandler(&second, &slog.HandlerOptions{Level: slog.LevelDebug})))
	first.Reset()
	logrus.Info("again")
	if first.Len() != 0 || strings.Count(second.String(), "msg=again") != 1 {
		t.Errorf("after the second call: first %q, second %q", first.String(), second.String())
	}
}
