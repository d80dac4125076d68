package eventrules

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestNextDepth(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{{0, 1}, {1, 2}, {MaxDepth - 1, MaxDepth}, {MaxDepth, MaxDepth}, {1 << 60, MaxDepth}, {-5, 1}} {
		if got := NextDepth(c.in); got != c.want {
			t.Errorf("NextDepth(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestCheckReceived(t *testing.T) {
	ids := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf(`"$e%d"`, i)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	ev := func(depth, prevs, auth string, extra string) string {
		return `{"type":"m.room.message","depth":` + depth + `,"prev_events":` + prevs + `,"auth_events":` + auth + extra + `}`
	}
	big := `,"content":{"body":"` + strings.Repeat("x", MaxPDUBytes) + `"}`
	bigUnsigned := `,"unsigned":{"x":"` + strings.Repeat("x", MaxPDUBytes) + `"}`
	for _, c := range []struct {
		name string
		json string
		ok   bool
	}{
		{"ordinary", ev("5", ids(1), ids(3), ""), true},
		{"greatest depth", ev("9007199254740991", ids(20), ids(10), ""), true},
		{"depth past 2^53-1", ev("9007199254740992", ids(1), ids(3), ""), false},
		{"depth past int64", ev("99999999999999999999", ids(1), ids(3), ""), false},
		{"negative depth", ev("-1", ids(1), ids(3), ""), false},
		{"fractional depth", ev("1.5", ids(1), ids(3), ""), false},
		{"exponent depth", ev("1e3", ids(1), ids(3), ""), false},
		{"string depth", ev(`"3"`, ids(1), ids(3), ""), false},
		{"no depth", `{"type":"m.room.message","prev_events":[],"auth_events":[]}`, false},
		{"21 prev events", ev("5", ids(21), ids(3), ""), false},
		{"11 auth events", ev("5", ids(1), ids(11), ""), false},
		{"too large", ev("5", ids(1), ids(3), big), false},
		{"large only by unsigned", ev("5", ids(1), ids(3), bigUnsigned), true},
	} {
		err := CheckReceived([]byte(c.json))
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestCheckPowerLevels(t *testing.T) {
	for _, c := range []struct {
		version string
		content string
		ok      bool
	}{
		{"10", `{"users":{"@a:b":100},"ban":50,"events":{"m.room.name":50},"notifications":{"room":50}}`, true},
		{"10", `{}`, true},
		{"10", `{"users":null}`, false},
		{"11", `{"users":[]}`, false},
		{"12", `{"users":{"@a:b":null}}`, false},
		{"10", `{"ban":null}`, false},
		{"10", `{"ban":"50"}`, false},
		{"10", `{"ban":50.0}`, false},
		{"10", `{"invite":true}`, false},
		{"10", `{"events":null}`, false},
		{"10", `{"events":{"m.room.name":"50"}}`, false},
		{"10", `{"notifications":{"room":1.5}}`, false},
		{"10", `{"notifications":7}`, false},
		{"10", `[]`, false},
		// Earlier room versions accept strings (and gomatrixserverlib
		// parses them).
		{"9", `{"ban":"50","users":null}`, true},
		{"1", `{"users":{"@a:b":"100"}}`, true},
	} {
		err := CheckPowerLevels(gomatrixserverlib.RoomVersion(c.version), []byte(c.content))
		if (err == nil) != c.ok {
			t.Errorf("v%s %s: %v", c.version, c.content, err)
		}
		var ve *gomatrixserverlib.EventValidationError
		if err != nil && (!errors.As(err, &ve) || ve.Code != 400) {
			t.Errorf("v%s %s: error %T %v, want an EventValidationError of code 400", c.version, c.content, err, err)
		}
	}
}
