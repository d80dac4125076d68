package storage

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func newTestStorage(t *testing.T, db *sqlutil.DB) *Storage {
	t.Helper()
	s, err := New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Read-modify-write of a user's push rules under LockPushRules loses no
// concurrent update.
func TestPushRulesLock(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		if raw, err := SelectPushRules(ctx, s.DB(), "@a:x"); err != nil || raw != nil {
			t.Fatalf("no rules yet: %s %v", raw, err)
		}
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.WithTx(ctx, func(tx *sqlutil.Tx) error {
					raw, err := LockPushRules(ctx, tx, "@a:x")
					if err != nil {
						return err
					}
					var v struct {
						N int `json:"n"`
					}
					if err := json.Unmarshal(raw, &v); err != nil {
						return err
					}
					return UpdatePushRules(ctx, tx, "@a:x", json.RawMessage(`{"n":`+strconv.Itoa(v.N+1)+`}`))
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		raw, err := SelectPushRules(ctx, s.DB(), "@a:x")
		if err != nil || string(raw) != `{"n":16}` {
			t.Fatalf("after %d concurrent increments: %s %v", n, raw, err)
		}
		if raw, _ := SelectPushRules(ctx, s.DB(), "@b:x"); raw != nil {
			t.Fatalf("another user's rules: %s", raw)
		}
	})
}

func TestPushersStorage(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		p := func(user, device, app, key string, ts int64) *Pusher {
			return &Pusher{UserID: user, AppID: app, PushKey: key, DeviceID: device, Kind: "http", AppDisplayName: "A",
				DeviceDisplayName: "D", Lang: "en", Data: json.RawMessage(`{"url":"u"}`), CreatedTS: ts}
		}
		for _, x := range []*Pusher{p("@a:x", "A1", "app", "k1", 3), p("@a:x", "A2", "app", "k2", 1), p("@a:x", "A1", "other", "k1", 2), p("@b:x", "B1", "app", "k1", 4)} {
			if err := UpsertPusher(ctx, s.DB(), x); err != nil {
				t.Fatal(err)
			}
		}
		// A replacement keeps the device and creation time.
		repl := p("@a:x", "A9", "app", "k1", 99)
		repl.Lang, repl.ProfileTag, repl.Data = "fr", "tag", json.RawMessage(`{"url":"v"}`)
		if err := UpsertPusher(ctx, s.DB(), repl); err != nil {
			t.Fatal(err)
		}
		got, err := SelectPushers(ctx, s.DB(), []string{"@a:x"})
		if err != nil || len(got) != 3 {
			t.Fatalf("pushers of @a:x: %+v %v", got, err)
		}
		if got[0].PushKey != "k2" || got[1].AppID != "other" || got[2].PushKey != "k1" {
			t.Fatalf("order by creation: %+v", got)
		}
		if r := got[2]; r.DeviceID != "A1" || r.CreatedTS != 3 || r.Lang != "fr" || r.ProfileTag != "tag" || string(r.Data) != `{"url":"v"}` {
			t.Fatalf("replaced pusher %+v", r)
		}

		var others []string
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			others, err = DeleteOtherUsersPushers(ctx, tx, "app", "k1", "@a:x")
			return err
		})
		if err != nil || len(others) != 1 || others[0] != "@b:x" {
			t.Fatalf("deleted others: %v %v", others, err)
		}
		if n, err := DeleteDevicePushers(ctx, s.DB(), "@a:x", []string{"A1", "B1"}); err != nil || n != 2 {
			t.Fatalf("device pushers deleted: %d %v", n, err)
		}
		if ok, err := DeletePusher(ctx, s.DB(), "@a:x", "app", "k2"); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		if ok, _ := DeletePusher(ctx, s.DB(), "@a:x", "app", "k2"); ok {
			t.Fatal("deleted twice")
		}
		if got, _ := SelectPushers(ctx, s.DB(), []string{"@a:x", "@b:x"}); len(got) != 0 {
			t.Fatalf("left: %+v", got)
		}
		if err := UpsertPusher(ctx, s.DB(), p("@a:x", "A1", "app", "k3", 5)); err != nil {
			t.Fatal(err)
		}
		if n, err := DeleteAllPushers(ctx, s.DB(), "@a:x"); err != nil || n != 1 {
			t.Fatalf("delete all: %d %v", n, err)
		}

		// Global account data goes by type; room account data stays.
		for _, room := range []string{"", "!r:x"} {
			if err := UpsertAccountData(ctx, s.DB(), "@a:x", room, "t1", json.RawMessage(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		var deleted []string
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			deleted, err = DeleteGlobalAccountData(ctx, tx, "@a:x", []string{"t1", "t2"})
			return err
		})
		if err != nil || len(deleted) != 1 || deleted[0] != "t1" {
			t.Fatalf("deleted account data: %v %v", deleted, err)
		}
		if _, err := SelectAccountData(ctx, s.DB(), "@a:x", "!r:x", "t1"); err != nil {
			t.Fatalf("room account data went: %v", err)
		}
	})
}
