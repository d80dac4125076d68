package pushrules

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestGlobWhole(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		// The spec's example: content.topic against lunc?*.
		{"lunc?*", "Lunch plans", true},
		{"lunc?*", "LUNCH", true},
		{"lunc?*", " lunch", false},
		{"lunc?*", "lunc", false},
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "M.Room.Message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.room.message", "m_room_message", false}, // "." is literal
		{"", "", true},
		{"", "x", false},
		{"*", "", true},
		{"*", "anything at all", true},
		{"?", "", false},
		{"?", "é", true},
		{"??", "é", false},
		{"a*b", "ab", true},
		{"a*b", "axxb", true},
		{"a*b", "axxbc", false},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acb", false},
		{"*ab", "aab", true},
		{"*a?b", "xaxb", true},
		{"*a?b", "ab", false},
		{"?*?", "a", false},
		{"?*?", "ab", true},
		{"**a**", "bab", true},
		{"ÉCOLE*", "école du soir", true},
		{"a?c", "aÄc", true},
	}
	for _, tt := range tests {
		g := compileGlob(tt.pattern)
		if got := g.matchWhole(strings.ToLower(tt.value)); got != tt.want {
			t.Errorf("%q whole %q: %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

func TestGlobWord(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		// The spec's example: content.body against ex*ple.
		{"ex*ple", "An example event.", true},
		{"ex*ple", "exple", true},
		{"ex*ple", "An exciting triple-whammy", true},
		{"ex*ple", "An exciting triples", false},
		{"ex*ple", "Anexample", false},
		{"alice", "hello alice!", true},
		{"alice", "Alice", true},
		{"alice", "malice", false},
		{"alice", "alice_x", false},
		{"alice", "alice2", false},
		{"alice", "malice alice", true},
		{"alice", "(alice)", true},
		{"@room", "hey @room", true},
		{"@room", "@room!", true},
		{"@room", "@roomy", false},
		{"@room", "foo@room", true}, // the substring starts with a non-word character
		{"cake*lie", "the cake is a lie", true},
		{"cake*lie", "the cake is a lies", false},
		{"cake*lie", "the cake is a lie, a lie", true},
		{"*cake", "pancake", true},
		{"cake*", "cakes", true},
		{"c?ke", "a cake", true},
		{"c?ke", "a ccake", false},
		{"", "", true},
		{"x", "", false},
		{"ab?", "xab", false},
		{"ab?", "ab", false},
		{"ab?", "abc def", true},
		{"a*c", "abc ac", true},
		{"a*c", "ab cd", false},
		{"a*c", "ab c", true},
	}
	for _, tt := range tests {
		g := compileGlob(tt.pattern)
		if got := g.matchWord(strings.ToLower(tt.value)); got != tt.want {
			t.Errorf("%q word %q: %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

func TestContainsWordFold(t *testing.T) {
	tests := []struct {
		name, body string
		want       bool
	}{
		{"Alice", "hi alice, how are you", true},
		{"Alice", "hi ALICE", true},
		{"Alice", "malice", false},
		{"Alice Smith", "ping alice smith!", true},
		{"Ärger", "viel ärger heute", true},
		{"Bob!", "bob!s", true},
		{"", "anything", false},
		{"x", "", false},
	}
	for _, tt := range tests {
		if got := containsWordFold(strings.ToLower(tt.body), tt.name); got != tt.want {
			t.Errorf("%q in %q: %v, want %v", tt.name, tt.body, got, tt.want)
		}
	}
}

// refRegexp builds the regular expression Synapse uses for a glob (with
// ASCII word boundaries, as RE2's \b and \W are).
func refRegexp(pattern string, word bool) (*regexp.Regexp, error) {
	var b strings.Builder
	for i := 0; i < len(pattern); {
		r, size := utf8.DecodeRuneInString(pattern[i:])
		if r != '*' && r != '?' {
			b.WriteString(regexp.QuoteMeta(string(r)))
			i += size
			continue
		}
		q, star := 0, false
		for i < len(pattern) && (pattern[i] == '*' || pattern[i] == '?') {
			if pattern[i] == '?' {
				q++
			} else {
				star = true
			}
			i++
		}
		if star {
			b.WriteString(".{" + strconv.Itoa(q) + ",}")
		} else {
			b.WriteString(".{" + strconv.Itoa(q) + "}")
		}
	}
	if word {
		return regexp.Compile(`(?s)(?:^|\b|\W)` + b.String() + `(?:\b|\W|$)`)
	}
	return regexp.Compile(`(?s)^` + b.String() + `$`)
}

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"lunc?*", "lunch plans"}, {"ex*ple", "an exciting triple-whammy"}, {"a*b?c", "xa bxc"},
		{"*", ""}, {"?", "é"}, {"@room", "foo@room"}, {"**?*", "ab"}, {"a?*?b", "a__b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(value) || len(pattern) > 200 {
			return
		}
		pattern, value = strings.ToLower(pattern), strings.ToLower(value)
		g := compileGlob(pattern)
		for _, word := range []bool{false, true} {
			var got bool
			if word {
				got = g.matchWord(value)
			} else {
				got = g.matchWhole(value)
			}
			re, err := refRegexp(pattern, word)
			if err != nil {
				return // e.g. a repeat count beyond RE2's limit
			}
			if want := re.MatchString(value); got != want {
				t.Fatalf("%q on %q (word %v): %v, regexp says %v", pattern, value, word, got, want)
			}
		}
	})
}

func TestMemo(t *testing.T) {
	m := newMemo[*glob](2)
	calls := 0
	compile := func(p string) *glob { calls++; return compileGlob(p) }
	a := m.get("a*", compile)
	if m.get("a*", compile) != a || calls != 1 {
		t.Errorf("no hit: %d compiles", calls)
	}
	m.get("b", compile)
	m.get("c", compile) // past max: cleared, then added
	if len(m.m) != 1 || calls != 3 {
		t.Errorf("size %d after %d compiles", len(m.m), calls)
	}
	if g := m.getBytes([]byte("a*"), func() *glob { calls++; return compileGlob("a*") }); !g.matchWhole("abc") || calls != 4 {
		t.Errorf("getBytes: %d compiles", calls)
	}
}

// TestGlobLongValues checks that matching stays a scan on long values
// that almost match (an event body is at most 64 KiB).
func TestGlobLongValues(t *testing.T) {
	long := strings.Repeat("a", 65000)
	spaced := strings.Repeat("a ", 32500)
	for _, p := range []string{"a*b", "*a*a*a*b", "?*b", "a*?b", "aaaaaaaaaaaaaaaaaaaab", "*a"} {
		g := compileGlob(p)
		for _, v := range []string{long, spaced} {
			deadline := time.Now().Add(time.Second)
			g.matchWhole(v)
			g.matchWord(v)
			if time.Now().After(deadline) {
				t.Errorf("%q on %d bytes took over a second", p, len(v))
			}
		}
	}
}
