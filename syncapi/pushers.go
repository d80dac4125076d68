package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/pushgateway"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// pushers knows the pushers of the local users who got notifications
// (users without pushers included, so that asking costs nothing) and
// hands them to the pool that delivers to their gateways. The user API
// owns pushers and announces every change on UserOutput, which reloads
// the user's.
type pushers struct {
	api   userapi.PushersAPI
	pool  *pushgateway.Pool
	mu    sync.Mutex
	known map[string][]pushgateway.Target
}

// pushNotified wakes the pushers of users who got notifications, loading
// the pushers of users seen for the first time (one query for all).
func (s *SyncAPI) pushNotified(users []string) {
	p := s.pushers
	if p == nil || len(users) == 0 {
		return
	}
	var missing, wake []string
	p.mu.Lock()
	for _, u := range users {
		if t, ok := p.known[u]; !ok {
			missing = append(missing, u)
		} else if len(t) > 0 {
			wake = append(wake, u)
		}
	}
	p.mu.Unlock()
	if len(missing) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		loaded, err := s.loadPushers(ctx, missing)
		cancel()
		if err != nil {
			s.log.Warn("pushers not loaded: notifications wait for the next one", "users", len(missing), "error", err.Error())
		}
		wake = append(wake, loaded...)
	}
	p.pool.Wake(wake...)
}

// loadPushers reads the pushers of users and gives them to the pool. It
// returns the users who have pushers.
func (s *SyncAPI) loadPushers(ctx context.Context, users []string) ([]string, error) {
	p := s.pushers
	all, err := p.api.QueryPushers(ctx, users)
	if err != nil {
		return nil, err
	}
	var with []string
	for _, u := range users {
		var targets []pushgateway.Target
		for _, pu := range all[u] {
			if t, ok := targetOf(pu); ok {
				targets = append(targets, t)
			}
		}
		p.mu.Lock()
		p.known[u] = targets
		p.mu.Unlock()
		p.pool.Set(u, targets)
		if len(targets) > 0 {
			with = append(with, u)
		}
	}
	return with, nil
}

// targetOf is where an HTTP pusher delivers (false for other kinds, and
// for data without a url).
func targetOf(p userapi.Pusher) (pushgateway.Target, bool) {
	if p.Kind != "http" {
		return pushgateway.Target{}, false
	}
	t, err := pushgateway.NewTarget(p.UserID, p.AppID, p.PushKey, p.Data, p.CreatedTS, p.ProfileTag)
	return t, err == nil
}

// onPushersUpdate reloads a user's pushers after they changed, and
// forgets the progress of those that are gone.
func (s *SyncAPI) onPushersUpdate(ctx context.Context, m *bus.Msg) error {
	var u userapi.PushersUpdate
	if err := json.Unmarshal(m.Data, &u); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable pushers update: %w", err))
	}
	if s.pushers != nil {
		if _, err := s.loadPushers(ctx, []string{u.UserID}); err != nil {
			return err
		}
		s.pushers.mu.Lock()
		var keep []storage.PusherProgressKey
		for _, t := range s.pushers.known[u.UserID] {
			keep = append(keep, storage.PusherProgressKey{UserID: t.UserID, AppID: t.AppID, PushKey: t.PushKey})
		}
		s.pushers.mu.Unlock()
		if err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return storage.DeletePusherProgress(ctx, tx, u.UserID, keep)
		}); err != nil {
			return err
		}
	}
	return s.setConsumed(ctx, userOutputConsumer, m.Seq, &s.applied.userOutput)
}

// resumePushers starts delivering to the pushers that were delivering
// before a restart (their pending notifications go out now).
func (s *SyncAPI) resumePushers(ctx context.Context) error {
	if s.pushers == nil {
		return nil
	}
	keys, err := storage.PushersWithProgress(ctx, s.store.DB())
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var users []string
	for _, k := range keys {
		if !seen[k.UserID] {
			seen[k.UserID] = true
			users = append(users, k.UserID)
		}
	}
	if len(users) == 0 {
		return nil
	}
	with, err := s.loadPushers(ctx, users)
	if err != nil {
		return err
	}
	s.pushers.pool.Wake(with...)
	return nil
}

// pushSource is what the pool delivers: the notifications of the sync
// API's read model.
type pushSource struct{ s *SyncAPI }

var _ pushgateway.Source = pushSource{}

// Progress is where the pusher's delivery stands; a pusher seen for the
// first time starts at the present (nothing older is pushed).
func (ps pushSource) Progress(ctx context.Context, t pushgateway.Target) (int64, error) {
	st := ps.s.store
	pos, found, err := storage.PusherProgress(ctx, st.DB(), t.UserID, t.AppID, t.PushKey)
	if err != nil || found {
		return pos, err
	}
	ps.s.unread.mu.Lock()
	pos = ps.s.unread.applied
	ps.s.unread.mu.Unlock()
	return pos, st.WithTx(ctx, func(tx *sqlutil.Tx) error {
		return storage.SetPusherProgress(ctx, tx, t.UserID, t.AppID, t.PushKey, pos)
	})
}

// Advance records the pusher's progress.
func (ps pushSource) Advance(ctx context.Context, t pushgateway.Target, pos int64) error {
	return ps.s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		return storage.SetPusherProgress(ctx, tx, t.UserID, t.AppID, t.PushKey, pos)
	})
}

// Rejected deletes a pusher whose gateway rejected its push key.
func (ps pushSource) Rejected(ctx context.Context, t pushgateway.Target) error {
	ps.s.log.Info("push gateway rejected a push key: pusher deleted", "user_id", t.UserID, "app_id", t.AppID)
	return ps.s.pushers.api.DeletePusher(ctx, t.UserID, t.AppID, t.PushKey)
}

// pendingScan is how many notification events of the user's rooms one
// Pending call reads.
const pendingScan = 200

// Pending returns the user's notifications after pos that are still
// unread, with what a push shows of them: the event, the room's name and
// alias, the sender's display name, the tweaks and the badge (the rooms
// with unread notifications). When the events read hold none for the
// user, it returns one entry without an event, moving the progress on.
func (ps pushSource) Pending(ctx context.Context, t pushgateway.Target, after int64, limit int) ([]pushgateway.Notification, error) {
	s := ps.s
	db := s.store.DB()
	rooms := s.notifier.joinedRooms(t.UserID)
	if len(rooms) == 0 {
		return nil, nil
	}
	s.unread.mu.Lock()
	upTo := s.unread.applied // counted events only: the badge agrees
	s.unread.mu.Unlock()
	evs, err := storage.NotificationEvents(ctx, db, rooms, after, upTo+1, false, pendingScan)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	reads, err := storage.UserReadPositions(ctx, db, t.UserID, rooms)
	if err != nil {
		return nil, err
	}
	type hit struct {
		e *storage.NotificationEvent
		n storage.Notified
	}
	var hits []hit
	scannedTo := evs[len(evs)-1].EventPos
	for _, e := range evs {
		n, ok := e.Find(t.UserID)
		if !ok || e.EventPos <= reads.Position(e.RoomID, e.ThreadID) {
			continue
		}
		if e.TS < t.PushKeyTS {
			continue // sent before the pusher existed (applied after it started)
		}
		hits = append(hits, hit{e, n})
		if len(hits) == limit {
			scannedTo = e.EventPos
			break
		}
	}
	if len(hits) == 0 {
		return []pushgateway.Notification{{Pos: scannedTo}}, nil
	}
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.e.EventID
	}
	events, err := storage.EventsByID(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	unread := s.unread.roomsWithUnread(t.UserID, rooms)
	type roomNames struct{ name, alias string }
	names := map[string]*roomNames{}
	senders := map[[2]string]string{}
	out := make([]pushgateway.Notification, 0, len(hits)+1)
	for _, h := range hits {
		e, ok := events[h.e.EventID]
		if !ok {
			continue
		}
		rn, ok := names[e.RoomID]
		if !ok {
			rn = &roomNames{}
			if _, js, err := storage.CurrentStateEvent(ctx, db, e.RoomID, spec.MRoomName, ""); err != nil {
				return nil, err
			} else if js != nil {
				rn.name = gjson.GetBytes(js, "content.name").Str
			}
			if _, js, err := storage.CurrentStateEvent(ctx, db, e.RoomID, spec.MRoomCanonicalAlias, ""); err != nil {
				return nil, err
			} else if js != nil {
				rn.alias = gjson.GetBytes(js, "content.alias").Str
			}
			names[e.RoomID] = rn
		}
		key := [2]string{e.RoomID, e.Sender}
		name, ok := senders[key]
		if !ok {
			_, js, err := storage.CurrentStateEvent(ctx, db, e.RoomID, spec.MRoomMember, e.Sender)
			if err != nil {
				return nil, err
			}
			name = gjson.GetBytes(js, "content.displayname").Str
			senders[key] = name
		}
		var content json.RawMessage
		if c := gjson.GetBytes(e.JSON, "content"); c.IsObject() {
			content = json.RawMessage(c.Raw)
		}
		out = append(out, pushgateway.Notification{
			Pos: h.e.EventPos, EventID: e.EventID, RoomID: e.RoomID, Type: e.Type, Sender: e.Sender,
			SenderDisplayName: name, RoomName: rn.name, RoomAlias: rn.alias,
			UserIsTarget: e.Type == spec.MRoomMember && e.StateKey != nil && *e.StateKey == t.UserID,
			Content:      content, Tweaks: tweaksOf(h.e.ActionsOf(h.n)), Unread: unread, Highlight: h.n.Highlight,
		})
	}
	if len(out) == 0 || out[len(out)-1].Pos < scannedTo {
		out = append(out, pushgateway.Notification{Pos: scannedTo})
	}
	return out, nil
}

// tweaksOf collects the set_tweak actions of a notification (a tweak
// without a value is true, as Synapse sends it).
func tweaksOf(actions []byte) map[string]json.RawMessage {
	var out map[string]json.RawMessage
	gjson.ParseBytes(actions).ForEach(func(_, a gjson.Result) bool {
		name := a.Get("set_tweak")
		if name.Type != gjson.String {
			return true
		}
		if out == nil {
			out = map[string]json.RawMessage{}
		}
		if v := a.Get("value"); v.Exists() {
			out[name.Str] = json.RawMessage(v.Raw)
		} else {
			out[name.Str] = json.RawMessage(`true`)
		}
		return true
	})
	return out
}
