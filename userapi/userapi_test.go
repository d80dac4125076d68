package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
)

func newTestAPI(t *testing.T, db *sqlutil.DB) (*UserAPI, *bus.Bus) {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Config{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.EnsureStreams(context.Background(), api.Streams()...); err != nil {
		t.Fatal(err)
	}
	u, err := New(context.Background(), Config{ServerName: "test.org", BcryptCost: 4, AccessTokenLifetime: time.Hour}, db, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u, b
}

func TestAccountsAndPasswords(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		acc, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "alice", Password: "pw"})
		if err != nil || acc.UserID != "@alice:test.org" || !acc.HasPassword {
			t.Fatalf("create: %+v %v", acc, err)
		}
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "alice", Password: "x"}); !errors.Is(err, api.ErrUserInUse) {
			t.Fatalf("duplicate: %v", err)
		}
		g1, _ := u.CreateAccount(ctx, api.CreateAccount{IsGuest: true})
		g2, _ := u.CreateAccount(ctx, api.CreateAccount{IsGuest: true})
		if g1.UserID != "@1:test.org" || g2.UserID != "@2:test.org" || !g1.IsGuest {
			t.Fatalf("generated IDs %s %s", g1.UserID, g2.UserID)
		}
		if _, err := u.CheckPassword(ctx, "@alice:test.org", "wrong"); !errors.Is(err, api.ErrBadPassword) {
			t.Fatalf("wrong password: %v", err)
		}
		if _, err := u.CheckPassword(ctx, "@nobody:test.org", "pw"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
		// Passwords longer than bcrypt's 72 bytes count in full.
		long := string(make([]byte, 100))
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "long", Password: long + "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := u.CheckPassword(ctx, "@long:test.org", long+"b"); !errors.Is(err, api.ErrBadPassword) {
			t.Fatalf("a password differing after byte 72 was accepted: %v", err)
		}
		if _, err := u.CheckPassword(ctx, "@long:test.org", long+"a"); err != nil {
			t.Fatal(err)
		}
		p, _ := u.QueryProfile(ctx, "@alice:test.org")
		if string(p["displayname"]) != `"alice"` {
			t.Fatalf("default display name = %s", p["displayname"])
		}
		if err := u.Deactivate(ctx, "@alice:test.org", true); err != nil {
			t.Fatal(err)
		}
		if _, err := u.CheckPassword(ctx, "@alice:test.org", "pw"); !errors.Is(err, api.ErrDeactivated) {
			t.Fatalf("deactivated: %v", err)
		}
		if p, _ := u.QueryProfile(ctx, "@alice:test.org"); len(p) != 0 {
			t.Fatalf("erased profile still has %v", p)
		}
	})
}

func authOK(t *testing.T, u *UserAPI, token string) *api.Device {
	t.Helper()
	d, err := u.Authenticate(context.Background(), token, httputil.ClientInfo{IP: "127.0.0.1"})
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return d
}

// authFails checks that a token is refused: unknown, or (expired) known
// but past its lifetime.
func authFails(t *testing.T, u *UserAPI, token string, expired bool) {
	t.Helper()
	_, err := u.Authenticate(context.Background(), token, httputil.ClientInfo{})
	var exp *httputil.ExpiredTokenError
	if expired {
		if !errors.As(err, &exp) || exp.Device == nil {
			t.Fatalf("authenticate: err = %v, want an expired token", err)
		}
		return
	}
	if e, ok := mxerr.As(err); !ok || e.Code != mxerr.CodeUnknownToken {
		t.Fatalf("authenticate: err = %v, want M_UNKNOWN_TOKEN", err)
	}
}

// Tokens are revoked everywhere at once, the cache included.
func TestSessionsAndRevocation(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		u.CreateAccount(ctx, api.CreateAccount{Localpart: "bob", Password: "pw"})
		s1, err := u.Login(ctx, api.NewSession{UserID: "@bob:test.org", DeviceDisplayName: "phone"})
		if err != nil {
			t.Fatal(err)
		}
		d := authOK(t, u, s1.AccessToken)
		if d.DeviceID != s1.DeviceID || d.UserID != "@bob:test.org" {
			t.Fatalf("device %+v", d)
		}
		authOK(t, u, s1.AccessToken) // now from the cache
		// Logging in again with the same device ID takes the device over.
		s2, _ := u.Login(ctx, api.NewSession{UserID: "@bob:test.org", DeviceID: s1.DeviceID})
		authFails(t, u, s1.AccessToken, false)
		authOK(t, u, s2.AccessToken)
		s3, _ := u.Login(ctx, api.NewSession{UserID: "@bob:test.org"})
		if err := u.SetPassword(ctx, "@bob:test.org", "new", true, s3.DeviceID); err != nil {
			t.Fatal(err)
		}
		authFails(t, u, s2.AccessToken, false)
		authOK(t, u, s3.AccessToken)
		devs, _ := u.QueryDevices(ctx, "@bob:test.org")
		if len(devs) != 1 || devs[0].DeviceID != s3.DeviceID || devs[0].LastSeenIP != "127.0.0.1" {
			t.Fatalf("devices after password change: %+v", devs)
		}
		if err := u.DeleteDevices(ctx, "@bob:test.org", []string{s3.DeviceID}); err != nil {
			t.Fatal(err)
		}
		authFails(t, u, s3.AccessToken, false)
	})
}

// A refresh token stays usable until the tokens it was exchanged for are
// used; expired access tokens are soft logouts.
func TestRefreshRotation(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		u.CreateAccount(ctx, api.CreateAccount{Localpart: "carol", Password: "pw"})
		s1, _ := u.Login(ctx, api.NewSession{UserID: "@carol:test.org", Refreshable: true})
		if s1.RefreshToken == "" || s1.ExpiresIn != time.Hour {
			t.Fatalf("refreshable session %+v", s1)
		}
		authOK(t, u, s1.AccessToken)
		s2, err := u.Refresh(ctx, s1.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		// The client lost the answer and retries: allowed, as s2 is unused.
		s2b, err := u.Refresh(ctx, s1.RefreshToken)
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		authFails(t, u, s2.AccessToken, false) // replaced by the retry
		authOK(t, u, s1.AccessToken)           // the old access token still works
		authOK(t, u, s2b.AccessToken)          // first use retires s1
		authFails(t, u, s1.AccessToken, false)
		if _, err := u.Refresh(ctx, s1.RefreshToken); !errors.Is(err, api.ErrUnknownToken) {
			t.Fatalf("refresh with a retired token: %v", err)
		}
		if _, err := u.Refresh(ctx, "mylr_bogus"); !errors.Is(err, api.ErrUnknownToken) {
			t.Fatalf("unknown refresh token: %v", err)
		}
		// Refreshing with the newest token retires the previous one too.
		s3, err := u.Refresh(ctx, s2b.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		s4, _ := u.Refresh(ctx, s3.RefreshToken)
		if _, err := u.Refresh(ctx, s2b.RefreshToken); err == nil {
			t.Fatal("a token two refreshes old still works")
		}
		authOK(t, u, s4.AccessToken)

		u.cfg.AccessTokenLifetime = time.Millisecond
		s5, _ := u.Login(ctx, api.NewSession{UserID: "@carol:test.org", Refreshable: true})
		time.Sleep(5 * time.Millisecond)
		authFails(t, u, s5.AccessToken, true)
		s6, err := u.Refresh(ctx, s5.RefreshToken)
		if err != nil || s6.AccessToken == "" {
			t.Fatalf("refresh after expiry: %v", err)
		}
	})
}

// Changes are announced on UserOutput, in commit order.
func TestUserOutput(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, b := newTestAPI(t, db)
		var mu sync.Mutex
		var got []string
		stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: api.UserOutputStream.Name, Durable: "test"}, func(_ context.Context, m *bus.Msg) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, m.Subject+" "+string(m.Data))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		u.CreateAccount(ctx, api.CreateAccount{Localpart: "dan", Password: "pw"})
		s, _ := u.Login(ctx, api.NewSession{UserID: "@dan:test.org", DeviceID: "DEV"})
		u.PutAccountData(ctx, "@dan:test.org", "", "m.direct", json.RawMessage(`{"a":1}`))
		u.PutAccountData(ctx, "@dan:test.org", "!r:test.org", "m.tag", json.RawMessage(`{}`))
		u.SetProfileField(ctx, "@dan:test.org", "displayname", json.RawMessage(`"Dan"`))
		u.DeleteDevices(ctx, "@dan:test.org", []string{s.DeviceID})
		want := []string{
			`UserOutput.devices {"v":1,"user_id":"@dan:test.org","device_ids":["DEV"]}`,
			`UserOutput.account_data {"v":1,"user_id":"@dan:test.org","type":"m.direct","content":{"a":1}}`,
			`UserOutput.account_data {"v":1,"user_id":"@dan:test.org","room_id":"!r:test.org","type":"m.tag","content":{}}`,
			`UserOutput.profile {"v":1,"user_id":"@dan:test.org","key":"displayname","value":"Dan"}`,
			// A deleted device is a device-list change (as in Synapse,
			// with or without keys), through the outbox.
			`UserOutput.key_change {"v":1,"kind":"device","user_id":"@dan:test.org","stream_id":1,"device_id":"DEV","deleted":true}`,
			`UserOutput.devices {"v":1,"user_id":"@dan:test.org","device_ids":["DEV"],"deleted":true}`,
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("got %d messages, want %d:\n%v", len(got), len(want), got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
			}
		}
	})
}
