package roomserver

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// The configured cache sizes bound the caches, however many events, state
// keys and snapshots a room makes, and the room still works with tiny
// caches; sizes left at zero are the defaults.
func TestCacheSizesAreHonoured(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		sizes := CacheSizes{Events: 4, SnapshotEntries: 30, BlockEntries: 30, BlockIDs: 3, StateKeys: 5}
		h := newHarnessWith(t, db, sizes)
		alice := "@alice:" + testServer
		room := h.createRoom("10", alice, "public")
		for i := range 12 {
			bob := fmt.Sprintf("@bob%d:%s", i, testServer)
			h.mustSend(room, proto(bob, "m.room.member", sk(bob), map[string]any{"membership": "join"}))
			h.mustSend(room, proto(bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi"}))
		}
		r := h.rs
		if n := r.events.Len(); n == 0 || n > sizes.Events {
			t.Errorf("events cached %d, want 1..%d", n, sizes.Events)
		}
		if c := r.snapshots.Cost(); c == 0 || c > sizes.SnapshotEntries {
			t.Errorf("snapshot entries cached %d, want 1..%d", c, sizes.SnapshotEntries)
		}
		if c := r.blocks.Cost(); c > sizes.BlockEntries {
			t.Errorf("block entries cached %d, want at most %d", c, sizes.BlockEntries)
		}
		if n := r.blockNIDs.Len(); n > sizes.BlockIDs {
			t.Errorf("block IDs cached %d, want at most %d", n, sizes.BlockIDs)
		}
		if n, m := r.stateKeyNIDs.Len(), r.stateKeyNames.Len(); n == 0 || n > sizes.StateKeys || m > sizes.StateKeys {
			t.Errorf("state keys cached %d and %d, want 1..%d", n, m, sizes.StateKeys)
		}
		// Everything evicted is read back: the room's state is whole.
		all, err := r.QueryCurrentState(context.Background(), room)
		if err != nil {
			t.Fatal(err)
		}
		joined := 0
		for _, ev := range all {
			if m, err := ev.Membership(); err == nil && ev.Type() == "m.room.member" && m == "join" {
				joined++
			}
		}
		if joined != 13 {
			t.Fatalf("joined members %d, want 13", joined)
		}
	})
	if got := (CacheSizes{Events: 7}).orDefault(); got.Events != 7 || got.SnapshotEntries != DefaultCacheSizes.SnapshotEntries ||
		got.StateKeys != DefaultCacheSizes.StateKeys {
		t.Fatalf("orDefault = %+v", got)
	}
}
