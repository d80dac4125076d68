package tests

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const turnServerPath = "/_matrix/client/v3/voip/turnServer"

// GET /voip/turnServer with a shared secret: a username "<expiry>:<user>"
// valid for turn_user_lifetime and its HMAC-SHA1 password, as coturn's
// REST API checks them; guests get them unless turn_allow_guests is off.
func TestTurnServerSharedSecret(t *testing.T) {
	uris := []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"}
	for _, allowGuests := range []bool{true, false} {
		srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
			c.Registration.GuestAccess = true
			c.VoIP = config.VoIP{TURNURIs: uris, TURNSharedSecret: "s3cret", TURNUserLifetime: config.Duration(2 * time.Hour), TURNAllowGuests: allowGuests}
		}})
		alice := srv.Client().Register("alice", "pw")
		before := time.Now()
		m := alice.MustDo("GET", turnServerPath, nil, http.StatusOK)
		user, _ := m["username"].(string)
		expiry, err := strconv.ParseInt(strings.TrimSuffix(user, ":"+alice.UserID), 10, 64)
		if err != nil || !strings.HasSuffix(user, ":"+alice.UserID) {
			t.Fatalf("username %q, want <expiry>:%s", user, alice.UserID)
		}
		if want := before.Add(2 * time.Hour).Unix(); expiry < want || expiry > want+5 {
			t.Fatalf("expiry %d, want about %d", expiry, want)
		}
		mac := hmac.New(sha1.New, []byte("s3cret"))
		mac.Write([]byte(user))
		if m["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Fatalf("password %v is not the HMAC-SHA1 of the username", m["password"])
		}
		if m["ttl"] != 7200.0 || !sameJSON(t, map[string]any{"u": m["uris"]}, map[string]any{"u": []any{uris[0], uris[1]}}) {
			t.Fatalf("turnServer = %v", m)
		}
		g := registerGuest(t, srv, map[string]any{})
		if allowGuests {
			g.MustDo("GET", turnServerPath, nil, http.StatusOK)
		} else {
			g.MustFail("GET", turnServerPath, nil, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
		}
		testutil.NewClient(t, srv.URL).MustFail("GET", turnServerPath, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	}
}

// Fixed credentials are handed out as configured; without TURN servers the
// answer is {}, as Synapse's.
func TestTurnServerStaticAndNone(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.VoIP.TURNURIs = []string{"turn:10.0.0.1:3478"}
		c.VoIP.TURNUsername, c.VoIP.TURNPassword = "user", "pass"
	}})
	m := srv.Client().Register("alice", "pw").MustDo("GET", turnServerPath, nil, http.StatusOK)
	if !sameJSON(t, m, map[string]any{"username": "user", "password": "pass", "uris": []any{"turn:10.0.0.1:3478"}, "ttl": 3600.0}) {
		t.Fatalf("turnServer = %v", m)
	}
	none := testserver.Start(t)
	if m := none.Client().Register("alice", "pw").MustDo("GET", turnServerPath, nil, http.StatusOK); len(m) != 0 {
		t.Fatalf("turnServer without TURN servers = %v, want {}", m)
	}
}
