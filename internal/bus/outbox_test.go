package bus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/bus"
)

// memTable is an outbox table in memory.
type memTable struct{ rows []bus.OutboxRow }

func (m *memTable) outbox(batch int) *bus.Outbox[bus.OutboxRow] {
	return &bus.Outbox[bus.OutboxRow]{
		Batch: batch,
		Load: func(_ context.Context, n int) ([]bus.OutboxRow, error) {
			return append([]bus.OutboxRow(nil), m.rows[:min(n, len(m.rows))]...), nil
		},
		Message: func(r bus.OutboxRow) (string, string, []byte) { return r.Subject, r.MsgID, r.Payload },
		Delete: func(_ context.Context, done []bus.OutboxRow) error {
			if len(done) == 0 || done[0].ID != m.rows[0].ID {
				return fmt.Errorf("delete of %d rows that are not the table's first", len(done))
			}
			m.rows = m.rows[len(done):]
			return nil
		},
	}
}

// A flush publishes every row in order, across batches, and empties the
// table; a failed publish keeps that row and the rest for the next flush,
// and the rows published before it are not published again.
func TestOutboxFlushInOrderAndKeepsTheRestOnFailure(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	ctx := context.Background()
	tbl := &memTable{}
	for i := range 450 {
		subject := "Test.o"
		if i == 300 {
			subject = "Nostream.x" // no stream takes it: the publish fails
		}
		tbl.rows = append(tbl.rows, bus.OutboxRow{ID: int64(i), Subject: subject, MsgID: fmt.Sprint("m", i), Payload: []byte(fmt.Sprint(i))})
	}
	o := tbl.outbox(200)
	if err := o.Flush(ctx, b); err == nil {
		t.Fatal("flush with an unpublishable row succeeded")
	}
	if len(tbl.rows) != 150 || tbl.rows[0].ID != 300 {
		t.Fatalf("after the failure the table holds %d rows from %d, want 150 from 300", len(tbl.rows), tbl.rows[0].ID)
	}
	tbl.rows[0].Subject = "Test.o"
	if err := o.Flush(ctx, b); err != nil {
		t.Fatal(err)
	}
	if len(tbl.rows) != 0 {
		t.Fatalf("%d rows left", len(tbl.rows))
	}
	var r recorder
	stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "outbox"}, func(_ context.Context, m *bus.Msg) error {
		r.add(m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	got := r.waitFor(t, 450)
	for i, s := range got {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d = %s: out of order or repeated", i, s)
		}
	}
	// Without a bus the rows wait.
	tbl.rows = []bus.OutboxRow{{ID: 1, Subject: "Test.o", MsgID: "later", Payload: []byte(`1`)}}
	if err := o.Flush(ctx, nil); err != nil || len(tbl.rows) != 1 {
		t.Fatalf("flush without a bus: %v, %d rows", err, len(tbl.rows))
	}
}
