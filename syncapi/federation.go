package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Backfiller fetches a room's history older than the events in from from
// other servers and stores it (it comes back as OutputBackfilled); it
// returns how many new events were stored, 0 when there is no more; and
// asks other servers for a room's event at a timestamp. It is
// federationapi/api.FederationAPI's Backfill and EventAtTimestamp.
type Backfiller interface {
	Backfill(ctx context.Context, roomID string, from []string, limit int) (int, error)
	EventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (fedapi.RemoteEventAt, bool, error)
}

// federationInConsumer consumes the EDUs other servers sent (FederationIn);
// its position is kept in sync_consumers like the others.
const federationInConsumer = "syncapi-federationin"

// eduQueueSize bounds the EDUs waiting to be published; past it they are
// dropped (and logged): typing and presence are best effort, as in Synapse,
// which holds them in memory (receipts go through sync_outbox instead).
const eduQueueSize = 4096

// eduSender publishes the typing and presence EDUs of local users on
// FederationOut in the order they are queued, off the request path: a
// client's typing or presence request does not wait for the bus, and a
// failure is logged.
type eduSender struct {
	b     *bus.Bus
	log   interface{ Warn(string, ...any) }
	queue chan *fedapi.OutboundEDU
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newEDUSender(b *bus.Bus, log interface{ Warn(string, ...any) }) *eduSender {
	return &eduSender{b: b, log: log, queue: make(chan *fedapi.OutboundEDU, eduQueueSize), done: make(chan struct{})}
}

// start runs the publisher until the returned function is called, which
// publishes what is queued (for at most a few seconds) first.
func (e *eduSender) start() func() {
	if e == nil {
		return func() {}
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			select {
			case edu := <-e.queue:
				e.publish(context.Background(), edu)
			case <-e.done:
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				for {
					select {
					case edu := <-e.queue:
						if ctx.Err() == nil {
							e.publish(ctx, edu)
						}
					default:
						return
					}
				}
			}
		}
	}()
	return func() {
		e.once.Do(func() { close(e.done) })
		e.wg.Wait()
	}
}

func (e *eduSender) publish(ctx context.Context, edu *fedapi.OutboundEDU) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var header map[string]string
	if edu.RoomID != "" {
		header = map[string]string{"room_id": edu.RoomID}
	}
	if _, err := e.b.Publish(ctx, fedapi.OutSubject(edu.Type), edu, "", header); err != nil {
		e.log.Warn("EDU not published", "edu_type", edu.Type, "error", err.Error())
	}
}

// send queues an EDU without blocking.
func (e *eduSender) send(edu *fedapi.OutboundEDU) {
	if e == nil {
		return
	}
	edu.V = 1
	select {
	case e.queue <- edu:
	default:
		e.log.Warn("EDU queue full: dropped", "edu_type", edu.Type)
	}
}

// sendTyping tells the servers of a room that a local user started or
// stopped typing (only rooms with remote members have any).
func (s *SyncAPI) sendTyping(roomID, userID string, typing bool) {
	if !s.notifier.hasRemote(roomID) {
		return
	}
	content, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
	s.edus.send(&fedapi.OutboundEDU{Type: fedapi.EDUTyping, Content: content, RoomID: roomID})
}

// receiptEDU is the EDU that tells the servers of a room about a local
// user's public read receipt; false when there is none to send (a private
// receipt, a room without remote members).
func (s *SyncAPI) receiptEDU(r *storage.Receipt) ([]byte, bool) {
	if r.Type != "m.read" || !s.isLocal(r.UserID) || !s.notifier.hasRemote(r.RoomID) {
		return nil, false
	}
	data := map[string]any{"ts": r.TS}
	if r.ThreadID != "" {
		data["thread_id"] = r.ThreadID
	}
	content, _ := json.Marshal(map[string]any{r.RoomID: map[string]any{"m.read": map[string]any{
		r.UserID: map[string]any{"event_ids": []string{r.EventID}, "data": data},
	}}})
	payload, err := json.Marshal(&fedapi.OutboundEDU{V: 1, Type: fedapi.EDUReceipt, Content: content, RoomID: r.RoomID})
	return payload, err == nil
}

// sendPresence tells the servers sharing a room with a local user about
// their presence.
func (s *SyncAPI) sendPresence(row *storage.Presence) {
	if !s.cfg.PresenceEnabled || !s.notifier.sharesWithRemote(row.UserID) {
		return
	}
	now := time.Now()
	push := map[string]any{
		"user_id":          row.UserID,
		"presence":         row.Presence,
		"last_active_ago":  max(now.UnixMilli()-row.LastActiveTS, 0),
		"currently_active": row.Presence == presenceOnline && row.CurrentlyActive,
	}
	if row.StatusMsg != nil {
		push["status_msg"] = *row.StatusMsg
	}
	content, _ := json.Marshal(map[string]any{"push": []any{push}})
	s.edus.send(&fedapi.OutboundEDU{Type: fedapi.EDUPresence, Content: content, UserID: row.UserID})
}

// federationInSubjects are the EDUs the sync API takes from FederationIn.
var federationInSubjects = []string{fedapi.InSubject(fedapi.EDUTyping), fedapi.InSubject(fedapi.EDUReceipt), fedapi.InSubject(fedapi.EDUPresence),
	fedapi.InSubject(fedapi.EDUDirectToDevice)}

// onFederationIn applies an EDU from another server. The federation API
// has checked that the origin is the server of the users concerned; the
// checks here are those of the read model (the room is one this server is
// in, the user is joined).
func (s *SyncAPI) onFederationIn(ctx context.Context, m *bus.Msg) error {
	var edu fedapi.InboundEDU
	if err := json.Unmarshal(m.Data, &edu); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable inbound EDU: %w", err))
	}
	var err error
	switch edu.Type {
	case fedapi.EDUTyping:
		err = s.onTypingEDU(ctx, &edu)
	case fedapi.EDUReceipt:
		return s.onReceiptEDU(ctx, &edu, m.Seq)
	case fedapi.EDUPresence:
		return s.onPresenceEDU(ctx, &edu, m.Seq)
	case fedapi.EDUDirectToDevice:
		return s.onToDeviceEDU(ctx, &edu, m.Seq)
	}
	if err != nil {
		return err
	}
	return s.setConsumed(ctx, federationInConsumer, m.Seq, &s.applied.federationIn)
}

// fromOrigin reports whether a user belongs to the server an EDU came from.
func fromOrigin(userID, origin string) bool {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	return err == nil && string(domain) == origin
}

// onTypingEDU applies a remote user's typing: it lasts fedTypingTimeout
// unless renewed. Typing in rooms this server is not in, or by users not
// joined to them, is ignored, as the spec asks.
func (s *SyncAPI) onTypingEDU(ctx context.Context, edu *fedapi.InboundEDU) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(edu.Content, &c); err != nil || c.RoomID == "" || !fromOrigin(c.UserID, edu.Origin) || s.isLocal(c.UserID) {
		s.log.Debug("malformed typing EDU ignored", "origin", edu.Origin)
		return nil
	}
	if !s.notifier.hasLocalJoined(c.RoomID) {
		return nil
	}
	if c.Typing {
		joined, err := s.isJoined(ctx, c.RoomID, c.UserID)
		if err != nil || !joined {
			return err
		}
	}
	s.typing.set(c.RoomID, c.UserID, c.Typing, fedTypingTimeout, false)
	return nil
}

// isJoined reports whether the read model has a user joined to a room.
func (s *SyncAPI) isJoined(ctx context.Context, roomID, userID string) (bool, error) {
	_, js, err := storage.CurrentStateEvent(ctx, s.store.DB(), roomID, spec.MRoomMember, userID)
	if err != nil || js == nil {
		return false, err
	}
	var ev struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	_ = json.Unmarshal(js, &ev)
	return ev.Content.Membership == spec.Join, nil
}

// onReceiptEDU stores remote users' public read receipts like local ones:
// one per user, type and thread, never moving back to an older event the
// read model knows; a receipt of an event it does not know is stored as
// it is (as Synapse does). Receipts for rooms this server is not in are
// ignored.
func (s *SyncAPI) onReceiptEDU(ctx context.Context, edu *fedapi.InboundEDU, seq uint64) error {
	var content map[string]map[string]map[string]struct {
		EventIDs []string        `json:"event_ids"`
		Data     json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(edu.Content, &content); err != nil {
		s.log.Debug("malformed receipt EDU ignored", "origin", edu.Origin)
		return s.setConsumed(ctx, federationInConsumer, seq, &s.applied.federationIn)
	}
	var list []receiptWrite
	var ids []string
	for roomID, types := range content {
		if !s.notifier.hasLocalJoined(roomID) {
			continue
		}
		for typ, users := range types {
			if typ != "m.read" {
				continue // private receipts stay on their server
			}
			for userID, u := range users {
				if !fromOrigin(userID, edu.Origin) || len(u.EventIDs) == 0 {
					continue
				}
				var data struct {
					TS       *int64 `json:"ts"`
					ThreadID any    `json:"thread_id"`
				}
				_ = json.Unmarshal(u.Data, &data)
				r := &storage.Receipt{RoomID: roomID, Type: typ, UserID: userID, EventID: u.EventIDs[0], TS: time.Now().UnixMilli()}
				if data.TS != nil {
					r.TS = *data.TS
				}
				if t, ok := data.ThreadID.(string); ok && (t == "main" || strings.HasPrefix(t, "$")) {
					r.ThreadID = t
				}
				list = append(list, receiptWrite{r: r, candidates: u.EventIDs})
				ids = append(ids, u.EventIDs...)
			}
		}
	}
	// The receipt points at the newest of its events the read model knows.
	if len(ids) > 0 {
		known, err := storage.EventsByID(ctx, s.store.DB(), ids)
		if err != nil {
			return err
		}
		for i := range list {
			w := &list[i]
			for _, id := range w.candidates {
				if e, ok := known[id]; ok && e.RoomID == w.r.RoomID && (!w.known || e.Pos > w.eventPos) {
					w.r.EventID, w.eventPos, w.known = id, e.Pos, true
				}
			}
		}
	}
	_, err := s.storeReceipts(ctx, list, func(tx *sqlutil.Tx) error {
		return storage.SetConsumerPosition(ctx, tx, federationInConsumer, seq)
	})
	if err != nil {
		return err
	}
	s.applied.federationIn.Store(seq)
	return nil
}

// onPresenceEDU stores remote users' presence and wakes the local users
// who share a room with them.
func (s *SyncAPI) onPresenceEDU(ctx context.Context, edu *fedapi.InboundEDU, seq uint64) error {
	var content struct {
		Push []struct {
			UserID          string  `json:"user_id"`
			Presence        string  `json:"presence"`
			StatusMsg       *string `json:"status_msg"`
			LastActiveAgo   int64   `json:"last_active_ago"`
			CurrentlyActive bool    `json:"currently_active"`
		} `json:"push"`
	}
	if !s.cfg.PresenceEnabled || json.Unmarshal(edu.Content, &content) != nil {
		return s.setConsumed(ctx, federationInConsumer, seq, &s.applied.federationIn)
	}
	now := time.Now().UnixMilli()
	var rows []*storage.Presence
	for _, p := range content.Push {
		switch p.Presence {
		case presenceOnline, presenceUnavailable, presenceOffline:
		default:
			continue
		}
		if !fromOrigin(p.UserID, edu.Origin) || s.isLocal(p.UserID) {
			continue
		}
		rows = append(rows, &storage.Presence{UserID: p.UserID, Presence: p.Presence, StatusMsg: p.StatusMsg,
			LastActiveTS: now - max(p.LastActiveAgo, 0), CurrentlyActive: p.CurrentlyActive})
	}
	changed, err := s.presence.storeRemote(ctx, rows, func(tx *sqlutil.Tx) error {
		return storage.SetConsumerPosition(ctx, tx, federationInConsumer, seq)
	})
	if err != nil {
		return err
	}
	for _, u := range changed {
		s.notifier.wakeSharers(u)
	}
	s.applied.federationIn.Store(seq)
	return nil
}
