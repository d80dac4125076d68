package userapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/userapi/api"
)

// Tokens are 32 random bytes with a prefix naming their kind; only their
// SHA-256 is stored, so a database leak does not leak sessions.
const (
	accessTokenPrefix  = "myl_"
	refreshTokenPrefix = "mylr_"
)

func newToken(prefix string) (token string, hash []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// tokenCache maps access token hashes to their device, so that most
// requests authenticate without a query. Entries live for ttl at most, and
// every change that revokes tokens purges the affected devices.
type tokenCache struct {
	mu      sync.Mutex
	entries map[[32]byte]*cachedToken
	max     int
	ttl     time.Duration
}

type cachedToken struct {
	dev       api.Device
	expiresTS int64 // token expiry in ms, 0 for never
	cachedAt  time.Time
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{entries: map[[32]byte]*cachedToken{}, max: max, ttl: ttl}
}

func (c *tokenCache) get(hash []byte) (*cachedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[[32]byte(hash)]
	if !ok {
		return nil, false
	}
	if time.Since(e.cachedAt) > c.ttl {
		delete(c.entries, [32]byte(hash))
		return nil, false
	}
	return e, true
}

func (c *tokenCache) put(hash []byte, e *cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Drop about half the entries: cheap, and the cache refills from
		// the database.
		n := 0
		for k := range c.entries {
			delete(c.entries, k)
			if n++; n >= c.max/2 {
				break
			}
		}
	}
	e.cachedAt = time.Now()
	c.entries[[32]byte(hash)] = e
}

// purgeDevices drops the cached tokens of the listed devices.
func (c *tokenCache) purgeDevices(userID string, deviceIDs ...string) {
	set := make(map[string]bool, len(deviceIDs))
	for _, d := range deviceIDs {
		set[d] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.dev.UserID == userID && set[e.dev.DeviceID] {
			delete(c.entries, k)
		}
	}
}

// purgeUser drops the cached tokens of every device of the user but except.
func (c *tokenCache) purgeUser(userID, except string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		if e.dev.UserID == userID && (except == "" || e.dev.DeviceID != except) {
			delete(c.entries, k)
		}
	}
}

// lastSeen throttles "last seen" writes to one per device per interval.
type lastSeen struct {
	mu       sync.Mutex
	written  map[string]time.Time
	interval time.Duration
}

func newLastSeen(interval time.Duration) *lastSeen {
	return &lastSeen{written: map[string]time.Time{}, interval: interval}
}

// due reports whether the device's last-seen record should be written now.
func (l *lastSeen) due(userID, deviceID string) bool {
	key := userID + "|" + deviceID
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.written[key]; ok && now.Sub(t) < l.interval {
		return false
	}
	if len(l.written) > 100000 {
		for k, t := range l.written {
			if now.Sub(t) >= l.interval {
				delete(l.written, k)
			}
		}
	}
	l.written[key] = now
	return true
}
