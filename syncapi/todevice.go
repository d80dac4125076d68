package syncapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/periodic"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Send-to-device messaging: the sync API keeps each local device's inbox
// (sync_to_device_inbox), fills it from /sendToDevice and from the
// m.direct_to_device EDUs of other servers, serves it in /sync and deletes
// what a later sync acknowledges. The EDUs for other servers go out
// through an outbox written with the request, published on FederationOut
// before the request returns.

const (
	// maxToDeviceContent bounds one message's content (Synapse's limit:
	// what fits in an EDU of its soft size).
	maxToDeviceContent = 64 << 10
	// toDevicePerSync is how many messages a sync delivers at most (the
	// spec's advice, Synapse's limit); the rest come in the next one.
	toDevicePerSync = 100
	// maxToDeviceEDU is the size past which the messages for one server
	// are split over several EDUs (a request within the default body size
	// makes one; NATS carries at most 8 MiB).
	maxToDeviceEDU = 1 << 20
	// toDeviceTxnLifetime is how long a transaction ID is remembered;
	// toDeviceSeenLifetime how long an EDU of another server is.
	toDeviceTxnLifetime  = 24 * time.Hour
	toDeviceSeenLifetime = 7 * 24 * time.Hour
	// toDeviceOutboxBatch is how many EDUs a flush reads at a time.
	toDeviceOutboxBatch = 100
)

// inboxKey names a local device (its inbox).
type inboxKey struct{ user, device string }

// inboxRange is the span of positions a device's inbox may hold.
type inboxRange struct{ lo, hi int64 }

// toDeviceInboxes remembers which devices have messages waiting, and at
// which positions, so that the sync of a device with an empty inbox (most
// syncs) runs no statement for it, and one whose messages were not yet
// acknowledged runs no DELETE.
type toDeviceInboxes struct {
	mu sync.Mutex
	m  map[inboxKey]inboxRange
}

func (b *toDeviceInboxes) get(k inboxKey) (inboxRange, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.m[k]
	return r, ok
}

// added records committed messages at pos.
func (b *toDeviceInboxes) added(keys []inboxKey, pos int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[inboxKey]inboxRange{}
	}
	for _, k := range keys {
		r, ok := b.m[k]
		if !ok {
			r.lo = pos
		}
		r.hi = max(r.hi, pos)
		b.m[k] = r
	}
}

// acked records that a device's messages up to pos are deleted.
func (b *toDeviceInboxes) acked(k inboxKey, pos int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.m[k]
	switch {
	case !ok:
	case r.hi <= pos:
		delete(b.m, k)
	default:
		r.lo = max(r.lo, pos+1)
		b.m[k] = r
	}
}

func (b *toDeviceInboxes) forget(userID string, devices []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range devices {
		delete(b.m, inboxKey{userID, d})
	}
}

// loadToDevice reads the stream position and the devices with messages
// waiting.
func (s *SyncAPI) loadToDevice(ctx context.Context) error {
	pos, err := storage.ToDevicePos(ctx, s.store.DB())
	if err != nil {
		return err
	}
	s.pos.toDevice.Store(pos)
	inboxes, err := storage.ToDeviceInboxes(ctx, s.store.DB())
	if err != nil {
		return err
	}
	s.inboxes.mu.Lock()
	defer s.inboxes.mu.Unlock()
	s.inboxes.m = make(map[inboxKey]inboxRange, len(inboxes))
	for _, b := range inboxes {
		s.inboxes.m[inboxKey{b.UserID, b.DeviceID}] = inboxRange{lo: b.Min, hi: b.Max}
	}
	return nil
}

// startToDevice publishes what a crash left in the outbox, and then, every
// so often, forgets old transactions and retries an outbox a failed
// publish left behind.
func (s *SyncAPI) startToDevice(ctx context.Context) func() {
	if err := s.flushToDeviceOutbox(ctx); err != nil {
		s.log.Warn("to-device EDUs not published yet (retried)", "error", err.Error())
	}
	stopPrune := periodic.Every(time.Hour, func(context.Context) {
		now := time.Now()
		if err := storage.PruneToDevice(context.Background(), s.store.DB(),
			now.Add(-toDeviceTxnLifetime).UnixMilli(), now.Add(-toDeviceSeenLifetime).UnixMilli()); err != nil {
			s.log.Warn("old to-device transactions not pruned", "error", err.Error())
		}
	})
	stopRetry := periodic.Every(10*time.Second, func(context.Context) {
		if !s.outboxDirty.Load() {
			return
		}
		if err := s.flushToDeviceOutbox(context.Background()); err != nil {
			s.log.Warn("to-device EDUs not published yet (retried)", "error", err.Error())
		}
	})
	return func() { stopRetry(); stopPrune() }
}

// writeToDevice is the single writer of the to-device stream: it stores
// msgs and outbound EDUs at the next position, in one transaction with
// whatever guard and always write. guard runs first and may refuse the
// write (a transaction or EDU seen before): then only always is written.
// It returns whether msgs were written.
func (s *SyncAPI) writeToDevice(ctx context.Context, msgs []storage.ToDevice, edus []storage.ToDeviceOutbound,
	guard func(tx *sqlutil.Tx, pos int64) (bool, error), always func(tx *sqlutil.Tx) error) (bool, error) {
	s.toDeviceMu.Lock()
	defer s.toDeviceMu.Unlock()
	pos := s.pos.toDevice.Load()
	if len(msgs) > 0 || len(edus) > 0 {
		pos++
	}
	var written, out bool
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		written, out = false, false
		if guard != nil {
			if ok, err := guard(tx, pos); err != nil || !ok {
				if err == nil && always != nil {
					err = always(tx)
				}
				return err
			}
		}
		if len(msgs) > 0 || len(edus) > 0 {
			for i := range msgs {
				msgs[i].Pos = pos
			}
			for i := range edus {
				edus[i].Pos = pos
			}
			if err := storage.InsertToDevice(ctx, tx, msgs); err != nil {
				return err
			}
			if err := storage.InsertToDeviceOutbox(ctx, tx, edus); err != nil {
				return err
			}
			var err error
			if out, err = s.outputToDevice(ctx, tx, msgs); err != nil {
				return err
			}
			if err := storage.SetToDevicePos(ctx, tx, pos); err != nil {
				return err
			}
		}
		written = true
		if always != nil {
			return always(tx)
		}
		return nil
	})
	if err != nil || !written || (len(msgs) == 0 && len(edus) == 0) {
		return written, err
	}
	keys := make([]inboxKey, len(msgs))
	users := make([]string, 0, 1)
	for i, m := range msgs {
		keys[i] = inboxKey{m.UserID, m.DeviceID}
		if len(users) == 0 || users[len(users)-1] != m.UserID {
			users = append(users, m.UserID)
		}
	}
	s.inboxes.added(keys, pos)
	s.pos.toDevice.Store(pos)
	s.notifier.wakeUsers(users...)
	if out {
		s.flushOutbox(ctx)
	}
	return true, nil
}

// localToDevice turns the messages for local users into inbox rows: "*"
// means every device of the user (and wins over device IDs beside it, as
// in Synapse); unknown users and devices, and contents that are not
// objects, are skipped. Rows of one user are adjacent.
func (s *SyncAPI) localToDevice(ctx context.Context, sender, typ string, byUser map[string]map[string]json.RawMessage) ([]storage.ToDevice, error) {
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		if len(byUser[u]) > 0 {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	var out []storage.ToDevice
	if s.users == nil {
		return nil, nil // no user API (tests of other parts): no devices
	}
	devicesOf, err := s.users.QueryDevicesOfUsers(ctx, users)
	if err != nil {
		return nil, fmt.Errorf("devices of the recipients: %w", err)
	}
	for _, userID := range users {
		devices := devicesOf[userID]
		byDevice := byUser[userID]
		add := func(deviceID string, content json.RawMessage) {
			if isObject(content) {
				out = append(out, storage.ToDevice{UserID: userID, DeviceID: deviceID, Sender: sender, Type: typ, Content: content})
			}
		}
		if all, ok := byDevice["*"]; ok {
			for _, d := range devices {
				add(d.DeviceID, all)
			}
			continue
		}
		for _, d := range devices {
			if content, ok := byDevice[d.DeviceID]; ok {
				add(d.DeviceID, content)
			}
		}
	}
	return out, nil
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
func (s *SyncAPI) putSendToDevice(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	txn := &storage.ToDeviceTxn{UserID: dev.UserID, DeviceID: dev.DeviceID, EventType: vars["eventType"], TxnID: vars["txnId"]}
	var body struct {
		Messages json.RawMessage `json:"messages"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if len(body.Messages) == 0 || string(body.Messages) == "null" {
		return nil, mxerr.MissingParam("Missing messages")
	}
	var messages map[string]map[string]json.RawMessage
	if !isObject(body.Messages) || json.Unmarshal(body.Messages, &messages) != nil {
		return nil, mxerr.BadJSON("messages must map user IDs to objects of device IDs to message contents")
	}
	local := map[string]map[string]json.RawMessage{}
	remote := map[string]map[string]map[string]json.RawMessage{} // server -> user -> device -> content
	for userID, byDevice := range messages {
		for deviceID, content := range byDevice {
			if !isObject(content) {
				return nil, mxerr.BadJSON("The message for %s's device %s is not an object", userID, deviceID)
			}
			if len(content) > maxToDeviceContent {
				return nil, mxerr.TooLarge("The message for %s's device %s is larger than %d bytes", userID, deviceID, maxToDeviceContent)
			}
		}
		_, domain, err := gomatrixserverlib.SplitID('@', userID)
		if err != nil || len(byDevice) == 0 {
			continue // as Synapse: invalid user IDs are ignored
		}
		if string(domain) == s.cfg.ServerName {
			local[userID] = byDevice
			continue
		}
		if remote[string(domain)] == nil {
			remote[string(domain)] = map[string]map[string]json.RawMessage{}
		}
		remote[string(domain)][userID] = byDevice
	}
	// The work goes on if the client hangs up: a retry finds it done.
	work := context.WithoutCancel(ctx)
	seen, err := storage.ToDeviceTxnSeen(ctx, s.store.DB(), txn)
	if err != nil {
		return nil, err
	}
	if seen {
		// A retry: what the first attempt stored stands; its EDUs may still
		// wait for a publish that failed.
		return struct{}{}, s.flushToDeviceOutbox(work)
	}
	msgs, err := s.localToDevice(ctx, dev.UserID, txn.EventType, local)
	if err != nil {
		return nil, err
	}
	edus, err := s.outboundToDevice(dev, txn, remote)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	if _, err := s.writeToDevice(work, msgs, edus, func(tx *sqlutil.Tx, pos int64) (bool, error) {
		return storage.InsertToDeviceTxn(work, tx, txn, pos, now)
	}, nil); err != nil {
		return nil, err
	}
	if len(remote) > 0 {
		if err := s.flushToDeviceOutbox(work); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

// directToDevice is the content of an m.direct_to_device EDU.
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// outboundToDevice builds the EDUs of a request for other servers: one per
// server, unless the messages for it pass maxToDeviceEDU. Their message IDs
// derive from the transaction, so that a publish repeated after a crash is
// dropped by the bus and by the other server.
func (s *SyncAPI) outboundToDevice(dev *httputil.Device, txn *storage.ToDeviceTxn, remote map[string]map[string]map[string]json.RawMessage) ([]storage.ToDeviceOutbound, error) {
	if len(remote) == 0 {
		return nil, nil
	}
	if s.bus == nil {
		return nil, nil // no bus, no federation
	}
	var out []storage.ToDeviceOutbound
	for dest, byUser := range remote {
		chunks := splitToDevice(byUser)
		for i, chunk := range chunks {
			sum := sha256.Sum256([]byte(dev.UserID + "\x00" + dev.DeviceID + "\x00" + txn.EventType + "\x00" + txn.TxnID + "\x00" + dest + "\x00" + strconv.Itoa(i)))
			id := base64.RawURLEncoding.EncodeToString(sum[:18]) // 24 characters; the spec allows 32
			content, err := json.Marshal(directToDevice{Sender: dev.UserID, Type: txn.EventType, MessageID: id, Messages: chunk})
			if err != nil {
				return nil, err
			}
			payload, err := json.Marshal(fedapi.OutboundEDU{V: 1, Type: fedapi.EDUDirectToDevice, Content: content, Destinations: []string{dest}})
			if err != nil {
				return nil, err
			}
			out = append(out, storage.ToDeviceOutbound{Destination: dest, MsgID: "to-device:" + dest + ":" + id, Payload: payload})
		}
	}
	return out, nil
}

// splitToDevice splits the messages for one server into groups of at most
// maxToDeviceEDU bytes of content (one group when they fit).
func splitToDevice(byUser map[string]map[string]json.RawMessage) []map[string]map[string]json.RawMessage {
	total, count := 0, 0
	for _, byDevice := range byUser {
		for d, c := range byDevice {
			total += len(d) + len(c)
		}
		count += len(byDevice)
	}
	if total <= maxToDeviceEDU && count <= fedapi.MaxToDeviceMessagesPerEDU {
		return []map[string]map[string]json.RawMessage{byUser}
	}
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	sort.Strings(users)
	var out []map[string]map[string]json.RawMessage
	cur, size, n := map[string]map[string]json.RawMessage{}, 0, 0
	for _, u := range users {
		for d, c := range byUser[u] {
			if n > 0 && (size+len(d)+len(c) > maxToDeviceEDU || n == fedapi.MaxToDeviceMessagesPerEDU) {
				out = append(out, cur)
				cur, size, n = map[string]map[string]json.RawMessage{}, 0, 0
			}
			if cur[u] == nil {
				cur[u] = map[string]json.RawMessage{}
			}
			cur[u][d] = c
			size += len(d) + len(c)
			n++
		}
	}
	return append(out, cur)
}

// flushToDeviceOutbox publishes the queued EDUs on FederationOut in order
// and deletes them. A failure leaves the rest for the next flush (the next
// request, the retry timer, or the next start).
func (s *SyncAPI) flushToDeviceOutbox(ctx context.Context) error {
	if s.bus == nil {
		return nil
	}
	s.outboxDirty.Store(true)
	if err := s.toDeviceOutbox.Flush(ctx, s.bus); err != nil {
		return err
	}
	s.outboxDirty.Store(false)
	return nil
}

// newToDeviceOutbox is the flusher of sync_to_device_outbox.
func newToDeviceOutbox(st *storage.Storage) *bus.Outbox[storage.ToDeviceOutbound] {
	subject := fedapi.OutSubject(fedapi.EDUDirectToDevice)
	return &bus.Outbox[storage.ToDeviceOutbound]{
		Batch: toDeviceOutboxBatch,
		Load: func(ctx context.Context, n int) ([]storage.ToDeviceOutbound, error) {
			return storage.SelectToDeviceOutbox(ctx, st.DB(), n)
		},
		Message: func(e storage.ToDeviceOutbound) (string, string, []byte) { return subject, e.MsgID, e.Payload },
		Delete: func(ctx context.Context, done []storage.ToDeviceOutbound) error {
			return storage.DeleteToDeviceOutbox(ctx, st.DB(), &done[len(done)-1])
		},
	}
}

// onToDeviceEDU delivers another server's to-device messages to local
// devices, once per origin and message ID. The federation API has checked
// that the sender belongs to the origin; it is checked again here.
func (s *SyncAPI) onToDeviceEDU(ctx context.Context, edu *fedapi.InboundEDU, seq uint64) error {
	var c directToDevice
	if err := json.Unmarshal(edu.Content, &c); err != nil || c.Type == "" || c.MessageID == "" || !fromOrigin(c.Sender, edu.Origin) {
		s.log.Debug("malformed to-device EDU ignored", "origin", edu.Origin)
		return s.setConsumed(ctx, federationInConsumer, seq, &s.applied.federationIn)
	}
	local := map[string]map[string]json.RawMessage{}
	for userID, byDevice := range c.Messages {
		if s.isLocal(userID) {
			local[userID] = byDevice
		}
	}
	msgs, err := s.localToDevice(ctx, c.Sender, c.Type, local)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	_, err = s.writeToDevice(ctx, msgs, nil, func(tx *sqlutil.Tx, _ int64) (bool, error) {
		return storage.InsertToDeviceFederationSeen(ctx, tx, edu.Origin, c.MessageID, now)
	}, func(tx *sqlutil.Tx) error {
		return storage.SetConsumerPosition(ctx, tx, federationInConsumer, seq)
	})
	if err != nil {
		return err
	}
	s.applied.federationIn.Store(seq)
	return nil
}

// onDevicesUpdate empties the inboxes of deleted devices.
func (s *SyncAPI) onDevicesUpdate(ctx context.Context, m *bus.Msg) error {
	var u userapi.DeviceUpdate
	if err := json.Unmarshal(m.Data, &u); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable device update: %w", err))
	}
	if !u.Deleted || len(u.DeviceIDs) == 0 {
		return s.setConsumed(ctx, userOutputConsumer, m.Seq, &s.applied.userOutput)
	}
	// Under the writer's lock, so that no message lands between the
	// DELETE and forgetting the inboxes.
	s.toDeviceMu.Lock()
	err := s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if err := storage.DeleteToDeviceOfDevices(ctx, tx, u.UserID, u.DeviceIDs); err != nil {
			return err
		}
		return storage.SetConsumerPosition(ctx, tx, userOutputConsumer, m.Seq)
	})
	if err == nil {
		s.inboxes.forget(u.UserID, u.DeviceIDs)
	}
	s.toDeviceMu.Unlock()
	if err != nil {
		return err
	}
	s.applied.userOutput.Store(m.Seq)
	return nil
}

// syncToDevice returns the messages a sync delivers to its device, and the
// to-device position of next_batch: now, or the last message delivered
// when more wait. Messages up to since's position were acknowledged by
// the client and are deleted first.
func (s *SyncAPI) syncToDevice(ctx context.Context, dev *httputil.Device, since *StreamPos, now int64) ([]json.RawMessage, int64, error) {
	k := inboxKey{dev.UserID, dev.DeviceID}
	r, ok := s.inboxes.get(k)
	if !ok {
		return nil, now, nil
	}
	var from int64
	if since != nil {
		from = since.ToDevice
		if from >= r.lo {
			if err := storage.DeleteToDeviceUpTo(ctx, s.store.DB(), dev.UserID, dev.DeviceID, from); err != nil {
				return nil, 0, err
			}
			s.inboxes.acked(k, from)
		}
	}
	if r.hi <= from || from >= now {
		return nil, now, nil
	}
	msgs, err := storage.ToDeviceSince(ctx, s.store.DB(), dev.UserID, dev.DeviceID, from, now, toDevicePerSync)
	if err != nil {
		return nil, 0, err
	}
	next := now
	if n := len(msgs); n == toDevicePerSync && msgs[n-1].Pos < min(r.hi, now) {
		next = msgs[n-1].Pos
	}
	events := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		events[i], _ = json.Marshal(map[string]any{"sender": m.Sender, "type": m.Type, "content": m.Content})
	}
	return events, next, nil
}
