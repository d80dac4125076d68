package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Backoff of a destination that fails: it doubles from minBackoff to
// maxBackoff (with some jitter), and a request from the destination ends
// it at once.
const (
	minBackoff = 2 * time.Second
	maxBackoff = time.Hour
	// staleTyping: typing notifications older than this are not worth
	// sending any more.
	staleTyping = 30 * time.Second
)

// Consumer names, which also key their positions in fed_consumers.
const (
	roomOutputConsumer = "fedapi-roomoutput"
	eduOutConsumer     = "fedapi-federationout"
)

// queues sends this server's events and EDUs to other servers: one queue
// per destination, persisted in fed_queue, one transaction in flight per
// destination.
type queues struct {
	f  *FederationAPI
	mu sync.Mutex
	// workers holds the destinations being worked on, with the channel
	// that wakes a worker waiting out a backoff.
	workers map[spec.ServerName]chan struct{}
	// checked remembers when a destination without a worker was last
	// checked for a stored queue after it contacted this server.
	checked map[spec.ServerName]time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newQueues(f *FederationAPI) *queues {
	ctx, cancel := context.WithCancel(context.Background())
	return &queues{f: f, workers: map[spec.ServerName]chan struct{}{}, checked: map[spec.ServerName]time.Time{}, ctx: ctx, cancel: cancel}
}

// start begins working on every destination with something queued.
func (q *queues) start(ctx context.Context) error {
	dests, err := storage.SelectQueuedDestinations(ctx, q.f.store.DB())
	if err != nil {
		return err
	}
	for _, d := range dests {
		q.kick(spec.ServerName(d))
	}
	return nil
}

// stop ends the workers (what they hold stays queued).
func (q *queues) stop() {
	q.cancel()
	q.wg.Wait()
}

// kick makes sure a worker sends what is queued for dest.
func (q *queues) kick(dest spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctx.Err() != nil {
		return
	}
	if _, ok := q.workers[dest]; ok {
		return
	}
	wake := make(chan struct{}, 1)
	q.workers[dest] = wake
	q.wg.Add(1)
	go q.work(dest, wake)
}

// contacted notes that dest made a request to this server: it is up, so a
// worker waiting out a backoff for it tries again now.
func (q *queues) contacted(dest spec.ServerName) {
	q.mu.Lock()
	wake, ok := q.workers[dest]
	recent := time.Since(q.checked[dest]) < 10*time.Second
	if !ok && !recent {
		if len(q.checked) > 10000 {
			clear(q.checked)
		}
		q.checked[dest] = time.Now()
	}
	q.mu.Unlock()
	if ok {
		select {
		case wake <- struct{}{}:
		default:
		}
		return
	}
	if recent {
		return
	}
	// Nothing in memory: a backoff may be stored from before a restart.
	go func() {
		ctx, cancel := context.WithTimeout(q.ctx, 10*time.Second)
		defer cancel()
		if n, err := storage.CountQueued(ctx, q.f.store.DB(), string(dest)); err == nil && n > 0 {
			q.kick(dest)
		}
	}()
}

// work sends dest's queue until it is empty.
func (q *queues) work(dest spec.ServerName, wake chan struct{}) {
	defer q.wg.Done()
	log := q.f.log.With("destination", string(dest))
	ctx := q.ctx
	failures := 0
	if st, err := storage.SelectDestination(ctx, q.f.store.DB(), string(dest)); err == nil {
		failures = st.Failures
		if wait := time.Until(time.UnixMilli(st.RetryAt)); wait > 0 && !q.sleep(wait, wake) {
			q.done(dest)
			return
		}
	}
	var txnID string
	var txnFirst int64
	for {
		items, err := storage.SelectQueue(ctx, q.f.store.DB(), string(dest), maxTxnPDUs, maxTxnEDUs)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("reading the federation queue failed", slog.String("error", err.Error()))
				if q.sleep(minBackoff, wake) {
					continue
				}
			}
			q.done(dest)
			return
		}
		if len(items) == 0 {
			if q.done(dest) {
				return
			}
			continue // something was queued meanwhile
		}
		txn := gomatrixserverlib.Transaction{Origin: q.f.cfg.ServerName, Destination: dest, OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs: []json.RawMessage{}}
		var seqs []int64
		now := time.Now()
		for _, it := range items {
			seqs = append(seqs, it.Seq)
			if it.EDUType == "" {
				txn.PDUs = append(txn.PDUs, it.Payload)
				continue
			}
			if it.EDUType == fedapi.EDUTyping && now.Sub(time.UnixMilli(it.QueuedTS)) > staleTyping {
				continue
			}
			txn.EDUs = append(txn.EDUs, gomatrixserverlib.EDU{Type: it.EDUType, Content: spec.RawJSON(it.Payload)})
		}
		// A retry of the same items is the same transaction, so that the
		// destination can tell it was received already.
		if txnFirst != items[0].Seq {
			txnFirst = items[0].Seq
			txnID = strconv.FormatInt(time.Now().UnixMilli(), 36) + "." + strconv.FormatInt(items[0].Seq, 36)
		}
		txn.TransactionID = gomatrixserverlib.TransactionID(txnID)
		var sendErr error
		if len(txn.PDUs) > 0 || len(txn.EDUs) > 0 {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			start := time.Now()
			_, sendErr = q.f.client.SendTransaction(sctx, txn)
			cancel()
			if ctx.Err() == nil {
				q.f.metrics.sendTook(failures, time.Since(start), sendErr)
			}
		}
		if sendErr == nil {
			if err := storage.DeleteQueued(ctx, q.f.store, string(dest), seqs); err != nil && ctx.Err() == nil {
				log.Warn("could not clear sent items", slog.String("error", err.Error()))
			}
			if failures > 0 {
				failures = 0
				_ = storage.UpsertDestination(ctx, q.f.store.DB(), string(dest), 0, 0)
			}
			q.f.metrics.sent(len(txn.PDUs), len(txn.EDUs))
			continue
		}
		if ctx.Err() != nil {
			q.done(dest)
			return
		}
		if errors.Is(sendErr, fedapi.ErrDenied) {
			// Never to be sent: the domain lists forbid it.
			_ = storage.DeleteQueued(ctx, q.f.store, string(dest), seqs)
			continue
		}
		failures++
		wait := backoff(failures)
		log.Info("sending to a server failed; retrying later", slog.Int("failures", failures), slog.Duration("retry_in", wait),
			slog.String("error", sendErr.Error()))
		q.f.metrics.failed()
		_ = storage.UpsertDestination(ctx, q.f.store.DB(), string(dest), failures, time.Now().Add(wait).UnixMilli())
		if !q.sleep(wait, wake) {
			q.done(dest)
			return
		}
	}
}

// sleep waits for d or a wake-up; false when the queues stop.
func (q *queues) sleep(d time.Duration, wake chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-q.ctx.Done():
		return false
	}
}

// done ends dest's worker if nothing waits for it; false when new work
// arrived meanwhile (the worker goes on).
func (q *queues) done(dest spec.ServerName) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := storage.CountQueued(ctx, q.f.store.DB(), string(dest))
		cancel()
		if err == nil && n > 0 {
			return false
		}
	}
	delete(q.workers, dest)
	return true
}

// backoff is the wait after n failures in a row.
func backoff(n int) time.Duration {
	d := minBackoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// onRoomOutput queues the events this server sends for the servers in
// their rooms (and the leaving server of a leave or ban).
func (f *FederationAPI) onRoomOutput(ctx context.Context, m *bus.Msg) error {
	var msg rsapi.OutputMessage
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable room output: %w", err))
	}
	ev := msg.NewEvent
	if ev == nil {
		return f.setConsumed(ctx, roomOutputConsumer, m.Seq)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ev.RoomVersion))
	if err != nil {
		return bus.Permanent(err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSON(ev.Event, false)
	if err != nil {
		return bus.Permanent(fmt.Errorf("undecodable event: %w", err))
	}
	if pdu.Type() == spec.MRoomMember {
		f.forgetJoinedServers(ev.RoomID)
	}
	var dests []string
	if ev.SendAsServer == string(f.cfg.ServerName) {
		servers, err := f.joinedServers(ctx, ev.RoomID)
		if err != nil {
			return err
		}
		dests = append(dests, servers...)
		if pdu.Type() == spec.MRoomMember && pdu.StateKey() != nil {
			// The server of a user who leaves or is kicked, banned or
			// invited learns of it too.
			if _, domain, err := gomatrixserverlib.SplitID('@', *pdu.StateKey()); err == nil {
				dests = append(dests, string(domain))
			}
		}
	}
	dests = f.destinations(dests)
	// The sender's server has the event already (a join, leave or knock
	// this server took in for it).
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err == nil {
		dests = slices.DeleteFunc(dests, func(d string) bool { return d == string(domain) })
	}
	// Device lists: a local user's join tells the room's new servers
	// about their devices (after the join, in queue order).
	var devDests []string
	var devEDUs [][]byte
	if pdu.Type() == spec.MRoomMember && f.devUsers != nil {
		if devDests, devEDUs, err = f.memberDeviceLists(ctx, ev.RoomID, pdu); err != nil {
			return err
		}
	}
	if len(dests) == 0 && len(devDests) == 0 {
		// Nothing to queue (a room of local users): no transaction. The
		// position is only there to skip what was applied when a message
		// comes again after a crash, and handling this one again changes
		// nothing either; the next message that queues something stores
		// a position past it.
		return nil
	}
	err = f.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if len(dests) > 0 {
			if err := storage.EnqueuePDU(ctx, tx, dests, ev.Event, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		if len(devDests) > 0 {
			for _, c := range devEDUs {
				if err := storage.EnqueueEDU(ctx, tx, devDests, fedapi.EDUDeviceList, c, time.Now().UnixMilli()); err != nil {
					return err
				}
			}
		}
		return storage.SetConsumerPosition(ctx, tx, roomOutputConsumer, m.Seq)
	})
	if err != nil {
		return err
	}
	for _, d := range append(dests, devDests...) {
		f.queues.kick(spec.ServerName(d))
	}
	return nil
}

// onFederationOut queues the EDUs this server's components send.
func (f *FederationAPI) onFederationOut(ctx context.Context, m *bus.Msg) error {
	var edu fedapi.OutboundEDU
	if err := json.Unmarshal(m.Data, &edu); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable EDU: %w", err))
	}
	dests, err := f.eduDestinations(ctx, &edu)
	if err != nil {
		return err
	}
	err = f.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if len(dests) > 0 {
			if err := storage.EnqueueEDU(ctx, tx, dests, edu.Type, edu.Content, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return storage.SetConsumerPosition(ctx, tx, eduOutConsumer, m.Seq)
	})
	if err != nil {
		return err
	}
	for _, d := range dests {
		f.queues.kick(spec.ServerName(d))
	}
	return nil
}

// eduDestinations lists the servers an EDU goes to: those in its room,
// those sharing a room with its user, and its destinations.
func (f *FederationAPI) eduDestinations(ctx context.Context, edu *fedapi.OutboundEDU) ([]string, error) {
	dests := append([]string(nil), edu.Destinations...)
	if edu.RoomID != "" {
		servers, err := f.joinedServers(ctx, edu.RoomID)
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return nil, err
		}
		dests = append(dests, servers...)
	}
	if edu.UserID != "" {
		rooms, err := f.rooms.QueryRoomsForUser(ctx, edu.UserID, spec.Join)
		if err != nil {
			return nil, err
		}
		for _, r := range rooms {
			servers, err := f.joinedServers(ctx, r.RoomID)
			if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
				return nil, err
			}
			dests = append(dests, servers...)
		}
	}
	return f.destinations(dests), nil
}

// destinations dedupes servers and drops this one and those the domain
// lists forbid.
func (f *FederationAPI) destinations(servers []string) []string {
	seen := map[string]bool{string(f.cfg.ServerName): true}
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if !seen[s] && f.policy.allowed(spec.ServerName(s)) {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (f *FederationAPI) setConsumed(ctx context.Context, name string, seq uint64) error {
	return f.store.WithTx(ctx, func(tx *sqlutil.Tx) error { return storage.SetConsumerPosition(ctx, tx, name, seq) })
}

// joinedServersCache remembers the servers in each room until a member
// event of the room comes out of the roomserver.
type joinedServersCache struct {
	mu    sync.Mutex
	rooms map[string][]string
}

// joinedServers lists the servers with a user joined to a room.
func (f *FederationAPI) joinedServers(ctx context.Context, roomID string) ([]string, error) {
	c := &f.joined
	c.mu.Lock()
	s, ok := c.rooms[roomID]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := f.rooms.QueryJoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.rooms == nil || len(c.rooms) > 10000 {
		c.rooms = map[string][]string{}
	}
	c.rooms[roomID] = s
	c.mu.Unlock()
	return s, nil
}

func (f *FederationAPI) forgetJoinedServers(roomID string) {
	f.joined.mu.Lock()
	delete(f.joined.rooms, roomID)
	f.joined.mu.Unlock()
}
