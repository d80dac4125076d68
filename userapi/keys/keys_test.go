package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/storage"
)

func newTestKeys(t *testing.T, db *sqlutil.DB) (*Keys, *storage.Storage) {
	t.Helper()
	st, err := storage.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return New("x", st, func(context.Context) error { return nil }, nil), st
}

func addDevices(t *testing.T, st *storage.Storage, userID string, ids ...string) {
	t.Helper()
	err := st.WithTx(context.Background(), func(tx *sqlutil.Tx) error {
		for _, id := range ids {
			if _, err := storage.InsertDevice(context.Background(), tx, &storage.Device{UserID: userID, DeviceID: id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// outbox returns the key changes queued, and empties the outbox.
func outbox(t *testing.T, st *storage.Storage) []api.KeyChange {
	t.Helper()
	msgs, err := storage.SelectOutbox(context.Background(), st.DB(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []api.KeyChange
	var ids []int64
	for _, m := range msgs {
		var kc api.KeyChange
		if m.Subject != api.SubjectKeyChange || json.Unmarshal([]byte(m.Payload), &kc) != nil || m.MsgID != msgID(kc.UserID, kc.StreamID) {
			t.Fatalf("outbox message %+v", m)
		}
		out = append(out, kc)
		ids = append(ids, m.ID)
	}
	if err := storage.DeleteOutbox(context.Background(), st.DB(), ids); err != nil {
		t.Fatal(err)
	}
	return out
}

// summary describes a change as kind/stream/prev/device/deleted.
func summary(kc api.KeyChange) string {
	s := fmt.Sprintf("%s/%d/%v", kc.Kind, kc.StreamID, kc.PrevID)
	if kc.DeviceID != "" {
		s += "/" + kc.DeviceID
	}
	if kc.Deleted {
		s += "/deleted"
	}
	return s
}

func summaries(kcs []api.KeyChange) []string {
	out := make([]string, len(kcs))
	for i, kc := range kcs {
		out[i] = summary(kc)
	}
	return out
}

// Every change of a device list or of cross-signing keys is one KeyChange
// in the outbox, with the user's stream IDs and the prev_id chain of
// device changes; repeating an upload changes nothing.
func TestKeyChanges(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		k, st := newTestKeys(t, db)
		const alice = "@alice:x"
		addDevices(t, st, alice, "A", "B")
		a := testutil.NewE2EEDevice(t, alice, "A")
		up := api.UploadKeysRequest{UserID: alice, DeviceID: "A", DeviceKeys: a.DeviceKeys(t)}
		for range 2 {
			if _, err := k.UploadKeys(ctx, up); err != nil {
				t.Fatal(err)
			}
		}
		got := outbox(t, st)
		if want := []string{"device/1/[]/A"}; !slices.Equal(summaries(got), want) {
			t.Fatalf("first upload: %v, want %v", summaries(got), want)
		}
		if !json.Valid(got[0].Keys) || got[0].Keys == nil {
			t.Fatalf("keys missing: %+v", got[0])
		}
		// Re-keyed: replaced and announced.
		a2 := testutil.NewE2EEDevice(t, alice, "A")
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: alice, DeviceID: "A", DeviceKeys: a2.DeviceKeys(t)}); err != nil {
			t.Fatal(err)
		}
		cs := testutil.NewCrossSigning(t, alice)
		body := cs.Upload(t)
		keys := api.CrossSigningKeys{UserID: alice, MasterKey: body["master_key"].(json.RawMessage),
			SelfSigningKey: body["self_signing_key"].(json.RawMessage), UserSigningKey: body["user_signing_key"].(json.RawMessage)}
		if need, err := k.CrossSigningUploadNeedsAuth(ctx, keys); err != nil || need {
			t.Fatalf("first upload needs auth: %v %v", need, err)
		}
		for range 2 {
			if err := k.UploadCrossSigningKeys(ctx, keys); err != nil {
				t.Fatal(err)
			}
		}
		if need, _ := k.CrossSigningUploadNeedsAuth(ctx, keys); need {
			t.Fatalf("the same keys need auth")
		}
		if need, _ := k.CrossSigningUploadNeedsAuth(ctx, api.CrossSigningKeys{UserID: alice, MasterKey: cs.CrossSigningKey(t, testutil.NewSigningKey(t), "master", nil)}); !need {
			t.Fatalf("a new master key needs no auth")
		}
		// The self-signing key signs device A.
		var devKeys map[string]any
		_ = json.Unmarshal(a2.DeviceKeys(t), &devKeys)
		failures, err := k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{alice: {"A": testutil.SignObject(t, devKeys, alice, "ed25519:"+testutil.PublicKey(cs.SelfSigning), cs.SelfSigning)}}, nil)
		if err != nil || len(failures) != 0 {
			t.Fatalf("signatures: %v %v", failures, err)
		}
		got = outbox(t, st)
		if want := []string{"device/2/[1]/A", "cross_signing/3/[]", "user_signing/4/[]", "device/5/[2]/A"}; !slices.Equal(summaries(got), want) {
			t.Fatalf("changes: %v, want %v", summaries(got), want)
		}
		if got[1].MasterKey == nil || got[1].SelfSigningKey == nil || got[2].UserSigningKey == nil {
			t.Fatalf("cross-signing change without keys: %+v", got[1:3])
		}
		var signed struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		_ = json.Unmarshal(got[3].Keys, &signed)
		if len(signed.Signatures[alice]) != 2 {
			t.Fatalf("device change without the new signature: %s", got[3].Keys)
		}
		// Renamed and deleted devices (with or without keys).
		name := "Phone"
		if err := st.WithTx(ctx, func(tx *sqlutil.Tx) error { return k.DeviceRenamed(ctx, tx, alice, "A", &name) }); err != nil {
			t.Fatal(err)
		}
		if err := st.WithTx(ctx, func(tx *sqlutil.Tx) error { return k.DevicesDeleted(ctx, tx, alice, []string{"A", "B"}) }); err != nil {
			t.Fatal(err)
		}
		got = outbox(t, st)
		if want := []string{"device/6/[5]/A", "device/7/[6]/A/deleted", "device/8/[7]/B/deleted"}; !slices.Equal(summaries(got), want) {
			t.Fatalf("changes: %v, want %v", summaries(got), want)
		}
		if got[0].DeviceDisplayName == nil || *got[0].DeviceDisplayName != "Phone" || got[0].Keys == nil || got[1].Keys != nil {
			t.Fatalf("rename/delete: %+v", got)
		}
		if n, _ := storage.SelectDeviceStreamID(ctx, st.DB(), alice); n != 8 {
			t.Fatalf("device stream ID %d", n)
		}
		// Another user's stream is their own.
		addDevices(t, st, "@bob:x", "C")
		c := testutil.NewE2EEDevice(t, "@bob:x", "C")
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@bob:x", DeviceID: "C", DeviceKeys: c.DeviceKeys(t)}); err != nil {
			t.Fatal(err)
		}
		if got := summaries(outbox(t, st)); !slices.Equal(got, []string{"device/1/[]/C"}) {
			t.Fatalf("bob: %v", got)
		}
	})
}

func TestUploadErrors(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		k, st := newTestKeys(t, db)
		addDevices(t, st, "@a:x", "A")
		a := testutil.NewE2EEDevice(t, "@a:x", "A")
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "GONE", OneTimeKeys: a.OneTimeKeys(t, 0, 1)}); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("unknown device: %v", err)
		}
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", DeviceKeys: json.RawMessage(`{"user_id":"@a:x"}`)}); !errors.Is(err, api.ErrInvalidKeys) {
			t.Fatalf("malformed device keys: %v", err)
		}
		other := testutil.NewE2EEDevice(t, "@a:x", "B")
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", DeviceKeys: other.DeviceKeys(t)}); !errors.Is(err, api.ErrInvalidKeys) {
			t.Fatalf("keys of another device: %v", err)
		}
		// A one-time key object differing only in its signatures is the
		// same key (as Synapse decides).
		otk := map[string]json.RawMessage{"signed_curve25519:1": json.RawMessage(`{"key":"abc","signatures":{"@a:x":{"ed25519:A":"s1"}}}`)}
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", OneTimeKeys: otk}); err != nil {
			t.Fatal(err)
		}
		otk["signed_curve25519:1"] = json.RawMessage(`{"key":"abc","signatures":{"@a:x":{"ed25519:A":"s2"}}}`)
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", OneTimeKeys: otk}); err != nil {
			t.Fatalf("same key, other signature: %v", err)
		}
		otk["signed_curve25519:1"] = json.RawMessage(`{"key":"abd","signatures":{"@a:x":{"ed25519:A":"s2"}}}`)
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", OneTimeKeys: otk}); !errors.Is(err, api.ErrKeyExists) {
			t.Fatalf("other key, same ID: %v", err)
		}
		counts, err := k.OneTimeKeyCounts(ctx, "@a:x", "A")
		if err != nil || counts.Counts["signed_curve25519"] != 1 || len(counts.UnusedFallbackKeyTypes) != 0 {
			t.Fatalf("counts: %+v %v", counts, err)
		}
		if _, err := k.UploadKeys(ctx, api.UploadKeysRequest{UserID: "@a:x", DeviceID: "A", FallbackKeys: map[string]json.RawMessage{"signed_curve25519:f": json.RawMessage(`"fb"`)}}); err != nil {
			t.Fatal(err)
		}
		if counts, _ := k.OneTimeKeyCounts(ctx, "@a:x", "A"); !slices.Equal(counts.UnusedFallbackKeyTypes, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback: %+v", counts)
		}
		if counts, _ := k.OneTimeKeyCounts(ctx, "@nobody:x", "Z"); counts.Counts["signed_curve25519"] != 0 || counts.UnusedFallbackKeyTypes == nil {
			t.Fatalf("unknown device: %+v", counts)
		}
		// Cross-signing.
		cs := testutil.NewCrossSigning(t, "@a:x")
		if err := k.UploadCrossSigningKeys(ctx, api.CrossSigningKeys{UserID: "@a:x", SelfSigningKey: cs.CrossSigningKey(t, cs.SelfSigning, "self_signing", cs.Master)}); !errors.Is(err, api.ErrMissingMasterKey) {
			t.Fatalf("no master: %v", err)
		}
		if err := k.UploadCrossSigningKeys(ctx, api.CrossSigningKeys{UserID: "@a:x", MasterKey: cs.CrossSigningKey(t, cs.Master, "master", nil),
			UserSigningKey: cs.CrossSigningKey(t, cs.UserSigning, "user_signing", nil)}); !errors.Is(err, api.ErrInvalidSignature) {
			t.Fatalf("unsigned user-signing key: %v", err)
		}
		if err := k.UploadCrossSigningKeys(ctx, api.CrossSigningKeys{UserID: "@a:x", MasterKey: json.RawMessage(`{"user_id":"@a:x","usage":["master"],"keys":{"ed25519:abc":"abc"}}`)}); !errors.Is(err, api.ErrInvalidKeys) {
			t.Fatalf("not an ed25519 key: %v", err)
		}
		if n := outbox(t, st); len(n) != 0 {
			t.Fatalf("failed uploads queued changes: %v", summaries(n))
		}
	})
}
