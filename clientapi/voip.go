package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// TURNConfig is what GET /voip/turnServer hands out (the voip config).
type TURNConfig struct {
	URIs []string
	// SharedSecret, when set, makes time-limited credentials of the TURN
	// REST API (coturn's use-auth-secret); otherwise Username and
	// Password are handed out as they are.
	SharedSecret       string
	Username, Password string
	Lifetime           time.Duration
	AllowGuests        bool
}

// GET /_matrix/client/v3/voip/turnServer: TURN credentials for calls. With
// a shared secret the username is "<expiry in seconds>:<user ID>" and the
// password the base64 HMAC-SHA1 of it under the secret, as Synapse and
// coturn compute them. Without TURN servers the answer is {}, as Synapse's
// (clients then call without TURN).
func (c *ClientAPI) getTurnServer(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	t := c.cfg.TURN
	if dev.IsGuest && !t.AllowGuests {
		return nil, mxerr.GuestAccessForbidden("Guest access to TURN servers is disabled")
	}
	var username, password string
	switch {
	case len(t.URIs) > 0 && t.SharedSecret != "" && t.Lifetime > 0:
		username = strconv.FormatInt(time.Now().Add(t.Lifetime).Unix(), 10) + ":" + dev.UserID
		mac := hmac.New(sha1.New, []byte(t.SharedSecret))
		mac.Write([]byte(username))
		password = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	case len(t.URIs) > 0 && t.Username != "" && t.Password != "":
		username, password = t.Username, t.Password
	default:
		return struct{}{}, nil
	}
	return map[string]any{"username": username, "password": password, "uris": t.URIs, "ttl": int64(t.Lifetime / time.Second)}, nil
}
