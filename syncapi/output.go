package syncapi

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// What the sync API publishes on SyncOutput (see syncapi/api), for the
// application service component: receipts, presence and to-device
// messages through sync_outbox, in the transaction that stores them;
// typing, which lives in memory, through typingOutput, best effort (as
// Synapse, which holds typing in memory too).

// outputReceipt queues a stored receipt on SyncOutput in its transaction.
func (s *SyncAPI) outputReceipt(ctx context.Context, tx *sqlutil.Tx, r *storage.Receipt) (bool, error) {
	if !s.cfg.Output.Ephemeral {
		return false, nil
	}
	payload, _ := json.Marshal(&syncout.ReceiptUpdate{V: 1, RoomID: r.RoomID, UserID: r.UserID, Type: r.Type,
		EventID: r.EventID, ThreadID: r.ThreadID, TS: r.TS})
	return true, storage.Outbox.Insert(ctx, tx, syncout.SubjectReceipt, "out-receipt:"+strconv.FormatInt(r.Pos, 10), payload)
}

// outputPresence queues a stored presence change on SyncOutput in its
// transaction.
func (s *SyncAPI) outputPresence(ctx context.Context, tx *sqlutil.Tx, row *storage.Presence) (bool, error) {
	if !s.cfg.Output.Ephemeral {
		return false, nil
	}
	payload, _ := json.Marshal(&syncout.PresenceUpdate{V: 1, UserID: row.UserID, Presence: row.Presence, StatusMsg: row.StatusMsg,
		LastActiveTS: row.LastActiveTS, CurrentlyActive: row.CurrentlyActive})
	return true, storage.Outbox.Insert(ctx, tx, syncout.SubjectPresence, "out-presence:"+strconv.FormatInt(row.Pos, 10), payload)
}

// outputToDevice queues the messages of the users Output.ToDevice accepts
// on SyncOutput in the transaction that stores them in their inboxes.
func (s *SyncAPI) outputToDevice(ctx context.Context, tx *sqlutil.Tx, msgs []storage.ToDevice) (bool, error) {
	if s.cfg.Output.ToDevice == nil {
		return false, nil
	}
	any := false
	for _, m := range msgs {
		if !s.cfg.Output.ToDevice(m.UserID) {
			continue
		}
		payload, _ := json.Marshal(&syncout.ToDeviceMessage{V: 1, Sender: m.Sender, Type: m.Type, Content: m.Content,
			UserID: m.UserID, DeviceID: m.DeviceID})
		id := "out-todevice:" + strconv.FormatInt(m.Pos, 10) + ":" + m.UserID + ":" + m.DeviceID
		if err := storage.Outbox.Insert(ctx, tx, syncout.SubjectToDevice, id, payload); err != nil {
			return false, err
		}
		any = true
	}
	return any, nil
}

// flushOutbox publishes sync_outbox after a commit that wrote to it; what
// a failed publish leaves, the relay sends.
func (s *SyncAPI) flushOutbox(ctx context.Context) {
	if err := s.fedOutbox.Flush(context.WithoutCancel(ctx), s.bus); err != nil {
		s.log.Warn("sync outbox not published yet (the relay retries)", "error", err.Error())
	}
}

// typingOutputSize bounds the rooms whose typing waits to be published.
const typingOutputSize = 4096

// typingOutput publishes the typing of rooms on SyncOutput off the
// request path. It holds the rooms that changed, not the changes: who is
// typing is read when the room is published, so the last message of a
// room is always its current state even when changes race.
type typingOutput struct {
	b     *bus.Bus
	log   interface{ Warn(string, ...any) }
	users func(roomID string) []string

	mu      sync.Mutex
	pending map[string]bool
	order   []string
	kick    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

func newTypingOutput(b *bus.Bus, log interface{ Warn(string, ...any) }, users func(string) []string) *typingOutput {
	return &typingOutput{b: b, log: log, users: users, pending: map[string]bool{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// changed queues a room without blocking.
func (o *typingOutput) changed(roomID string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	if !o.pending[roomID] {
		if len(o.order) >= typingOutputSize {
			o.mu.Unlock()
			o.log.Warn("typing output queue full: dropped", "room_id", roomID)
			return
		}
		o.pending[roomID] = true
		o.order = append(o.order, roomID)
	}
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *typingOutput) start() func() {
	if o == nil {
		return func() {}
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			select {
			case <-o.kick:
				o.publishAll()
			case <-o.done:
				o.publishAll()
				return
			}
		}
	}()
	return func() {
		close(o.done)
		o.wg.Wait()
	}
}

func (o *typingOutput) publishAll() {
	for {
		o.mu.Lock()
		if len(o.order) == 0 {
			o.mu.Unlock()
			return
		}
		roomID := o.order[0]
		o.order = o.order[1:]
		delete(o.pending, roomID)
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		users := o.users(roomID)
		if users == nil {
			users = []string{}
		}
		_, err := o.b.Publish(ctx, syncout.SubjectTyping, &syncout.TypingUpdate{V: 1, RoomID: roomID, UserIDs: users}, "", nil)
		cancel()
		if err != nil {
			o.log.Warn("typing not published", "room_id", roomID, "error", err.Error())
		}
	}
}
