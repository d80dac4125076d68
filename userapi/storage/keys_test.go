package storage

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func addDevice(t *testing.T, s *Storage, userID, deviceID string, name *string) {
	t.Helper()
	err := s.WithTx(context.Background(), func(tx *sqlutil.Tx) error {
		_, err := InsertDevice(context.Background(), tx, &Device{UserID: userID, DeviceID: deviceID, DisplayName: name})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mustTx(t *testing.T, s *Storage, fn func(tx *sqlutil.Tx) error) {
	t.Helper()
	if err := s.WithTx(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceKeys(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		name := "Phone"
		addDevice(t, s, "@a:x", "D1", &name)
		addDevice(t, s, "@a:x", "D2", nil)
		addDevice(t, s, "@b:x", "D3", nil)
		if _, err := SelectDeviceKeyJSON(ctx, s.DB(), "@a:x", "D1"); err != ErrNotFound {
			t.Fatalf("no keys yet: %v", err)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			for _, d := range [][2]string{{"@a:x", "D1"}, {"@a:x", "D2"}, {"@b:x", "D3"}} {
				if err := UpsertDeviceKeys(ctx, tx, d[0], d[1], `{"device_id":"`+d[1]+`"}`, 1); err != nil {
					return err
				}
			}
			return UpsertDeviceKeys(ctx, tx, "@a:x", "D1", `{"v":2}`, 2)
		})
		got, err := SelectDeviceKeys(ctx, s.DB(), []string{"@a:x", "@c:x"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].DeviceID != "D1" || got[0].KeyJSON != `{"v":2}` || got[0].DisplayName == nil || *got[0].DisplayName != "Phone" ||
			got[1].DeviceID != "D2" || got[1].DisplayName != nil {
			t.Fatalf("device keys: %+v", got)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			if _, err := InsertOneTimeKeys(ctx, tx, "@a:x", "D1", []OneTimeKey{{"signed_curve25519", "1", `"k"`}}); err != nil {
				return err
			}
			if err := UpsertFallbackKey(ctx, tx, "@a:x", "D1", OneTimeKey{"signed_curve25519", "f", `"f"`}); err != nil {
				return err
			}
			if err := UpsertSignatures(ctx, tx, []Signature{{"@a:x", "D1", "@a:x", "ed25519:ssk", "sig"}}); err != nil {
				return err
			}
			return DeleteDeviceKeys(ctx, tx, "@a:x", []string{"D1"})
		})
		if got, _ := SelectDeviceKeys(ctx, s.DB(), []string{"@a:x"}); len(got) != 1 || got[0].DeviceID != "D2" {
			t.Fatalf("after delete: %+v", got)
		}
		if n, _ := CountOneTimeKeys(ctx, s.DB(), "@a:x", "D1"); len(n) != 0 {
			t.Fatalf("OTKs left: %v", n)
		}
		if f, _ := SelectUnusedFallbackAlgorithms(ctx, s.DB(), "@a:x", "D1"); len(f) != 0 {
			t.Fatalf("fallback left: %v", f)
		}
		if sigs, _ := SelectSignatures(ctx, s.DB(), []string{"@a:x"}, ""); len(sigs) != 0 {
			t.Fatalf("signatures left: %v", sigs)
		}
	})
}

func TestOneTimeKeys(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		var skipped []OneTimeKey
		mustTx(t, s, func(tx *sqlutil.Tx) (err error) {
			if _, err = InsertOneTimeKeys(ctx, tx, "@a:x", "D", []OneTimeKey{{"signed_curve25519", "b", `"B"`}, {"signed_curve25519", "a", `"A"`}, {"curve25519", "c", `"C"`}}); err != nil {
				return err
			}
			skipped, err = InsertOneTimeKeys(ctx, tx, "@a:x", "D", []OneTimeKey{{"signed_curve25519", "a", `"A2"`}, {"signed_curve25519", "d", `"D"`}})
			return err
		})
		if len(skipped) != 1 || skipped[0].KeyID != "a" {
			t.Fatalf("skipped: %+v", skipped)
		}
		stored, err := SelectOneTimeKeys(ctx, s.DB(), "@a:x", "D", skipped)
		if err != nil || stored[[2]string{"signed_curve25519", "a"}] != `"A"` {
			t.Fatalf("stored: %v %v", stored, err)
		}
		counts, err := CountOneTimeKeys(ctx, s.DB(), "@a:x", "D")
		if err != nil || counts["signed_curve25519"] != 3 || counts["curve25519"] != 1 {
			t.Fatalf("counts: %v %v", counts, err)
		}
		// Oldest first: b, a, d; a device without keys gets nothing.
		var order []string
		for range 4 {
			mustTx(t, s, func(tx *sqlutil.Tx) error {
				got, err := ClaimOneTimeKeys(ctx, tx, []KeyClaim{{"@a:x", "D", "signed_curve25519"}, {"@a:x", "E", "signed_curve25519"}})
				for _, k := range got {
					if k.DeviceID != "D" {
						t.Errorf("claimed from %s", k.DeviceID)
					}
					order = append(order, k.KeyID+"="+k.KeyJSON)
				}
				return err
			})
		}
		if !slices.Equal(order, []string{`b="B"`, `a="A"`, `d="D"`}) {
			t.Fatalf("claim order: %v", order)
		}
		// Fallback keys: replaced per algorithm, used once claimed, the
		// same key again does not make it unused.
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			if err := UpsertFallbackKey(ctx, tx, "@a:x", "D", OneTimeKey{"signed_curve25519", "f1", `"F1"`}); err != nil {
				return err
			}
			return UpsertFallbackKey(ctx, tx, "@a:x", "D", OneTimeKey{"signed_curve25519", "f2", `"F2"`})
		})
		if algs, _ := SelectUnusedFallbackAlgorithms(ctx, s.DB(), "@a:x", "D"); !slices.Equal(algs, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback: %v", algs)
		}
		for range 2 {
			mustTx(t, s, func(tx *sqlutil.Tx) error {
				got, err := ClaimFallbackKeys(ctx, tx, []KeyClaim{{"@a:x", "D", "signed_curve25519"}, {"@a:x", "D", "other"}})
				if err == nil && (len(got) != 1 || got[0].KeyID != "f2" || got[0].KeyJSON != `"F2"`) {
					t.Errorf("fallback claim: %+v", got)
				}
				return err
			})
		}
		if algs, _ := SelectUnusedFallbackAlgorithms(ctx, s.DB(), "@a:x", "D"); len(algs) != 0 {
			t.Fatalf("fallback still unused: %v", algs)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			return UpsertFallbackKey(ctx, tx, "@a:x", "D", OneTimeKey{"signed_curve25519", "f2", `"F2"`})
		})
		if algs, _ := SelectUnusedFallbackAlgorithms(ctx, s.DB(), "@a:x", "D"); len(algs) != 0 {
			t.Fatalf("re-upload made the used key unused: %v", algs)
		}
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			return UpsertFallbackKey(ctx, tx, "@a:x", "D", OneTimeKey{"signed_curve25519", "f3", `"F3"`})
		})
		if algs, _ := SelectUnusedFallbackAlgorithms(ctx, s.DB(), "@a:x", "D"); len(algs) != 1 {
			t.Fatalf("new fallback key not unused: %v", algs)
		}
	})
}

// Concurrent claims of the same devices never get the same key, and every
// key is handed out while claims remain.
func TestConcurrentClaims(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		const devices, perDevice, claimers = 3, 40, 8
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			for d := range devices {
				keys := make([]OneTimeKey, perDevice)
				for i := range keys {
					keys[i] = OneTimeKey{"signed_curve25519", fmt.Sprint(i), fmt.Sprintf(`"%d-%d"`, d, i)}
				}
				if _, err := InsertOneTimeKeys(ctx, tx, "@a:x", fmt.Sprint("D", d), keys); err != nil {
					return err
				}
			}
			return nil
		})
		claims := make([]KeyClaim, devices)
		for d := range claims {
			claims[d] = KeyClaim{"@a:x", fmt.Sprint("D", d), "signed_curve25519"}
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perDevice * devices / claimers {
					var got []ClaimedKey
					err := s.WithTx(ctx, func(tx *sqlutil.Tx) (err error) {
						got, err = ClaimOneTimeKeys(ctx, tx, claims)
						return err
					})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, k := range got {
						if seen[k.KeyJSON] {
							errs <- fmt.Errorf("key %s handed out twice", k.KeyJSON)
						}
						seen[k.KeyJSON] = true
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// claimers * (perDevice*devices/claimers) rounds of one key per
		// device: exactly every key.
		if len(seen) != devices*perDevice {
			t.Fatalf("%d keys handed out, want %d", len(seen), devices*perDevice)
		}
	})
}

func TestCrossSigningAndSignatures(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			for _, k := range []CrossSigningKey{{"@a:x", KeyTypeMaster, "M1", `{"m":1}`}, {"@a:x", KeyTypeMaster, "M2", `{"m":2}`}, {"@a:x", KeyTypeSelfSigning, "S", `{"s":1}`}, {"@b:x", KeyTypeMaster, "BM", `{}`}} {
				if err := UpsertCrossSigningKey(ctx, tx, k); err != nil {
					return err
				}
			}
			return UpsertSignatures(ctx, tx, []Signature{
				{"@a:x", "D1", "@a:x", "ed25519:S", "old"},
				{"@a:x", "D1", "@a:x", "ed25519:S", "s1"},
				{"@a:x", "M2", "@a:x", "ed25519:D1", "s2"},
				{"@a:x", "M2", "@b:x", "ed25519:BU", "s3"},
				{"@a:x", "M2", "@c:x", "ed25519:CU", "s4"},
			})
		})
		keys, err := SelectCrossSigningKeys(ctx, s.DB(), []string{"@a:x", "@b:x", "@z:x"})
		if err != nil || len(keys) != 2 || keys["@a:x"][KeyTypeMaster].PublicKey != "M2" || keys["@a:x"][KeyTypeMaster].KeyJSON != `{"m":2}` || keys["@a:x"][KeyTypeSelfSigning].PublicKey != "S" {
			t.Fatalf("keys: %+v %v", keys, err)
		}
		sigs, err := SelectSignatures(ctx, s.DB(), []string{"@a:x"}, "@b:x")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range sigs {
			got = append(got, s.TargetKeyID+"/"+s.SignerUserID+"/"+s.Signature)
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"D1/@a:x/s1", "M2/@a:x/s2", "M2/@b:x/s3"}) {
			t.Fatalf("signatures: %v", got)
		}
	})
}

func TestKeyStreams(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		if id, err := SelectDeviceStreamID(ctx, s.DB(), "@a:x"); err != nil || id != 0 {
			t.Fatalf("no stream yet: %d %v", id, err)
		}
		type step struct {
			devices    int // 0: a cross-signing change
			last, prev int64
		}
		for i, st := range []step{{2, 2, 0}, {0, 3, -1}, {1, 4, 2}, {3, 7, 4}, {0, 8, -1}, {1, 9, 7}} {
			mustTx(t, s, func(tx *sqlutil.Tx) error {
				if st.devices == 0 {
					id, err := NextStreamID(ctx, tx, "@a:x")
					if err == nil && id != st.last {
						t.Errorf("step %d: stream ID %d, want %d", i, id, st.last)
					}
					return err
				}
				last, prev, err := NextDeviceStreamIDs(ctx, tx, "@a:x", st.devices)
				if err == nil && (last != st.last || prev != st.prev) {
					t.Errorf("step %d: last %d prev %d, want %d %d", i, last, prev, st.last, st.prev)
				}
				return err
			})
		}
		if id, err := SelectDeviceStreamID(ctx, s.DB(), "@a:x"); err != nil || id != 9 {
			t.Fatalf("device stream: %d %v", id, err)
		}
		if id, _ := SelectDeviceStreamID(ctx, s.DB(), "@b:x"); id != 0 {
			t.Fatalf("other user: %d", id)
		}
	})
}

func TestUserOutbox(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		mustTx(t, s, func(tx *sqlutil.Tx) error {
			for i := range 5 {
				if err := InsertOutbox(ctx, tx, "UserOutput.key_change", fmt.Sprint("m", i), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
					return err
				}
			}
			return nil
		})
		msgs, err := SelectOutbox(ctx, s.DB(), 3)
		if err != nil || len(msgs) != 3 || msgs[0].MsgID != "m0" || string(msgs[2].Payload) != `{"n":2}` {
			t.Fatalf("outbox: %+v %v", msgs, err)
		}
		if err := DeleteOutbox(ctx, s.DB(), []int64{msgs[0].ID, msgs[1].ID, msgs[2].ID}); err != nil {
			t.Fatal(err)
		}
		msgs, err = SelectOutbox(ctx, s.DB(), 10)
		if err != nil || len(msgs) != 2 || msgs[0].MsgID != "m3" {
			t.Fatalf("outbox after delete: %+v %v", msgs, err)
		}
	})
}
