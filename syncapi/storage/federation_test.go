package storage

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// Storage used by backfill, out-of-band memberships, joins over federation
// and remote presence.

func TestMinEventPosAndOldestEvents(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		if n, err := MinEventPos(ctx, s.DB()); err != nil || n != 0 {
			t.Fatalf("MinEventPos on empty = %d, %v; want 0", n, err)
		}
		if evs, err := OldestEvents(ctx, s.DB(), "!a:x", 5); err != nil || len(evs) != 0 {
			t.Fatalf("OldestEvents of an unknown room = %v, %v", evs, err)
		}
		rmInsertEvents(t, s, "!a:x", 5, 6, 9, -3, -4)
		rmInsertEvents(t, s, "!b:x", 7, -10)
		if n, err := MinEventPos(ctx, s.DB()); err != nil || n != -10 {
			t.Errorf("MinEventPos = %d, %v; want -10", n, err)
		}
		evs, err := OldestEvents(ctx, s.DB(), "!a:x", 3)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(rmPositions(evs)); got != "[-4 -3 5]" {
			t.Errorf("three oldest of !a:x: %s, want [-4 -3 5] in order", got)
		}
	})
}

func TestBatchedStateWrites(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		const room, n = "!big:x", 1234 // more than one batch of each statement
		if _, found, err := FirstStatePos(ctx, s.DB(), room); err != nil || found {
			t.Fatalf("FirstStatePos of a room without state: found %v, %v", found, err)
		}
		// A join over federation: the whole state at position 10.
		var rows []*StateRow
		var keys []StateKey
		var changes []*MembershipChange
		var ids []string
		for i := range n {
			u := fmt.Sprintf("@u%d:remote", i)
			id := fmt.Sprintf("$m%d", i)
			rows = append(rows, &StateRow{RoomID: room, Type: "m.room.member", StateKey: u, EventID: id, Membership: "join",
				JSON: []byte(`{"content":{"membership":"join"}}`), FromPos: 10})
			keys = append(keys, StateKey{"m.room.member", u})
			changes = append(changes, &MembershipChange{UserID: u, RoomID: room, Pos: 10, Membership: "join", EventID: id, Sender: u})
			ids = append(ids, id)
		}
		rows = append(rows, &StateRow{RoomID: room, Type: "m.room.create", StateKey: "", EventID: "$create", JSON: []byte(`{}`), FromPos: 10})
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := CloseStateKeys(ctx, tx, room, keys, 10); err != nil {
				return err
			}
			if err := InsertStates(ctx, tx, rows); err != nil {
				return err
			}
			if err := InsertMembershipChanges(ctx, tx, changes); err != nil {
				return err
			}
			// Logging the same changes again is harmless.
			return InsertMembershipChanges(ctx, tx, changes[:10])
		})
		members, err := CurrentMembers(ctx, s.DB(), []string{room})
		if err != nil || len(members) != n {
			t.Fatalf("%d current members, %v; want %d", len(members), err, n)
		}
		if pos, found, err := FirstStatePos(ctx, s.DB(), room); err != nil || !found || pos != 10 {
			t.Errorf("FirstStatePos = %d %v %v; want 10", pos, found, err)
		}
		cur, err := CurrentStateEvents(ctx, s.DB(), room, append(append([]string{}, ids...), "$create", "$unknown"))
		if err != nil || len(cur) != n+1 || !cur["$create"] || cur["$unknown"] {
			t.Fatalf("CurrentStateEvents: %d current, %v", len(cur), err)
		}
		ch, err := MembershipChanges(ctx, s.DB(), "@u7:remote", rmMin, 100, nil)
		if err != nil || len(ch) != 1 || ch[0].EventID != "$m7" || ch[0].Pos != 10 || ch[0].Membership != "join" {
			t.Errorf("membership changes of u7 = %+v, %v", ch, err)
		}

		// Half of them leave at 20: their keys close, new rows begin.
		var leaves []*StateRow
		keys = keys[:0]
		for i := 0; i < n; i += 2 {
			u := fmt.Sprintf("@u%d:remote", i)
			keys = append(keys, StateKey{"m.room.member", u})
			leaves = append(leaves, &StateRow{RoomID: room, Type: "m.room.member", StateKey: u, EventID: fmt.Sprintf("$l%d", i),
				Membership: "leave", JSON: []byte(`{"content":{"membership":"leave"}}`), FromPos: 20})
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := CloseStateKeys(ctx, tx, room, keys, 20); err != nil {
				return err
			}
			return InsertStates(ctx, tx, leaves)
		})
		members, err = CurrentMembers(ctx, s.DB(), []string{room})
		if err != nil || len(members) != n/2 {
			t.Fatalf("%d current members after the leaves, %v; want %d", len(members), err, n/2)
		}
		cur, err = CurrentStateEvents(ctx, s.DB(), room, []string{"$m0", "$m1", "$l0"})
		if err != nil || cur["$m0"] || !cur["$m1"] || !cur["$l0"] {
			t.Errorf("current after the leaves: %v, %v", cur, err)
		}
		// The state at 15 still has everyone joined.
		st, err := States(ctx, s.DB(), []StateQuery{{RoomID: room, At: 15, Since: rmMin}})
		if err != nil || len(st[room]) != n+1 {
			t.Errorf("state at 15: %d rows, %v; want %d", len(st[room]), err, n+1)
		}
		// Other rooms are untouched by a room's closes.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return rmSetState(ctx, tx, "!other:x", "m.room.member", "@u1:remote", "$o1", "join", 30)
		})
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return CloseStateKeys(ctx, tx, room, []StateKey{{"m.room.member", "@u1:remote"}}, 40)
		})
		if cur, _ := CurrentStateEvents(ctx, s.DB(), "!other:x", []string{"$o1"}); !cur["$o1"] {
			t.Error("closing a key of one room closed it in another")
		}
	})
}

func TestPresenceChanged(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i, u := range []string{"@a:x", "@b:remote", "@c:remote"} {
				if err := UpsertPresence(ctx, tx, &Presence{UserID: u, Presence: "online", LastActiveTS: 1, Pos: int64(i + 1)}); err != nil {
					return err
				}
			}
			return nil
		})
		got, err := PresenceChanged(ctx, s.DB(), 1, 3)
		if err != nil || len(got) != 2 || got[0].UserID != "@b:remote" || got[1].UserID != "@c:remote" {
			t.Errorf("PresenceChanged(1, 3] = %+v, %v", got, err)
		}
		if got, err := PresenceChanged(ctx, s.DB(), 3, 3); err != nil || len(got) != 0 {
			t.Errorf("empty range = %+v, %v", got, err)
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return UpsertPresence(ctx, tx, &Presence{UserID: "@b:remote", Presence: "offline", LastActiveTS: 1, Pos: 4})
		})
		got, err = PresenceNotOffline(ctx, s.DB())
		if err != nil || len(got) != 2 || got[0].UserID == "@b:remote" || got[1].UserID == "@b:remote" {
			t.Errorf("PresenceNotOffline = %+v, %v", got, err)
		}
	})
}

func TestStatesBeforeEvent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		const room = "!fed:remote"
		// Alice's out-of-band invite at 5, then her join over federation at
		// 10, which brings the room's state with it.
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			if err := rmSetState(ctx, tx, room, "m.room.member", "@alice:x", "$invite", "invite", 5); err != nil {
				return err
			}
			if err := CloseStateKeys(ctx, tx, room, []StateKey{{"m.room.create", ""}, {"m.room.member", "@bob:remote"}, {"m.room.member", "@alice:x"}}, 10); err != nil {
				return err
			}
			return InsertStates(ctx, tx, []*StateRow{
				{RoomID: room, Type: "m.room.create", EventID: "$create", JSON: []byte(`{}`), FromPos: 10},
				{RoomID: room, Type: "m.room.member", StateKey: "@bob:remote", EventID: "$bob", Membership: "join", JSON: []byte(`{}`), FromPos: 10},
				{RoomID: room, Type: "m.room.member", StateKey: "@alice:x", EventID: "$join", Membership: "join", JSON: []byte(`{}`), FromPos: 10},
			})
		})
		alice := "@alice:x"
		get := func(q StateQuery) []string {
			t.Helper()
			st, err := States(ctx, s.DB(), []StateQuery{q})
			if err != nil {
				t.Fatal(err)
			}
			return rmKeys(st[room])
		}
		rmWant(t, "state after the join", get(StateQuery{RoomID: room, At: 10, Since: rmMin}),
			[]string{"m.room.create|=$create", "m.room.member|@bob:remote=$bob", "m.room.member|@alice:x=$join"})
		rmWant(t, "state before the join: the state that came with it, and the invite", get(StateQuery{RoomID: room, At: 10, Since: rmMin,
			Before: &BeforeEvent{EventID: "$join", Type: "m.room.member", StateKey: &alice}}),
			[]string{"m.room.create|=$create", "m.room.member|@bob:remote=$bob", "m.room.member|@alice:x=$invite"})
		rmWant(t, "state at 9", get(StateQuery{RoomID: room, At: 9, Since: rmMin}), []string{"m.room.member|@alice:x=$invite"})
		// Before a message event (no state key), the state at it.
		rmWant(t, "state before a message at 10", get(StateQuery{RoomID: room, At: 10, Since: rmMin, Before: &BeforeEvent{EventID: "$msg", Type: "m.room.message"}}),
			[]string{"m.room.create|=$create", "m.room.member|@bob:remote=$bob", "m.room.member|@alice:x=$join"})
		// Lazy loading and since still apply.
		rmWant(t, "lazy members before the join", get(StateQuery{RoomID: room, At: 10, Since: rmMin, Lazy: true, Members: []string{alice},
			Before: &BeforeEvent{EventID: "$join", Type: "m.room.member", StateKey: &alice}}),
			[]string{"m.room.create|=$create", "m.room.member|@alice:x=$invite"})
		rmWant(t, "changes since 5 before the join", get(StateQuery{RoomID: room, At: 10, Since: 5,
			Before: &BeforeEvent{EventID: "$join", Type: "m.room.member", StateKey: &alice}}),
			[]string{"m.room.create|=$create", "m.room.member|@bob:remote=$bob"})
	})
}
