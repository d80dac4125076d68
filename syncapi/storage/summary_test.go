package storage

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// TestRoomSummaries: counts of the current joined and invited members;
// heroes are the first five others to join or be invited, in stream order
// (sorted), or the first five who left or were banned when nobody else is
// there; replaced memberships, knocks and other rooms do not count.
func TestRoomSummaries(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		set := func(room, user, membership string, pos int64) {
			t.Helper()
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
				return rmSetState(ctx, tx, room, "m.room.member", user, fmt.Sprintf("$%s-%s-%d", room, user, pos), membership, pos)
			})
		}
		// !big:x: me, then 12 others in reverse name order (so that the
		// first five by position are not the first five by name), one of
		// whom left, one invited, and a knock.
		set("!big:x", "@me:x", "join", 1)
		for i := range 12 {
			set("!big:x", fmt.Sprintf("@u%02d:x", 11-i), "join", int64(10+i))
		}
		set("!big:x", "@u11:x", "leave", 30) // the first to join left
		set("!big:x", "@inv:x", "invite", 31)
		set("!big:x", "@knock:x", "knock", 32)
		// !alone:x: only me, and some who left or were banned.
		set("!alone:x", "@me:x", "join", 2)
		for i, u := range []string{"@g:x", "@f:x", "@e:x", "@d:x", "@c:x", "@b:x", "@a:x"} {
			set("!alone:x", u, "join", int64(40+i))
			ms := "leave"
			if i%2 == 1 {
				ms = "ban"
			}
			set("!alone:x", u, ms, int64(50+i))
		}
		// !empty:x: nothing stored.
		rooms := []string{"!big:x", "!alone:x", "!empty:x"}
		for _, tc := range []struct {
			room            string
			joined, invited int
			heroes          []string
		}{
			{"!big:x", 12, 1, []string{"@u06:x", "@u07:x", "@u08:x", "@u09:x", "@u10:x"}},
			{"!alone:x", 1, 0, []string{"@c:x", "@d:x", "@e:x", "@f:x", "@g:x"}},
			{"!empty:x", 0, 0, nil},
		} {
			sums, err := RoomSummaries(ctx, s.DB(), "@me:x", rooms)
			if err != nil {
				t.Fatal(err)
			}
			got := sums[tc.room]
			if got == nil || got.Joined != tc.joined || got.Invited != tc.invited || !slices.Equal(got.Heroes, tc.heroes) {
				t.Errorf("summary of %s = %+v, want joined %d invited %d heroes %v", tc.room, got, tc.joined, tc.invited, tc.heroes)
			}
		}
		// Another user's view: they are not their own hero, and I am one.
		sums, err := RoomSummaries(ctx, s.DB(), "@u10:x", []string{"!big:x"})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"@me:x", "@u06:x", "@u07:x", "@u08:x", "@u09:x"}; !slices.Equal(sums["!big:x"].Heroes, want) {
			t.Errorf("heroes for u10: %v, want %v", sums["!big:x"].Heroes, want)
		}
		// More rooms than one statement takes.
		var many []string
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for i := range 450 {
				room := fmt.Sprintf("!m%03d:x", i)
				many = append(many, room)
				if err := rmSetState(ctx, tx, room, "m.room.member", "@o:x", "$o"+room, "join", int64(100+i)); err != nil {
					return err
				}
			}
			return nil
		})
		sums, err = RoomSummaries(ctx, s.DB(), "@me:x", many)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range many {
			if got := sums[r]; got == nil || got.Joined != 1 || !slices.Equal(got.Heroes, []string{"@o:x"}) {
				t.Fatalf("summary of %s among 450 rooms = %+v", r, got)
			}
		}
	})
}
