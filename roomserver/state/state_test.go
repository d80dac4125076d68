package state

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func members(n int) Snapshot {
	var es []Entry
	es = append(es, Entry{Key{1, 0}, 1}, Entry{Key{2, 0}, 2}) // create, power levels
	for i := range n {
		es = append(es, Entry{Key{3, int64(100 + i)}, int64(1000 + i)})
	}
	return FromEntries(es)
}

func TestWithLookupDiff(t *testing.T) {
	s := members(5)
	if ev, ok := s.Lookup(Key{3, 102}); !ok || ev != 1002 {
		t.Fatalf("lookup = %d %v", ev, ok)
	}
	if _, ok := s.Lookup(Key{3, 99}); ok {
		t.Fatal("found a missing key")
	}
	n := s.With(Entry{Key{3, 102}, 5000}, Entry{Key{4, 0}, 6000})
	if len(n) != len(s)+1 {
		t.Fatalf("len %d", len(n))
	}
	if ev, _ := s.Lookup(Key{3, 102}); ev != 1002 {
		t.Fatal("With modified its receiver")
	}
	added, removed := Diff(s, n)
	want := []Entry{{Key{3, 102}, 5000}, {Key{4, 0}, 6000}}
	if !reflect.DeepEqual(added, want) || !reflect.DeepEqual(removed, []Entry{{Key{3, 102}, 1002}}) {
		t.Fatalf("diff added %v removed %v", added, removed)
	}
	if got := n.OfType(3); len(got) != 5 {
		t.Fatalf("OfType = %v", got)
	}
}

// Of several entries of one key, the last wins (the state after an event
// fetched to close a gap is the state before it followed by the event).
func TestFromEntriesLastWins(t *testing.T) {
	for range 20 {
		var es []Entry
		for i := range 40 {
			es = append(es, Entry{Key{int64(i % 3), 0}, int64(i)})
		}
		s := FromEntries(es)
		for typ, want := range []int64{39, 37, 38} {
			if ev, _ := s.Lookup(Key{int64(typ), 0}); ev != want {
				t.Fatalf("key %d = %d, want %d", typ, ev, want)
			}
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	s := members(300)
	got, err := Decode(s.Encode())
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := Decode([]byte{0xff}); err == nil {
		t.Fatal("corrupt block decoded")
	}
	nids := []int64{1, 300, 1 << 40}
	if got, err := DecodeNIDs(EncodeNIDs(nids)); err != nil || !reflect.DeepEqual(got, nids) {
		t.Fatalf("nids: %v %v", got, err)
	}
}

// Changing one member of a 10,000-member state rewrites one block; adding a
// member rewrites at most two.
func TestChunkingIsLocal(t *testing.T) {
	s := members(10000)
	blocks := s.Chunk()
	if n := len(blocks); n < 10000/BlockTarget/2 || n > 10000/BlockTarget*2 {
		t.Fatalf("%d blocks for 10002 entries", n)
	}
	hashes := map[string]bool{}
	total := 0
	for _, b := range blocks {
		hashes[string(Hash(b.Encode()))] = true
		total += len(b)
	}
	if total != len(s) {
		t.Fatalf("blocks hold %d entries, want %d", total, len(s))
	}
	changed := func(n Snapshot) int {
		c := 0
		for _, b := range n.Chunk() {
			if !hashes[string(Hash(b.Encode()))] {
				c++
			}
		}
		return c
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		k := Key{3, int64(100 + r.IntN(10000))}
		if c := changed(s.With(Entry{k, 99999})); c != 1 {
			t.Fatalf("changing one entry rewrote %d blocks", c)
		}
		if c := changed(s.With(Entry{Key{3, int64(20000 + r.IntN(10000))}, 99999})); c > 2 {
			t.Fatalf("adding one entry rewrote %d blocks", c)
		}
	}
}

func BenchmarkJoinInto10000(b *testing.B) {
	s := members(10000)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n := s.With(Entry{Key{3, int64(50000 + i)}, int64(i)})
		for _, blk := range n.Chunk() {
			_ = Hash(blk.Encode())
		}
	}
}
