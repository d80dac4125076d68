package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// forEachStore runs body on a freshly migrated roomserver database of every
// engine.
func forEachStore(t *testing.T, body func(t *testing.T, ctx context.Context, s *storage.Storage)) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := storage.New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		// Migrating twice is a no-op.
		if _, err := storage.New(ctx, db); err != nil {
			t.Fatalf("second migration: %v", err)
		}
		body(t, ctx, s)
	})
}

// inTx runs fn in a write transaction and fails the test on error.
func inTx(t *testing.T, ctx context.Context, s *storage.Storage, fn func(tx *sqlutil.Tx) error) {
	t.Helper()
	if err := s.WithTx(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, ctx context.Context, s *storage.Storage, table string) int64 {
	t.Helper()
	var n int64
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRooms(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		var a, b int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			if a, err = storage.InsertRoom(ctx, tx, "!a:test", "10"); err != nil {
				return err
			}
			b, err = storage.InsertRoom(ctx, tx, "!b:test", "12")
			return err
		})
		if a <= 0 || b <= 0 || a == b {
			t.Fatalf("room NIDs %d %d", a, b)
		}
		err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			_, err := storage.InsertRoom(ctx, tx, "!a:test", "11")
			return err
		})
		if !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second insert: %v, want ErrExists", err)
		}

		r, err := storage.SelectRoom(ctx, s.DB(), "!a:test")
		if err != nil {
			t.Fatal(err)
		}
		if r.NID != a || r.RoomID != "!a:test" || r.Version != "10" || r.SnapshotNID != 0 || len(r.LatestNIDs) != 0 || r.JoinedMembers != 0 {
			t.Fatalf("new room %+v", r)
		}

		want := storage.Room{NID: a, SnapshotNID: 77, LatestNIDs: []int64{3, 300, 1 << 40}, JoinedMembers: 12}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error { return storage.UpdateRoom(ctx, tx, &want) })
		for _, get := range []func() (*storage.Room, error){
			func() (*storage.Room, error) { return storage.SelectRoom(ctx, s.DB(), "!a:test") },
			func() (*storage.Room, error) { return storage.SelectRoomByNID(ctx, s.DB(), a) },
		} {
			r, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if r.NID != a || r.RoomID != "!a:test" || r.Version != "10" || r.SnapshotNID != 77 ||
				!slices.Equal(r.LatestNIDs, want.LatestNIDs) || r.JoinedMembers != 12 {
				t.Fatalf("after update %+v", r)
			}
		}
		// The other room is untouched.
		if r, err := storage.SelectRoom(ctx, s.DB(), "!b:test"); err != nil || r.SnapshotNID != 0 || r.Version != "12" {
			t.Fatalf("other room %+v %v", r, err)
		}
		if _, err := storage.SelectRoom(ctx, s.DB(), "!nope:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown room: %v", err)
		}
		if _, err := storage.SelectRoomByNID(ctx, s.DB(), b+100); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown room NID: %v", err)
		}
		ids, err := storage.SelectRoomIDs(ctx, s.DB(), []int64{a, b, b + 100})
		if err != nil || len(ids) != 2 || ids[a] != "!a:test" || ids[b] != "!b:test" {
			t.Fatalf("room IDs %v %v", ids, err)
		}
		if ids, err := storage.SelectRoomIDs(ctx, s.DB(), nil); err != nil || len(ids) != 0 {
			t.Fatalf("no room IDs: %v %v", ids, err)
		}
	})
}

func TestTypeAndStateKeyNIDs(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		// Outside a transaction nothing is created.
		m, err := storage.TypeNIDs(ctx, s.DB(), []string{"m.room.member"}, false)
		if err != nil || len(m) != 0 {
			t.Fatalf("lookup without create: %v %v", m, err)
		}
		types := []string{"m.room.member", "m.room.name", "m.room.member"}
		var first map[string]int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			first, err = storage.TypeNIDs(ctx, tx, types, true)
			return err
		})
		if len(first) != 2 || first["m.room.member"] <= 0 || first["m.room.name"] <= 0 || first["m.room.member"] == first["m.room.name"] {
			t.Fatalf("created type NIDs %v", first)
		}
		// Idempotent, and a new type next to known ones gets a new NID.
		var again map[string]int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			again, err = storage.TypeNIDs(ctx, tx, []string{"m.room.name", "m.room.topic", "m.room.member"}, true)
			return err
		})
		if again["m.room.member"] != first["m.room.member"] || again["m.room.name"] != first["m.room.name"] ||
			again["m.room.topic"] <= 0 || again["m.room.topic"] == first["m.room.member"] || again["m.room.topic"] == first["m.room.name"] {
			t.Fatalf("second lookup %v, first %v", again, first)
		}
		if n := count(t, ctx, s, "rs_event_types"); n != 3 {
			t.Fatalf("%d type rows, want 3", n)
		}
		read, err := storage.TypeNIDs(ctx, s.DB(), []string{"m.room.topic", "m.unknown"}, false)
		if err != nil || len(read) != 1 || read["m.room.topic"] != again["m.room.topic"] {
			t.Fatalf("read-only lookup %v %v", read, err)
		}
		names, err := storage.TypeNames(ctx, s.DB(), []int64{again["m.room.member"], again["m.room.topic"], 9999})
		if err != nil || len(names) != 2 || names[again["m.room.member"]] != "m.room.member" || names[again["m.room.topic"]] != "m.room.topic" {
			t.Fatalf("type names %v %v", names, err)
		}

		// State keys, including the empty one, in more than one batch.
		keys := []string{"", "@alice:test"}
		for i := range 600 {
			keys = append(keys, fmt.Sprintf("@u%d:test", i))
		}
		var kn map[string]int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			kn, err = storage.StateKeyNIDs(ctx, tx, keys, true)
			return err
		})
		if len(kn) != len(keys) {
			t.Fatalf("%d state key NIDs for %d keys", len(kn), len(keys))
		}
		seen := map[int64]bool{}
		for _, n := range kn {
			if n <= 0 || seen[n] {
				t.Fatalf("state key NID %d zero or reused", n)
			}
			seen[n] = true
		}
		var kn2 map[string]int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			kn2, err = storage.StateKeyNIDs(ctx, tx, keys, true)
			return err
		})
		for k, n := range kn {
			if kn2[k] != n {
				t.Fatalf("state key %q: %d then %d", k, n, kn2[k])
			}
		}
		if n := count(t, ctx, s, "rs_state_keys"); n != int64(len(keys)) {
			t.Fatalf("%d state key rows, want %d", n, len(keys))
		}
		nids := make([]int64, 0, len(kn))
		for _, n := range kn {
			nids = append(nids, n)
		}
		back, err := storage.StateKeyNames(ctx, s.DB(), nids)
		if err != nil || len(back) != len(keys) {
			t.Fatalf("state key names: %d, %v", len(back), err)
		}
		for k, n := range kn {
			if back[n] != k {
				t.Fatalf("state key %d named %q, want %q", n, back[n], k)
			}
		}
	})
}

func event(roomNID int64, id string, typeNID, keyNID int64) *storage.Event {
	return &storage.Event{RoomNID: roomNID, EventID: id, TypeNID: typeNID, StateKeyNID: keyNID, Depth: 3, Kind: storage.KindNormal,
		StateBefore: 4, StateAfter: 5, Sender: "@alice:test", OriginTS: 1700000000123, JSON: []byte(`{"event_id":"` + id + `"}`)}
}

func TestEvents(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		e1 := event(1, "$one", 2, 3)
		e2 := event(1, "$two", 4, 0)
		e2.Kind, e2.SoftFailed, e2.Redacted, e2.Depth = storage.KindRejected, true, true, 1<<40
		e3 := event(2, "$three", 4, 0)
		e3.Kind = storage.KindOutlier
		var n1, n2, n3 int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			if n1, err = storage.InsertEvent(ctx, tx, e1); err != nil {
				return err
			}
			if n2, err = storage.InsertEvent(ctx, tx, e2); err != nil {
				return err
			}
			n3, err = storage.InsertEvent(ctx, tx, e3)
			return err
		})
		if n1 <= 0 || n2 <= n1 || n3 <= n2 {
			t.Fatalf("event NIDs %d %d %d, want increasing", n1, n2, n3)
		}
		// A duplicate event ID is refused, and the transaction stays usable.
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			dup := event(1, "$one", 9, 9)
			if _, err := storage.InsertEvent(ctx, tx, dup); !errors.Is(err, storage.ErrExists) {
				return fmt.Errorf("duplicate insert: %v, want ErrExists", err)
			}
			_, err := storage.InsertEvent(ctx, tx, event(1, "$four", 2, 0))
			return err
		})

		check := func(got storage.Event, want *storage.Event, nid int64) {
			t.Helper()
			w := *want
			w.NID = nid
			if got.NID != w.NID || got.RoomNID != w.RoomNID || got.EventID != w.EventID || got.TypeNID != w.TypeNID ||
				got.StateKeyNID != w.StateKeyNID || got.Depth != w.Depth || got.Kind != w.Kind || got.SoftFailed != w.SoftFailed ||
				got.StateBefore != w.StateBefore || got.StateAfter != w.StateAfter || got.Sender != w.Sender ||
				got.OriginTS != w.OriginTS || got.Redacted != w.Redacted || string(got.JSON) != string(w.JSON) {
				t.Fatalf("event\n got %+v\nwant %+v", got, w)
			}
		}
		byNID, err := storage.SelectEventsByNID(ctx, s.DB(), []int64{n2, n1, n3, 99999})
		if err != nil || len(byNID) != 3 {
			t.Fatalf("by NID: %d events, %v", len(byNID), err)
		}
		want := map[int64]*storage.Event{n1: e1, n2: e2, n3: e3}
		for _, e := range byNID {
			check(e, want[e.NID], e.NID)
		}
		byID, err := storage.SelectEventsByID(ctx, s.DB(), []string{"$one", "$nope", "$three"})
		if err != nil || len(byID) != 2 {
			t.Fatalf("by ID: %d events, %v", len(byID), err)
		}
		for _, e := range byID {
			switch e.EventID {
			case "$one":
				check(e, e1, n1)
			case "$three":
				check(e, e3, n3)
			default:
				t.Fatalf("unexpected event %s", e.EventID)
			}
		}
		if evs, err := storage.SelectEventsByID(ctx, s.DB(), nil); err != nil || len(evs) != 0 {
			t.Fatalf("no IDs: %v %v", evs, err)
		}

		// prev_events: $two and $three name $one; recording twice is harmless.
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			for _, nid := range []int64{n2, n3, n2} {
				if err := storage.InsertPrevEvents(ctx, tx, nid, []string{"$one", "$zero"}); err != nil {
					return err
				}
			}
			return nil
		})
		refs, err := storage.SelectReferencingEvents(ctx, s.DB(), "$one")
		slices.Sort(refs)
		if err != nil || !slices.Equal(refs, []int64{n2, n3}) {
			t.Fatalf("referencing $one: %v %v, want [%d %d]", refs, err, n2, n3)
		}
		if refs, err := storage.SelectReferencingEvents(ctx, s.DB(), "$three"); err != nil || len(refs) != 0 {
			t.Fatalf("referencing $three: %v %v", refs, err)
		}

		// Redaction rewrites the JSON; state after is set later.
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			if err := storage.UpdateEventJSON(ctx, tx, n1, []byte(`{"redacted":true}`), true); err != nil {
				return err
			}
			return storage.UpdateEventPlacement(ctx, tx, n1, storage.KindNormal, false, 4, 42)
		})
		evs, err := storage.SelectEventsByNID(ctx, s.DB(), []int64{n1})
		if err != nil || len(evs) != 1 || string(evs[0].JSON) != `{"redacted":true}` || !evs[0].Redacted || evs[0].StateAfter != 42 || evs[0].StateBefore != 4 {
			t.Fatalf("after update %+v %v", evs, err)
		}
	})
}

func TestEventBatches(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		// More events than one IN list holds.
		var ids []string
		var nids []int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			for i := range 1100 {
				id := fmt.Sprintf("$e%d", i)
				nid, err := storage.InsertEvent(ctx, tx, event(1, id, 1, 0))
				if err != nil {
					return err
				}
				ids, nids = append(ids, id), append(nids, nid)
			}
			return nil
		})
		byID, err := storage.SelectEventsByID(ctx, s.DB(), ids)
		if err != nil || len(byID) != len(ids) {
			t.Fatalf("by ID: %d of %d, %v", len(byID), len(ids), err)
		}
		byNID, err := storage.SelectEventsByNID(ctx, s.DB(), nids)
		if err != nil || len(byNID) != len(nids) {
			t.Fatalf("by NID: %d of %d, %v", len(byNID), len(nids), err)
		}
	})
}

// snapshotOf builds a snapshot of n member events plus a few others.
func snapshotOf(n int, eventBase int64) state.Snapshot {
	entries := []state.Entry{{Key: state.Key{Type: 1, StateKey: 1}, Event: 1}, {Key: state.Key{Type: 3, StateKey: 1}, Event: 2}}
	for i := range n {
		entries = append(entries, state.Entry{Key: state.Key{Type: 2, StateKey: int64(10 + i)}, Event: eventBase + int64(i)})
	}
	return state.FromEntries(entries)
}

func TestStateBlocksAndSnapshots(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		small := state.FromEntries([]state.Entry{{Key: state.Key{Type: 1, StateKey: 1}, Event: 10}, {Key: state.Key{Type: 2, StateKey: 5}, Event: 11}})
		other := small.With(state.Entry{Key: state.Key{Type: 2, StateKey: 5}, Event: 12})
		var b1, b2 []int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			// The same block twice in one call shares one row.
			if b1, err = insertBlocks(ctx, tx, []state.Snapshot{small, other, small}); err != nil {
				return err
			}
			b2, err = insertBlocks(ctx, tx, []state.Snapshot{other, small})
			return err
		})
		if len(b1) != 3 || b1[0] != b1[2] || b1[0] == b1[1] || b1[0] <= 0 || b1[1] <= 0 {
			t.Fatalf("block NIDs %v", b1)
		}
		if len(b2) != 2 || b2[0] != b1[1] || b2[1] != b1[0] {
			t.Fatalf("identical blocks got new NIDs: %v then %v", b1, b2)
		}
		if n := count(t, ctx, s, "rs_state_blocks"); n != 2 {
			t.Fatalf("%d block rows, want 2", n)
		}
		blocks, err := storage.SelectBlocks(ctx, s.DB(), []int64{b1[0], b1[1], 9999})
		if err != nil || len(blocks) != 2 || !slices.Equal(blocks[b1[0]], small) || !slices.Equal(blocks[b1[1]], other) {
			t.Fatalf("blocks %v %v", blocks, err)
		}

		var s1, s2, s3, s4 int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			if s1, err = storage.InsertSnapshot(ctx, tx, []int64{b1[0], b1[1]}); err != nil {
				return err
			}
			if s2, err = storage.InsertSnapshot(ctx, tx, []int64{b1[0], b1[1]}); err != nil {
				return err
			}
			if s3, err = storage.InsertSnapshot(ctx, tx, []int64{b1[1], b1[0]}); err != nil {
				return err
			}
			return nil
		})
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			s4, err = storage.InsertSnapshot(ctx, tx, []int64{b1[0], b1[1]})
			return err
		})
		if s1 <= 0 || s1 != s2 || s1 != s4 || s3 == s1 || s3 <= 0 {
			t.Fatalf("snapshot NIDs %d %d %d %d: identical lists must share one", s1, s2, s3, s4)
		}
		if got, err := storage.SelectSnapshotBlocks(ctx, s.DB(), s3); err != nil || !slices.Equal(got, []int64{b1[1], b1[0]}) {
			t.Fatalf("snapshot blocks %v %v", got, err)
		}
		if _, err := storage.SelectSnapshotBlocks(ctx, s.DB(), 9999); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown snapshot: %v", err)
		}

		// A large state: changing one entry writes one new block, and the
		// whole state round trips through its blocks.
		big := snapshotOf(3000, 1000)
		var bigBlocks []int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			bigBlocks, err = insertBlocks(ctx, tx, big.Chunk())
			return err
		})
		if len(bigBlocks) < 10 {
			t.Fatalf("3,000 entries in %d blocks", len(bigBlocks))
		}
		before := count(t, ctx, s, "rs_state_blocks")
		changed := big.With(state.Entry{Key: state.Key{Type: 2, StateKey: 1500}, Event: 99999})
		var changedBlocks []int64
		inTx(t, ctx, s, func(tx *sqlutil.Tx) (err error) {
			changedBlocks, err = insertBlocks(ctx, tx, changed.Chunk())
			return err
		})
		if grew := count(t, ctx, s, "rs_state_blocks") - before; grew != 1 {
			t.Fatalf("changing one entry of 3,002 wrote %d blocks, want 1", grew)
		}
		loaded, err := storage.SelectBlocks(ctx, s.DB(), changedBlocks)
		if err != nil {
			t.Fatal(err)
		}
		var whole state.Snapshot
		for _, b := range changedBlocks {
			whole = append(whole, loaded[b]...)
		}
		if !slices.Equal(whole, changed) {
			t.Fatalf("reassembled state differs (%d vs %d entries)", len(whole), len(changed))
		}
	})
}

func TestMemberships(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		alice, bob, carol := "@alice:test", "@bob:test", "@carol:test"
		current := map[string]string{} // what the previous upsert of a (room, user) set
		upsert := func(room int64, user, membership string, nid int64) {
			t.Helper()
			key := fmt.Sprint(room, user)
			inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
				prev, err := storage.UpsertMembership(ctx, tx, room, user, membership, nid)
				if err == nil && prev != current[key] {
					t.Errorf("previous membership of %s in %d = %q, want %q", user, room, prev, current[key])
				}
				return err
			})
			current[key] = membership
		}
		get := func(room int64, user string) *storage.Membership {
			t.Helper()
			m, err := storage.SelectMembership(ctx, s.DB(), room, user)
			if err != nil {
				t.Fatalf("membership of %s in %d: %v", user, room, err)
			}
			return m
		}
		if _, err := storage.SelectMembership(ctx, s.DB(), 1, alice); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no membership: %v", err)
		}
		upsert(1, alice, "join", 10)
		if m := get(1, alice); m.Membership != "join" || m.EventNID != 10 || m.Forgotten || m.RoomNID != 1 || m.UserID != alice {
			t.Fatalf("after join %+v", m)
		}
		upsert(1, alice, "leave", 11)
		// Only the membership read is forgotten: not a stale one.
		if ok, err := storage.SetForgotten(ctx, s.DB(), 1, alice, 10); err != nil || ok {
			t.Fatalf("forgetting a membership that is no longer current: %v %v", ok, err)
		}
		if m := get(1, alice); m.Forgotten {
			t.Fatalf("forgotten by a stale membership %+v", m)
		}
		if ok, err := storage.SetForgotten(ctx, s.DB(), 1, alice, 11); err != nil || !ok {
			t.Fatalf("forget: %v %v", ok, err)
		}
		if m := get(1, alice); m.Membership != "leave" || m.EventNID != 11 || !m.Forgotten {
			t.Fatalf("after leave and forget %+v", m)
		}
		// The same event again keeps it forgotten...
		upsert(1, alice, "leave", 11)
		if m := get(1, alice); !m.Forgotten {
			t.Fatalf("after the same leave again %+v", m)
		}
		// ...any new membership event resets it, a ban too (as Synapse).
		upsert(1, alice, "ban", 12)
		if m := get(1, alice); m.Membership != "ban" || m.Forgotten {
			t.Fatalf("after ban %+v: forgotten must reset", m)
		}
		upsert(1, alice, "leave", 13)
		upsert(1, alice, "join", 14)
		if m := get(1, alice); m.Membership != "join" || m.EventNID != 14 || m.Forgotten {
			t.Fatalf("after rejoin %+v: forgotten must reset", m)
		}
		// An invite resets it too.
		upsert(2, alice, "leave", 20)
		if ok, err := storage.SetForgotten(ctx, s.DB(), 2, alice, 20); err != nil || !ok {
			t.Fatalf("forget: %v %v", ok, err)
		}
		upsert(2, alice, "invite", 21)
		if m := get(2, alice); m.Membership != "invite" || m.Forgotten {
			t.Fatalf("after invite %+v", m)
		}
		upsert(3, alice, "join", 30)
		upsert(4, alice, "leave", 40)
		upsert(1, bob, "invite", 15)
		upsert(1, carol, "join", 16)
		upsert(3, bob, "join", 31)

		rooms := func(user string, kinds ...string) []int64 {
			t.Helper()
			ms, err := storage.SelectRoomsForUser(ctx, s.DB(), user, kinds)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, m := range ms {
				if m.UserID != user || !slices.Contains(kinds, m.Membership) {
					t.Fatalf("rooms for %s %v: got %+v", user, kinds, m)
				}
				out = append(out, m.RoomNID)
			}
			return out
		}
		if got := rooms(alice, "join"); !slices.Equal(got, []int64{1, 3}) {
			t.Fatalf("alice joined %v, want [1 3]", got)
		}
		if got := rooms(alice, "join", "invite"); !slices.Equal(got, []int64{1, 2, 3}) {
			t.Fatalf("alice joined or invited %v, want [1 2 3]", got)
		}
		if got := rooms(alice, "leave", "ban"); !slices.Equal(got, []int64{4}) {
			t.Fatalf("alice left %v, want [4]", got)
		}
		if got := rooms(bob, "invite"); !slices.Equal(got, []int64{1}) {
			t.Fatalf("bob invited %v, want [1]", got)
		}
		if got := rooms("@nobody:test", "join"); len(got) != 0 {
			t.Fatalf("nobody's rooms %v", got)
		}

		members, err := storage.SelectMembers(ctx, s.DB(), 1, []string{"join", "invite"})
		if err != nil || len(members) != 3 || members[0].UserID != alice || members[1].UserID != bob || members[2].UserID != carol {
			t.Fatalf("members of room 1: %+v %v", members, err)
		}
		if members, _ := storage.SelectMembers(ctx, s.DB(), 1, []string{"join"}); len(members) != 2 {
			t.Fatalf("joined members of room 1: %+v", members)
		}

		// JoinedSince looks at the history of join events.
		for _, tc := range []struct {
			user  string
			after int64
			want  bool
		}{
			{alice, 9, true}, {alice, 13, true}, {alice, 14, false}, {bob, 0, false}, {carol, 15, true}, {carol, 16, false},
		} {
			got, err := storage.JoinedSince(ctx, s.DB(), 1, tc.user, tc.after)
			if err != nil || got != tc.want {
				t.Fatalf("JoinedSince(%s, %d) = %v %v, want %v", tc.user, tc.after, got, err, tc.want)
			}
		}
		if got, _ := storage.JoinedSince(ctx, s.DB(), 2, alice, 0); got {
			t.Fatal("alice never joined room 2")
		}

		for room, want := range map[int64]int64{1: 2, 2: 0, 3: 2, 4: 0, 5: 0} {
			n, err := storage.CountJoined(ctx, s.DB(), room)
			if err != nil || n != want {
				t.Fatalf("CountJoined(%d) = %d %v, want %d", room, n, err, want)
			}
		}
		// The same event recorded twice is harmless.
		upsert(1, carol, "join", 16)
		if n, _ := storage.CountJoined(ctx, s.DB(), 1); n != 2 {
			t.Fatalf("joined after repeat: %d", n)
		}
	})
}

// TestJoinedServers: the servers of a room follow its joins and the ends
// of them (leave, ban, kick to invite), whatever the order, with repeats
// counted once.
func TestJoinedServers(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		upsert := func(room int64, user, membership string, nid int64) {
			t.Helper()
			inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
				_, err := storage.UpsertMembership(ctx, tx, room, user, membership, nid)
				return err
			})
		}
		check := func(room int64, want ...string) {
			t.Helper()
			got, err := storage.SelectJoinedServers(ctx, s.DB(), room)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("servers of room %d = %v %v, want %v", room, got, err, want)
			}
			for _, server := range []string{"a.test", "b.test", "c.test:8448"} {
				in, err := storage.ServerJoined(ctx, s.DB(), room, server)
				if err != nil || in != slices.Contains(want, server) {
					t.Fatalf("ServerJoined(%d, %s) = %v %v, want %v", room, server, in, err, !in)
				}
			}
		}
		check(1)
		upsert(1, "@alice:b.test", "join", 1)
		upsert(1, "@bob:a.test", "invite", 2)
		check(1, "b.test")
		upsert(1, "@bob:a.test", "join", 3)
		upsert(1, "@carol:a.test", "join", 4)
		upsert(1, "@dan:c.test:8448", "join", 5)
		upsert(1, "@carol:a.test", "join", 6) // a profile change: still one join
		upsert(2, "@erin:b.test", "join", 7)
		check(1, "a.test", "b.test", "c.test:8448")
		check(2, "b.test")
		upsert(1, "@bob:a.test", "leave", 8)
		check(1, "a.test", "b.test", "c.test:8448") // carol is still there
		upsert(1, "@carol:a.test", "ban", 9)
		upsert(1, "@carol:a.test", "ban", 10)
		upsert(1, "@alice:b.test", "leave", 11)
		check(1, "c.test:8448")
		upsert(1, "@alice:b.test", "leave", 12)
		upsert(1, "@bob:a.test", "join", 13)
		check(1, "a.test", "c.test:8448")
		check(2, "b.test")
		check(3)
	})
}

func TestTxns(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		if id, err := storage.SelectTxn(ctx, s.DB(), "@a:test", "DEV", "send|t1"); err != nil || id != "" {
			t.Fatalf("unknown txn: %q %v", id, err)
		}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			if err := storage.InsertTxn(ctx, tx, "@a:test", "DEV", "send|t1", "$first", 1); err != nil {
				return err
			}
			// The first event of a transaction stays.
			return storage.InsertTxn(ctx, tx, "@a:test", "DEV", "send|t1", "$second", 2)
		})
		for _, tc := range []struct{ user, dev, key, want string }{
			{"@a:test", "DEV", "send|t1", "$first"},
			{"@a:test", "DEV2", "send|t1", ""},
			{"@b:test", "DEV", "send|t1", ""},
			{"@a:test", "DEV", "send|t2", ""},
		} {
			if id, err := storage.SelectTxn(ctx, s.DB(), tc.user, tc.dev, tc.key); err != nil || id != tc.want {
				t.Fatalf("txn %v: %q %v", tc, id, err)
			}
		}
		// And the other way: the transaction of an event, per device.
		for _, tc := range []struct{ user, dev, event, want string }{
			{"@a:test", "DEV", "$first", "send|t1"},
			{"@a:test", "DEV", "$second", ""},
			{"@a:test", "DEV2", "$first", ""},
			{"@b:test", "DEV", "$first", ""},
		} {
			if key, err := storage.SelectTxnOfEvent(ctx, s.DB(), tc.user, tc.dev, tc.event); err != nil || key != tc.want {
				t.Fatalf("txn of event %v: %q %v", tc, key, err)
			}
		}
	})
}

func TestRedactions(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		pending := func(target string) []string {
			t.Helper()
			ids, err := storage.SelectPendingRedactions(ctx, s.DB(), target)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(ids)
			return ids
		}
		if got := pending("$target"); len(got) != 0 {
			t.Fatalf("pending before any: %v", got)
		}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			for _, r := range []struct {
				red, target string
				applied     bool
			}{{"$r1", "$target", false}, {"$r2", "$target", false}, {"$r3", "$other", false}, {"$r4", "$target", true}} {
				if err := storage.InsertRedaction(ctx, tx, r.red, r.target, r.applied); err != nil {
					return err
				}
			}
			return nil
		})
		if got := pending("$target"); !slices.Equal(got, []string{"$r1", "$r2"}) {
			t.Fatalf("pending %v, want [$r1 $r2]", got)
		}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error { return storage.InsertRedaction(ctx, tx, "$r1", "$target", true) })
		if got := pending("$target"); !slices.Equal(got, []string{"$r2"}) {
			t.Fatalf("pending after applying $r1: %v", got)
		}
		if got := pending("$other"); !slices.Equal(got, []string{"$r3"}) {
			t.Fatalf("pending for $other: %v", got)
		}
	})
}

func TestAliases(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		for _, a := range []struct{ alias, room string }{{"#b:test", "!r1:test"}, {"#a:test", "!r1:test"}, {"#c:test", "!r2:test"}} {
			if err := storage.InsertAlias(ctx, s.DB(), a.alias, a.room, "@alice:test"); err != nil {
				t.Fatal(err)
			}
		}
		if err := storage.InsertAlias(ctx, s.DB(), "#a:test", "!r2:test", "@bob:test"); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("taken alias: %v, want ErrExists", err)
		}
		room, creator, err := storage.SelectAlias(ctx, s.DB(), "#a:test")
		if err != nil || room != "!r1:test" || creator != "@alice:test" {
			t.Fatalf("alias: %q %q %v", room, creator, err)
		}
		if _, _, err := storage.SelectAlias(ctx, s.DB(), "#nope:test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown alias: %v", err)
		}
		if got, err := storage.SelectAliasesForRoom(ctx, s.DB(), "!r1:test"); err != nil || !slices.Equal(got, []string{"#a:test", "#b:test"}) {
			t.Fatalf("aliases of r1: %v %v", got, err)
		}
		if got, err := storage.SelectAliasesForRoom(ctx, s.DB(), "!r9:test"); err != nil || got == nil || len(got) != 0 {
			t.Fatalf("aliases of an unknown room: %#v %v, want an empty list", got, err)
		}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			room, creator, err := storage.DeleteAlias(ctx, tx, "#a:test")
			if err != nil || room != "!r1:test" || creator != "@alice:test" {
				return fmt.Errorf("delete: %q %q %v", room, creator, err)
			}
			return nil
		})
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			_, _, err := storage.DeleteAlias(ctx, tx, "#a:test")
			return err
		})
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleting twice: %v, want ErrNotFound", err)
		}
		if got, _ := storage.SelectAliasesForRoom(ctx, s.DB(), "!r1:test"); !slices.Equal(got, []string{"#b:test"}) {
			t.Fatalf("aliases of r1 after delete: %v", got)
		}
		// A deleted alias can be taken again.
		if err := storage.InsertAlias(ctx, s.DB(), "#a:test", "!r2:test", "@bob:test"); err != nil {
			t.Fatal(err)
		}
		if room, creator, _ := storage.SelectAlias(ctx, s.DB(), "#a:test"); room != "!r2:test" || creator != "@bob:test" {
			t.Fatalf("retaken alias: %q %q", room, creator)
		}
	})
}

func TestPublishedRooms(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		joined := map[string]int64{"!small:test": 1, "!big:test": 50, "!mid:test": 7, "!tie:test": 7, "!hidden:test": 100}
		nids := map[string]int64{}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			for id, n := range joined {
				nid, err := storage.InsertRoom(ctx, tx, id, "10")
				if err != nil {
					return err
				}
				nids[id] = nid
				if err := storage.UpdateRoom(ctx, tx, &storage.Room{NID: nid, SnapshotNID: 1, JoinedMembers: n}); err != nil {
					return err
				}
			}
			return nil
		})
		for _, id := range []string{"!small:test", "!big:test", "!tie:test", "!mid:test", "!big:test"} {
			if err := storage.SetPublished(ctx, s.DB(), id, true, 1000); err != nil {
				t.Fatal(err)
			}
		}
		for id, want := range map[string]bool{"!big:test": true, "!hidden:test": false, "!nope:test": false} {
			if got, err := storage.SelectPublished(ctx, s.DB(), id); err != nil || got != want {
				t.Fatalf("published(%s) = %v %v", id, got, err)
			}
		}
		list := func(network ...string) []string {
			t.Helper()
			var rooms []storage.PublishedRoom
			var err error
			switch {
			case len(network) == 0:
				rooms, err = storage.SelectPublishedRooms(ctx, s.DB(), false, "", "")
			case network[0] == "all":
				rooms, err = storage.SelectPublishedRooms(ctx, s.DB(), true, "", "")
			default:
				rooms, err = storage.SelectPublishedRooms(ctx, s.DB(), false, network[0], network[1])
			}
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range rooms {
				if r.RoomNID != nids[r.RoomID] || r.JoinedMembers != joined[r.RoomID] {
					t.Fatalf("published entry %+v", r)
				}
				out = append(out, r.RoomID)
			}
			return out
		}
		// Most joined first; ties by room ID.
		if got := list(); !slices.Equal(got, []string{"!big:test", "!mid:test", "!tie:test", "!small:test"}) {
			t.Fatalf("published rooms %v", got)
		}
		// The order follows the member counts as they change.
		joined["!small:test"] = 60
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
			return storage.UpdateRoom(ctx, tx, &storage.Room{NID: nids["!small:test"], SnapshotNID: 1, JoinedMembers: 60})
		})
		if err := storage.SetPublished(ctx, s.DB(), "!mid:test", false, 0); err != nil {
			t.Fatal(err)
		}
		if got := list(); !slices.Equal(got, []string{"!small:test", "!big:test", "!tie:test"}) {
			t.Fatalf("published rooms after changes %v", got)
		}

		// The directories of application services' networks: apart from
		// the server's, all of them together with it (a room in both
		// once).
		for _, p := range [][3]string{{"irc", "libera", "!hidden:test"}, {"irc", "libera", "!mid:test"}, {"irc", "oftc", "!big:test"}, {"irc", "libera", "!mid:test"}} {
			if err := storage.SetAppServicePublished(ctx, s.DB(), p[0], p[1], p[2], true, 1000); err != nil {
				t.Fatal(err)
			}
		}
		if got := list("irc", "libera"); !slices.Equal(got, []string{"!hidden:test", "!mid:test"}) {
			t.Fatalf("irc|libera rooms %v", got)
		}
		if got := list("irc", "oftc"); !slices.Equal(got, []string{"!big:test"}) {
			t.Fatalf("irc|oftc rooms %v", got)
		}
		if got := list("other", "libera"); len(got) != 0 {
			t.Fatalf("another service's libera rooms %v", got)
		}
		if got := list("all"); !slices.Equal(got, []string{"!hidden:test", "!small:test", "!big:test", "!mid:test", "!tie:test"}) {
			t.Fatalf("all networks %v", got)
		}
		if got := list(); !slices.Equal(got, []string{"!small:test", "!big:test", "!tie:test"}) {
			t.Fatalf("the server's own directory changed: %v", got)
		}
		if err := storage.SetAppServicePublished(ctx, s.DB(), "irc", "libera", "!hidden:test", false, 0); err != nil {
			t.Fatal(err)
		}
		if got := list("irc", "libera"); !slices.Equal(got, []string{"!mid:test"}) {
			t.Fatalf("irc|libera rooms after removal %v", got)
		}
	})
}

func TestInputPositions(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		pos := func(p int) uint64 {
			t.Helper()
			n, err := storage.SelectInputPosition(ctx, s.DB(), p)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if pos(3) != 0 {
			t.Fatal("unknown partition has a position")
		}
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error { return storage.UpdateInputPosition(ctx, tx, 3, 5) })
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error { return storage.UpdateInputPosition(ctx, tx, 4, 1<<40) })
		inTx(t, ctx, s, func(tx *sqlutil.Tx) error { return storage.UpdateInputPosition(ctx, tx, 3, 9) })
		if pos(3) != 9 || pos(4) != 1<<40 || pos(0) != 0 {
			t.Fatalf("positions %d %d %d", pos(3), pos(4), pos(0))
		}
		// A rolled-back transaction leaves the position alone.
		boom := errors.New("boom")
		err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := storage.UpdateInputPosition(ctx, tx, 3, 100); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || pos(3) != 9 {
			t.Fatalf("after rollback: %v, position %d", err, pos(3))
		}
	})
}

func TestOutbox(t *testing.T) {
	forEachStore(t, func(t *testing.T, ctx context.Context, s *storage.Storage) {
		if msgs, err := storage.SelectOutbox(ctx, s.DB(), 10); err != nil || len(msgs) != 0 {
			t.Fatalf("empty outbox: %v %v", msgs, err)
		}
		queue := func(from, to int) {
			inTx(t, ctx, s, func(tx *sqlutil.Tx) error {
				for i := from; i < to; i++ {
					if err := storage.InsertOutbox(ctx, tx, fmt.Sprintf("RoomOutput.%d", i%3), fmt.Sprintf("new:$%d", i), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
						return err
					}
				}
				return nil
			})
		}
		queue(0, 3)
		// A rolled-back transaction queues nothing.
		_ = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := storage.InsertOutbox(ctx, tx, "RoomOutput.0", "new:$lost", []byte(`{}`)); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		queue(3, 7)
		check := func(msgs []storage.OutboxMessage, from int) {
			t.Helper()
			for i, m := range msgs {
				n := from + i
				if m.Subject != fmt.Sprintf("RoomOutput.%d", n%3) || m.MsgID != fmt.Sprintf("new:$%d", n) || string(m.Payload) != fmt.Sprintf(`{"n":%d}`, n) {
					t.Fatalf("message %d: %+v", n, m)
				}
				if i > 0 && m.ID <= msgs[i-1].ID {
					t.Fatalf("IDs out of order: %d after %d", m.ID, msgs[i-1].ID)
				}
			}
		}
		all, err := storage.SelectOutbox(ctx, s.DB(), 100)
		if err != nil || len(all) != 7 {
			t.Fatalf("outbox has %d messages (%v), want 7", len(all), err)
		}
		check(all, 0)
		first, _ := storage.SelectOutbox(ctx, s.DB(), 2)
		if len(first) != 2 {
			t.Fatalf("limit 2 gave %d", len(first))
		}
		check(first, 0)
		if err := storage.DeleteOutbox(ctx, s.DB(), []int64{first[0].ID, first[1].ID}); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteOutbox(ctx, s.DB(), nil); err != nil {
			t.Fatal(err)
		}
		rest, _ := storage.SelectOutbox(ctx, s.DB(), 100)
		if len(rest) != 5 {
			t.Fatalf("%d messages after deleting 2, want 5", len(rest))
		}
		check(rest, 2)
		// New messages go after the ones still queued.
		queue(7, 8)
		rest, _ = storage.SelectOutbox(ctx, s.DB(), 100)
		if len(rest) != 6 {
			t.Fatalf("%d messages, want 6", len(rest))
		}
		check(rest, 2)
	})
}

// insertBlocks stores blocks without a cache of known hashes.
func insertBlocks(ctx context.Context, tx *sqlutil.Tx, blocks []state.Snapshot) ([]int64, error) {
	nids, _, err := storage.InsertBlocks(ctx, tx, blocks, func([]byte) (int64, bool) { return 0, false })
	return nids, err
}
