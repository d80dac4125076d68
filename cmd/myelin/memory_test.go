package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// The binary runs with the soft memory limit of GOMEMLIMIT when
// memory_limit is 0 (the default), and with memory_limit when it is set,
// and says which in its log.
func TestMemoryLimitFromEnvironmentAndConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"GOMEMLIMIT=77MiB"}, "bytes=80740352 from=GOMEMLIMIT"},
		{[]string{"GOMEMLIMIT=77MiB", "MYELIN_MEMORY_LIMIT=64M"}, "bytes=67108864 from=memory_limit"},
	} {
		addr := testutil.FreeLoopbackAddr(t)
		p := startBinary(t, bin, t.TempDir(), addr, append(c.env, "MYELIN_LOGGING_LEVEL=info")...)
		p.stop(t, syscall.SIGTERM)
		if !strings.Contains(p.stderr.String(), "msg=\"memory limit\" "+c.want) {
			t.Errorf("%v: the log does not say %q:\n%s", c.env, c.want, p.stderr.String())
		}
	}
}
