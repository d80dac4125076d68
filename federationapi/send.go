package federationapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Transaction limits of the spec.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// roomsInParallel bounds how many rooms of one transaction are taken
	// in at once.
	roomsInParallel = 4
)

// pduResult is one PDU's entry in the /send response.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

type sendResponse struct {
	PDUs map[string]pduResult `json:"pdus"`
}

// originLocks lets one transaction per origin run at a time (as Synapse
// does), so that a retried transaction waits for the first and gets its
// stored response.
type originLocks struct {
	mu    sync.Mutex
	locks map[spec.ServerName]*originLock
}

type originLock struct {
	sync.Mutex
	users int
}

func (l *originLocks) lock(origin spec.ServerName) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[spec.ServerName]*originLock{}
	}
	ol := l.locks[origin]
	if ol == nil {
		ol = &originLock{}
		l.locks[origin] = ol
	}
	ol.users++
	l.mu.Unlock()
	ol.Lock()
	return func() {
		ol.Unlock()
		l.mu.Lock()
		if ol.users--; ol.users == 0 {
			delete(l.locks, origin)
		}
		l.mu.Unlock()
	}
}

// PUT /_matrix/federation/v1/send/{txnId}
func (f *FederationAPI) onSend(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	ctx := r.Context()
	txnID := httputil.Vars(r)["txnId"]
	var txn struct {
		PDUs []json.RawMessage       `json:"pdus"`
		EDUs []gomatrixserverlib.EDU `json:"edus"`
	}
	if err := httputil.UnmarshalRemoteObject(body, &txn); err != nil {
		return nil, err
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		return nil, mxerr.BadJSON("A transaction carries at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	unlock := f.txnLocks.lock(origin)
	defer unlock()
	if stored, err := storage.SelectTxnResponse(ctx, f.store.DB(), string(origin), txnID); err == nil {
		return json.RawMessage(stored), nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	// The work goes on if the sender hangs up: it will retry the same
	// transaction and get the stored response.
	work := context.WithoutCancel(ctx)
	res := sendResponse{PDUs: f.takePDUs(work, origin, txn.PDUs)}
	budget := newEDUBudget()
	var edus []fedapi.InboundEDU
	for _, edu := range txn.EDUs {
		if err := budget.checkBounds(edu); err != nil {
			f.log.Info("dropped an EDU past the bounds", slog.String("origin", string(origin)), slog.String("type", edu.Type), slog.String("error", err.Error()))
			continue
		}
		if content, ok := f.checkEDU(work, origin, edu); ok {
			edus = append(edus, fedapi.InboundEDU{V: 1, Origin: string(origin), Type: edu.Type, Content: content})
		}
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	// The EDUs are queued in the transaction that stores the response:
	// a crash before the commit gets the transaction retried, one after
	// it leaves them to the outbox relay, and their message IDs (origin,
	// transaction, index) make a second publish harmless.
	txnKey := sha256.Sum256([]byte(string(origin) + "\x00" + txnID))
	if err := f.store.WithTx(work, func(tx *sqlutil.Tx) error {
		for i, msg := range edus {
			payload, err := json.Marshal(&msg)
			if err != nil {
				return err
			}
			msgID := "edu:" + hex.EncodeToString(txnKey[:16]) + ":" + strconv.Itoa(i)
			if err := storage.Outbox.Insert(work, tx, fedapi.InSubject(msg.Type), msgID, payload); err != nil {
				return err
			}
		}
		return storage.InsertTxnResponse(work, tx, string(origin), txnID, out)
	}); err != nil {
		return nil, err
	}
	if len(edus) > 0 {
		if err := f.outbox.Flush(work, f.bus); err != nil {
			f.log.Warn("could not pass EDUs on: the relay retries", slog.String("origin", string(origin)), slog.String("error", err.Error()))
		}
	}
	return json.RawMessage(out), nil
}

// outboxRetry is how often the outbox is retried after a publish failed.
const outboxRetry = 2 * time.Second

// takePDUs groups a transaction's PDUs by room (keeping their order) and
// takes the rooms in, several at once.
func (f *FederationAPI) takePDUs(ctx context.Context, origin spec.ServerName, pdus []json.RawMessage) map[string]pduResult {
	results := map[string]pduResult{}
	var mu sync.Mutex
	set := func(id string, err error) {
		f.metrics.received(err)
		mu.Lock()
		defer mu.Unlock()
		if err != nil && !errors.Is(err, errRejected) {
			results[id] = pduResult{Error: err.Error()}
		} else {
			results[id] = pduResult{}
		}
	}
	byRoom := map[string][]json.RawMessage{}
	var rooms []string
	for _, raw := range pdus {
		roomID := gjson.GetBytes(raw, "room_id").Str
		if _, ok := byRoom[roomID]; !ok {
			rooms = append(rooms, roomID)
		}
		byRoom[roomID] = append(byRoom[roomID], raw)
	}
	sem := make(chan struct{}, roomsInParallel)
	var wg sync.WaitGroup
	for _, roomID := range rooms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for id, err := range f.takeRoomPDUs(ctx, origin, roomID, byRoom[roomID]) {
				set(id, err)
			}
		}()
	}
	wg.Wait()
	return results
}

// takeRoomPDUs verifies and takes in the PDUs of one room.
func (f *FederationAPI) takeRoomPDUs(ctx context.Context, origin spec.ServerName, roomID string, pdus []json.RawMessage) map[string]error {
	results := map[string]error{}
	// The room version, once known, names the events of later room
	// versions (whose JSON has no event_id) in the results.
	var verImpl gomatrixserverlib.IRoomVersion
	failAll := func(err error) map[string]error {
		for _, raw := range pdus {
			id := eventIDOf(raw)
			if verImpl != nil {
				id = eventIDFor(verImpl, raw)
			}
			if id != "" {
				results[id] = err
			}
		}
		return results
	}
	if _, err := spec.NewRoomID(roomID); err != nil {
		return failAll(errors.New("invalid room ID"))
	}
	info, err := f.rooms.QueryRoomInfo(ctx, roomID)
	if err == nil && !info.HasState {
		// Known only through a local user's invite or knock.
		return f.takeRescissions(ctx, info, pdus)
	}
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return failAll(fmt.Errorf("this server is not in room %s", roomID))
	} else if err != nil {
		return failAll(err)
	}
	if verImpl, err = gomatrixserverlib.GetRoomVersion(info.Version); err != nil {
		return failAll(err)
	}
	if ok, err := f.aclAllows(ctx, roomID, origin); err != nil {
		return failAll(err)
	} else if !ok {
		return failAll(errors.New("server is banned from the room by its server ACL"))
	}
	var verified []gomatrixserverlib.PDU
	for _, raw := range pdus {
		pdu, err := f.verifyEvent(ctx, verImpl, roomID, raw)
		if err != nil {
			if id := eventIDFor(verImpl, raw); id != "" {
				results[id] = err
			}
			f.log.Info("refused a PDU", slog.String("origin", string(origin)), slog.String("room_id", roomID), slog.String("error", err.Error()))
			continue
		}
		verified = append(verified, pdu)
	}
	if len(verified) == 0 {
		return results
	}
	unlock := f.roomLocks.lock(roomID)
	defer unlock()
	in, err := f.newIntake(origin, info)
	if err != nil {
		return failAll(err)
	}
	for id, err := range in.take(ctx, verified) {
		results[id] = err
	}
	return results
}

// eventIDFor computes the ID of an event that failed verification, so that
// the response can name it (empty when the JSON is beyond that).
func eventIDFor(verImpl gomatrixserverlib.IRoomVersion, raw json.RawMessage) string {
	if pdu, err := verImpl.NewEventFromTrustedJSON(raw, false); err == nil {
		return pdu.EventID()
	}
	return eventIDOf(raw)
}

// eventIDOf is the event_id field of room versions 1 and 2.
func eventIDOf(raw json.RawMessage) string { return gjson.GetBytes(raw, "event_id").Str }

// fromOrigin reports whether a user ID belongs to the origin server.
func fromOrigin(userID string, origin spec.ServerName) bool {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	return err == nil && domain == origin
}

// checkEDU returns the part of an EDU the origin may send (ok false: none).
func (f *FederationAPI) checkEDU(ctx context.Context, origin spec.ServerName, edu gomatrixserverlib.EDU) (json.RawMessage, bool) {
	switch edu.Type {
	case fedapi.EDUTyping:
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || !fromOrigin(c.UserID, origin) || !f.originInRoom(ctx, c.RoomID, origin) {
			return nil, false
		}
		return json.RawMessage(edu.Content), true
	case fedapi.EDUReceipt:
		var c map[string]map[string]map[string]json.RawMessage // room -> type -> user -> receipt
		if json.Unmarshal(edu.Content, &c) != nil {
			return nil, false
		}
		for roomID, types := range c {
			if !f.originInRoom(ctx, roomID, origin) {
				delete(c, roomID)
				continue
			}
			for typ, users := range types {
				for u := range users {
					if !fromOrigin(u, origin) {
						delete(users, u)
					}
				}
				if len(users) == 0 {
					delete(types, typ)
				}
			}
			if len(types) == 0 {
				delete(c, roomID)
			}
		}
		if len(c) == 0 {
			return nil, false
		}
		b, _ := json.Marshal(c)
		return b, true
	case fedapi.EDUPresence:
		var c struct {
			Push []json.RawMessage `json:"push"`
		}
		if json.Unmarshal(edu.Content, &c) != nil {
			return nil, false
		}
		keep := c.Push[:0]
		for _, p := range c.Push {
			if fromOrigin(gjson.GetBytes(p, "user_id").Str, origin) {
				keep = append(keep, p)
			}
		}
		if len(keep) == 0 {
			return nil, false
		}
		b, _ := json.Marshal(map[string]any{"push": keep})
		return b, true
	case fedapi.EDUDeviceList, fedapi.EDUSigningKey:
		return json.RawMessage(edu.Content), fromOrigin(gjson.GetBytes(edu.Content, "user_id").Str, origin)
	case fedapi.EDUDirectToDevice:
		return json.RawMessage(edu.Content), fromOrigin(gjson.GetBytes(edu.Content, "sender").Str, origin)
	}
	return nil, false
}

// originInRoom reports whether a server has a user in a room here and is
// not denied by its ACL (typing and receipts are room EDUs).
func (f *FederationAPI) originInRoom(ctx context.Context, roomID string, origin spec.ServerName) bool {
	servers, err := f.joinedServers(ctx, roomID)
	if err != nil || !slices.Contains(servers, string(origin)) {
		return false
	}
	ok, err := f.aclAllows(ctx, roomID, origin)
	return err == nil && ok
}
