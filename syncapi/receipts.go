package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// requireJoined checks (after catching up with the room streams) that the
// user is joined to the room.
func (s *SyncAPI) requireJoined(ctx context.Context, roomID, userID string) error {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	if err := s.catchUp(ctx, userID, roomID); err != nil {
		return err
	}
	_, js, err := storage.CurrentStateEvent(ctx, s.store.DB(), roomID, spec.MRoomMember, userID)
	if err != nil {
		return err
	}
	var content struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	if js != nil {
		_ = json.Unmarshal(js, &content)
	}
	if content.Content.Membership != spec.Join {
		return mxerr.Forbidden("You are not in the room")
	}
	return nil
}

// receiptWrite is a receipt to store; eventPos is the timeline position of
// its event when known.
type receiptWrite struct {
	r          *storage.Receipt
	eventPos   int64
	known      bool
	candidates []string
	// federate: a public receipt is queued for the room's other servers
	// in the transaction that stores it.
	federate bool
}

// storeReceipts records receipts at the next positions, in one transaction
// with extra (nil: none), and wakes the rooms. Like Synapse, it ignores a
// receipt for an event older than the one the user's receipt already
// points at: receipts never move backwards (a receipt of an event the read
// model does not know replaces the current one). It returns the receipts
// stored.
func (s *SyncAPI) storeReceipts(ctx context.Context, list []receiptWrite, extra func(tx *sqlutil.Tx) error) ([]*storage.Receipt, error) {
	s.receiptMu.Lock()
	pos := s.pos.receipt.Load()
	var stored []*storage.Receipt
	federated := false
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		pos, stored, federated = s.pos.receipt.Load(), nil, false
		for _, w := range list {
			if w.known {
				cur, found, err := storage.ReceiptEventPos(ctx, tx, w.r.RoomID, w.r.Type, w.r.UserID, w.r.ThreadID)
				if err != nil {
					return err
				}
				if found && cur >= w.eventPos {
					continue
				}
			}
			pos++
			w.r.Pos = pos
			if err := storage.UpsertReceipt(ctx, tx, w.r); err != nil {
				return err
			}
			stored = append(stored, w.r)
			if out, err := s.outputReceipt(ctx, tx, w.r); err != nil {
				return err
			} else if out {
				federated = true // flushed with the EDUs
			}
			if payload, ok := s.receiptEDU(w.r); ok && w.federate {
				if err := storage.Outbox.Insert(ctx, tx, fedapi.OutSubject(fedapi.EDUReceipt), "receipt:"+strconv.FormatInt(pos, 10), payload); err != nil {
					return err
				}
				federated = true
			}
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err == nil {
		s.pos.receipt.Store(pos)
	}
	s.receiptMu.Unlock()
	if err != nil {
		return nil, err
	}
	if federated {
		// After the commit; what a failed publish leaves the relay sends.
		if err := s.fedOutbox.Flush(context.WithoutCancel(ctx), s.bus); err != nil {
			s.log.Warn("receipt EDUs not published yet (the relay retries)", "error", err.Error())
		}
	}
	for _, r := range stored {
		if clearsNotifications(r.Type) && s.isLocal(r.UserID) {
			if err := s.markRead(ctx, r.UserID, r.RoomID, r.ThreadID); err != nil {
				s.log.Warn("unread counts not saved after a receipt (saved later)", "room_id", r.RoomID, "user_id", r.UserID, "error", err.Error())
			}
		}
	}
	for _, r := range stored {
		if r.Type == "m.read.private" {
			s.notifier.wakeUsers(r.UserID)
		} else {
			s.notifier.wakeRoom(r.RoomID)
		}
	}
	return stored, nil
}

// clearsNotifications reports whether a receipt type marks notifications
// read: both the public and the private read receipt do.
func clearsNotifications(receiptType string) bool {
	return receiptType == "m.read" || receiptType == "m.read.private"
}

// storeReceipt records a local user's receipt of an event at eventPos and
// sends a public one to the room's other servers.
func (s *SyncAPI) storeReceipt(ctx context.Context, r *storage.Receipt, eventPos int64) error {
	_, err := s.storeReceipts(ctx, []receiptWrite{{r: r, eventPos: eventPos, known: true, federate: true}}, nil)
	return err
}

// eventInRoom returns an event of the room, refusing events the server
// does not know in this room.
func (s *SyncAPI) eventInRoom(ctx context.Context, roomID, eventID string) (*storage.Event, error) {
	evs, err := storage.EventsByID(ctx, s.store.DB(), []string{eventID})
	if err != nil {
		return nil, err
	}
	e, ok := evs[eventID]
	if !ok || e.RoomID != roomID {
		return nil, mxerr.NotFound("Event %s not found in this room", eventID)
	}
	return e, nil
}

// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
func (s *SyncAPI) postReceipt(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	var body struct {
		ThreadID *string `json:"thread_id"`
	}
	if err := httputil.DecodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	roomID, eventID, typ := vars["roomId"], vars["eventId"], vars["receiptType"]
	switch typ {
	case "m.read", "m.read.private":
	case "m.fully_read":
		if body.ThreadID != nil {
			return nil, mxerr.InvalidParam("m.fully_read receipts cannot be threaded")
		}
	default:
		return nil, mxerr.InvalidParam("Unknown receipt type %s", typ)
	}
	threadID := ""
	if body.ThreadID != nil {
		if *body.ThreadID != "main" && !strings.HasPrefix(*body.ThreadID, "$") {
			return nil, mxerr.InvalidParam("thread_id must be \"main\" or an event ID")
		}
		threadID = *body.ThreadID
	}
	if err := s.requireJoined(ctx, roomID, dev.UserID); err != nil {
		return nil, err
	}
	ev, err := s.eventInRoom(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	if typ == "m.fully_read" {
		return struct{}{}, s.setFullyRead(ctx, dev.UserID, ev)
	}
	s.presence.active(dev.UserID)
	return struct{}{}, s.storeReceipt(ctx, &storage.Receipt{RoomID: roomID, Type: typ, UserID: dev.UserID, ThreadID: threadID,
		EventID: eventID, TS: time.Now().UnixMilli()}, ev.Pos)
}

// setFullyRead moves the read marker (room account data m.fully_read)
// forwards; a marker for an older event is ignored, as in Synapse.
func (s *SyncAPI) setFullyRead(ctx context.Context, userID string, ev *storage.Event) error {
	s.fullyReadMu.Lock()
	defer s.fullyReadMu.Unlock()
	cur, err := s.users.QueryAccountData(ctx, userID, ev.RoomID, "m.fully_read")
	if err != nil && !errors.Is(err, userapi.ErrNotFound) {
		return err
	}
	if curID := gjson.GetBytes(cur, "event_id").Str; curID != "" {
		evs, err := storage.EventsByID(ctx, s.store.DB(), []string{curID})
		if err != nil {
			return err
		}
		if e, ok := evs[curID]; ok && e.RoomID == ev.RoomID && e.Pos >= ev.Pos {
			return nil
		}
	}
	content, _ := json.Marshal(map[string]string{"event_id": ev.EventID})
	return s.users.PutAccountData(ctx, userID, ev.RoomID, "m.fully_read", content)
}

// POST /_matrix/client/v3/rooms/{roomId}/read_markers
func (s *SyncAPI) postReadMarkers(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	roomID := httputil.Vars(r)["roomId"]
	var body struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if err := s.requireJoined(ctx, roomID, dev.UserID); err != nil {
		return nil, err
	}
	events := map[string]*storage.Event{}
	for _, id := range []string{body.FullyRead, body.Read, body.ReadPrivate} {
		if id != "" {
			ev, err := s.eventInRoom(ctx, roomID, id)
			if err != nil {
				return nil, err
			}
			events[id] = ev
		}
	}
	if body.FullyRead != "" {
		if err := s.setFullyRead(ctx, dev.UserID, events[body.FullyRead]); err != nil {
			return nil, err
		}
	}
	now := time.Now().UnixMilli()
	for _, rc := range []struct{ typ, id string }{{"m.read", body.Read}, {"m.read.private", body.ReadPrivate}} {
		if rc.id == "" {
			continue
		}
		s.presence.active(dev.UserID)
		if err := s.storeReceipt(ctx, &storage.Receipt{RoomID: roomID, Type: rc.typ, UserID: dev.UserID, EventID: rc.id, TS: now},
			events[rc.id].Pos); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}
