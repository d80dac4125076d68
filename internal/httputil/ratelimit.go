package httputil

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/myelin-chat/myelin/internal/mxerr"
)

// Rate is a token bucket: PerSecond tokens are added each second up to Burst.
type Rate struct {
	PerSecond float64
	Burst     int
}

// RateLimiter limits requests per class (such as "login") and key (a user ID
// or a client IP) with token buckets. Idle buckets are swept periodically so
// that memory stays bounded by the number of recently active keys.
type RateLimiter struct {
	classes map[string]Rate
	exempt  map[string]bool

	mu        sync.Mutex
	buckets   map[bucketKey]*rate.Limiter
	lastSweep time.Time
}

type bucketKey struct{ class, key string }

// NewRateLimiter returns a limiter for the given classes. Requests of a class
// that is not configured are not limited; keys in exempt never are.
func NewRateLimiter(classes map[string]Rate, exempt []string) *RateLimiter {
	l := &RateLimiter{
		classes: classes,
		exempt:  map[string]bool{},
		buckets: map[bucketKey]*rate.Limiter{},
	}
	for _, k := range exempt {
		l.exempt[k] = true
	}
	return l
}

// Allow takes a token from the bucket of (class, key). When none is left it
// returns false and how long until one will be.
func (l *RateLimiter) Allow(class, key string) (bool, time.Duration) {
	if l == nil || l.exempt[key] {
		return true, 0
	}
	if _, ok := l.classes[class]; !ok {
		return true, 0
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	res := l.bucket(class, key, now).ReserveN(now, 1)
	if !res.OK() {
		return false, time.Minute
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Exempt reports whether key (a user ID) is never limited.
func (l *RateLimiter) Exempt(key string) bool { return l == nil || l.exempt[key] }

// Take takes a token from the bucket of (class, key) whether or not one is
// left (the bucket goes into debt): it records an action that has happened,
// such as a completed registration, which Check gated beforehand.
func (l *RateLimiter) Take(class, key string) {
	if l == nil || l.exempt[key] {
		return
	}
	if _, ok := l.classes[class]; !ok {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket(class, key, now).ReserveN(now, 1)
}

// Limit is Allow as a Matrix error: nil when (class, key) had a token
// (now taken), else 429 M_LIMIT_EXCEEDED with retry_after_ms.
func (l *RateLimiter) Limit(class, key string) error {
	if ok, wait := l.Allow(class, key); !ok {
		return mxerr.LimitExceeded(wait)
	}
	return nil
}

// Check reports whether (class, key) has a token left, without taking it,
// and if not, how long until it will.
func (l *RateLimiter) Check(class, key string) (bool, time.Duration) { return l.CheckN(class, key, 1) }

// CheckN reports whether (class, key) has n tokens left, without taking
// them, and if not, how long until it will (a minute when n is more than
// the bucket holds: as in Synapse, more actions at once than the burst
// are refused).
func (l *RateLimiter) CheckN(class, key string, n int) (bool, time.Duration) {
	if l == nil || l.exempt[key] || n <= 0 {
		return true, 0
	}
	r, ok := l.classes[class]
	if !ok {
		return true, 0
	}
	if n > max(r.Burst, 1) {
		return false, time.Minute
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.buckets[bucketKey{class, key}]
	if lim == nil || lim.TokensAt(now) >= float64(n) {
		return true, 0
	}
	missing := float64(n) - lim.TokensAt(now)
	return false, time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}

// bucket returns the bucket of (class, key), a full one when new; l.mu is
// held and class is configured.
func (l *RateLimiter) bucket(class, key string, now time.Time) *rate.Limiter {
	l.sweep(now)
	k := bucketKey{class, key}
	lim := l.buckets[k]
	if lim == nil {
		r := l.classes[class]
		lim = rate.NewLimiter(rate.Limit(r.PerSecond), max(r.Burst, 1))
		l.buckets[k] = lim
	}
	return lim
}

// sweep drops buckets that have refilled completely; they are equivalent to
// fresh ones. It runs at most once a minute.
func (l *RateLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, lim := range l.buckets {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(l.buckets, k)
		}
	}
}
