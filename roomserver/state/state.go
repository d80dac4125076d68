// Package state is the shape of room state in storage: a snapshot is a set
// of (event type, state key) -> event entries, all as numeric IDs, kept
// sorted by key and cut into blocks at content-defined boundaries.
//
// A boundary falls after an entry whose key hashes to 0 modulo BlockTarget,
// so it depends only on the keys: changing the event of one key rewrites the
// one block that holds it, and adding or removing a key touches at most two.
// Blocks are deduplicated by hash, so a new state event in a room with 10,000
// members writes one small block and a list of block IDs, not 10,000 rows,
// and events that do not change state reuse their parent's snapshot as is.
package state

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
)

// Key is a state key tuple as numeric IDs.
type Key struct {
	Type     int64
	StateKey int64
}

// Entry maps a key to the event that holds it.
type Entry struct {
	Key
	Event int64
}

// Less orders keys by type, then state key.
func (k Key) Less(o Key) bool {
	if k.Type != o.Type {
		return k.Type < o.Type
	}
	return k.StateKey < o.StateKey
}

func cmpKey(a, b Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Snapshot is a whole state, sorted by key, one entry per key. Snapshots
// are shared between callers and caches: never modify one in place.
type Snapshot []Entry

// Lookup returns the event holding k.
func (s Snapshot) Lookup(k Key) (int64, bool) {
	i, ok := slices.BinarySearchFunc(s, k, func(e Entry, k Key) int { return cmpKey(e.Key, k) })
	if !ok {
		return 0, false
	}
	return s[i].Event, true
}

// OfType returns the entries of one event type.
func (s Snapshot) OfType(typ int64) Snapshot {
	lo, _ := slices.BinarySearchFunc(s, Key{Type: typ}, func(e Entry, k Key) int { return cmpKey(e.Key, k) })
	hi := lo
	for hi < len(s) && s[hi].Type == typ {
		hi++
	}
	return s[lo:hi]
}

// With returns a new snapshot with the entries set (replacing the events of
// keys already present; of entries of one key in set, the last wins).
func (s Snapshot) With(set ...Entry) Snapshot {
	if len(set) == 0 {
		return s
	}
	add := slices.Clone(set)
	slices.SortStableFunc(add, func(a, b Entry) int { return cmpKey(a.Key, b.Key) })
	// Keep the last entry of each key.
	n := 0
	for i := range add {
		if i+1 < len(add) && add[i+1].Key == add[i].Key {
			continue
		}
		add[n] = add[i]
		n++
	}
	add = add[:n]
	out := make(Snapshot, 0, len(s)+len(add))
	i, j := 0, 0
	for i < len(s) || j < len(add) {
		switch {
		case j == len(add) || (i < len(s) && s[i].Key.Less(add[j].Key)):
			out = append(out, s[i])
			i++
		case i == len(s) || add[j].Key.Less(s[i].Key):
			out = append(out, add[j])
			j++
		default:
			out = append(out, add[j])
			i++
			j++
		}
	}
	return out
}

// FromEntries builds a snapshot from unsorted entries (the last entry of a
// key wins).
func FromEntries(entries []Entry) Snapshot {
	var s Snapshot
	return s.With(entries...)
}

// Diff returns the entries of newer that older lacks (added) and the
// entries of older that newer lacks or replaces (removed).
func Diff(older, newer Snapshot) (added, removed []Entry) {
	i, j := 0, 0
	for i < len(older) || j < len(newer) {
		switch {
		case j == len(newer) || (i < len(older) && older[i].Key.Less(newer[j].Key)):
			removed = append(removed, older[i])
			i++
		case i == len(older) || newer[j].Key.Less(older[i].Key):
			added = append(added, newer[j])
			j++
		default:
			if older[i].Event != newer[j].Event {
				removed = append(removed, older[i])
				added = append(added, newer[j])
			}
			i++
			j++
		}
	}
	return added, removed
}

// BlockTarget is the average number of entries in a block.
const BlockTarget = 32

// isBoundary reports whether a block ends after the entry with key k.
func isBoundary(k Key) bool {
	// A cheap 64-bit mix of the key (splitmix64 finaliser).
	x := uint64(k.Type)*0x9e3779b97f4a7c15 ^ uint64(k.StateKey)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x%BlockTarget == 0
}

// Chunk cuts a snapshot into blocks at content-defined boundaries.
func (s Snapshot) Chunk() []Snapshot {
	var blocks []Snapshot
	start := 0
	for i, e := range s {
		if isBoundary(e.Key) {
			blocks = append(blocks, s[start:i+1])
			start = i + 1
		}
	}
	if start < len(s) {
		blocks = append(blocks, s[start:])
	}
	return blocks
}

// Encode writes entries as unsigned varints: type, state key, event. Keys
// are sorted, so types are delta-encoded against the previous entry.
func (s Snapshot) Encode() []byte {
	b := make([]byte, 0, len(s)*8)
	var prevType int64
	for _, e := range s {
		b = binary.AppendUvarint(b, uint64(e.Type-prevType))
		b = binary.AppendUvarint(b, uint64(e.StateKey))
		b = binary.AppendUvarint(b, uint64(e.Event))
		prevType = e.Type
	}
	return b
}

// Decode reads what Encode wrote.
func Decode(b []byte) (Snapshot, error) {
	s := make(Snapshot, 0, len(b)/6)
	var typ int64
	for len(b) > 0 {
		var vals [3]uint64
		for i := range vals {
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errors.New("state: corrupt block")
			}
			vals[i], b = v, b[n:]
		}
		typ += int64(vals[0])
		s = append(s, Entry{Key{typ, int64(vals[1])}, int64(vals[2])})
	}
	return s, nil
}

// Hash identifies encoded content for deduplication.
func Hash(encoded []byte) []byte {
	sum := sha256.Sum256(encoded)
	return sum[:16]
}

// EncodeNIDs writes a list of numeric IDs (the blocks of a snapshot).
func EncodeNIDs(nids []int64) []byte {
	b := make([]byte, 0, len(nids)*4)
	for _, n := range nids {
		b = binary.AppendUvarint(b, uint64(n))
	}
	return b
}

// DecodeNIDs reads what EncodeNIDs wrote.
func DecodeNIDs(b []byte) ([]int64, error) {
	var out []int64
	for len(b) > 0 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("state: corrupt ID list")
		}
		out = append(out, int64(v))
		b = b[n:]
	}
	return out, nil
}
