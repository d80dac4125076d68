package roomserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// resolve merges several states of a room with the state resolution
// algorithm of its version. When every key has the same event in every
// state there is nothing to resolve.
func (d *dbctx) resolve(ctx context.Context, head *roomHead, sets []state.Snapshot) (_ state.Snapshot, err error) {
	if !conflicted(sets) {
		return sets[0], nil
	}
	// State resolution runs on events from other servers: a panic (in
	// gomatrixserverlib's auth rules, say) must not take the server down.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("state resolution in %s panicked: %v", head.id, p)
		}
	}()
	var nids []int64
	seen := map[int64]bool{}
	for _, s := range sets {
		for _, e := range s {
			if !seen[e.Event] {
				seen[e.Event] = true
				nids = append(nids, e.Event)
			}
		}
	}
	evs, err := d.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	stateSets := make([][]gomatrixserverlib.PDU, len(sets))
	for i, s := range sets {
		stateSets[i] = make([]gomatrixserverlib.PDU, 0, len(s))
		for _, e := range s {
			if ev, ok := evs[e.Event]; ok {
				stateSets[i] = append(stateSets[i], ev.pdu)
			}
		}
	}
	starts := make([]*event, 0, len(evs))
	for _, e := range evs {
		starts = append(starts, e)
	}
	chain, err := d.authChain(ctx, head, starts)
	if err != nil {
		return nil, err
	}
	// The resolver may walk to any of the state events and their auth
	// chains.
	byID := make(map[string]*event, len(chain)+len(evs))
	for _, e := range evs {
		byID[e.EventID] = e
	}
	for id, e := range chain {
		byID[id] = e
	}
	all := make(map[string]gomatrixserverlib.PDU, len(byID))
	for id, e := range byID {
		all[id] = e.pdu
	}
	rejected := func(id string) bool {
		e, ok := byID[id]
		return ok && e.Kind == storage.KindRejected
	}
	resolved, err := stateres.Resolve(stateres.Input{Version: head.version, StateSets: stateSets, Events: all, Rejected: rejected})
	if err != nil {
		return nil, fmt.Errorf("state resolution in %s: %w", head.id, err)
	}
	if len(resolved) == 0 {
		return nil, fmt.Errorf("state resolution in %s produced no state (no create event?)", head.id)
	}
	entries := make([]state.Entry, 0, len(resolved))
	for _, pdu := range resolved {
		e, ok := byID[pdu.EventID()]
		if !ok || pdu.StateKey() == nil {
			continue
		}
		entries = append(entries, state.Entry{Key: state.Key{Type: e.TypeNID, StateKey: e.StateKeyNID}, Event: e.NID})
	}
	return state.FromEntries(entries), nil
}

// conflicted reports whether some key lacks the same event in every set.
func conflicted(sets []state.Snapshot) bool {
	for _, s := range sets[1:] {
		if len(s) != len(sets[0]) {
			return true
		}
		for i := range s {
			if s[i] != sets[0][i] {
				return true
			}
		}
	}
	return false
}

// authChain loads the auth chains of the given events (what they list in
// auth_events, transitively), breadth first in batches. In room versions
// whose create event is implied by the room ID, the create event is added.
func (d *dbctx) authChain(ctx context.Context, head *roomHead, starts []*event) (map[string]*event, error) {
	chain := map[string]*event{}
	var frontier []string
	want := func(id string) {
		if _, ok := chain[id]; !ok {
			chain[id] = nil
			frontier = append(frontier, id)
		}
	}
	for _, e := range starts {
		for _, id := range e.pdu.AuthEventIDs() {
			want(id)
		}
	}
	if verImpl, err := gomatrixserverlib.GetRoomVersion(head.version); err == nil && verImpl.DomainlessRoomIDs() {
		want("$" + head.id[1:])
	}
	for len(frontier) > 0 {
		batch := frontier
		frontier = nil
		loaded, err := d.eventsByID(ctx, batch)
		if err != nil {
			return nil, err
		}
		for _, id := range batch {
			e, ok := loaded[id]
			if !ok {
				delete(chain, id) // not stored: nothing to walk
				continue
			}
			chain[id] = e
			for _, a := range e.pdu.AuthEventIDs() {
				want(a)
			}
		}
	}
	return chain, nil
}
