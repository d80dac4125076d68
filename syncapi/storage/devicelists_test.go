package storage

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestDeviceListStream(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := MaxDeviceListPos(ctx, s.DB()); err != nil || n != 0 {
			t.Fatalf("empty stream position = %d, %v", n, err)
		}
		mark := func(user string, pos int64, shared bool) {
			t.Helper()
			if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error { return MarkDeviceListChanged(ctx, tx, user, pos, shared) }); err != nil {
				t.Fatal(err)
			}
		}
		mark("@a:x", 1, true)
		mark("@b:y", 2, true)
		mark("@a:x", 3, false) // a user-signing change: a's shared position stays 1
		mark("@c:x", 4, false)
		got, err := DeviceListChanges(ctx, s.DB(), 1, 4)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]DeviceListChange{"@b:y": {"@b:y", 2, 2}, "@a:x": {"@a:x", 3, 1}, "@c:x": {"@c:x", 4, 0}}
		if len(got) != len(want) {
			t.Fatalf("changes = %+v", got)
		}
		for _, c := range got {
			if want[c.UserID] != c {
				t.Errorf("change %+v, want %+v", c, want[c.UserID])
			}
		}
		if got, _ := DeviceListChanges(ctx, s.DB(), 3, 3); len(got) != 0 {
			t.Errorf("empty range = %+v", got)
		}
		mark("@c:x", 5, true)
		got, _ = DeviceListChanges(ctx, s.DB(), 4, 5)
		if len(got) != 1 || got[0] != (DeviceListChange{"@c:x", 5, 5}) {
			t.Errorf("after a shared change = %+v", got)
		}
		if n, _ := MaxDeviceListPos(ctx, s.DB()); n != 5 {
			t.Errorf("position = %d, want 5", n)
		}

		// Membership changes of every user in rooms.
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			for _, m := range []*MembershipChange{
				{UserID: "@a:x", RoomID: "!r:x", Pos: 10, Membership: "join", EventID: "$1", Sender: "@a:x"},
				{UserID: "@b:y", RoomID: "!r:x", Pos: 11, Membership: "join", EventID: "$2", Sender: "@b:y"},
				{UserID: "@c:x", RoomID: "!s:x", Pos: 12, Membership: "join", EventID: "$3", Sender: "@c:x"},
				{UserID: "@b:y", RoomID: "!r:x", Pos: 13, Membership: "leave", EventID: "$4", Sender: "@b:y"},
			} {
				if err := InsertMembershipChange(ctx, tx, m); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		ms, err := RoomMembershipChanges(ctx, s.DB(), []string{"!r:x"}, 10, 13)
		if err != nil || len(ms) != 2 || ms[0].EventID != "$2" || ms[1].EventID != "$4" {
			t.Fatalf("room changes = %+v, %v", ms, err)
		}
		if ms, _ := RoomMembershipChanges(ctx, s.DB(), []string{"!r:x", "!s:x"}, 0, 100); len(ms) != 4 {
			t.Errorf("two rooms: %d changes, want 4", len(ms))
		}
		if ms, _ := RoomMembershipChanges(ctx, s.DB(), nil, 0, 100); len(ms) != 0 {
			t.Errorf("no rooms: %+v", ms)
		}
	})
}
