package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestToDeviceInbox(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		// 1,200 devices at position 1 (three INSERT batches), and three
		// messages for D0 at positions 2..4.
		var msgs []ToDevice
		for i := range 1200 {
			msgs = append(msgs, ToDevice{UserID: "@u:x", DeviceID: fmt.Sprintf("D%d", i), Pos: 1, Sender: "@s:x", Type: "m.test",
				Content: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		for p := int64(2); p <= 4; p++ {
			msgs = append(msgs, ToDevice{UserID: "@u:x", DeviceID: "D0", Pos: p, Sender: "@s:x", Type: "m.test", Content: json.RawMessage(`{}`)})
		}
		before := db.Queries()
		if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := InsertToDevice(ctx, tx, msgs); err != nil {
				return err
			}
			return SetToDevicePos(ctx, tx, 4)
		}); err != nil {
			t.Fatal(err)
		}
		if n := db.Queries() - before; n > 4 {
			t.Errorf("1,203 messages took %d statements, want at most 4", n)
		}
		// A redelivery of the same rows is no error and changes nothing.
		if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error { return InsertToDevice(ctx, tx, msgs[:2]) }); err != nil {
			t.Fatalf("insert again: %v", err)
		}
		if pos, err := ToDevicePos(ctx, db); err != nil || pos != 4 {
			t.Fatalf("stream position = %d, %v; want 4", pos, err)
		}

		got, err := ToDeviceSince(ctx, db, "@u:x", "D0", 0, 4, 2)
		if err != nil || len(got) != 2 || got[0].Pos != 1 || got[1].Pos != 2 || string(got[0].Content) != `{"i":0}` {
			t.Fatalf("first two of D0 = %+v, %v", got, err)
		}
		got, _ = ToDeviceSince(ctx, db, "@u:x", "D0", 2, 3, 100)
		if len(got) != 1 || got[0].Pos != 3 {
			t.Fatalf("D0 in (2,3] = %+v", got)
		}
		if err := DeleteToDeviceUpTo(ctx, db, "@u:x", "D0", 3); err != nil {
			t.Fatal(err)
		}
		got, _ = ToDeviceSince(ctx, db, "@u:x", "D0", 0, 10, 100)
		if len(got) != 1 || got[0].Pos != 4 {
			t.Fatalf("D0 after the ack of 3 = %+v", got)
		}
		inboxes, err := ToDeviceInboxes(ctx, db)
		if err != nil || len(inboxes) != 1200 {
			t.Fatalf("%d inboxes, %v", len(inboxes), err)
		}
		for _, b := range inboxes {
			if b.DeviceID == "D0" && (b.Min != 4 || b.Max != 4) {
				t.Errorf("D0 holds %d..%d, want 4..4", b.Min, b.Max)
			}
		}
		if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return DeleteToDeviceOfDevices(ctx, tx, "@u:x", []string{"D0", "D1", "D2"})
		}); err != nil {
			t.Fatal(err)
		}
		if inboxes, _ = ToDeviceInboxes(ctx, db); len(inboxes) != 1197 {
			t.Fatalf("%d inboxes after deleting three devices", len(inboxes))
		}

		// Transactions and EDUs are recorded once.
		txn := &ToDeviceTxn{UserID: "@s:x", DeviceID: "S", EventType: "m.test", TxnID: "t1"}
		if seen, err := ToDeviceTxnSeen(ctx, db, txn); err != nil || seen {
			t.Fatalf("unseen txn: %v %v", seen, err)
		}
		var first, second bool
		_ = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			first, err = InsertToDeviceTxn(ctx, tx, txn, 5, 1000)
			if err == nil {
				second, err = InsertToDeviceTxn(ctx, tx, txn, 6, 1000)
			}
			return err
		})
		if err != nil || !first || second {
			t.Fatalf("txn inserts: %v %v %v", first, second, err)
		}
		if seen, _ := ToDeviceTxnSeen(ctx, db, txn); !seen {
			t.Fatal("txn not seen")
		}
		other := *txn
		other.EventType = "m.other"
		if seen, _ := ToDeviceTxnSeen(ctx, db, &other); seen {
			t.Fatal("the same txn ID for another event type is another transaction")
		}
		_ = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			first, err = InsertToDeviceFederationSeen(ctx, tx, "o.test", "m1", 1000)
			if err == nil {
				second, err = InsertToDeviceFederationSeen(ctx, tx, "o.test", "m1", 1000)
			}
			return err
		})
		if err != nil || !first || second {
			t.Fatalf("federation seen: %v %v %v", first, second, err)
		}
		if err := PruneToDevice(ctx, db, 2000, 500); err != nil {
			t.Fatal(err)
		}
		if seen, _ := ToDeviceTxnSeen(ctx, db, txn); seen {
			t.Error("old txn not pruned")
		}
		_ = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			first, err = InsertToDeviceFederationSeen(ctx, tx, "o.test", "m1", 1000)
			return err
		})
		if first {
			t.Error("EDU record pruned before its time")
		}

		// The outbox is read in order and emptied up to what was published.
		edus := []ToDeviceOutbound{{Pos: 7, Destination: "b.test", MsgID: "x", Payload: json.RawMessage(`{"a":1}`)},
			{Pos: 7, Destination: "a.test", MsgID: "y", Payload: json.RawMessage(`{}`)}, {Pos: 8, Destination: "a.test", MsgID: "z", Payload: json.RawMessage(`{}`)}}
		if err := s.WithTx(ctx, func(tx *sqlutil.Tx) error { return InsertToDeviceOutbox(ctx, tx, edus) }); err != nil {
			t.Fatal(err)
		}
		out, err := SelectToDeviceOutbox(ctx, db, 10)
		if err != nil || len(out) != 3 || out[0].Destination != "a.test" || out[1].Destination != "b.test" || out[2].Pos != 8 ||
			string(out[1].Payload) != `{"a":1}` {
			t.Fatalf("outbox = %+v, %v", out, err)
		}
		if err := DeleteToDeviceOutbox(ctx, db, &out[1]); err != nil {
			t.Fatal(err)
		}
		if out, _ = SelectToDeviceOutbox(ctx, db, 10); len(out) != 1 || out[0].Pos != 8 {
			t.Fatalf("outbox after publishing two = %+v", out)
		}
	})
}
