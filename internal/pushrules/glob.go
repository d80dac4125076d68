package pushrules

import (
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// A glob is a compiled glob-style pattern: "*" matches any run of
// characters, "?" exactly one character, anything else itself, case
// insensitively (pattern and value compared in lower case). Matching uses
// no regular expression and does not allocate.
//
// The pattern is split at its stars into blocks; a block is literal text
// with "?" holes, of a fixed number of characters. Blocks between stars
// can be placed leftmost, so matching is a scan, not a backtracking
// search.
type glob struct {
	literal   bool   // no wildcards: lit is the whole pattern
	lit       string // lower-cased pattern, when literal
	startStar bool   // the pattern starts with "*"
	endStar   bool   // the pattern ends with "*"
	blocks    []block
}

// block is a run of a pattern between stars.
type block struct {
	parts []part
}

// part is literal text or a number of "?" holes.
type part struct {
	lit   string
	holes int
}

// compileGlob compiles a pattern.
func compileGlob(pattern string) *glob {
	lower := strings.ToLower(pattern)
	if !strings.ContainsAny(lower, "*?") {
		return &glob{literal: true, lit: lower}
	}
	g := &glob{}
	var cur block
	var lit strings.Builder
	flushLit := func() {
		if lit.Len() > 0 {
			cur.parts = append(cur.parts, part{lit: lit.String()})
			lit.Reset()
		}
	}
	for i, r := range lower {
		switch r {
		case '*':
			flushLit()
			if i == 0 {
				g.startStar = true
			}
			if len(cur.parts) > 0 {
				g.blocks = append(g.blocks, cur)
				cur = block{}
			}
			g.endStar = true
		case '?':
			flushLit()
			if n := len(cur.parts); n > 0 && cur.parts[n-1].lit == "" {
				cur.parts[n-1].holes++
			} else {
				cur.parts = append(cur.parts, part{holes: 1})
			}
			g.endStar = false
		default:
			lit.WriteRune(r)
			g.endStar = false
		}
	}
	flushLit()
	if len(cur.parts) > 0 {
		g.blocks = append(g.blocks, cur)
	}
	return g
}

// matchAt matches block b at byte offset p of s and returns the offset
// after it.
func (b *block) matchAt(s string, p int) (int, bool) {
	for _, pt := range b.parts {
		if pt.lit != "" {
			if !strings.HasPrefix(s[p:], pt.lit) {
				return 0, false
			}
			p += len(pt.lit)
			continue
		}
		for range pt.holes {
			if p >= len(s) {
				return 0, false
			}
			_, size := utf8.DecodeRuneInString(s[p:])
			p += size
		}
	}
	return p, true
}

// find returns the leftmost placement of block b in s at or after from.
func (b *block) find(s string, from int) (start, end int, ok bool) {
	first := b.parts[0].lit
	for from <= len(s) {
		if first != "" {
			i := strings.Index(s[from:], first)
			if i < 0 {
				return 0, 0, false
			}
			from += i
		}
		if e, ok := b.matchAt(s, from); ok {
			return from, e, true
		}
		if from >= len(s) {
			break
		}
		_, size := utf8.DecodeRuneInString(s[from:])
		from += size
	}
	return 0, 0, false
}

// runes is the number of characters a block matches.
func (b *block) runes() int {
	n := 0
	for _, pt := range b.parts {
		n += utf8.RuneCountInString(pt.lit) + pt.holes
	}
	return n
}

// matchWhole reports whether the glob matches all of s (lower case).
func (g *glob) matchWhole(s string) bool {
	if g.literal {
		return s == g.lit
	}
	blocks := g.blocks
	if len(blocks) == 0 { // only stars
		return true
	}
	pos := 0
	if !g.startStar {
		e, ok := blocks[0].matchAt(s, 0)
		if !ok {
			return false
		}
		if len(blocks) == 1 && !g.endStar {
			return e == len(s)
		}
		pos, blocks = e, blocks[1:]
	}
	limit := len(s)
	if !g.endStar {
		// The last block ends the value: it starts so many characters
		// before the end.
		last := &blocks[len(blocks)-1]
		q := len(s)
		for range last.runes() {
			if q <= pos {
				return false
			}
			_, size := utf8.DecodeLastRuneInString(s[:q])
			q -= size
		}
		if q < pos {
			return false
		}
		if e, ok := last.matchAt(s, q); !ok || e != len(s) {
			return false
		}
		limit, blocks = q, blocks[:len(blocks)-1]
	}
	_, ok := placeAll(s[:limit], pos, blocks)
	return ok
}

// placeAll places blocks one after the other, leftmost, in s from pos,
// and returns the offset after the last.
func placeAll(s string, pos int, blocks []block) (int, bool) {
	for i := range blocks {
		_, e, ok := blocks[i].find(s, pos)
		if !ok {
			return 0, false
		}
		pos = e
	}
	return pos, true
}

// isWordByte reports whether c is a word character: [A-Za-z0-9_].
func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// boundary reports whether byte offset i of s is a word boundary as
// content.body matching needs it: the start or end of the value, or next
// to a character not in [A-Za-z0-9_].
func boundary(s string, i int) bool {
	return i == 0 || i >= len(s) || !isWordByte(s[i-1]) || !isWordByte(s[i])
}

// matchWord reports whether the glob matches a substring of s (lower
// case) that starts and ends at a word boundary, as for content.body.
func (g *glob) matchWord(s string) bool {
	if g.literal {
		return indexWord(s, g.lit)
	}
	blocks := g.blocks
	if len(blocks) == 0 {
		return true
	}
	pos := 0
	if !g.startStar {
		// The first block starts at a boundary. With a star after it,
		// the leftmost such start is the best; without, each start fixes
		// the end.
		for from := 0; ; {
			st, e, ok := blocks[0].find(s, from)
			if !ok {
				return false
			}
			if boundary(s, st) {
				if len(blocks) == 1 && !g.endStar {
					if boundary(s, e) {
						return true
					}
				} else {
					pos = e
					break
				}
			}
			if st >= len(s) {
				return false
			}
			_, size := utf8.DecodeRuneInString(s[st:])
			from = st + size
		}
		blocks = blocks[1:]
	}
	if g.endStar || len(blocks) == 0 {
		_, ok := placeAll(s, pos, blocks)
		return ok
	}
	pos, ok := placeAll(s, pos, blocks[:len(blocks)-1])
	if !ok {
		return false
	}
	last := &blocks[len(blocks)-1]
	for from := pos; ; {
		st, e, ok := last.find(s, from)
		if !ok {
			return false
		}
		if boundary(s, e) {
			return true
		}
		if st >= len(s) {
			return false
		}
		_, size := utf8.DecodeRuneInString(s[st:])
		from = st + size
	}
}

// indexWord reports whether s (lower case) contains word, an already
// lower-cased literal, between word boundaries.
func indexWord(s, word string) bool {
	if word == "" {
		return true
	}
	for from := 0; from <= len(s)-len(word); {
		i := strings.Index(s[from:], word)
		if i < 0 {
			return false
		}
		i += from
		if boundary(s, i) && boundary(s, i+len(word)) {
			return true
		}
		from = i + 1
	}
	return false
}

// containsWordFold reports whether s (lower case) contains name, compared
// case-insensitively, between word boundaries. It does not allocate.
func containsWordFold(s, name string) bool {
	if name == "" {
		return false
	}
	// Short ASCII names (most of them) are lowered into a stack buffer
	// and found with strings.Index.
	var buf [32]byte
	if len(name) <= len(buf) {
		ascii := true
		for i := 0; i < len(name) && ascii; i++ {
			c := name[i]
			if c >= utf8.RuneSelf {
				ascii = false
			} else if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		if ascii {
			return indexWord(s, string(buf[:len(name)]))
		}
	}
	first, size := utf8.DecodeRuneInString(name)
	first = unicode.ToLower(first)
	rest := name[size:]
	for from := 0; from < len(s); {
		i := strings.IndexRune(s[from:], first)
		if i < 0 {
			return false
		}
		i += from
		_, fs := utf8.DecodeRuneInString(s[i:])
		if e, ok := hasPrefixFold(s, i+fs, rest); ok && boundary(s, i) && boundary(s, e) {
			return true
		}
		from = i + fs
	}
	return false
}

// hasPrefixFold matches name, lower-cased rune by rune, at offset p of s
// and returns the offset after it.
func hasPrefixFold(s string, p int, name string) (int, bool) {
	for _, r := range name {
		if p >= len(s) {
			return 0, false
		}
		c, size := utf8.DecodeRuneInString(s[p:])
		if c != unicode.ToLower(r) {
			return 0, false
		}
		p += size
	}
	return p, true
}

// memo is a bounded cache of values computed from a string, shared by
// every user's compiled rules (most users have the same default patterns
// and actions). It holds immutable values only, so sharing it changes no
// result; it is cleared when it grows past max, as values such as
// localpart patterns are unique to a user.
type memo[V any] struct {
	mu  sync.RWMutex
	m   map[string]V
	max int
}

func newMemo[V any](max int) *memo[V] { return &memo[V]{m: make(map[string]V), max: max} }

// get returns the value for key, computing it with compute on a miss.
func (c *memo[V]) get(key string, compute func(string) V) V {
	c.mu.RLock()
	v, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = compute(key)
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = v
	c.mu.Unlock()
	return v
}

// getBytes is get for a key in a byte slice, which is copied only on a
// miss.
func (c *memo[V]) getBytes(key []byte, compute func() V) V {
	c.mu.RLock()
	v, ok := c.m[string(key)]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = compute()
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[string(key)] = v
	c.mu.Unlock()
	return v
}

// sharedGlobs is the process-wide cache of compiled patterns.
var sharedGlobs = newMemo[*glob](4096)
