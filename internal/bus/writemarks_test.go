package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
)

// A read waits only for the marks of its keys: none pending returns at
// once, a pending one until the read model applies it, and the limit
// ends a wait for a mark never applied.
func TestWriteMarksWaitForOwnWrites(t *testing.T) {
	ctx := context.Background()
	w := bus.NewWriteMarks()
	if !w.Wait(ctx, time.Hour, "@a:x") {
		t.Fatal("a read without writes waited")
	}
	w.Wrote("RoomOutput", 5, "@a:x", "!r:x")
	w.Wrote("UserOutput", 3, "@b:x")
	if !w.Pending("@a:x") || !w.Pending("!r:x") || w.Pending("@c:x") {
		t.Fatal("pending marks wrong")
	}
	// @c's read does not wait for @a's write.
	start := time.Now()
	if !w.Wait(ctx, time.Hour, "@c:x") || time.Since(start) > 100*time.Millisecond {
		t.Fatal("a read waited for another user's write")
	}
	done := make(chan bool, 1)
	go func() { done <- w.Wait(ctx, 10*time.Second, "@a:x") }()
	w.Applied("RoomOutput", 4)
	select {
	case <-done:
		t.Fatal("the wait ended before its mark was applied")
	case <-time.After(50 * time.Millisecond):
	}
	w.Applied("RoomOutput", 5)
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("the wait timed out")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end when its mark was applied")
	}
	if w.Pending("@a:x", "!r:x") {
		t.Fatal("applied marks still pending")
	}
	// Another stream's mark is waited for; the limit ends the wait.
	if w.Wait(ctx, 50*time.Millisecond, "@b:x") {
		t.Fatal("a wait for an unapplied mark succeeded")
	}
	// A mark at or below what was applied is no wait.
	w.Wrote("RoomOutput", 2, "@d:x")
	if w.Pending("@d:x") {
		t.Fatal("a mark already applied is pending")
	}
	// A nil WriteMarks never waits.
	var none *bus.WriteMarks
	none.Wrote("RoomOutput", 9, "@a:x")
	if !none.Wait(ctx, time.Hour, "@a:x") {
		t.Fatal("nil marks waited")
	}
}

// A later mark of a key survives the application of an earlier one.
func TestWriteMarksKeepLaterMarks(t *testing.T) {
	w := bus.NewWriteMarks()
	w.Wrote("S", 1, "k")
	w.Wrote("S", 2, "other")
	w.Wrote("S", 3, "k")
	w.Applied("S", 2)
	if !w.Pending("k") || w.Pending("other") {
		t.Fatal("mark 3 of k was forgotten with mark 1")
	}
	w.Applied("S", 3)
	if w.Pending("k") {
		t.Fatal("k still pending")
	}
}
