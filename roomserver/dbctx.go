package roomserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// dbctx is where a piece of work reads and writes: the shared read pool, or
// a write transaction. Inside a transaction, what the work learns (new
// snapshots, events, numeric IDs) is kept aside and reaches the shared
// caches only after commit: a rolled-back row's numeric ID may be reused.
type dbctx struct {
	r  *Roomserver
	q  sqlutil.Querier
	tx *sqlutil.Tx

	snapshots map[int64]state.Snapshot
	blockNIDs map[string]int64 // block hash -> numeric ID
	events    map[int64]*event
	ids       map[string]int64 // event ID -> numeric ID of events stored in the transaction
	typeNIDs  map[string]int64
	keyNIDs   map[string]int64
	heads     map[string]*roomHead
	// uncache lists events whose cached form is stale after commit.
	uncache []int64
	// outputs counts the RoomOutput messages queued.
	outputs int
}

func (r *Roomserver) reader() *dbctx { return &dbctx{r: r, q: r.store.DB()} }

func (r *Roomserver) inTx(tx *sqlutil.Tx) *dbctx {
	return &dbctx{r: r, q: tx, tx: tx, snapshots: map[int64]state.Snapshot{}, blockNIDs: map[string]int64{}, events: map[int64]*event{},
		ids: map[string]int64{}, typeNIDs: map[string]int64{}, keyNIDs: map[string]int64{}, heads: map[string]*roomHead{}}
}

// commit publishes what a committed transaction learnt to the caches.
func (d *dbctx) commit() {
	r := d.r
	for nid, s := range d.snapshots {
		r.snapshots.Put(nid, s)
	}
	for h, nid := range d.blockNIDs {
		r.blockNIDs.Put(h, nid)
	}
	for _, nid := range d.uncache {
		r.events.Remove(nid)
	}
	for nid, e := range d.events {
		r.events.Put(nid, e)
	}
	for t, nid := range d.typeNIDs {
		r.typeNIDs.Store(t, nid)
		r.typeNames.Store(nid, t)
	}
	for k, nid := range d.keyNIDs {
		r.stateKeyNIDs.Put(k, nid)
		r.stateKeyNames.Put(nid, k)
	}
	for id, h := range d.heads {
		r.heads.Store(id, h)
	}
}

// head returns the room's head: the transaction's working copy, the cached
// committed one, or the stored one. storage.ErrNotFound for unknown rooms.
//
// Only the input worker of a room's partition writes the room, so the
// cached head is the committed one. Only that worker caches heads (after
// commit): a query that read an older row must not overwrite a newer head.
func (d *dbctx) head(ctx context.Context, roomID string) (*roomHead, error) {
	if h, ok := d.heads[roomID]; ok {
		return h, nil
	}
	if h, ok := d.r.heads.Load(roomID); ok {
		return h.(*roomHead), nil
	}
	room, err := storage.SelectRoom(ctx, d.q, roomID)
	if err != nil {
		return nil, err
	}
	h := &roomHead{nid: room.NID, id: room.RoomID, version: gomatrixserverlib.RoomVersion(room.Version),
		snapshot: room.SnapshotNID, latest: room.LatestNIDs, joined: room.JoinedMembers}
	if d.tx != nil {
		d.heads[roomID] = h
	}
	return h, nil
}

// snapshot loads the state of a snapshot (0 is the empty state).
func (d *dbctx) snapshot(ctx context.Context, nid int64) (state.Snapshot, error) {
	if nid == 0 {
		return nil, nil
	}
	if s, ok := d.snapshots[nid]; ok {
		return s, nil
	}
	if s, ok := d.r.snapshots.Get(nid); ok {
		return s, nil
	}
	blockNIDs, err := storage.SelectSnapshotBlocks(ctx, d.q, nid)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", nid, err)
	}
	var missing []int64
	parts := make([]state.Snapshot, len(blockNIDs))
	for i, b := range blockNIDs {
		if blk, ok := d.r.blocks.Get(b); ok {
			parts[i] = blk
		} else {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		loaded, err := storage.SelectBlocks(ctx, d.q, missing)
		if err != nil {
			return nil, err
		}
		for i, b := range blockNIDs {
			if parts[i] == nil {
				blk, ok := loaded[b]
				if !ok {
					return nil, fmt.Errorf("snapshot %d: block %d missing", nid, b)
				}
				parts[i] = blk
				if d.tx == nil {
					d.r.blocks.Put(b, blk)
				}
			}
		}
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	s := make(state.Snapshot, 0, n)
	for _, p := range parts {
		s = append(s, p...)
	}
	if d.tx == nil {
		d.r.snapshots.Put(nid, s)
	} else {
		d.snapshots[nid] = s
	}
	return s, nil
}

// storeSnapshot writes a snapshot (reusing the blocks and snapshot rows
// that already hold the same content) and returns its numeric ID.
func (d *dbctx) storeSnapshot(ctx context.Context, s state.Snapshot) (int64, error) {
	if len(s) == 0 {
		return 0, nil
	}
	blocks := s.Chunk()
	blockNIDs, hashes, err := storage.InsertBlocks(ctx, d.tx, blocks, func(h []byte) (int64, bool) {
		if nid, ok := d.blockNIDs[string(h)]; ok {
			return nid, true
		}
		return d.r.blockNIDs.Get(string(h))
	})
	if err != nil {
		return 0, err
	}
	for i, h := range hashes {
		d.blockNIDs[string(h)] = blockNIDs[i]
	}
	nid, err := storage.InsertSnapshot(ctx, d.tx, blockNIDs)
	if err != nil {
		return 0, err
	}
	d.snapshots[nid] = s
	return nid, nil
}

// typeNID maps an event type to its numeric ID, creating it in a
// transaction; ok is false for an unknown type outside one.
func (d *dbctx) typeNID(ctx context.Context, typ string) (int64, bool, error) {
	if nid, ok := d.typeNIDs[typ]; ok {
		return nid, true, nil
	}
	if nid, ok := d.r.typeNIDs.Load(typ); ok {
		return nid.(int64), true, nil
	}
	m, err := storage.TypeNIDs(ctx, d.q, []string{typ}, d.tx != nil)
	if err != nil {
		return 0, false, err
	}
	nid, ok := m[typ]
	if ok {
		if d.tx != nil {
			d.typeNIDs[typ] = nid
		} else {
			d.r.typeNIDs.Store(typ, nid)
			d.r.typeNames.Store(nid, typ)
		}
	}
	return nid, ok, nil
}

// stateKeyNIDs maps state keys to numeric IDs (creating them in a
// transaction; unknown ones are absent outside one).
func (d *dbctx) stateKeyNIDs(ctx context.Context, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	var missing []string
	for _, k := range keys {
		if nid, ok := d.keyNIDs[k]; ok {
			out[k] = nid
		} else if nid, ok := d.r.stateKeyNIDs.Get(k); ok {
			out[k] = nid
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	m, err := storage.StateKeyNIDs(ctx, d.q, missing, d.tx != nil)
	if err != nil {
		return nil, err
	}
	for k, nid := range m {
		out[k] = nid
		if d.tx != nil {
			d.keyNIDs[k] = nid
		} else {
			d.r.stateKeyNIDs.Put(k, nid)
			d.r.stateKeyNames.Put(nid, k)
		}
	}
	return out, nil
}

// stateKey returns the numeric key of a state tuple; ok is false when the
// type or state key has never been seen (so no state can hold it).
func (d *dbctx) stateKey(ctx context.Context, t gomatrixserverlib.StateKeyTuple) (state.Key, bool, error) {
	typ, ok, err := d.typeNID(ctx, t.EventType)
	if err != nil || !ok {
		return state.Key{}, false, err
	}
	m, err := d.stateKeyNIDs(ctx, []string{t.StateKey})
	if err != nil {
		return state.Key{}, false, err
	}
	sk, ok := m[t.StateKey]
	return state.Key{Type: typ, StateKey: sk}, ok, nil
}

// eventsByNID loads events (with their parsed form) by numeric ID.
func (d *dbctx) eventsByNID(ctx context.Context, nids []int64) (map[int64]*event, error) {
	out := make(map[int64]*event, len(nids))
	var missing []int64
	for _, n := range nids {
		if e, ok := d.events[n]; ok {
			out[n] = e
		} else if e, ok := d.r.events.Get(n); ok {
			out[n] = e
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := storage.SelectEventsByNID(ctx, d.q, missing)
	if err != nil {
		return nil, err
	}
	if err := d.parseEvents(ctx, rows, out); err != nil {
		return nil, err
	}
	return out, nil
}

// eventsByID loads events by ID; unknown IDs are absent.
func (d *dbctx) eventsByID(ctx context.Context, ids []string) (map[string]*event, error) {
	byNID := make(map[int64]*event, len(ids))
	if len(d.ids) > 0 {
		// Events this transaction stored need no query.
		var rest []string
		for _, id := range ids {
			if nid, ok := d.ids[id]; ok {
				if e, ok := d.events[nid]; ok {
					byNID[nid] = e
					continue
				}
			}
			rest = append(rest, id)
		}
		ids = rest
	}
	rows, err := storage.SelectEventsByID(ctx, d.q, ids)
	if err != nil {
		return nil, err
	}
	var fresh []storage.Event
	for _, row := range rows {
		if e, ok := d.events[row.NID]; ok {
			byNID[row.NID] = e
		} else if e, ok := d.r.events.Get(row.NID); ok {
			byNID[row.NID] = e
		} else {
			fresh = append(fresh, row)
		}
	}
	if err := d.parseEvents(ctx, fresh, byNID); err != nil {
		return nil, err
	}
	out := make(map[string]*event, len(byNID))
	for _, e := range byNID {
		out[e.EventID] = e
	}
	return out, nil
}

// roomVersions caches room versions by room numeric ID for parsing.
func (d *dbctx) parseEvents(ctx context.Context, rows []storage.Event, out map[int64]*event) error {
	versions := map[int64]gomatrixserverlib.IRoomVersion{}
	for _, row := range rows {
		verImpl, ok := versions[row.RoomNID]
		if !ok {
			room, err := storage.SelectRoomByNID(ctx, d.q, row.RoomNID)
			if err != nil {
				return fmt.Errorf("room of event %s: %w", row.EventID, err)
			}
			if verImpl, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version)); err != nil {
				return err
			}
			versions[row.RoomNID] = verImpl
		}
		pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(row.EventID, row.JSON, row.Redacted)
		if err != nil {
			return fmt.Errorf("parse stored event %s: %w", row.EventID, err)
		}
		e := &event{Event: row, pdu: pdu}
		e.JSON = nil // the PDU holds it
		out[row.NID] = e
		if d.tx == nil {
			d.r.events.Put(row.NID, e)
		} else {
			d.events[row.NID] = e
		}
	}
	return nil
}

// stateEvents turns snapshot entries into events.
func (d *dbctx) stateEvents(ctx context.Context, entries []state.Entry) ([]gomatrixserverlib.PDU, error) {
	nids := make([]int64, len(entries))
	for i, e := range entries {
		nids[i] = e.Event
	}
	evs, err := d.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(entries))
	for _, e := range entries {
		ev, ok := evs[e.Event]
		if !ok {
			return nil, fmt.Errorf("state event %d missing", e.Event)
		}
		out = append(out, ev.pdu)
	}
	return out, nil
}

// lookup returns the events of the given tuples in a snapshot.
func (d *dbctx) lookup(ctx context.Context, s state.Snapshot, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	var entries []state.Entry
	for _, t := range tuples {
		k, ok, err := d.stateKey(ctx, t)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if ev, ok := s.Lookup(k); ok {
			entries = append(entries, state.Entry{Key: k, Event: ev})
		}
	}
	return d.stateEvents(ctx, entries)
}
