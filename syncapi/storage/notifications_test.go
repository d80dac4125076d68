package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestNotificationEventUsers(t *testing.T) {
	e := &NotificationEvent{Actions: []json.RawMessage{[]byte(`["notify"]`), []byte(`["notify",{"set_tweak":"highlight"}]`)}}
	e.SetUsers([]Notified{{"@a:x", false, 0}, {"@ab:x", true, 1}, {"@b:x", false, 0}})
	for _, c := range []struct {
		user string
		ok   bool
		want Notified
	}{
		{"@a:x", true, Notified{"@a:x", false, 0}},
		{"@ab:x", true, Notified{"@ab:x", true, 1}},
		{"@b:x", true, Notified{"@b:x", false, 0}},
		{"@a", false, Notified{}},  // a prefix of a user ID is no user
		{"b:x", false, Notified{}}, // nor a suffix
		{"@c:x", false, Notified{}},
	} {
		got, ok := e.Find(c.user)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("Find(%q) = %+v %v, want %+v %v", c.user, got, ok, c.want, c.ok)
		}
	}
	if got := fmt.Sprint(e.Users()); got != "[{@a:x false 0} {@ab:x true 1} {@b:x false 0}]" {
		t.Errorf("Users() = %s", got)
	}
	if got := string(e.ActionsOf(Notified{Actions: 1})); got != `["notify",{"set_tweak":"highlight"}]` {
		t.Errorf("ActionsOf = %s", got)
	}
}

func TestNotificationEvents(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		add := func(pos int64, room string, users ...string) {
			e := &NotificationEvent{EventPos: pos, RoomID: room, EventID: fmt.Sprintf("$%d", pos), ThreadID: MainThread, TS: 1000 + pos,
				Actions: []json.RawMessage{[]byte(`["notify"]`)}}
			var ns []Notified
			for _, u := range users {
				ns = append(ns, Notified{UserID: u})
			}
			e.SetUsers(ns)
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
				return InsertNotificationEvents(ctx, tx, []*NotificationEvent{e})
			})
		}
		add(1, "!a:x", "@u:x", "@v:x")
		add(2, "!b:x", "@u:x")
		add(3, "!a:x", "@v:x")
		add(5, "!c:x", "@u:x")
		add(3, "!a:x", "@w:x") // a redelivery changes nothing
		list := func(rooms []string, after, before int64, desc bool, limit int) string {
			t.Helper()
			evs, err := NotificationEvents(ctx, s.DB(), rooms, after, before, desc, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range evs {
				_, u := e.Find("@u:x")
				_, w := e.Find("@w:x")
				out = append(out, fmt.Sprintf("%d:%s:%v:%v", e.EventPos, e.RoomID, u, w))
			}
			return fmt.Sprint(out)
		}
		for _, c := range []struct {
			rooms         []string
			after, before int64
			desc          bool
			limit         int
			want          string
		}{
			{nil, 0, math.MaxInt64, false, 10, "[1:!a:x:true:false 2:!b:x:true:false 3:!a:x:false:false 5:!c:x:true:false]"},
			{[]string{"!a:x", "!c:x"}, 0, math.MaxInt64, true, 10, "[5:!c:x:true:false 3:!a:x:false:false 1:!a:x:true:false]"},
			{[]string{"!a:x", "!b:x"}, 1, 5, false, 10, "[2:!b:x:true:false 3:!a:x:false:false]"},
			{nil, 0, math.MaxInt64, true, 2, "[5:!c:x:true:false 3:!a:x:false:false]"},
			{[]string{"!z:x"}, 0, math.MaxInt64, false, 10, "[]"},
		} {
			if got := list(c.rooms, c.after, c.before, c.desc, c.limit); got != c.want {
				t.Errorf("NotificationEvents(%v, %d, %d, desc %v, %d) = %s, want %s", c.rooms, c.after, c.before, c.desc, c.limit, got, c.want)
			}
		}
	})
}

func TestUnreadRows(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		save := func(del [][2]string, rows ...Unread) {
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
				if err := DeleteUnreadRooms(ctx, tx, del); err != nil {
					return err
				}
				return SaveUnread(ctx, tx, rows)
			})
		}
		all := func() []string {
			t.Helper()
			us, err := AllUnread(ctx, s.DB())
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, u := range us {
				out = append(out, fmt.Sprintf("%s %s %s %d/%d@%d", u.UserID, u.RoomID, u.ThreadID, u.Notifications, u.Highlights, u.LastPos))
			}
			sort.Strings(out)
			return out
		}
		save(nil, Unread{"@u:x", "!a:x", "main", 2, 1, 5}, Unread{"@u:x", "!a:x", "$t", 1, 0, 6}, Unread{"@v:x", "!a:x", "main", 1, 0, 5})
		rmWant(t, "saved", all(), []string{"@u:x !a:x main 2/1@5", "@u:x !a:x $t 1/0@6", "@v:x !a:x main 1/0@5"})
		// u's room is rewritten: the thread is gone, main changed.
		save([][2]string{{"@u:x", "!a:x"}}, Unread{"@u:x", "!a:x", "main", 3, 1, 9})
		rmWant(t, "rewritten", all(), []string{"@u:x !a:x main 3/1@9", "@v:x !a:x main 1/0@5"})
		save([][2]string{{"@v:x", "!a:x"}})
		rmWant(t, "deleted", all(), []string{"@u:x !a:x main 3/1@9"})
	})
}

func TestReadPositions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		rmInsertEvents(t, s, "!a:x", 10, 20, 30)
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			for _, r := range []Receipt{
				{"!a:x", "m.read", "@u:x", "", "$!a:x-20", 1, 1},
				{"!a:x", "m.read.private", "@u:x", "", "$!a:x-30", 2, 2},
				{"!a:x", "m.read", "@u:x", "$t", "$!a:x-10", 3, 3},
				{"!a:x", "m.fully_read", "@v:x", "", "$!a:x-30", 4, 4}, // not a read receipt
				{"!a:x", "m.read", "@v:x", "", "$unknown", 5, 5},       // an event not held
			} {
				if err := UpsertReceipt(ctx, tx, &r); err != nil {
					return err
				}
			}
			return nil
		})
		ps, err := ReadPositions(ctx, s.DB(), []string{"@u:x", "@v:x"}, []string{"!a:x"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, fmt.Sprintf("%s %q %d", p.UserID, p.ThreadID, p.Pos))
		}
		sort.Strings(got)
		rmWant(t, "read positions", got, []string{`@u:x "" 30`, `@u:x "$t" 10`})
	})
}

func TestPusherProgress(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, s := rmOpen(t, db)
		if _, found, err := PusherProgress(ctx, s.DB(), "@u:x", "app", "key"); err != nil || found {
			t.Fatalf("progress of an unknown pusher: %v %v", found, err)
		}
		set := func(user, app, key string, pos int64) {
			rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
				return SetPusherProgress(ctx, tx, user, app, key, pos)
			})
		}
		set("@u:x", "app", "key", 5)
		set("@u:x", "app", "key", 7)
		set("@u:x", "app", "other", 1)
		set("@v:x", "app", "key", 2)
		if pos, found, err := PusherProgress(ctx, s.DB(), "@u:x", "app", "key"); err != nil || !found || pos != 7 {
			t.Errorf("progress: %d %v %v, want 7", pos, found, err)
		}
		rmTx(t, s, func(ctx context.Context, tx *sqlutil.Tx) error {
			return DeletePusherProgress(ctx, tx, "@u:x", []PusherProgressKey{{"@u:x", "app", "other"}})
		})
		keys, err := PushersWithProgress(ctx, s.DB())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range keys {
			got = append(got, k.UserID+" "+k.AppID+" "+k.PushKey)
		}
		sort.Strings(got)
		rmWant(t, "pushers with progress", got, []string{"@u:x app other", "@v:x app key"})
	})
}
