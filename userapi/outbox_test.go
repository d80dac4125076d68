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
