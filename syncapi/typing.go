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

// Typing over federation, as Synapse does it: a remote user's typing ends
// after fedTypingTimeout unless their server renews it, and this server
// renews its users' typing every fedTypingPing while it lasts.
const (
	fedTypingTimeout = 60 * time.Second
	fedTypingPing    = 40 * time.Second
)

// typingStore holds who is typing where. It lives in memory: typing is
// ephemeral. Its positions follow the clock (in ms, and at least one more
// than the last), so that tokens from before a restart stay behind the
// positions after it.
type typingStore struct {
	mu       sync.Mutex
	rooms    map[string]map[string]*typer // room -> user -> typing
	changed  map[string]int64             // room -> position of its last change
	pos      int64
	timer    *time.Timer
	onChange func(roomID string)
	// onLocal is told, under the store's lock (so in order), when a local
	// user starts or stops typing, and when their typing is to be renewed
	// on other servers. It must not block.
	onLocal func(roomID, userID string, typing bool)
	ping    time.Duration // fedTypingPing (shorter in tests)
}

type typer struct {
	expiry time.Time
	local  bool
	pinged time.Time // when other servers were last told (local users)
}

func newTypingStore(onChange func(string), onLocal func(roomID, userID string, typing bool)) *typingStore {
	if onLocal == nil {
		onLocal = func(string, string, bool) {}
	}
	return &typingStore{rooms: map[string]map[string]*typer{}, changed: map[string]int64{}, pos: time.Now().UnixMilli(),
		onChange: onChange, onLocal: onLocal, ping: fedTypingPing}
}

func (t *typingStore) bumpLocked(roomID string) {
	t.pos = max(t.pos+1, time.Now().UnixMilli())
	t.changed[roomID] = t.pos
}

// set starts or stops a user's typing in a room (local: a user of this
// server).
func (t *typingStore) set(roomID, userID string, typing bool, timeout time.Duration, local bool) {
	t.mu.Lock()
	users := t.rooms[roomID]
	cur, was := users[userID]
	if !typing && !was {
		t.mu.Unlock()
		return
	}
	now := time.Now()
	if typing {
		if users == nil {
			users = map[string]*typer{}
			t.rooms[roomID] = users
		}
		if cur == nil {
			cur = &typer{local: local}
			users[userID] = cur
		}
		cur.expiry = now.Add(min(timeout, maxTypingTimeout))
		if local && (!was || now.Sub(cur.pinged) >= t.ping) {
			cur.pinged = now
			t.onLocal(roomID, userID, true)
		}
	} else {
		delete(users, userID)
		if len(users) == 0 {
			delete(t.rooms, roomID)
		}
		if cur.local {
			t.onLocal(roomID, userID, false)
		}
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

// scheduleLocked arms the timer for the next expiry or renewal.
func (t *typingStore) scheduleLocked() {
	var next time.Time
	for _, users := range t.rooms {
		for _, ty := range users {
			at := ty.expiry
			if ty.local && ty.pinged.Add(t.ping).Before(at) {
				at = ty.pinged.Add(t.ping)
			}
			if next.IsZero() || at.Before(next) {
				next = at
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

// expire removes the notifications whose time is up and renews the local
// ones due on other servers.
func (t *typingStore) expire() {
	now := time.Now()
	t.mu.Lock()
	var rooms []string
	for roomID, users := range t.rooms {
		for u, ty := range users {
			switch {
			case !ty.expiry.After(now):
				delete(users, u)
				if ty.local {
					t.onLocal(roomID, u, false)
				}
				if !slices.Contains(rooms, roomID) {
					rooms = append(rooms, roomID)
					t.bumpLocked(roomID)
				}
			case ty.local && !ty.pinged.Add(t.ping).After(now):
				ty.pinged = now
				t.onLocal(roomID, u, true)
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
	s.typing.set(roomID, dev.UserID, *body.Typing, timeout, true)
	s.presence.active(dev.UserID)
	return struct{}{}, nil
}
