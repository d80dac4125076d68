// Package stateres is state resolution: given several states of a room, the
// one state every server agrees on. Room version 1 uses gomatrixserverlib's
// version 1 algorithm; versions 2 to 11 use state resolution v2 and version
// 12 uses v2.1 (iterative auth checks from an empty state, and the conflicted
// state subgraph in the full conflicted set), implemented here from the
// specification ("rooms/v2" and "rooms/v12", "State resolution").
package stateres

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/eventrules"
)

// Input is what a resolution needs.
type Input struct {
	Version   gomatrixserverlib.RoomVersion
	StateSets [][]gomatrixserverlib.PDU
	// Events holds every event the algorithm may walk to: the events of
	// the state sets and their auth chains.
	Events map[string]gomatrixserverlib.PDU
	// Rejected reports events rejected by the auth rules.
	Rejected func(eventID string) bool
}

type tuple = gomatrixserverlib.StateKeyTuple

func keyOf(e gomatrixserverlib.PDU) tuple {
	return tuple{EventType: e.Type(), StateKey: *e.StateKey()}
}

func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// Resolve returns the resolved state.
func Resolve(in Input) ([]gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(in.Version)
	if err != nil {
		return nil, err
	}
	if in.Rejected == nil {
		in.Rejected = func(string) bool { return false }
	}
	switch verImpl.StateResAlgorithm() {
	case gomatrixserverlib.StateResV1:
		var all []gomatrixserverlib.PDU
		for _, e := range in.Events {
			all = append(all, e)
		}
		return gomatrixserverlib.ResolveConflictsNew(in.Version, in.StateSets, all, userIDForSender, in.Rejected)
	case gomatrixserverlib.StateResV2, gomatrixserverlib.StateResV2_1:
		r := &resolver{in: in, v21: verImpl.StateResAlgorithm() == gomatrixserverlib.StateResV2_1,
			privileged: verImpl.PrivilegedCreators(), power: map[string]int64{}, allowed: map[string]bool{}}
		return r.run()
	}
	return nil, fmt.Errorf("stateres: room version %s has no known algorithm", in.Version)
}

type resolver struct {
	in         Input
	v21        bool
	privileged bool
	create     gomatrixserverlib.PDU
	creators   map[string]bool
	power      map[string]int64 // sender power of events, by event ID
	// allowed memoises auth checks of ordinary events (see authKey).
	allowed map[string]bool
}

func (r *resolver) run() ([]gomatrixserverlib.PDU, error) {
	n := len(r.in.StateSets)
	unconflicted := map[tuple]gomatrixserverlib.PDU{}
	conflicted := map[string]gomatrixserverlib.PDU{}
	type slot struct {
		ev    gomatrixserverlib.PDU
		count int
	}
	byKey := map[tuple]map[string]*slot{}
	for _, set := range r.in.StateSets {
		seen := map[string]bool{}
		for _, e := range set {
			if e.StateKey() == nil || seen[e.EventID()] {
				continue
			}
			seen[e.EventID()] = true
			k := keyOf(e)
			if byKey[k] == nil {
				byKey[k] = map[string]*slot{}
			}
			s := byKey[k][e.EventID()]
			if s == nil {
				s = &slot{ev: e}
				byKey[k][e.EventID()] = s
			}
			s.count++
			if k.EventType == spec.MRoomCreate && k.StateKey == "" && r.create == nil {
				r.create = e
			}
		}
	}
	for k, evs := range byKey {
		if len(evs) == 1 {
			for _, s := range evs {
				if s.count == n {
					unconflicted[k] = s.ev
					continue
				}
				conflicted[s.ev.EventID()] = s.ev
			}
			continue
		}
		for _, s := range evs {
			conflicted[s.ev.EventID()] = s.ev
		}
	}
	if r.create == nil {
		return nil, fmt.Errorf("stateres: no create event in the states")
	}
	r.creators = map[string]bool{}
	for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(r.create) {
		r.creators[c] = true
	}
	if len(conflicted) == 0 {
		return values(unconflicted), nil
	}

	// The full conflicted set: the conflicted state set, the auth
	// difference, and (v2.1) the conflicted state subgraph.
	full := map[string]gomatrixserverlib.PDU{}
	for id, e := range conflicted {
		full[id] = e
	}
	for id := range r.authDifference() {
		if e, ok := r.in.Events[id]; ok {
			full[id] = e
		}
	}
	if r.v21 {
		for id := range r.conflictedSubgraph(conflicted) {
			if e, ok := r.in.Events[id]; ok {
				full[id] = e
			}
		}
	}

	// Step 1: power events and the parts of their auth chains in the full
	// conflicted set, in reverse topological power order.
	control := map[string]gomatrixserverlib.PDU{}
	for id, e := range full {
		if isPowerEvent(e) {
			control[id] = e
			for aid := range r.authChain([]gomatrixserverlib.PDU{e}) {
				if ae, ok := full[aid]; ok {
					control[aid] = ae
				}
			}
		}
	}
	partial := map[tuple]gomatrixserverlib.PDU{}
	if !r.v21 {
		for k, e := range unconflicted {
			partial[k] = e
		}
	}
	r.iterativeAuth(partial, r.reverseTopological(control))

	// Steps 3 and 4: the others, in mainline order of the resolved power
	// levels.
	var others []gomatrixserverlib.PDU
	for id, e := range full {
		if _, ok := control[id]; !ok {
			others = append(others, e)
		}
	}
	r.iterativeAuth(partial, r.mainlineOrder(others, partial[tuple{EventType: spec.MRoomPowerLevels}]))

	// Step 5: the unconflicted state wins.
	for k, e := range unconflicted {
		partial[k] = e
	}
	return values(partial), nil
}

func values(m map[tuple]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	return out
}

// isPowerEvent: events that may take abilities away (and the create event,
// as Synapse counts it).
func isPowerEvent(e gomatrixserverlib.PDU) bool {
	switch {
	case e.StateKey() == nil:
		return false
	case e.Type() == spec.MRoomPowerLevels, e.Type() == spec.MRoomJoinRules, e.Type() == spec.MRoomCreate:
		return *e.StateKey() == ""
	case e.Type() == spec.MRoomMember:
		m, err := e.Membership()
		return err == nil && (m == spec.Leave || m == spec.Ban) && string(e.SenderID()) != *e.StateKey()
	}
	return false
}

// authChain returns the IDs reachable from events through auth_events (not
// the events themselves, unless reachable).
func (r *resolver) authChain(events []gomatrixserverlib.PDU) map[string]bool {
	seen := map[string]bool{}
	stack := make([]string, 0, 16)
	for _, e := range events {
		stack = append(stack, e.AuthEventIDs()...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		if e, ok := r.in.Events[id]; ok {
			stack = append(stack, e.AuthEventIDs()...)
		}
	}
	return seen
}

// authDifference is the union of the full auth chains of the states minus
// their intersection.
func (r *resolver) authDifference() map[string]bool {
	counts := map[string]int{}
	for _, set := range r.in.StateSets {
		for id := range r.authChain(set) {
			counts[id]++
		}
	}
	out := map[string]bool{}
	for id, c := range counts {
		if c < len(r.in.StateSets) {
			out[id] = true
		}
	}
	return out
}

// conflictedSubgraph is every event on an auth_events path from one
// conflicted event to another (endpoints included).
func (r *resolver) conflictedSubgraph(conflicted map[string]gomatrixserverlib.PDU) map[string]bool {
	// Events reachable from the conflicted set, and for each the events
	// that point at it.
	reach := map[string]bool{}
	parents := map[string][]string{}
	var stack []string
	for id := range conflicted {
		stack = append(stack, id)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reach[id] {
			continue
		}
		reach[id] = true
		e, ok := r.in.Events[id]
		if !ok {
			if e, ok = conflicted[id]; !ok {
				continue
			}
		}
		for _, a := range e.AuthEventIDs() {
			parents[a] = append(parents[a], id)
			stack = append(stack, a)
		}
	}
	// Walk back up from the conflicted events that other conflicted
	// events reach: everything on the way lies on such a path.
	out := map[string]bool{}
	for id := range conflicted {
		if len(parents[id]) > 0 {
			stack = append(stack, id)
		}
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if out[id] {
			continue
		}
		out[id] = true
		stack = append(stack, parents[id]...)
	}
	return out
}

// senderPower is the power of an event's sender in the power levels it
// cites (the creator has 100 without them; privileged creators outrank all).
func (r *resolver) senderPower(e gomatrixserverlib.PDU) int64 {
	if p, ok := r.power[e.EventID()]; ok {
		return p
	}
	sender := string(e.SenderID())
	var level int64
	switch {
	case r.privileged && r.creators[sender]:
		level = math.MaxInt64
	default:
		var pl gomatrixserverlib.PDU
		for _, id := range e.AuthEventIDs() {
			if a, ok := r.in.Events[id]; ok && a.Type() == spec.MRoomPowerLevels && a.StateKeyEquals("") {
				pl = a
			}
		}
		if pl != nil {
			if c, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl); err == nil {
				level = c.UserLevel(e.SenderID())
			}
		} else if r.creators[sender] {
			level = 100
		}
	}
	r.power[e.EventID()] = level
	return level
}

// reverseTopological orders events so that auth events come first, ties
// broken by greater sender power, then earlier timestamp, then event ID.
func (r *resolver) reverseTopological(events map[string]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	indegree := make(map[string]int, len(events))
	children := map[string][]string{}
	for id, e := range events {
		indegree[id] += 0
		for _, a := range e.AuthEventIDs() {
			if _, ok := events[a]; ok {
				indegree[id]++
				children[a] = append(children[a], id)
			}
		}
	}
	h := &eventHeap{less: func(x, y gomatrixserverlib.PDU) bool {
		if px, py := r.senderPower(x), r.senderPower(y); px != py {
			return px > py
		}
		return earlier(x, y)
	}}
	for id, d := range indegree {
		if d == 0 {
			heap.Push(h, events[id])
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(events))
	for h.Len() > 0 {
		e := heap.Pop(h).(gomatrixserverlib.PDU)
		out = append(out, e)
		for _, c := range children[e.EventID()] {
			if indegree[c]--; indegree[c] == 0 {
				heap.Push(h, events[c])
			}
		}
	}
	return out
}

// earlier compares by timestamp, then event ID.
func earlier(x, y gomatrixserverlib.PDU) bool {
	if x.OriginServerTS() != y.OriginServerTS() {
		return x.OriginServerTS() < y.OriginServerTS()
	}
	return x.EventID() < y.EventID()
}

// mainlineOrder sorts events by their position against the mainline of the
// power levels event pl (events based on older power levels first), then
// timestamp, then event ID.
func (r *resolver) mainlineOrder(events []gomatrixserverlib.PDU, pl gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	mainline := map[string]int{}
	for i := 0; pl != nil; i++ {
		if _, loop := mainline[pl.EventID()]; loop {
			break
		}
		mainline[pl.EventID()] = i
		pl = r.powerLevelsOf(pl)
	}
	const infinity = math.MaxInt
	position := func(e gomatrixserverlib.PDU) int {
		seen := map[string]bool{}
		for p := r.powerLevelsOf(e); p != nil && !seen[p.EventID()]; p = r.powerLevelsOf(p) {
			seen[p.EventID()] = true
			if i, ok := mainline[p.EventID()]; ok {
				return i
			}
		}
		return infinity
	}
	pos := make(map[string]int, len(events))
	for _, e := range events {
		pos[e.EventID()] = position(e)
	}
	out := slices.Clone(events)
	slices.SortFunc(out, func(x, y gomatrixserverlib.PDU) int {
		if c := cmp.Compare(pos[y.EventID()], pos[x.EventID()]); c != 0 {
			return c
		}
		if earlier(x, y) {
			return -1
		}
		if earlier(y, x) {
			return 1
		}
		return 0
	})
	return out
}

// powerLevelsOf returns the power levels event an event cites.
func (r *resolver) powerLevelsOf(e gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	for _, id := range e.AuthEventIDs() {
		if a, ok := r.in.Events[id]; ok && a.Type() == spec.MRoomPowerLevels && a.StateKeyEquals("") {
			return a
		}
	}
	return nil
}

// iterativeAuth applies each event the auth rules allow against the partial
// state (falling back to the event's own, unrejected, auth events for keys
// the state lacks; the create event is implied where the room ID names it).
func (r *resolver) iterativeAuth(partial map[tuple]gomatrixserverlib.PDU, events []gomatrixserverlib.PDU) {
	for _, e := range events {
		own := map[tuple]gomatrixserverlib.PDU{}
		for _, id := range e.AuthEventIDs() {
			if a, ok := r.in.Events[id]; ok && a.StateKey() != nil && !r.in.Rejected(id) {
				own[keyOf(a)] = a
			}
		}
		var authEvents []gomatrixserverlib.PDU
		for _, k := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{e}).Tuples() {
			if a, ok := partial[k]; ok {
				authEvents = append(authEvents, a)
			} else if a, ok := own[k]; ok {
				authEvents = append(authEvents, a)
			} else if k.EventType == spec.MRoomCreate {
				authEvents = append(authEvents, r.create)
			}
		}
		if e.Type() == spec.MRoomCreate {
			authEvents = append(authEvents, e)
		}
		key := authKey(e, authEvents)
		ok, known := r.allowed[key]
		if !known || key == "" {
			provider, err := gomatrixserverlib.NewAuthEvents(authEvents)
			ok = err == nil && eventrules.Allowed(e, provider, userIDForSender) == nil
			if key != "" {
				r.allowed[key] = ok
			}
		}
		if ok {
			partial[keyOf(e)] = e
		}
	}
}

// authKey identifies the auth check of an ordinary event: for types whose
// content the auth rules ignore, the outcome depends only on the sender,
// the type, whether the state key names another user, and the auth events.
// Resolving forks of many such events then checks them once. Events whose
// content matters get "" (not memoised).
func authKey(e gomatrixserverlib.PDU, authEvents []gomatrixserverlib.PDU) string {
	switch e.Type() {
	case spec.MRoomCreate, spec.MRoomMember, spec.MRoomPowerLevels, spec.MRoomJoinRules,
		spec.MRoomThirdPartyInvite, spec.MRoomRedaction, spec.MRoomAliases:
		return ""
	}
	// The one rule on the state key: one starting with @ must be the
	// sender's.
	sk := *e.StateKey()
	ownKey := sk == "" || sk[0] != '@' || sk == string(e.SenderID())
	ids := make([]string, len(authEvents))
	for i, a := range authEvents {
		ids[i] = a.EventID()
	}
	slices.Sort(ids)
	b := make([]byte, 0, 64+len(ids)*45)
	b = append(b, e.Type()...)
	b = append(b, 0)
	b = append(b, e.SenderID()...)
	if ownKey {
		b = append(b, 0, 'o')
	} else {
		b = append(b, 0, 'x')
	}
	for _, id := range ids {
		b = append(b, 0)
		b = append(b, id...)
	}
	return string(b)
}

type eventHeap struct {
	events []gomatrixserverlib.PDU
	less   func(x, y gomatrixserverlib.PDU) bool
}

func (h *eventHeap) Len() int           { return len(h.events) }
func (h *eventHeap) Less(i, j int) bool { return h.less(h.events[i], h.events[j]) }
func (h *eventHeap) Swap(i, j int)      { h.events[i], h.events[j] = h.events[j], h.events[i] }
func (h *eventHeap) Push(x any)         { h.events = append(h.events, x.(gomatrixserverlib.PDU)) }
func (h *eventHeap) Pop() any {
	e := h.events[len(h.events)-1]
	h.events = h.events[:len(h.events)-1]
	return e
}
