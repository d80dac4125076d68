package storage

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// TestQueueAndTransactions runs a service's queue through two
// transactions on both engines: IDs are consecutive per service, the
// unacknowledged transaction is returned as stored until finished, and
// finishing deletes exactly the rows it carried.
func TestQueueAndTransactions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		tx := func(fn func(tx *sqlutil.Tx) error) {
			t.Helper()
			if err := s.WithTx(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		if id, err := MaxQueueID(ctx, s.DB()); err != nil || id != 0 {
			t.Fatalf("max queue ID of an empty queue: %d, %v", id, err)
		}
		tx(func(tx *sqlutil.Tx) error {
			return InsertQueue(ctx, tx, []QueueRow{
				{ID: 1, ServiceID: "a", Kind: KindEvent, Payload: []byte(`{"n":1}`)},
				{ID: 2, ServiceID: "b", Kind: KindEvent, Payload: []byte(`{"n":2}`)},
				{ID: 3, ServiceID: "a", Kind: KindEphemeral, Payload: []byte(`{"n":3}`)},
			})
		})
		if t0, err := PendingTxn(ctx, s.DB(), "a"); err != nil || t0 != nil {
			t.Fatalf("pending transaction before any: %+v, %v", t0, err)
		}
		rows, err := SelectQueue(ctx, s.DB(), "a", 0, 10)
		if err != nil || len(rows) != 2 || rows[0].ID != 1 || rows[1].ID != 3 || string(rows[1].Payload) != `{"n":3}` || rows[1].Kind != KindEphemeral {
			t.Fatalf("queue of a: %+v, %v", rows, err)
		}
		var first *Txn
		tx(func(tx *sqlutil.Tx) error {
			var err error
			first, err = BeginTxn(ctx, tx, "a", []byte(`{"events":[1]}`), 1)
			return err
		})
		if first.ID != 1 {
			t.Fatalf("first transaction ID %d", first.ID)
		}
		got, err := PendingTxn(ctx, s.DB(), "a")
		if err != nil || got == nil || got.ID != 1 || string(got.Body) != `{"events":[1]}` || got.LastID != 1 {
			t.Fatalf("pending transaction: %+v, %v", got, err)
		}
		var n int
		tx(func(tx *sqlutil.Tx) error {
			var err error
			n, err = FinishTxn(ctx, tx, "a", got)
			return err
		})
		if n != 1 {
			t.Fatalf("finishing deleted %d rows", n)
		}
		if t0, _ := PendingTxn(ctx, s.DB(), "a"); t0 != nil {
			t.Fatalf("pending transaction after it finished: %+v", t0)
		}
		var second *Txn
		tx(func(tx *sqlutil.Tx) error {
			var err error
			second, err = BeginTxn(ctx, tx, "a", []byte(`{"events":[3]}`), 3)
			return err
		})
		if second.ID != 2 {
			t.Fatalf("second transaction ID %d", second.ID)
		}
		counts, err := PendingCounts(ctx, s.DB())
		if err != nil || counts["a"] != 1 || counts["b"] != 1 {
			t.Fatalf("pending counts %v, %v", counts, err)
		}
		// Rows are gone but IDs are not reused.
		tx(func(tx *sqlutil.Tx) error { _, err := FinishTxn(ctx, tx, "a", second); return err })
		tx(func(tx *sqlutil.Tx) error { return ForgetServicesExcept(ctx, tx, []string{"a"}) })
		if id, err := MaxQueueID(ctx, s.DB()); err != nil || id != 3 {
			t.Fatalf("max queue ID after the queue emptied: %d, %v", id, err)
		}
		if counts, _ := PendingCounts(ctx, s.DB()); len(counts) != 0 {
			t.Fatalf("pending after b was forgotten: %v", counts)
		}
		// Consumer positions.
		if known, err := ConsumerKnown(ctx, s.DB(), "c"); err != nil || known {
			t.Fatalf("consumer known before any position: %v, %v", known, err)
		}
		tx(func(tx *sqlutil.Tx) error { return Consumers.Set(ctx, tx, "c", 0) })
		if known, err := ConsumerKnown(ctx, s.DB(), "c"); err != nil || !known {
			t.Fatalf("consumer known at position 0: %v, %v", known, err)
		}
		tx(func(tx *sqlutil.Tx) error { return Consumers.Set(ctx, tx, "c", 42) })
		if seq, err := Consumers.Get(ctx, s.DB(), "c"); err != nil || seq != 42 {
			t.Fatalf("consumer position %d, %v", seq, err)
		}
	})
}
