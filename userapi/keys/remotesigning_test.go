package keys

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/userapi/api"
)

// A local user's user-signing key signs a remote user's master key (given
// by the caller): verified, stored, announced to the signer's own devices
// only (user_signing), merged into that key for the signer only, and
// failures for a bad signature, another key or a missing key.
func TestRemoteUserSignatures(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		k, st := newTestKeys(t, db)
		const alice, bob, carol = "@alice:x", "@bob:remote", "@carol:remote"
		cs := testutil.NewCrossSigning(t, alice)
		body := cs.Upload(t)
		if err := k.UploadCrossSigningKeys(ctx, api.CrossSigningKeys{UserID: alice, MasterKey: body["master_key"].(json.RawMessage),
			SelfSigningKey: body["self_signing_key"].(json.RawMessage), UserSigningKey: body["user_signing_key"].(json.RawMessage)}); err != nil {
			t.Fatal(err)
		}
		outbox(t, st)
		bcs := testutil.NewCrossSigning(t, bob)
		bobMaster := bcs.CrossSigningKey(t, bcs.Master, "master", nil)
		bobPub := testutil.PublicKey(bcs.Master)
		uskID := "ed25519:" + testutil.PublicKey(cs.UserSigning)
		var obj map[string]any
		_ = json.Unmarshal(bobMaster, &obj)
		sign := func(o map[string]any) json.RawMessage { return testutil.SignObject(t, o, alice, uskID, cs.UserSigning) }
		masters := map[string]json.RawMessage{bob: bobMaster}

		failures, err := k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{bob: {bobPub: sign(obj)}}, masters)
		if err != nil || len(failures) != 0 {
			t.Fatalf("signature of a remote master key: %v %v", failures, err)
		}
		if got := summaries(outbox(t, st)); !slices.Equal(got, []string{"user_signing/3/[]"}) {
			t.Fatalf("changes: %v", got)
		}
		// Again: already stored, nothing announced.
		if failures, err := k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{bob: {bobPub: sign(obj)}}, masters); err != nil || len(failures) != 0 {
			t.Fatalf("repeated: %v %v", failures, err)
		}
		if got := outbox(t, st); len(got) != 0 {
			t.Fatalf("repeated signature announced: %v", summaries(got))
		}

		merged, err := k.MergeSignatures(ctx, alice, map[string]json.RawMessage{bob: bobMaster, carol: json.RawMessage(`{"x":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Signatures map[string]map[string]string `json:"signatures"`
		}
		_ = json.Unmarshal(merged[bob], &got)
		if got.Signatures[alice][uskID] == "" || string(merged[carol]) != `{"x":1}` {
			t.Fatalf("merged: %s", merged)
		}
		if other, _ := k.MergeSignatures(ctx, "@dave:x", map[string]json.RawMessage{bob: bobMaster}); string(other[bob]) != string(bobMaster) {
			t.Fatalf("another user sees alice's signature: %s", other[bob])
		}
		// bob's new master key: the old signature is not merged into it.
		newMaster := bcs.CrossSigningKey(t, testutil.NewSigningKey(t), "master", nil)
		if m, _ := k.MergeSignatures(ctx, alice, map[string]json.RawMessage{bob: newMaster}); string(m[bob]) != string(newMaster) {
			t.Fatalf("signature merged into another key: %s", m[bob])
		}

		tampered := map[string]any{}
		for key, v := range obj {
			tampered[key] = v
		}
		tampered["usage"] = []string{"master", "other"}
		wrong := testutil.SignObject(t, obj, alice, uskID, testutil.NewSigningKey(t))
		failures, err = k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{
			bob:   {bobPub: wrong},
			carol: {"KEY": sign(map[string]any{"user_id": carol})},
		}, masters)
		if err != nil || failures[bob][bobPub].Errcode != "M_INVALID_SIGNATURE" || failures[carol]["KEY"].Errcode != "M_NOT_FOUND" {
			t.Fatalf("failures: %v %v", failures, err)
		}
		failures, _ = k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{bob: {bobPub: sign(tampered)}}, masters)
		if failures[bob][bobPub].Errcode != "M_UNKNOWN" {
			t.Fatalf("another key signed: %v", failures)
		}
		// A key that is not bob's master key (the caller's answer from
		// bob's server names another user) is no master key at all.
		failures, _ = k.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{carol: {bobPub: sign(obj)}}, map[string]json.RawMessage{carol: bobMaster})
		if failures[carol][bobPub].Errcode != "M_NOT_FOUND" {
			t.Fatalf("a master key of another user: %v", failures)
		}
		if got := outbox(t, st); len(got) != 0 {
			t.Fatalf("failures announced: %v", summaries(got))
		}
	})
}
