package syncapi

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// maxTypingTimeout caps how long a typing notification lasts.
const maxTypingTimeout = 2 * time.Minute

// typingStore holds who is typing where. It lives in memory: typing is
// ephemeral. Its positions follow the clock (in ms, and at least one more
// than the last), so that tokens from before a restart stay behind the
// positions after it.
type typingStore struct {
	mu       sync.Mutex
	rooms    map[string]map[string]time.Time // room -> user -> expiry
	changed  map[string]int64                // room -> position of its last change
	pos      int64
	timer    *time.Timer
	onChange func(roomID string)
}

func newTypingStore(onChange func(string)) *typingStore {
	return &typingStore{rooms: map[string]map[string]time.Time{}, changed: map[string]int64{}, pos: time.Now().UnixMilli(), onChange: onChange}
}

func (t *typingStore) bumpLocked(roomID string) {
	t.pos = max(t.pos+1, time.Now().UnixMilli())
	t.changed[roomID] = t.pos
}

// set starts or stops a user's typing in a room.
func (t *typingStore) set(roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	users := t.rooms[roomID]
	_, was := users[userID]
	if typing {
		if users == nil {
			users = map[string]time.Time{}
			t.rooms[roomID] = users
		}
		users[userID] = time.Now().Add(min(timeout, maxTypingTimeout))
	} else {
		delete(users, userID)
	}
	if was != typing {
		t.bumpLocked(roomID)
	}
	t.scheduleLocked()
	t.mu.Unlock()
	if was != typing {
		t.onChange(roomID)
	}
}

// scheduleLocked arms the timer for the next expiry.
func (t *typingStore) scheduleLocked() {
	var next time.Time
	for _, users := range t.rooms {
		for _, exp := range users {
			if next.IsZero() || exp.Before(next) {
				next = exp
			}
		}
	}
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	if !next.IsZero() {
		t.timer = time.AfterFunc(time.Until(next)+time.Millisecond, t.expire)
	}
}

// expire removes the notifications whose time is up.
func (t *typingStore) expire() {
	now := time.Now()
	t.mu.Lock()
	var rooms []string
	for roomID, users := range t.rooms {
		for u, exp := range users {
			if !exp.After(now) {
				delete(users, u)
				if !slices.Contains(rooms, roomID) {
					rooms = append(rooms, roomID)
					t.bumpLocked(roomID)
				}
			}
		}
		if len(users) == 0 {
			delete(t.rooms, roomID)
		}
	}
	t.scheduleLocked()
	t.mu.Unlock()
	for _, r := range rooms {
		t.onChange(r)
	}
}

// current returns the typing position.
func (t *typingStore) current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// since returns, for each room of rooms that changed after pos (or has
// typers, when initial), who is typing now.
func (t *typingStore) since(rooms []string, pos int64, initial bool) map[string][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string][]string{}
	for _, r := range rooms {
		if (initial && len(t.rooms[r]) > 0) || (!initial && t.changed[r] > pos) {
			users := make([]string, 0, len(t.rooms[r]))
			for u := range t.rooms[r] {
				users = append(users, u)
			}
			slices.Sort(users)
			out[r] = users
		}
	}
	return out
}

func (t *typingStore) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
}

// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
func (s *SyncAPI) putTyping(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	if vars["userId"] != dev.UserID {
		return nil, mxerr.Forbidden("Cannot set the typing state of another user")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxerr.MissingParam("Missing typing")
	}
	timeout := 30 * time.Second
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, mxerr.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(*body.Timeout) * time.Millisecond
	} else if *body.Typing {
		return nil, mxerr.MissingParam("Missing timeout")
	}
	roomID := vars["roomId"]
	if err := s.requireJoined(ctx, roomID, dev.UserID); err != nil {
		return nil, err
	}
	s.typing.set(roomID, dev.UserID, *body.Typing, timeout)
	s.presence.active(dev.UserID)
	return struct{}{}, nil
}
