package userapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
)

func TestRemoteDeviceCache(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		const bob = "@bob:remote.org"
		query := func(ids ...string) (*api.QueryKeysResponse, map[string][]string) {
			t.Helper()
			resp, missing, err := u.QueryRemoteKeys(ctx, map[string][]string{bob: ids, "@other:remote.org": nil})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := missing["@other:remote.org"]; !ok {
				t.Fatalf("an unknown user is not missing: %v", missing)
			}
			return resp, missing
		}
		apply := func(up api.RemoteDeviceUpdate) bool {
			t.Helper()
			up.UserID = bob
			resync, err := u.ApplyRemoteDeviceUpdate(ctx, &up)
			if err != nil {
				t.Fatal(err)
			}
			return resync
		}
		keys := func(dev, k string) json.RawMessage {
			return json.RawMessage(`{"user_id":"` + bob + `","device_id":"` + dev + `","keys":{"ed25519:` + dev + `":"` + k + `"}}`)
		}

		// The first update of a user never fetched asks for a resync.
		if !apply(api.RemoteDeviceUpdate{DeviceID: "D1", StreamID: 3, Keys: keys("D1", "k1")}) {
			t.Fatal("first update: no resync")
		}
		if _, missing := query(); !has(missing, bob) {
			t.Fatal("a stale user is served from the cache")
		}
		if stale, _ := u.StaleRemoteUsers(ctx, 10); len(stale) != 1 || stale[0] != bob {
			t.Fatalf("stale users = %v", stale)
		}
		// A resync answer replaces the list and makes it fresh; one older
		// than the cache's fresh list is ignored.
		name := "Phone"
		err := u.StoreRemoteDevices(ctx, &api.UserDevices{UserID: bob, StreamID: 3, MasterKey: json.RawMessage(`{"usage":["master"]}`),
			Devices: []api.UserDevice{{DeviceID: "D1", Keys: keys("D1", "k1"), DisplayName: &name}, {DeviceID: "D2"}}})
		if err != nil {
			t.Fatal(err)
		}
		resp, missing := query()
		if has(missing, bob) || len(resp.DeviceKeys[bob]) != 1 || resp.MasterKeys[bob] == nil {
			t.Fatalf("after a resync: %+v, missing %v", resp, missing)
		}
		var d1 struct {
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(resp.DeviceKeys[bob]["D1"], &d1)
		if d1.Unsigned.Name != "Phone" {
			t.Errorf("D1 = %s", resp.DeviceKeys[bob]["D1"])
		}
		if stale, _ := u.StaleRemoteUsers(ctx, 10); len(stale) != 0 {
			t.Fatalf("stale users after the resync = %v", stale)
		}
		if err := u.StoreRemoteDevices(ctx, &api.UserDevices{UserID: bob, StreamID: 2, Devices: []api.UserDevice{{DeviceID: "D0", Keys: keys("D0", "k0")}}}); err != nil {
			t.Fatal(err)
		}
		if resp, _ := query(); len(resp.DeviceKeys[bob]) != 1 || resp.DeviceKeys[bob]["D1"] == nil {
			t.Fatalf("an older answer replaced the list: %v", resp.DeviceKeys[bob])
		}

		// Updates that follow are applied; a redelivery changes nothing.
		if apply(api.RemoteDeviceUpdate{DeviceID: "D2", StreamID: 4, PrevID: []int64{3}, Keys: keys("D2", "k2")}) {
			t.Fatal("a following update asked for a resync")
		}
		if apply(api.RemoteDeviceUpdate{DeviceID: "D1", StreamID: 5, PrevID: []int64{4}, Deleted: true}) {
			t.Fatal("a following deletion asked for a resync")
		}
		if apply(api.RemoteDeviceUpdate{DeviceID: "D2", StreamID: 4, PrevID: []int64{3}, Keys: keys("D2", "old")}) {
			t.Fatal("a redelivery asked for a resync")
		}
		resp, _ = query()
		if _, ok := resp.DeviceKeys[bob]["D1"]; ok || len(resp.DeviceKeys[bob]) != 1 || string(resp.DeviceKeys[bob]["D2"]) != string(keys("D2", "k2")) {
			t.Fatalf("after updates: %v", resp.DeviceKeys[bob])
		}
		if resp, _ := query("D9"); len(resp.DeviceKeys[bob]) != 0 {
			t.Errorf("an unknown device was returned: %v", resp.DeviceKeys[bob])
		}
		if err := u.ApplyRemoteSigningKeyUpdate(ctx, &api.RemoteSigningKeyUpdate{UserID: bob, SelfSigningKey: json.RawMessage(`{"usage":["self_signing"]}`)}); err != nil {
			t.Fatal(err)
		}
		if resp, _ := query(); resp.SelfSigningKeys[bob] == nil || resp.MasterKeys[bob] == nil {
			t.Errorf("after a signing key update: %+v", resp)
		}

		// A gap makes the list stale.
		if !apply(api.RemoteDeviceUpdate{DeviceID: "D3", StreamID: 9, PrevID: []int64{8}, Keys: keys("D3", "k3")}) {
			t.Fatal("a gap did not ask for a resync")
		}
		if _, missing := query(); !has(missing, bob) {
			t.Fatal("a list with a gap is served")
		}
		// Forgotten users are gone.
		if err := u.ForgetRemoteDevices(ctx, []string{bob}); err != nil {
			t.Fatal(err)
		}
		if stale, _ := u.StaleRemoteUsers(ctx, 10); len(stale) != 0 {
			t.Fatalf("a forgotten user is stale: %v", stale)
		}
	})
}

func has(m map[string][]string, k string) bool { _, ok := m[k]; return ok }
