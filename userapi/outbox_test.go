package userapi

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// What a crash left in the outbox (committed, not yet published) is
// published when the user API starts, and the outbox is emptied.
func TestOutboxAfterCrash(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		st, err := storage.New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return storage.InsertOutbox(ctx, tx, api.SubjectKeyChange, "key:@a:test.org:1", []byte(`{"v":1,"kind":"device","user_id":"@a:test.org","stream_id":1,"device_id":"D"}`))
		}); err != nil {
			t.Fatal(err)
		}
		u, b := newTestAPI(t, db)
		var mu sync.Mutex
		var got []string
		stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: api.UserOutputStream.Name, Durable: "test"}, func(_ context.Context, m *bus.Msg) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, m.Subject)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || got[0] != api.SubjectKeyChange {
			t.Fatalf("published: %v", got)
		}
		if left, err := storage.SelectOutbox(ctx, u.store.DB(), 10); err != nil || len(left) != 0 {
			t.Fatalf("outbox after flush: %v %v", left, err)
		}
	})
}

// A change committed while UserOutput cannot take it (NATS away, or the
// process killed between its commit and its publish) is not lost: the user
// API that starts next publishes it, with its message ID. Failed before:
// account data and device changes were published after the commit without
// an outbox, so the publish error reached the caller of a committed change
// and the update never reached the sync API. (The suite had only crashed
// with keys in the outbox.)
func TestOutboxChangesSurviveFailedPublish(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		cfg := Config{ServerName: "test.org", BcryptCost: 4, AccessTokenLifetime: time.Hour}
		// No UserOutput stream: every publish fails.
		u, err := New(ctx, cfg, db, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "a", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		if err := u.PutAccountData(ctx, "@a:test.org", "", "m.test", []byte(`{"n":1}`)); err != nil {
			t.Fatalf("committed change failed for its caller: %v", err)
		}
		if _, err := u.Login(ctx, api.NewSession{UserID: "@a:test.org", DeviceID: "DEV"}); err != nil {
			t.Fatalf("login: %v", err)
		}
		if left, err := storage.SelectOutbox(ctx, db, 10); err != nil || len(left) != 2 {
			t.Fatalf("outbox after failed publishes: %d rows, %v", len(left), err)
		}

		// The restart: the stream is there, a new user API starts.
		if err := b.EnsureStreams(ctx, api.Streams()...); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]int{}
		stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: api.UserOutputStream.Name, Durable: "test"}, func(_ context.Context, m *bus.Msg) error {
			mu.Lock()
			defer mu.Unlock()
			got[m.Subject]++
			if m.Header.Get("Nats-Msg-Id") == "" {
				t.Errorf("%s published without a message ID", m.Subject)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		if _, err := New(ctx, cfg, db, b, nil); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := got[api.SubjectAccountData] + got[api.SubjectDevices]
			mu.Unlock()
			if n >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if got[api.SubjectAccountData] != 1 || got[api.SubjectDevices] != 1 {
			t.Fatalf("published after the restart: %v", got)
		}
	})
}

// The relay publishes what a failed flush left behind without waiting for
// a restart or the next change.
func TestOutboxRelayRetries(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		b, err := bus.Open(ctx, bus.Config{StoreDir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		u, err := New(ctx, Config{ServerName: "test.org", BcryptCost: 4, AccessTokenLifetime: time.Hour}, db, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		u.Start()
		defer u.Close()
		if err := u.PutAccountData(ctx, "@a:test.org", "!r:test.org", "m.test", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := b.EnsureStreams(ctx, api.Streams()...); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * outboxRetry)
		for {
			left, err := storage.SelectOutbox(ctx, db, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d rows still in the outbox", len(left))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
