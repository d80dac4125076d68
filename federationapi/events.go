package federationapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/eventrules"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Bounds of what the pipeline fetches to take in one event.
const (
	// missingEventsLimit is the page of /get_missing_events.
	missingEventsLimit = 20
	// maxGapRoots bounds the state fetches (/state_ids) for one event.
	maxGapRoots = 5
	// stateByIDsLimit: with more events missing than this, the whole
	// state is fetched with /state rather than event by event.
	stateByIDsLimit = 50
	// outlierChunkBytes keeps one roomserver input under the bus's
	// message size when a room's state is large.
	outlierChunkBytes = 512 << 10
)

// roomLocks serialises the taking in of each room's events (rooms hash
// onto a fixed set of locks), so that what one transaction fetches is
// stored before another transaction of the room looks for it.
type roomLocks struct{ mu [64]sync.Mutex }

func (l *roomLocks) lock(roomID string) func() {
	h := fnv.New32a()
	h.Write([]byte(roomID))
	m := &l.mu[h.Sum32()%uint32(len(l.mu))]
	m.Lock()
	return m.Unlock
}

// errRejected marks the result of an event stored as rejected by the auth
// rules: handled, so /send reports no error for it (as Synapse, which
// reports only events it could not take in: bad signatures, prev events
// it could not get).
var errRejected = errors.New("rejected")

// userIDForSender maps sender IDs to user IDs (the same in every room
// version Myelin supports).
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// verifyEvent parses an event another server sent for a room: the format of
// the room version (a content hash mismatch leaves the redacted event), the
// room, and the signatures of the servers that must have signed it.
func (f *FederationAPI) verifyEvent(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	pdu, err := parseEvent(verImpl, raw)
	if err != nil {
		return nil, err
	}
	return pdu, f.checkEvent(ctx, roomID, pdu)
}

// checkEvent checks a parsed event's room and signatures.
func (f *FederationAPI) checkEvent(ctx context.Context, roomID string, pdu gomatrixserverlib.PDU) error {
	if pdu.RoomID().String() != roomID {
		return fmt.Errorf("event %s is not in room %s", pdu.EventID(), roomID)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, f.keyring, userIDForSender); err != nil {
		return fmt.Errorf("bad signature on %s: %w", pdu.EventID(), err)
	}
	return nil
}

// parseEvent parses an event of another server in the format of the room
// version. Sizes are bounded as the room version has it: the limits of
// event types and state keys are in codepoints, and a field over 255
// bytes but not 255 codepoints is accepted where gomatrixserverlib says
// it is persistable (older room versions, which Synapse always let
// through), so as not to break such rooms.
func parseEvent(verImpl gomatrixserverlib.IRoomVersion, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	if err := eventrules.CheckReceived(raw); err != nil {
		return nil, fmt.Errorf("invalid event: %w", err)
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		var verr gomatrixserverlib.EventValidationError
		if pdu == nil || !errors.As(err, &verr) || !verr.Persistable {
			return nil, fmt.Errorf("invalid event: %w", err)
		}
	}
	return pdu, nil
}

// verifyEvents verifies events of a room, dropping (and logging) those
// that fail; an event given twice is verified once.
func (f *FederationAPI) verifyEvents(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raws []json.RawMessage) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	seen := make(map[string]bool, len(raws))
	for _, raw := range raws {
		if seen[string(raw)] {
			continue
		}
		seen[string(raw)] = true
		pdu, err := f.verifyEvent(ctx, verImpl, roomID, raw)
		if err != nil {
			f.log.Info("dropped a fetched event", slog.String("room_id", roomID), slog.String("error", err.Error()))
			continue
		}
		out = append(out, pdu)
	}
	return out
}

// verifyListed verifies the events of an answer that were asked for by
// ID (want), once each, dropping the others unverified.
func (f *FederationAPI) verifyListed(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raws []json.RawMessage, want map[string]bool) []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	got := map[string]bool{}
	for _, raw := range raws {
		pdu, err := parseEvent(verImpl, raw)
		if err != nil || !want[pdu.EventID()] || got[pdu.EventID()] {
			continue
		}
		if err := f.checkEvent(ctx, roomID, pdu); err != nil {
			f.log.Info("dropped a fetched event", slog.String("room_id", roomID), slog.String("error", err.Error()))
			continue
		}
		got[pdu.EventID()] = true
		out = append(out, pdu)
	}
	return out
}

// pulled returns the events of an answer to /backfill or
// get_missing_events that were asked for: those reached from roots (the
// roots included) by prev_events through verified events of the answer,
// at most max. Only the first max entries of the answer are looked at (no
// more were asked for); events of other rooms, events not reached (not
// asked for) and repeated ones are dropped, the last unverified.
func (f *FederationAPI) pulled(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raws []json.RawMessage,
	roots []string, max int) []gomatrixserverlib.PDU {
	return f.reached(ctx, verImpl, roomID, raws, roots, max, gomatrixserverlib.PDU.PrevEventIDs)
}

// reached is pulled with the links to follow (prev or auth events).
func (f *FederationAPI) reached(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, roomID string, raws []json.RawMessage,
	roots []string, max int, next func(gomatrixserverlib.PDU) []string) []gomatrixserverlib.PDU {
	raws = raws[:min(len(raws), max)]
	byID := make(map[string]gomatrixserverlib.PDU, len(raws))
	for _, raw := range raws {
		if pdu, err := parseEvent(verImpl, raw); err == nil && byID[pdu.EventID()] == nil {
			byID[pdu.EventID()] = pdu
		}
	}
	var out []gomatrixserverlib.PDU
	seen := map[string]bool{}
	frontier := slices.Clone(roots)
	for len(frontier) > 0 && len(out) < max {
		id := frontier[0]
		frontier = frontier[1:]
		pdu := byID[id]
		if pdu == nil || seen[id] {
			continue
		}
		seen[id] = true
		if err := f.checkEvent(ctx, roomID, pdu); err != nil {
			f.log.Info("dropped a fetched event", slog.String("room_id", roomID), slog.String("error", err.Error()))
			continue
		}
		out = append(out, pdu)
		frontier = append(frontier, next(pdu)...)
	}
	if n := len(byID) - len(out); n > 0 {
		f.log.Info("dropped fetched events not asked for", slog.String("room_id", roomID), slog.Int("count", n))
	}
	return out
}

// intake is the work of taking in events of one room from one server.
type intake struct {
	f       *FederationAPI
	origin  spec.ServerName
	roomID  string
	verImpl gomatrixserverlib.IRoomVersion
	// known caches what the roomserver holds (and how) of the events
	// looked at so far.
	known map[string]rsapi.EventKind
}

func (f *FederationAPI) newIntake(origin spec.ServerName, info *rsapi.RoomInfo) (*intake, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	if err != nil {
		return nil, err
	}
	return &intake{f: f, origin: origin, roomID: info.RoomID, verImpl: verImpl, known: map[string]rsapi.EventKind{}}, nil
}

// kinds asks the roomserver about the events not looked at yet.
func (in *intake) kinds(ctx context.Context, ids []string) error {
	var ask []string
	for _, id := range ids {
		if _, ok := in.known[id]; !ok {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	got, err := in.f.rooms.QueryEventKinds(ctx, ask)
	if err != nil {
		return err
	}
	for _, id := range ask {
		in.known[id] = got[id] // 0: unknown
	}
	return nil
}

// inDAG reports whether an event is in the room's DAG here: a rejected
// event of the DAG counts (the state after it is the state before it), so
// that an event on top of one needs no fetching (as Synapse).
func (in *intake) inDAG(id string) bool {
	k := in.known[id]
	return k == rsapi.KindNormal || k == rsapi.KindRejected
}

// rejected reports whether an event is stored as rejected.
func (in *intake) rejected(id string) bool {
	k := in.known[id]
	return k == rsapi.KindRejected || k == rsapi.KindRejectedOutlier
}

// stored reports whether an event is stored here in any way.
func (in *intake) stored(id string) bool { return in.known[id] != 0 }

// take takes verified PDUs (in the order the server sent them) into the
// roomserver, fetching missing auth events, prev events and state, and
// returns the result of each (nil: accepted, even if soft-failed).
func (in *intake) take(ctx context.Context, pdus []gomatrixserverlib.PDU) map[string]error {
	results := make(map[string]error, len(pdus))
	ids := make([]string, 0, len(pdus)*3)
	for _, p := range pdus {
		ids = append(ids, p.EventID())
		ids = append(ids, p.PrevEventIDs()...)
		ids = append(ids, p.AuthEventIDs()...)
	}
	if err := in.kinds(ctx, ids); err != nil {
		for _, p := range pdus {
			results[p.EventID()] = err
		}
		return results
	}
	// Consecutive events whose prev and auth events are here (or earlier
	// in the batch) go in together; an event with a gap first has the gap
	// filled.
	var batch []gomatrixserverlib.PDU
	flush := func() {
		if len(batch) > 0 {
			for id, err := range in.input(ctx, &rsapi.InputMessage{RoomID: in.roomID, Events: raws(batch)}) {
				results[id] = err
			}
			batch = nil
		}
	}
	inBatch := map[string]bool{}
	for _, p := range pdus {
		if id := p.EventID(); in.inDAG(id) || in.rejected(id) {
			if in.rejected(id) {
				results[p.EventID()] = fmt.Errorf("%w before", errRejected)
			} else {
				results[p.EventID()] = nil
			}
			continue
		}
		ready := true
		for _, id := range p.PrevEventIDs() {
			if !in.inDAG(id) && !inBatch[id] {
				ready = false
			}
		}
		for _, id := range p.AuthEventIDs() {
			if !in.stored(id) && !inBatch[id] {
				ready = false
			}
		}
		if ready {
			batch = append(batch, p)
			inBatch[p.EventID()] = true
			continue
		}
		flush()
		clear(inBatch)
		for id, err := range in.takeWithGap(ctx, p) {
			results[id] = err
		}
	}
	flush()
	for _, p := range pdus {
		if _, ok := results[p.EventID()]; !ok {
			results[p.EventID()] = errors.New("not processed")
		}
	}
	return results
}

// takeWithGap takes in an event whose prev or auth events are missing, as
// Synapse does: the missing prev events come from /get_missing_events, and
// when some still miss the event is refused (the server that pushed it
// must be able to give them; trusting the state it would otherwise claim
// is how a room gets hijacked). A fetched event whose prev event is still
// missing gets the state after that prev event from /state_ids, computed
// here from the state before it and the event itself. Missing auth events
// come from /event_auth.
func (in *intake) takeWithGap(ctx context.Context, p gomatrixserverlib.PDU) map[string]error {
	fail := func(err error) map[string]error { return map[string]error{p.EventID(): err} }
	chain := []gomatrixserverlib.PDU{p}
	missingPrev := slices.ContainsFunc(p.PrevEventIDs(), func(id string) bool { return !in.inDAG(id) })
	if missingPrev {
		fetched, err := in.missingEvents(ctx, p)
		if err != nil {
			in.f.log.Info("get_missing_events failed", slog.String("room_id", in.roomID), slog.String("origin", string(in.origin)),
				slog.String("error", err.Error()))
		}
		chain = append(fetched, p)
	}
	// The edge of the chain: events with prev events neither here nor
	// earlier in the chain.
	inChain := map[string]bool{}
	type gap struct {
		e       gomatrixserverlib.PDU
		missing []string
	}
	var gaps []gap
	for _, e := range chain {
		var missing []string
		for _, id := range e.PrevEventIDs() {
			if !in.inDAG(id) && !inChain[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			if e.EventID() == p.EventID() {
				return fail(fmt.Errorf("the server did not give the prev events of %s (%d missing)", p.EventID(), len(missing)))
			}
			gaps = append(gaps, gap{e, missing})
		}
		inChain[e.EventID()] = true
	}
	if len(gaps) > maxGapRoots {
		return fail(fmt.Errorf("too many gaps before %s", p.EventID()))
	}
	var outliers []gomatrixserverlib.PDU
	statesBefore := map[string][]string{}
	for _, g := range gaps {
		stateIDs, fetched, err := in.stateBeforeGap(ctx, g.e, g.missing)
		if err != nil {
			return fail(fmt.Errorf("could not fetch the state before %s: %w", g.e.EventID(), err))
		}
		statesBefore[g.e.EventID()] = stateIDs
		outliers = append(outliers, fetched...)
	}
	// Auth events still missing for the chain.
	for _, e := range chain {
		fetched, err := in.authEvents(ctx, e, outliers, inChain)
		if err != nil {
			return fail(fmt.Errorf("could not fetch the auth events of %s: %w", e.EventID(), err))
		}
		outliers = append(outliers, fetched...)
	}
	if err := in.inputOutliers(ctx, outliers); err != nil {
		return fail(err)
	}
	msg := &rsapi.InputMessage{RoomID: in.roomID, Events: raws(chain)}
	if len(statesBefore) > 0 {
		msg.StatesBefore = statesBefore
	}
	results := in.input(ctx, msg)
	// Only the event the server sent has a result to report.
	return map[string]error{p.EventID(): results[p.EventID()]}
}

// missingEvents asks the server for the events between this server's
// forward extremities and p (oldest first, verified, not already here).
func (in *intake) missingEvents(ctx context.Context, p gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	latest, err := in.f.rooms.QueryLatestEvents(ctx, in.roomID)
	if err != nil {
		return nil, err
	}
	res, err := in.f.client.LookupMissingEvents(ctx, in.f.cfg.ServerName, in.origin, in.roomID, fclient.MissingEvents{
		Limit: missingEventsLimit, EarliestEvents: latest, LatestEvents: []string{p.EventID()},
	}, in.verImpl.Version())
	if err != nil {
		return nil, err
	}
	evs := in.f.pulled(ctx, in.verImpl, in.roomID, rawJSONs(res.Events), p.PrevEventIDs(), missingEventsLimit)
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.EventID()
	}
	if err := in.kinds(ctx, ids); err != nil {
		return nil, err
	}
	evs = slices.DeleteFunc(evs, func(e gomatrixserverlib.PDU) bool { return in.inDAG(e.EventID()) || e.EventID() == p.EventID() })
	slices.SortStableFunc(evs, byDepth)
	var more []string
	for _, e := range evs {
		more = append(more, e.PrevEventIDs()...)
		more = append(more, e.AuthEventIDs()...)
	}
	return evs, in.kinds(ctx, more)
}

// stateBeforeGap fetches the state before e, whose prev events missing are
// not here, and the events of it not stored here (verified): with one
// missing prev event (as for a linear gap), the state after it, which is
// the state before it (/state_ids at it) followed by the event itself (as
// Synapse); with more, the state before e as the server has it (Synapse
// would resolve the states after each; the roomserver resolves the given
// state with those of the prev events it has).
func (in *intake) stateBeforeGap(ctx context.Context, e gomatrixserverlib.PDU, missing []string) ([]string, []gomatrixserverlib.PDU, error) {
	if len(missing) > 1 {
		return in.stateBefore(ctx, e)
	}
	m := missing[0]
	ids, fetched, err := in.stateAt(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	prev, err := in.fetchEvent(ctx, m)
	if err != nil {
		return nil, nil, fmt.Errorf("prev event %s: %w", m, err)
	}
	fetched = append(fetched, prev)
	if prev.StateKey() != nil {
		ids = append(ids, m) // the roomserver takes the last of a key and leaves it out if rejected
	}
	return ids, fetched, nil
}

// stateBefore fetches the state before an event as the server has it (see
// stateAt).
func (in *intake) stateBefore(ctx context.Context, e gomatrixserverlib.PDU) ([]string, []gomatrixserverlib.PDU, error) {
	return in.stateAt(ctx, e.EventID())
}

// stateAt fetches the state before an event from the server (/state_ids):
// the IDs, and the state and auth chain events not stored here (verified).
// Events the server does not give are left out of the state (as Synapse):
// the auth rules then reject those that need them.
func (in *intake) stateAt(ctx context.Context, eventID string) ([]string, []gomatrixserverlib.PDU, error) {
	ids, err := in.f.client.LookupStateIDs(ctx, in.f.cfg.ServerName, in.origin, in.roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	if len(ids.StateEventIDs) > maxJoinState || len(ids.AuthEventIDs) > maxJoinAuthChain {
		return nil, nil, fmt.Errorf("%d state and %d auth chain event IDs, more than %d and %d", len(ids.StateEventIDs), len(ids.AuthEventIDs),
			maxJoinState, maxJoinAuthChain)
	}
	all := append(append([]string(nil), ids.StateEventIDs...), ids.AuthEventIDs...)
	if err := in.kinds(ctx, all); err != nil {
		return nil, nil, err
	}
	var missing []string
	for _, id := range all {
		if !in.stored(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return ids.StateEventIDs, nil, nil
	}
	var fetched []gomatrixserverlib.PDU
	if len(missing) > stateByIDsLimit {
		st, err := in.f.client.LookupState(ctx, in.f.cfg.ServerName, in.origin, in.roomID, eventID, in.verImpl.Version())
		if err != nil {
			return nil, nil, err
		}
		want := make(map[string]bool, len(missing))
		for _, id := range missing {
			want[id] = true
		}
		fetched = in.f.verifyListed(ctx, in.verImpl, in.roomID, append(rawJSONs(st.StateEvents), rawJSONs(st.AuthEvents)...), want)
	} else {
		for _, id := range missing {
			pdu, err := in.fetchEvent(ctx, id)
			if err != nil {
				in.f.log.Info("could not fetch a state or auth chain event", slog.String("room_id", in.roomID),
					slog.String("event_id", id), slog.String("error", err.Error()))
				continue
			}
			fetched = append(fetched, pdu)
		}
	}
	got := make(map[string]bool, len(fetched))
	for _, f := range fetched {
		got[f.EventID()] = true
	}
	state := slices.DeleteFunc(slices.Clone(ids.StateEventIDs), func(id string) bool { return !in.stored(id) && !got[id] })
	if n := len(ids.StateEventIDs) - len(state); n > 0 {
		in.f.log.Info("state events left out, not given", slog.String("room_id", in.roomID), slog.String("event_id", eventID),
			slog.Int("count", n))
	}
	return state, fetched, nil
}

// fetchEvent fetches one event of the room from the server (verified).
func (in *intake) fetchEvent(ctx context.Context, id string) (gomatrixserverlib.PDU, error) {
	txn, err := in.f.client.GetEvent(ctx, in.f.cfg.ServerName, in.origin, id)
	if err != nil {
		return nil, err
	}
	for _, raw := range txn.PDUs {
		pdu, err := in.f.verifyEvent(ctx, in.verImpl, in.roomID, raw)
		if err != nil {
			return nil, err
		}
		if pdu.EventID() == id {
			return pdu, nil
		}
	}
	return nil, errors.New("not given")
}

// authEvents fetches the auth events of e that are neither stored here nor
// among have or the chain (verified), with /event_auth.
func (in *intake) authEvents(ctx context.Context, e gomatrixserverlib.PDU, have []gomatrixserverlib.PDU, inChain map[string]bool) ([]gomatrixserverlib.PDU, error) {
	haveIDs := make(map[string]bool, len(have))
	for _, h := range have {
		haveIDs[h.EventID()] = true
	}
	missing := false
	for _, id := range e.AuthEventIDs() {
		if !in.stored(id) && !haveIDs[id] && !inChain[id] {
			missing = true
		}
	}
	if !missing {
		return nil, nil
	}
	res, err := in.f.client.GetEventAuth(ctx, in.f.cfg.ServerName, in.origin, in.verImpl.Version(), in.roomID, e.EventID())
	if err != nil {
		return nil, err
	}
	// Only e's auth chain: reached from its auth events (and the create
	// event, which room version 12 implies).
	roots := e.AuthEventIDs()
	if in.verImpl.DomainlessRoomIDs() {
		roots = append(slices.Clone(roots), "$"+in.roomID[1:])
	}
	evs := in.f.reached(ctx, in.verImpl, in.roomID, rawJSONs(res.AuthEvents), roots, maxJoinAuthChain, gomatrixserverlib.PDU.AuthEventIDs)
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID()
	}
	if err := in.kinds(ctx, ids); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(evs, func(ev gomatrixserverlib.PDU) bool { return in.stored(ev.EventID()) || haveIDs[ev.EventID()] }), nil
}

// inputOutliers stores events as outliers, in inputs of bounded size.
func (in *intake) inputOutliers(ctx context.Context, pdus []gomatrixserverlib.PDU) error {
	err := in.f.inputOutliers(ctx, in.roomID, pdus)
	for _, p := range pdus {
		if err == nil {
			in.known[p.EventID()] = rsapi.KindOutlier
		}
	}
	return err
}

// inputOutliers stores events of a room as outliers, in inputs of bounded
// size (a large room's state does not fit one bus message). The roomserver
// sorts each input by auth events, so the events go out sorted.
func (f *FederationAPI) inputOutliers(ctx context.Context, roomID string, pdus []gomatrixserverlib.PDU) error {
	if len(pdus) == 0 {
		return nil
	}
	pdus = sortByAuth(pdus)
	var chunk []json.RawMessage
	size := 0
	send := func() error {
		if len(chunk) == 0 {
			return nil
		}
		_, err := f.input.Input(ctx, &rsapi.InputMessage{RoomID: roomID, Outliers: chunk})
		chunk, size = nil, 0
		return err
	}
	for _, p := range pdus {
		if size+len(p.JSON()) > outlierChunkBytes {
			if err := send(); err != nil {
				return err
			}
		}
		chunk = append(chunk, p.JSON())
		size += len(p.JSON())
	}
	return send()
}

// input submits events to the roomserver and returns each one's result.
func (in *intake) input(ctx context.Context, msg *rsapi.InputMessage) map[string]error {
	out := map[string]error{}
	res, err := in.f.input.Input(ctx, msg)
	if err != nil {
		for _, raw := range msg.Events {
			if pdu, perr := in.verImpl.NewEventFromTrustedJSON(raw, false); perr == nil {
				out[pdu.EventID()] = err
			}
		}
		return out
	}
	for _, r := range res.Events {
		if r.Rejected != "" {
			out[r.EventID] = fmt.Errorf("%w: %s", errRejected, r.Rejected)
			in.known[r.EventID] = rsapi.KindRejected
		} else {
			out[r.EventID] = nil
			in.known[r.EventID] = rsapi.KindNormal
		}
	}
	return out
}

// byDepth orders events by depth (oldest first in an honest DAG).
func byDepth(a, b gomatrixserverlib.PDU) int { return cmp.Compare(a.Depth(), b.Depth()) }

// sortByAuth orders events so that each comes after those of the list it
// names in auth_events, then by depth.
func sortByAuth(pdus []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	out := slices.Clone(pdus)
	slices.SortStableFunc(out, byDepth)
	return out
}

func raws(pdus []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		out[i] = p.JSON()
	}
	return out
}

func rawJSONs(evs gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = json.RawMessage(e)
	}
	return out
}
