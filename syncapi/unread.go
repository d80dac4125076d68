package syncapi

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/periodic"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// unreadConsumer keys, in sync_consumers, the position up to which the
// saved unread counts reflect every notification event.
const unreadConsumer = "syncapi-unread"

// unreadSaveEvery is how often changed counts are saved.
const unreadSaveEvery = 250 * time.Millisecond

// unreadKey is a user's room.
type unreadKey struct{ user, room string }

// threadCount is the unread notifications of one thread of a room.
type threadCount struct {
	n, h int
	last int64 // the newest notification counted
}

// unreadStore holds every user's unread notification counts in memory:
// an event into a room of 1,000 members changes 1,000 counts, which as
// rows would cost a write each. Counts change in memory as events are
// applied and receipts read them; the changed counts and the notification
// events applied since are saved in one transaction every
// unreadSaveEvery (and at once after a receipt), with the position they
// reflect. At start, the saved counts are loaded and the events after that
// position are evaluated again, so a crash loses no notification.
type unreadStore struct {
	mu sync.Mutex
	m  map[unreadKey]map[string]*threadCount
	// dirty are the rooms whose counts changed since the last save.
	dirty map[unreadKey]bool
	// applied is the position of the last event applied; saved what the
	// saved rows reflect.
	applied, saved int64
	// pending are the notification events applied but not saved yet.
	pending []*storage.NotificationEvent
	saving  sync.Mutex // one save at a time
}

func newUnreadStore() *unreadStore {
	return &unreadStore{m: map[unreadKey]map[string]*threadCount{}, dirty: map[unreadKey]bool{}}
}

// add counts a notification of pos in a thread; u.mu is held.
func (u *unreadStore) addLocked(user, room, thread string, highlight bool, pos int64) {
	k := unreadKey{user, room}
	threads := u.m[k]
	if threads == nil {
		threads = map[string]*threadCount{}
		u.m[k] = threads
	}
	c := threads[thread]
	if c == nil {
		c = &threadCount{}
		threads[thread] = c
	}
	c.n++
	if highlight {
		c.h++
	}
	c.last = max(c.last, pos)
	u.dirty[k] = true
}

// readLocked marks what a user has read in a room up to pos, in a thread
// ("" for all): counts with nothing newer drop to zero; it returns the
// threads with notifications after pos, which must be counted again.
// u.mu is held.
func (u *unreadStore) readLocked(user, room, thread string, pos int64) (recount []string) {
	k := unreadKey{user, room}
	threads := u.m[k]
	for t, c := range threads {
		if thread != "" && t != thread {
			continue
		}
		if c.last <= pos {
			delete(threads, t)
			u.dirty[k] = true
		} else {
			recount = append(recount, t)
		}
	}
	if len(threads) == 0 {
		delete(u.m, k)
	}
	return recount
}

// forget drops a user's counts in a room they left.
func (u *unreadStore) forget(user, room string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := unreadKey{user, room}
	if _, ok := u.m[k]; ok {
		delete(u.m, k)
		u.dirty[k] = true
	}
}

// counts returns a user's counts in rooms, per room and thread.
func (u *unreadStore) counts(user string, rooms []string) map[string]map[string]threadCount {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[string]map[string]threadCount{}
	for _, r := range rooms {
		for t, c := range u.m[unreadKey{user, r}] {
			if out[r] == nil {
				out[r] = map[string]threadCount{}
			}
			out[r][t] = *c
		}
	}
	return out
}

// roomsWithUnread counts the rooms where a user has unread notifications.
func (u *unreadStore) roomsWithUnread(user string, rooms []string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.roomsWithUnreadLocked(user, rooms)
}

// roomsWithUnreadLocked is roomsWithUnread with u.mu held.
func (u *unreadStore) roomsWithUnreadLocked(user string, rooms []string) int {
	n := 0
	for _, r := range rooms {
		if len(u.m[unreadKey{user, r}]) > 0 {
			n++
		}
	}
	return n
}

// applyUnread counts the notifications of an event applied at pos and
// what its sender has read by sending it (recounting, when needed, from
// the stored notification events).
func (s *SyncAPI) applyUnread(ctx context.Context, pos int64, roomID, sender, senderThread string, ev *storage.NotificationEvent) {
	u := s.unread
	u.mu.Lock()
	defer u.mu.Unlock()
	if ev != nil {
		for _, n := range ev.Users() {
			u.addLocked(n.UserID, roomID, ev.ThreadID, n.Highlight, pos)
		}
		u.pending = append(u.pending, ev)
	}
	if sender != "" {
		if recount := u.readLocked(sender, roomID, senderThread, pos); len(recount) > 0 {
			s.recountLocked(ctx, sender, roomID, recount, pos)
		}
	}
	u.applied = max(u.applied, pos)
}

// markRead applies a local user's read receipts in a room, as stored,
// to the counts after a receipt in a thread ("" for an unthreaded one)
// moved: each thread is read up to the further of the user's m.read and
// m.read.private receipts of it and of the unthreaded ones. The counts
// are saved at once (receipts are not replayed from the timeline after a
// crash).
func (s *SyncAPI) markRead(ctx context.Context, user, room, thread string) error {
	reads, err := storage.UserReadPositions(ctx, s.store.DB(), user, []string{room})
	if err != nil {
		return err
	}
	u := s.unread
	u.mu.Lock()
	rooms := s.notifier.joinedRooms(user)
	before := u.roomsWithUnreadLocked(user, rooms)
	threads := []string{thread}
	if thread == "" {
		threads = u.threadsLocked(unreadKey{user, room})
	}
	s.readThreadsLocked(ctx, user, room, threads, reads)
	after := u.roomsWithUnreadLocked(user, rooms)
	u.mu.Unlock()
	if s.pushers != nil && after != before {
		s.pushers.pool.Badge(user, after) // the phone's badge follows the read
	}
	return s.saveUnread(ctx)
}

// threadsLocked lists the threads with counts of a user's room; u.mu is
// held.
func (u *unreadStore) threadsLocked(k unreadKey) []string {
	threads := make([]string, 0, len(u.m[k]))
	for t := range u.m[k] {
		threads = append(threads, t)
	}
	return threads
}

// readThreadsLocked reads each of the threads of a user's room up to
// where the user's receipts say it is read, counting again what is newer.
// u.mu is held.
func (s *SyncAPI) readThreadsLocked(ctx context.Context, user, room string, threads []string, reads storage.UserReads) {
	for _, t := range threads {
		pos := reads.Position(room, t)
		if recount := s.unread.readLocked(user, room, t, pos); len(recount) > 0 {
			s.recountLocked(ctx, user, room, recount, pos)
		}
	}
}

// recountLocked counts again a user's notifications in the threads of a
// room after pos, from the stored notification events up to what was
// applied. u.mu is held (so no event is counted twice).
func (s *SyncAPI) recountLocked(ctx context.Context, user, room string, threads []string, pos int64) {
	u := s.unread
	k := unreadKey{user, room}
	want := map[string]bool{}
	for _, t := range threads {
		want[t] = true
		delete(u.m[k], t)
	}
	u.dirty[k] = true
	count := func(e *storage.NotificationEvent) {
		if want[e.ThreadID] && e.RoomID == room && e.EventPos > pos {
			if n, ok := e.Find(user); ok {
				u.addLocked(user, room, e.ThreadID, n.Highlight, e.EventPos)
			}
		}
	}
	// The saved events, then those not saved yet (a save in progress
	// keeps its events pending until it has committed, and moves saved
	// with them).
	for after := pos; after < u.saved; {
		evs, err := storage.NotificationEvents(ctx, s.store.DB(), []string{room}, after, u.saved+1, false, 500)
		if err != nil {
			s.log.Warn("unread counts not recounted", "room_id", room, "user_id", user, "error", err.Error())
			return
		}
		for _, e := range evs {
			after = e.EventPos
			count(e)
		}
		if len(evs) < 500 {
			break
		}
	}
	for _, e := range u.pending {
		if e.EventPos > u.saved {
			count(e)
		}
	}
	if len(u.m[k]) == 0 {
		delete(u.m, k)
	}
}

// saveUnread saves the counts that changed, with the position they
// reflect.
func (s *SyncAPI) saveUnread(ctx context.Context) error {
	u := s.unread
	u.saving.Lock()
	defer u.saving.Unlock()
	u.mu.Lock()
	if len(u.dirty) == 0 && len(u.pending) == 0 && u.applied == u.saved {
		u.mu.Unlock()
		return nil
	}
	var rows []storage.Unread
	keys := make([]unreadKey, 0, len(u.dirty))
	for k := range u.dirty {
		keys = append(keys, k)
	}
	for _, k := range keys {
		rows = append(rows, u.rowsLocked(k)...)
	}
	dirty := u.dirty
	u.dirty = map[unreadKey]bool{}
	pos := u.applied
	events := u.pending[:len(u.pending):len(u.pending)]
	u.mu.Unlock()
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.DeleteUnreadRooms(ctx, tx, keysOf(keys)); err != nil {
			return err
		}
		if err := storage.SaveUnread(ctx, tx, rows); err != nil {
			return err
		}
		if err := storage.InsertNotificationEvents(ctx, tx, events); err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, unreadConsumer, uint64(max(pos, 0)))
	})
	if err != nil {
		u.mu.Lock()
		for k := range dirty {
			u.dirty[k] = true
		}
		u.mu.Unlock()
		return err
	}
	u.mu.Lock()
	u.saved = pos
	u.pending = u.pending[len(events):]
	u.mu.Unlock()
	// The pushers of the users notified have something to deliver now.
	var notified []string
	seen := map[string]bool{}
	for _, e := range events {
		for _, n := range e.Users() {
			if !seen[n.UserID] {
				seen[n.UserID] = true
				notified = append(notified, n.UserID)
			}
		}
	}
	s.pushNotified(notified)
	return nil
}

// rowsLocked are the rows of a user's room; u.mu is held.
func (u *unreadStore) rowsLocked(k unreadKey) []storage.Unread {
	var out []storage.Unread
	for t, c := range u.m[k] {
		out = append(out, storage.Unread{UserID: k.user, RoomID: k.room, ThreadID: t, Notifications: c.n, Highlights: c.h, LastPos: c.last})
	}
	return out
}

func keysOf(ks []unreadKey) [][2]string {
	out := make([][2]string, len(ks))
	for i, k := range ks {
		out[i] = [2]string{k.user, k.room}
	}
	return out
}

// startUnread loads the saved counts, applies again the events after
// them, and starts saving changes.
func (s *SyncAPI) startUnread(ctx context.Context) (stop func(), err error) {
	u := s.unread
	rows, err := storage.AllUnread(ctx, s.store.DB())
	if err != nil {
		return nil, err
	}
	saved, err := storage.ConsumerPosition(ctx, s.store.DB(), unreadConsumer)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	for _, r := range rows {
		k := unreadKey{r.UserID, r.RoomID}
		if u.m[k] == nil {
			u.m[k] = map[string]*threadCount{}
		}
		u.m[k][r.ThreadID] = &threadCount{n: r.Notifications, h: r.Highlights, last: r.LastPos}
	}
	u.applied, u.saved = int64(saved), int64(saved)
	u.mu.Unlock()
	if len(rows) > 0 || saved > 0 {
		if err := s.replayUnread(ctx, int64(saved)); err != nil {
			return nil, err
		}
	} else {
		// Nothing counted yet (a new database, or one from before
		// notifications): the counts start at the present.
		last, err := storage.MaxEventPos(ctx, s.store.DB())
		if err != nil {
			return nil, err
		}
		u.mu.Lock()
		u.applied = max(u.applied, last)
		u.mu.Unlock()
	}
	if err := s.applyReadPositions(ctx); err != nil {
		return nil, err
	}
	if err := s.saveUnread(ctx); err != nil {
		return nil, err
	}
	stopSaving := periodic.Every(unreadSaveEvery, func(context.Context) {
		if err := s.saveUnread(context.Background()); err != nil {
			s.log.Warn("unread counts not saved (retrying)", "error", err.Error())
		}
	})
	return func() {
		stopSaving()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.saveUnread(ctx); err != nil {
			s.log.Warn("unread counts not saved at shutdown: they are replayed at the next start", "error", err.Error())
		}
	}, nil
}

// replayUnread applies again the events after pos, which were applied
// but whose counts were not saved: evaluated again against the push
// rules (with the rooms' current members and state), and their senders'
// reading. What receipts have read since, applyReadPositions reads next.
func (s *SyncAPI) replayUnread(ctx context.Context, pos int64) error {
	db := s.store.DB()
	evs, err := storage.EventsAfter(ctx, db, pos)
	if err != nil || len(evs) == 0 {
		return err
	}
	versions := map[string]gomatrixserverlib.IRoomVersion{}
	u := s.unread
	for _, e := range evs {
		verImpl, ok := versions[e.RoomID]
		if !ok && s.rooms != nil {
			if info, err := s.rooms.QueryRoomInfo(ctx, e.RoomID); err == nil {
				verImpl, _ = gomatrixserverlib.GetRoomVersion(info.Version)
			}
			versions[e.RoomID] = verImpl
		}
		if verImpl == nil {
			continue
		}
		pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(e.EventID, e.JSON, e.Redacted)
		if err != nil {
			continue
		}
		ch, err := s.pushChange(ctx, db, e.RoomID, pdu, verImpl, e.Pos)
		if err != nil {
			return err
		}
		u.mu.Lock()
		if n := ch.ev; n != nil {
			for _, nu := range n.Users() {
				u.addLocked(nu.UserID, n.RoomID, n.ThreadID, nu.Highlight, e.Pos)
			}
			u.pending = append(u.pending, n)
		}
		if ch.sender != "" {
			u.readLocked(ch.sender, e.RoomID, ch.senderThread, e.Pos)
		}
		u.applied = max(u.applied, e.Pos)
		u.mu.Unlock()
	}
	s.log.Info("unread counts replayed", "events", len(evs))
	return nil
}

// applyReadPositions reads the counts up to the users' receipts: after a
// crash, a receipt may have been stored without the counts it cleared,
// and replayed events may be read already.
func (s *SyncAPI) applyReadPositions(ctx context.Context) error {
	u := s.unread
	u.mu.Lock()
	roomSet := map[string]bool{}
	for k := range u.m {
		roomSet[k.room] = true
	}
	u.mu.Unlock()
	if len(roomSet) == 0 {
		return nil
	}
	rooms := make([]string, 0, len(roomSet))
	for r := range roomSet {
		rooms = append(rooms, r)
	}
	reads, err := storage.ReadPositions(ctx, s.store.DB(), nil, rooms)
	if err != nil {
		return err
	}
	byUser := map[string]storage.UserReads{}
	for _, r := range reads {
		if byUser[r.UserID] == nil {
			byUser[r.UserID] = storage.UserReads{}
		}
		byUser[r.UserID][[2]string{r.RoomID, r.ThreadID}] = r.Pos
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	done := map[unreadKey]bool{}
	for _, r := range reads {
		k := unreadKey{r.UserID, r.RoomID}
		if !done[k] {
			done[k] = true
			s.readThreadsLocked(ctx, k.user, k.room, u.threadsLocked(k), byUser[k.user])
		}
	}
	return nil
}
