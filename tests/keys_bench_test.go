package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
	"github.com/myelin-chat/myelin/userapi/api"
)

// keysBenchUsers creates n users with two devices each that have device
// keys, straight through the user API; it returns the user IDs and each
// user's devices.
func keysBenchUsers(b *testing.B, srv *testserver.Server, n int) ([]string, map[string][]*testutil.E2EEDevice) {
	b.Helper()
	ctx := context.Background()
	users := make([]string, n)
	devs := make(map[string][]*testutil.E2EEDevice, n)
	for i := range n {
		acc, err := srv.Users.CreateAccount(ctx, api.CreateAccount{Localpart: fmt.Sprintf("user%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		users[i] = acc.UserID
		for d := range 2 {
			sess, err := srv.Users.Login(ctx, api.NewSession{UserID: acc.UserID, DeviceID: fmt.Sprintf("DEV%d", d), DeviceDisplayName: "Device"})
			if err != nil {
				b.Fatal(err)
			}
			dev := testutil.NewE2EEDevice(b, acc.UserID, sess.DeviceID)
			if _, err := srv.Users.UploadKeys(ctx, api.UploadKeysRequest{UserID: acc.UserID, DeviceID: sess.DeviceID, DeviceKeys: dev.DeviceKeys(b)}); err != nil {
				b.Fatal(err)
			}
			devs[acc.UserID] = append(devs[acc.UserID], dev)
		}
	}
	return users, devs
}

// BenchmarkKeysQuery1000Users: POST /keys/query for 1,000 local users with
// two devices each (all devices), on SQLite. Target: under 100 ms.
func BenchmarkKeysQuery1000Users(b *testing.B) {
	srv := testserver.Start(b)
	users, _ := keysBenchUsers(b, srv, 1000)
	asker := srv.Client().Register("asker", "password1")
	q := map[string][]string{}
	for _, u := range users {
		q[u] = []string{}
	}
	body := map[string]any{"device_keys": q}
	b.ResetTimer()
	for range b.N {
		r := asker.Do("POST", keysQueryPath, body)
		if r.Status != http.StatusOK {
			b.Fatalf("query: %d", r.Status)
		}
		var res struct {
			DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		}
		r.Decode(b, &res)
		if len(res.DeviceKeys) != 1000 || len(res.DeviceKeys[users[999]]) != 2 {
			b.Fatalf("query answered %d users", len(res.DeviceKeys))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/query")
}

// BenchmarkKeysClaim1000Keys: POST /keys/claim of one-time keys of 1,000
// devices in one request, on SQLite. Target: under 100 ms.
func BenchmarkKeysClaim1000Keys(b *testing.B) {
	srv := testserver.Start(b)
	users, devs := keysBenchUsers(b, srv, 500)
	asker := srv.Client().Register("asker", "password1")
	ctx := context.Background()
	const perUpload = 20 // keys per device per refill (timer stopped)
	left := 0
	claim := map[string]map[string]string{}
	for _, u := range users {
		claim[u] = map[string]string{}
		for _, d := range devs[u] {
			claim[u][d.DeviceID] = signedCurve
		}
	}
	body := map[string]any{"one_time_keys": claim}
	round := 0
	b.ResetTimer()
	for range b.N {
		if left == 0 {
			round++
			b.StopTimer()
			for _, u := range users {
				for _, d := range devs[u] {
					if _, err := srv.Users.UploadKeys(ctx, api.UploadKeysRequest{UserID: u, DeviceID: d.DeviceID, OneTimeKeys: d.OneTimeKeys(b, round*perUpload, perUpload)}); err != nil {
						b.Fatal(err)
					}
				}
			}
			left = perUpload
			b.StartTimer()
		}
		left--
		r := asker.Do("POST", keysClaimPath, body)
		if r.Status != http.StatusOK {
			b.Fatalf("claim: %d", r.Status)
		}
		var res struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		r.Decode(b, &res)
		n := 0
		for _, d := range res.OneTimeKeys {
			n += len(d)
		}
		if n != 1000 {
			b.Fatalf("claimed %d keys, want 1000", n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/claim")
}
