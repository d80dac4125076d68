package syncapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/periodic"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Presence states.
const (
	presenceOnline      = "online"
	presenceUnavailable = "unavailable"
	presenceOffline     = "offline"

	activeWindow = time.Minute // currently_active while active this recently

	// Presence over federation, as Synapse does it: other servers are
	// told again every fedPresencePing that a local user is still online
	// or unavailable, and a remote user not heard of for
	// fedPresenceTimeout goes offline.
	fedPresencePing    = 25 * time.Minute
	fedPresenceTimeout = 30 * time.Minute
)

// presenceTracker keeps the presence of local users: what clients set,
// what their syncs imply, and the idle and offline timeouts.
type presenceTracker struct {
	s     *SyncAPI
	mu    sync.Mutex
	users map[string]*presenceState
	write sync.Mutex // orders presence positions with their commits
	// remote holds when each remote user who is not offline was last
	// heard of.
	remote              map[string]time.Time
	fedPing, fedTimeout time.Duration // fedPresencePing, fedPresenceTimeout (shorter in tests)
}

type presenceState struct {
	presence   string
	statusMsg  *string
	lastActive time.Time
	lastSync   time.Time
	syncing    int
	fedPinged  time.Time // when other servers were last told
}

func newPresenceTracker(s *SyncAPI) *presenceTracker {
	return &presenceTracker{s: s, users: map[string]*presenceState{}, remote: map[string]time.Time{},
		fedPing: fedPresencePing, fedTimeout: fedPresenceTimeout}
}

// loadRemote starts the federation timeout of the remote users the read
// model has online or unavailable.
func (p *presenceTracker) loadRemote(ctx context.Context) error {
	if !p.s.cfg.PresenceEnabled {
		return nil
	}
	rows, err := storage.PresenceNotOffline(ctx, p.s.store.DB())
	if err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rows {
		if !p.s.isLocal(r.UserID) {
			p.remote[r.UserID] = now
		}
	}
	return nil
}

// heardRemote records the presence just received of remote users.
func (p *presenceTracker) heardRemote(rows []*storage.Presence) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rows {
		if r.Presence == presenceOffline {
			delete(p.remote, r.UserID)
		} else {
			p.remote[r.UserID] = now
		}
	}
}

// start runs the timeouts until the returned function is called.
func (p *presenceTracker) start() func() {
	if !p.s.cfg.PresenceEnabled {
		return func() {}
	}
	// Check the timeouts ten times per the shorter of them (at most every
	// 5 s): cheap, and no idle CPU to speak of.
	interval := min(p.s.cfg.OfflineAfter, p.s.cfg.IdleAfter) / 10
	interval = min(max(interval, 10*time.Millisecond), 5*time.Second)
	return periodic.Every(interval, func(context.Context) { p.expire(context.Background()) })
}

// expire applies the idle and offline timeouts.
func (p *presenceTracker) expire(ctx context.Context) {
	now := time.Now()
	type change struct {
		user, presence string
		st             presenceState
	}
	var changes []change
	p.mu.Lock()
	for u, st := range p.users {
		switch {
		case st.presence != presenceOffline && st.syncing == 0 && !st.lastSync.IsZero() && now.Sub(st.lastSync) > p.s.cfg.OfflineAfter:
			st.presence = presenceOffline
		case st.presence == presenceOnline && now.Sub(st.lastActive) > p.s.cfg.IdleAfter:
			st.presence = presenceUnavailable
		default:
			continue
		}
		changes = append(changes, change{u, st.presence, *st})
		if st.presence == presenceOffline {
			delete(p.users, u)
		}
	}
	// Renewals for other servers of the local users not offline, and the
	// remote users not heard of for too long.
	var pings []*storage.Presence
	for u, st := range p.users {
		if st.presence != presenceOffline && now.Sub(st.fedPinged) >= p.fedPing {
			st.fedPinged = now
			pings = append(pings, presenceRow(u, st, 0))
		}
	}
	var silent []string
	for u, seen := range p.remote {
		if now.Sub(seen) >= p.fedTimeout {
			silent = append(silent, u)
			delete(p.remote, u)
		}
	}
	p.mu.Unlock()
	for _, c := range changes {
		if err := p.store(ctx, c.user, &c.st); err != nil {
			p.s.log.Warn("presence timeout not stored", "user_id", c.user, "error", err.Error())
		}
	}
	for _, row := range pings {
		p.s.sendPresence(row)
	}
	if len(silent) > 0 {
		p.remoteOffline(ctx, silent)
	}
}

// remoteOffline marks remote users offline.
func (p *presenceTracker) remoteOffline(ctx context.Context, users []string) {
	var rows []*storage.Presence
	for _, u := range users {
		row, err := storage.SelectPresence(ctx, p.s.store.DB(), u)
		if err != nil {
			continue
		}
		row.Presence, row.CurrentlyActive = presenceOffline, false
		rows = append(rows, row)
	}
	changed, err := p.storeRemote(ctx, rows, nil)
	if err != nil {
		p.s.log.Warn("remote presence timeout not stored", "error", err.Error())
		return
	}
	for _, u := range changed {
		p.s.notifier.wakeSharers(u)
	}
}

// presenceRow is the stored form of a local user's presence.
func presenceRow(userID string, st *presenceState, pos int64) *storage.Presence {
	return &storage.Presence{UserID: userID, Presence: st.presence, StatusMsg: st.statusMsg, LastActiveTS: st.lastActive.UnixMilli(),
		CurrentlyActive: st.presence == presenceOnline && time.Since(st.lastActive) < activeWindow, Pos: pos}
}

// state returns the tracked state of a user, loading it on first use.
func (p *presenceTracker) stateLocked(ctx context.Context, userID string) *presenceState {
	st, ok := p.users[userID]
	if !ok {
		st = &presenceState{presence: presenceOffline, fedPinged: time.Now()}
		if row, err := storage.SelectPresence(ctx, p.s.store.DB(), userID); err == nil {
			st.presence, st.statusMsg, st.lastActive = row.Presence, row.StatusMsg, time.UnixMilli(row.LastActiveTS)
		}
		p.users[userID] = st
	}
	return st
}

// set applies a presence a client chose (PUT /presence or set_presence).
func (p *presenceTracker) set(ctx context.Context, userID, presence string, statusMsg *string, keepMsg bool) error {
	if !p.s.cfg.PresenceEnabled {
		return nil
	}
	p.mu.Lock()
	st := p.stateLocked(ctx, userID)
	changed := st.presence != presence || (!keepMsg && !sameMsg(st.statusMsg, statusMsg))
	st.presence = presence
	if !keepMsg {
		st.statusMsg = statusMsg
	}
	if presence == presenceOnline {
		changed = changed || time.Since(st.lastActive) > activeWindow
		st.lastActive = time.Now()
	}
	snapshot := *st
	p.mu.Unlock()
	if !changed {
		return nil
	}
	return p.store(ctx, userID, &snapshot)
}

func sameMsg(a, b *string) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// active records user activity (sending, typing, receipts): like Synapse,
// it refreshes last_active_ago and brings an unavailable user back online;
// an offline user stays offline.
func (p *presenceTracker) active(userID string) {
	if !p.s.cfg.PresenceEnabled {
		return
	}
	ctx := context.Background()
	p.mu.Lock()
	st := p.stateLocked(ctx, userID)
	if st.presence == presenceOffline {
		if st.syncing == 0 {
			delete(p.users, userID)
		}
		p.mu.Unlock()
		return
	}
	changed := st.presence == presenceUnavailable || time.Since(st.lastActive) > activeWindow
	st.presence, st.lastActive = presenceOnline, time.Now()
	snapshot := *st
	p.mu.Unlock()
	if !changed {
		return
	}
	if err := p.store(ctx, userID, &snapshot); err != nil {
		p.s.log.Warn("presence activity not stored", "user_id", userID, "error", err.Error())
	}
}

// syncing marks a sync in progress with its set_presence; the returned
// function ends it.
func (p *presenceTracker) syncing(ctx context.Context, userID, setPresence string) func() {
	if !p.s.cfg.PresenceEnabled {
		return func() {}
	}
	switch setPresence {
	case "", presenceOnline:
		p.mu.Lock()
		st := p.stateLocked(ctx, userID)
		goOnline := st.presence == presenceOffline
		p.mu.Unlock()
		if goOnline {
			_ = p.set(ctx, userID, presenceOnline, nil, true)
		}
	case presenceUnavailable:
		_ = p.set(ctx, userID, presenceUnavailable, nil, true)
	}
	p.mu.Lock()
	st := p.stateLocked(ctx, userID)
	st.syncing++
	st.lastSync = time.Now()
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		st.syncing--
		st.lastSync = time.Now()
		p.mu.Unlock()
	}
}

// store writes a presence at the next position and wakes those who share a
// room with the user.
func (p *presenceTracker) store(ctx context.Context, userID string, st *presenceState) error {
	p.write.Lock()
	pos := p.s.pos.presence.Load() + 1
	row := presenceRow(userID, st, pos)
	out := false
	err := p.s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.UpsertPresence(ctx, tx, row); err != nil {
			return err
		}
		var err error
		out, err = p.s.outputPresence(ctx, tx, row)
		return err
	})
	if err == nil {
		p.s.pos.presence.Store(pos)
	}
	p.write.Unlock()
	if err != nil {
		return err
	}
	if out {
		p.s.flushOutbox(ctx)
	}
	p.s.notifier.wakeSharers(userID)
	p.s.sendPresence(row)
	p.mu.Lock()
	if cur, ok := p.users[userID]; ok {
		cur.fedPinged = time.Now()
	}
	p.mu.Unlock()
	return nil
}

// storeRemote stores the presence of remote users, in one transaction with
// extra. A change clients should hear of (presence, status message,
// currently_active, or last activity moving by more than activeWindow)
// takes the next position; anything else is stored in place, unannounced,
// as Synapse's should_notify does. It returns the users whose presence
// changed.
func (p *presenceTracker) storeRemote(ctx context.Context, rows []*storage.Presence, extra func(tx *sqlutil.Tx) error) ([]string, error) {
	p.write.Lock()
	defer p.write.Unlock()
	var pos int64
	var changed []string
	out := false
	err := p.s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		pos, changed, out = p.s.pos.presence.Load(), nil, false
		for _, row := range rows {
			announce := false
			old, err := storage.SelectPresence(ctx, tx, row.UserID)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			if old == nil || old.Presence != row.Presence || !sameMsg(old.StatusMsg, row.StatusMsg) ||
				old.CurrentlyActive != row.CurrentlyActive || row.LastActiveTS-old.LastActiveTS > activeWindow.Milliseconds() {
				pos++
				row.Pos = pos
				changed = append(changed, row.UserID)
				announce = true
			} else {
				row.Pos = old.Pos
			}
			if err := storage.UpsertPresence(ctx, tx, row); err != nil {
				return err
			}
			if announce {
				o, err := p.s.outputPresence(ctx, tx, row)
				if err != nil {
					return err
				}
				out = out || o
			}
		}
		if extra == nil {
			return nil
		}
		return extra(tx)
	})
	if err != nil {
		return nil, err
	}
	p.s.pos.presence.Store(pos)
	p.heardRemote(rows)
	if out {
		p.s.flushOutbox(ctx)
	}
	return changed, nil
}

// presenceContent is the content of an m.presence event.
func presenceContent(row *storage.Presence, now time.Time) map[string]any {
	c := map[string]any{"presence": row.Presence}
	if row.LastActiveTS > 0 {
		c["last_active_ago"] = max(now.UnixMilli()-row.LastActiveTS, 0)
	}
	if row.StatusMsg != nil {
		c["status_msg"] = *row.StatusMsg
	}
	if row.Presence == presenceOnline {
		c["currently_active"] = row.CurrentlyActive && now.UnixMilli()-row.LastActiveTS < activeWindow.Milliseconds()
	}
	return c
}

// PUT /_matrix/client/v3/presence/{userId}/status
func (s *SyncAPI) putPresence(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	if httputil.Vars(r)["userId"] != dev.UserID {
		return nil, mxerr.Forbidden("Cannot set the presence of another user")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	switch body.Presence {
	case presenceOnline, presenceUnavailable, presenceOffline:
	case "":
		return nil, mxerr.MissingParam("Missing presence")
	default:
		return nil, mxerr.InvalidParam("presence must be online, unavailable or offline")
	}
	if err := s.presence.set(r.Context(), dev.UserID, body.Presence, body.StatusMsg, false); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_matrix/client/v3/presence/{userId}/status: the presence of oneself
// or of a user sharing a room.
func (s *SyncAPI) getPresence(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	userID := httputil.Vars(r)["userId"]
	if _, err := spec.NewUserID(userID, true); err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if userID != dev.UserID {
		if err := s.catchUp(r.Context(), dev.UserID); err != nil {
			return nil, err
		}
		shared, err := s.sharesRoom(r.Context(), dev.UserID, userID)
		if err != nil {
			return nil, err
		}
		if !shared {
			return nil, mxerr.Forbidden("You do not share a room with %s", userID)
		}
	}
	row, err := storage.SelectPresence(r.Context(), s.store.DB(), userID)
	if errors.Is(err, storage.ErrNotFound) || !s.cfg.PresenceEnabled {
		return map[string]any{"presence": presenceOffline}, nil
	}
	if err != nil {
		return nil, err
	}
	return presenceContent(row, time.Now()), nil
}

// sharesRoom reports whether two users are both joined to some room.
func (s *SyncAPI) sharesRoom(ctx context.Context, a, b string) (bool, error) {
	ms, err := storage.CurrentMemberships(ctx, s.store.DB(), a)
	if err != nil {
		return false, err
	}
	var rooms []string
	for _, m := range ms {
		if m.Membership == spec.Join {
			rooms = append(rooms, m.RoomID)
		}
	}
	if len(rooms) == 0 {
		return false, nil
	}
	members, err := storage.CurrentMembers(ctx, s.store.DB(), rooms)
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if m.UserID == b && m.Membership == spec.Join {
			return true, nil
		}
	}
	return false, nil
}
