package storage

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestDehydratedDevices(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		if _, err := SelectDehydratedDevice(ctx, s.DB(), "@a:x"); err != ErrNotFound {
			t.Fatalf("none yet: %v", err)
		}
		put := func(user, device, data string) {
			t.Helper()
			mustTx(t, s, func(tx *sqlutil.Tx) error {
				return UpsertDehydratedDevice(ctx, tx, &DehydratedDevice{UserID: user, DeviceID: device, DeviceData: data})
			})
		}
		get := func(user string) *DehydratedDevice {
			t.Helper()
			d, err := SelectDehydratedDevice(ctx, s.DB(), user)
			if err != nil {
				t.Fatalf("select %s: %v", user, err)
			}
			return d
		}
		put("@a:x", "D1", `{"algorithm":"a1"}`)
		put("@b:x", "D1", `{"algorithm":"b1"}`)
		if d := get("@a:x"); d.DeviceID != "D1" || d.DeviceData != `{"algorithm":"a1"}` {
			t.Fatalf("a: %+v", d)
		}
		// One per user: a new one replaces it.
		put("@a:x", "D2", `{"algorithm":"a2"}`)
		if d := get("@a:x"); d.DeviceID != "D2" || d.DeviceData != `{"algorithm":"a2"}` {
			t.Fatalf("a after replacing: %+v", d)
		}
		// Deleting devices forgets the dehydrated one among them only,
		// and only the user's.
		mustTx(t, s, func(tx *sqlutil.Tx) error { return DeleteDehydratedDevices(ctx, tx, "@a:x", []string{"D1", "D3"}) })
		if d := get("@a:x"); d.DeviceID != "D2" {
			t.Fatalf("a after deleting other devices: %+v", d)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error { return DeleteDehydratedDevices(ctx, tx, "@a:x", []string{"D1", "D2"}) })
		if _, err := SelectDehydratedDevice(ctx, s.DB(), "@a:x"); err != ErrNotFound {
			t.Fatalf("a after deleting D2: %v", err)
		}
		if d := get("@b:x"); d.DeviceID != "D1" {
			t.Fatalf("b: %+v", d)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error { return DeleteDehydratedDevices(ctx, tx, "@b:x", nil) })
	})
}
