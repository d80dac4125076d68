package userapi

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
)

// newASTestAPI is newTestAPI with n application services registered, the
// first holding @_bridge_.* with sender @_bridge_bot.
func newASTestAPI(tb testing.TB, db *sqlutil.DB, n int) *UserAPI {
	tb.Helper()
	b, err := bus.Open(context.Background(), bus.Config{StoreDir: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	if err := b.EnsureStreams(context.Background(), api.Streams()...); err != nil {
		tb.Fatal(err)
	}
	var services []*asapi.Service
	for i := range n {
		prefix := "_bridge_"
		if i > 0 {
			prefix = fmt.Sprintf("_other%d_", i)
		}
		ns, err := asapi.NewNamespace("@"+prefix+".*", true)
		if err != nil {
			tb.Fatal(err)
		}
		services = append(services, &asapi.Service{ID: prefix, ASToken: "as-" + prefix, HSToken: "hs-" + prefix,
			SenderLocalpart: prefix + "bot", SenderID: "@" + prefix + "bot:test.org", Users: []asapi.Namespace{ns}})
	}
	reg, err := asapi.NewRegistry(services)
	if err != nil {
		tb.Fatal(err)
	}
	u, err := New(context.Background(), Config{ServerName: "test.org", BcryptCost: 4, AccessTokenLifetime: time.Hour, AppServices: reg}, db, b, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// What an as_token authenticates as is cached, and the cache forgets a
// device that is deleted: masquerading as it fails at once.
func TestAppServiceAuthCache(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newASTestAPI(t, db, 1)
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "_bridge_a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := u.UpsertDevice(ctx, "@_bridge_a:test.org", "DEV", nil); err != nil {
			t.Fatal(err)
		}
		client := httputil.ClientInfo{AssertUserID: "@_bridge_a:test.org", AssertsUser: true, AssertDeviceID: "DEV"}
		for range 2 {
			d, err := u.Authenticate(ctx, "as-_bridge_", client)
			if err != nil || d.UserID != "@_bridge_a:test.org" || d.DeviceID != "DEV" || d.AppServiceID != "_bridge_" || !d.RateExempt {
				t.Fatalf("masquerading: %+v %v", d, err)
			}
		}
		if err := u.DeleteDevices(ctx, "@_bridge_a:test.org", []string{"DEV"}); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Authenticate(ctx, "as-_bridge_", client); !mxerr.Is(err, CodeUnknownDevice) {
			t.Fatalf("masquerading as a deleted device: %v", err)
		}
	})
}

// BenchmarkAuthenticate: a user's cached access token with no
// application service and with five (the as_token comparisons the normal
// path now makes), and a service's cached identity assertion.
func BenchmarkAuthenticate(b *testing.B) {
	db := sqltest.Open(b, sqlutil.SQLite)
	for _, n := range []int{0, 5} {
		u := newASTestAPI(b, db, n)
		ctx := context.Background()
		localpart := fmt.Sprintf("user%d", n)
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: localpart}); err != nil {
			b.Fatal(err)
		}
		s, err := u.Login(ctx, api.NewSession{UserID: "@" + localpart + ":test.org"})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("user/services=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := u.Authenticate(ctx, s.AccessToken, httputil.ClientInfo{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		if n == 0 {
			continue
		}
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "_bridge_g"}); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("appservice/services=%d", n), func(b *testing.B) {
			client := httputil.ClientInfo{AssertUserID: "@_bridge_g:test.org", AssertsUser: true}
			for b.Loop() {
				if _, err := u.Authenticate(ctx, "as-_bridge_", client); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A service with ip_range_whitelist authenticates only from those
// addresses; from elsewhere its token is unknown.
func TestAppServiceIPRanges(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newASTestAPI(t, db, 1)
		svc := u.cfg.AppServices.ByID("_bridge_")
		svc.IPRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
		if err := ensureSender(ctx, u, svc); err != nil {
			t.Fatal(err)
		}
		for ip, ok := range map[string]bool{"10.1.2.3": true, "::1": true, "::ffff:10.0.0.1": true, "127.0.0.1": false, "": false} {
			d, err := u.Authenticate(ctx, "as-_bridge_", httputil.ClientInfo{IP: ip})
			if ok && (err != nil || d.UserID != svc.SenderID) {
				t.Fatalf("from %s: %+v %v", ip, d, err)
			}
			if !ok && !mxerr.Is(err, mxerr.CodeUnknownToken) {
				t.Fatalf("from %s: %+v %v, want M_UNKNOWN_TOKEN", ip, d, err)
			}
		}
	})
}

func ensureSender(ctx context.Context, u *UserAPI, svc *asapi.Service) error {
	_, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: svc.SenderLocalpart})
	return err
}
