package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/eventrules"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

var _ api.FederationQueryAPI = (*Roomserver)(nil)

// QueryEventKinds implements api.FederationQueryAPI.
func (r *Roomserver) QueryEventKinds(ctx context.Context, eventIDs []string) (map[string]api.EventKind, error) {
	kinds, err := storage.SelectEventKinds(ctx, r.store.DB(), eventIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]api.EventKind, len(kinds))
	for id, k := range kinds {
		out[id] = api.EventKind(k.Kind)
		// A rejected event outside the DAG (a rejected outlier) has no
		// state: it cannot be the prev event of one that has.
		if k.Kind == storage.KindRejected && !k.HasState {
			out[id] = api.KindRejectedOutlier
		}
	}
	return out, nil
}

// dagEvent returns an event of the room's DAG, or ErrEventNotFound.
func (d *dbctx) dagEvent(ctx context.Context, roomID, eventID string) (*event, error) {
	evs, err := d.eventsByID(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	e, ok := evs[eventID]
	if !ok || e.Kind != storage.KindNormal || e.pdu.RoomID().String() != roomID {
		return nil, api.ErrEventNotFound
	}
	return e, nil
}

// snapshotIDs lists the event IDs of a snapshot.
func (d *dbctx) snapshotIDs(ctx context.Context, s state.Snapshot) ([]string, error) {
	nids := make([]int64, len(s))
	for i, e := range s {
		nids[i] = e.Event
	}
	ids, err := storage.SelectEventIDs(ctx, d.q, nids)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(s))
	for _, n := range nids {
		if id, ok := ids[n]; ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// QueryStateBefore implements api.FederationQueryAPI.
func (r *Roomserver) QueryStateBefore(ctx context.Context, roomID, eventID string) ([]string, error) {
	d := r.reader()
	e, err := d.dagEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	s, err := d.snapshot(ctx, e.StateBefore)
	if err != nil {
		return nil, err
	}
	return d.snapshotIDs(ctx, s)
}

// QueryCurrentStateIDs implements api.FederationQueryAPI.
func (r *Roomserver) QueryCurrentStateIDs(ctx context.Context, roomID string) ([]string, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s, err := d.snapshot(ctx, h.snapshot)
	if err != nil {
		return nil, err
	}
	return d.snapshotIDs(ctx, s)
}

// QueryAuthChain implements api.FederationQueryAPI.
func (r *Roomserver) QueryAuthChain(ctx context.Context, eventIDs []string) ([]string, error) {
	d := r.reader()
	evs, err := d.eventsByID(ctx, eventIDs)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	var head *roomHead
	starts := make([]*event, 0, len(evs))
	for _, e := range evs {
		starts = append(starts, e)
		if head == nil {
			room, err := storage.SelectRoomByNID(ctx, d.q, e.RoomNID)
			if err != nil {
				return nil, err
			}
			head = &roomHead{nid: room.NID, id: room.RoomID, version: gomatrixserverlib.RoomVersion(room.Version)}
		}
	}
	chain, err := d.authChain(ctx, head, starts)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(chain))
	for id, e := range chain {
		if e != nil {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out, nil
}

// QueryMissingEvents implements api.FederationQueryAPI: breadth first from
// the prev events of latest, never past earliest, oldest first.
func (r *Roomserver) QueryMissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error) {
	d := r.reader()
	seen := map[string]bool{}
	for _, id := range earliest {
		seen[id] = true
	}
	for _, id := range latest {
		seen[id] = true
	}
	starts, err := d.eventsByID(ctx, latest)
	if err != nil {
		return nil, err
	}
	var frontier []string
	for _, e := range starts {
		if e.pdu.RoomID().String() != roomID {
			continue
		}
		for _, p := range e.pdu.PrevEventIDs() {
			if !seen[p] {
				seen[p] = true
				frontier = append(frontier, p)
			}
		}
	}
	out, err := d.walkBack(ctx, roomID, frontier, seen, limit, minDepth)
	slices.SortStableFunc(out, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	return out, err
}

// QueryBackfill implements api.FederationQueryAPI: breadth first from (and
// including) from, newest first.
func (r *Roomserver) QueryBackfill(ctx context.Context, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	frontier := make([]string, 0, len(from))
	for _, id := range from {
		if !seen[id] {
			seen[id] = true
			frontier = append(frontier, id)
		}
	}
	return r.reader().walkBack(ctx, roomID, frontier, seen, limit, 0)
}

// walkBack walks prev_events back breadth first from frontier (marking
// what it meets in seen), taking the room's DAG events of depth at least
// minDepth, deepest first in each round, until it has limit of them.
func (d *dbctx) walkBack(ctx context.Context, roomID string, frontier []string, seen map[string]bool, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	for len(frontier) > 0 && len(out) < limit {
		evs, err := d.eventsByID(ctx, frontier)
		if err != nil {
			return nil, err
		}
		found := make([]*event, 0, len(evs))
		for _, id := range frontier {
			if e, ok := evs[id]; ok && e.Kind == storage.KindNormal && e.pdu.RoomID().String() == roomID && e.Depth >= minDepth {
				found = append(found, e)
			}
		}
		slices.SortFunc(found, func(a, b *event) int { return int(b.Depth - a.Depth) })
		var next []string
		for _, e := range found {
			if len(out) >= limit {
				break
			}
			out = append(out, e.pdu)
			for _, p := range e.pdu.PrevEventIDs() {
				if !seen[p] {
					seen[p] = true
					next = append(next, p)
				}
			}
		}
		frontier = next
	}
	return out, nil
}

// QueryServerMayRead implements api.FederationQueryAPI: Synapse's rules for
// servers. World-readable and shared history is visible; invited history to
// a server with a user invited or joined at the event; joined history only
// to a server with a user joined at it.
func (r *Roomserver) QueryServerMayRead(ctx context.Context, server string, eventID string) (bool, error) {
	d := r.reader()
	evs, err := d.eventsByID(ctx, []string{eventID})
	if err != nil {
		return false, err
	}
	e, ok := evs[eventID]
	if !ok || e.Kind == storage.KindRejected {
		return false, api.ErrEventNotFound
	}
	if e.Kind == storage.KindOutlier {
		return false, nil // no state to judge by: Synapse refuses too
	}
	before, err := d.snapshot(ctx, e.StateBefore)
	if err != nil {
		return false, err
	}
	vis, err := d.historyVisibility(ctx, before, e.pdu)
	if err != nil {
		return false, err
	}
	if vis == "world_readable" || vis == "shared" {
		return true, nil
	}
	memberType, ok, err := d.typeNID(ctx, spec.MRoomMember)
	if err != nil || !ok {
		return false, err
	}
	members, err := d.stateEvents(ctx, before.OfType(memberType))
	if err != nil {
		return false, err
	}
	if e.pdu.Type() == spec.MRoomMember {
		members = append(members, e.pdu)
	}
	for _, m := range members {
		sk := m.StateKey()
		if sk == nil {
			continue
		}
		_, domain, err := gomatrixserverlib.SplitID('@', *sk)
		if err != nil || string(domain) != server {
			continue
		}
		switch ms, _ := m.Membership(); {
		case ms == spec.Join, ms == spec.Invite && vis == "invited":
			return true, nil
		}
	}
	return false, nil
}

// QueryJoinedServers implements api.FederationQueryAPI.
func (r *Roomserver) QueryJoinedServers(ctx context.Context, roomID string) ([]string, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return storage.SelectJoinedServers(ctx, d.q, h.nid)
}

// QueryEventTemplate implements api.FederationQueryAPI.
func (r *Roomserver) QueryEventTemplate(ctx context.Context, roomID string, p api.ProtoEvent) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	d := r.reader()
	head, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, "", err
	}
	if len(head.latest) == 0 {
		return nil, "", api.ErrRoomNotFound
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(head.version)
	if err != nil {
		return nil, "", err
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, RoomID: roomID, Type: p.Type, StateKey: p.StateKey, Content: spec.RawJSON(p.Content), Version: verImpl,
	}
	b := &built{}
	if err := d.chooseParents(ctx, head, 0, b); err != nil {
		return nil, "", err
	}
	depth := int64(0)
	prevIDs := make([]string, 0, len(b.prevs))
	for _, pe := range b.prevs {
		prevIDs = append(prevIDs, pe.EventID)
		depth = max(depth, pe.Depth)
	}
	proto.PrevEvents = prevIDs
	proto.Depth = eventrules.NextDepth(depth)
	authEvents, err := d.authEventsFor(ctx, &proto, b.before)
	if err != nil {
		return nil, "", err
	}
	builder := verImpl.NewEventBuilderFromProtoEvent(&proto)
	if err := builder.AddAuthEvents(authEvents); err != nil {
		return nil, "", err
	}
	// Build it signed with this server's key to run the auth rules; the
	// caller gets the unsigned template.
	ev, err := builder.Build(time.Now(), r.cfg.ServerName, r.cfg.KeyID, r.cfg.PrivateKey)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", api.ErrNotAllowed, err)
	}
	if err := eventrules.Allowed(ev, authEvents, userIDForSender); err != nil {
		return nil, "", fmt.Errorf("%w: %s", api.ErrNotAllowed, notAllowedMessage(err))
	}
	proto.AuthEvents = builder.AuthEvents
	return &proto, head.version, nil
}

// QueryEventAtTimestamp implements api.FederationQueryAPI.
func (r *Roomserver) QueryEventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (string, int64, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return "", 0, err
	}
	id, originTS, err := storage.SelectEventAtTimestamp(ctx, d.q, h.nid, ts, forward)
	if errors.Is(err, storage.ErrNotFound) {
		return "", 0, api.ErrEventNotFound
	}
	return id, originTS, err
}
