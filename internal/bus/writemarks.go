package bus

import (
	"context"
	"sync"
	"time"
)

// WriteMarks is read-your-writes by position. A producer marks the stream
// sequence its publish got with who wrote it (a user ID) and where (a room
// ID); the read model that serves reads reports the sequences it has
// applied; a read waits only until the read model has applied the marks of
// its keys: the caller's own writes, not every stream to drain. A read
// whose keys have no pending mark, the common case, does not wait and
// costs one map look-up per key, no round trip to NATS.
//
// Marks live in memory (after a restart nothing is pending) and are
// forgotten once applied; past maxPendingMarks per stream the oldest are
// forgotten unapplied, so a read model that stopped cannot make them grow
// without bound. A nil *WriteMarks marks nothing and never waits.
//
// One WriteMarks is shared by the producers and the read model of one
// process (setup builds it).
type WriteMarks struct {
	mu      sync.Mutex
	streams map[string]*markedStream
}

type markedStream struct {
	applied uint64
	last    map[string]uint64 // key -> highest sequence marked
	order   []mark            // marks in the order made, to forget the applied
	wake    chan struct{}     // closed when applied moves; nil while nobody waits
}

type mark struct {
	key string
	seq uint64
}

// EveryReader is the key of writes that concern readers the producer
// cannot name (a user's new keys concern everyone sharing a room with
// the user, which the user API does not know): every read waits for them.
const EveryReader = "*"

// maxPendingMarks bounds the unapplied marks kept per stream.
const maxPendingMarks = 100_000

// NewWriteMarks returns an empty WriteMarks.
func NewWriteMarks() *WriteMarks { return &WriteMarks{streams: map[string]*markedStream{}} }

func (w *WriteMarks) stream(name string) *markedStream {
	s := w.streams[name]
	if s == nil {
		s = &markedStream{last: map[string]uint64{}}
		w.streams[name] = s
	}
	return s
}

// Wrote marks seq of stream as written by or for each of keys. A zero seq
// (nothing published) marks nothing.
func (w *WriteMarks) Wrote(stream string, seq uint64, keys ...string) {
	if w == nil || seq == 0 || len(keys) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stream(stream)
	if seq <= s.applied {
		return
	}
	for _, k := range keys {
		if s.last[k] < seq {
			s.last[k] = seq
			s.order = append(s.order, mark{k, seq})
		}
	}
	if n := len(s.order) - maxPendingMarks; n > 0 {
		s.forget(n, ^uint64(0))
	}
}

// Applied reports that the read model has applied stream up to seq (and
// everything its reads depend on is in place).
func (w *WriteMarks) Applied(stream string, seq uint64) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stream(stream)
	if seq <= s.applied {
		return
	}
	s.applied = seq
	n := 0
	for n < len(s.order) && s.order[n].seq <= seq {
		n++
	}
	s.forget(n, seq)
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

// forget drops the first n marks of the order, and their keys' marks when
// they are at most upTo and no later mark replaced them.
func (s *markedStream) forget(n int, upTo uint64) {
	for _, m := range s.order[:n] {
		if v := s.last[m.key]; v == m.seq && v <= upTo {
			delete(s.last, m.key)
		}
	}
	s.order = s.order[n:]
	if len(s.order) == 0 {
		s.order = nil
	}
}

// Pending reports whether a mark of keys has not been applied yet.
func (w *WriteMarks) Pending(keys ...string) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, pending := w.pendingLocked(keys)
	return pending
}

// pendingLocked returns a channel closed when a stream with a pending mark
// of keys moves, and whether there is one.
func (w *WriteMarks) pendingLocked(keys []string) (<-chan struct{}, bool) {
	for _, s := range w.streams {
		for _, k := range keys {
			if s.last[k] > s.applied {
				if s.wake == nil {
					s.wake = make(chan struct{})
				}
				return s.wake, true
			}
		}
	}
	return nil, false
}

// Wait waits, at most limit, until every mark of keys has been applied. It
// returns false when the limit passed (or ctx ended) first.
func (w *WriteMarks) Wait(ctx context.Context, limit time.Duration, keys ...string) bool {
	if w == nil {
		return true
	}
	var timeout <-chan time.Time
	for {
		w.mu.Lock()
		wake, pending := w.pendingLocked(keys)
		w.mu.Unlock()
		if !pending {
			return true
		}
		if timeout == nil {
			t := time.NewTimer(limit)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wake:
		case <-timeout:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
