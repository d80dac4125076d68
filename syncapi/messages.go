package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Limits of /messages and /context.
const (
	defaultPageLimit = 10
	maxPageLimit     = 1000
	// pageRounds bounds how many pages /messages reads to fill a chunk
	// when history visibility hides events.
	pageRounds = 5
)

// roomAccess is what a user may read of a room's history.
type roomAccess struct {
	roomID  string
	history []storage.MembershipChange
}

// access checks that a user may read a room's history: they are or were a
// member and have not forgotten the room since, or the room is world
// readable (then a forgotten room reads as one never joined, as in
// Synapse).
func (s *SyncAPI) access(ctx context.Context, roomID, userID string) (*roomAccess, error) {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	hist, err := storage.MembershipChanges(ctx, s.store.DB(), userID, math.MinInt64/2, math.MaxInt64/2, []string{roomID})
	if err != nil {
		return nil, err
	}
	if n := len(hist); n > 0 && (hist[n-1].Membership == spec.Leave || hist[n-1].Membership == spec.Ban) {
		forgot, err := storage.Forgotten(ctx, s.store.DB(), userID, roomID)
		if err != nil {
			return nil, err
		}
		if forgot {
			hist = nil
		}
	}
	if len(hist) == 0 {
		_, hv, err := storage.CurrentStateEvent(ctx, s.store.DB(), roomID, spec.MRoomHistoryVisibility, "")
		if err != nil {
			return nil, err
		}
		if hv == nil || historyVisibility(hv) != "world_readable" {
			return nil, mxerr.Forbidden("You aren't a member of the room")
		}
	}
	return &roomAccess{roomID: roomID, history: hist}, nil
}

// pageParams reads the limit and filter query parameters of /messages and
// /context.
func pageParams(r *http.Request) (limit int, f *filter.RoomEventFilter, err error) {
	q := r.URL.Query()
	limit = defaultPageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, mxerr.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, maxPageLimit)
	}
	if v := q.Get("filter"); v != "" {
		if f, err = filter.ParseRoomEventFilter([]byte(v)); err != nil {
			return 0, nil, mxerr.BadJSON("Invalid filter: %v", err)
		}
	}
	return limit, f, nil
}

// page reads visible events of a room from a boundary in one direction.
// next is the boundary to go on from (below, or after, every event it
// read, visible or not); more reports that events may remain.
func (s *SyncAPI) page(ctx context.Context, a *roomAccess, userID string, from, to int64, forward bool, limit int, f *filter.RoomEventFilter) (out []storage.Event, next int64, more bool, err error) {
	ignored, err := s.ignoredUsers(ctx, userID)
	if err != nil {
		return nil, 0, false, err
	}
	cond, args := timelineCond(f)
	ic, icArgs := ignoreCond(ignored)
	cond, args = andCond(cond, args, ic, icArgs)
	next = from
	for range pageRounds {
		if len(out) >= limit {
			break
		}
		var batch []storage.Event
		if forward {
			batch, err = storage.RoomEvents(ctx, s.store.DB(), a.roomID, next-1, to, true, limit-len(out), cond, args)
		} else {
			batch, err = storage.RoomEvents(ctx, s.store.DB(), a.roomID, to-1, next, false, limit-len(out), cond, args)
		}
		if err != nil {
			return nil, 0, false, err
		}
		if len(batch) == 0 {
			return out, next, false, nil
		}
		last := batch[len(batch)-1].Pos
		full := len(batch) == limit-len(out)
		out = append(out, visibleEvents(batch, userID, a.history)...)
		if forward {
			next = last + 1
		} else {
			next = last
		}
		if !full {
			return out, next, false, nil
		}
	}
	return out, next, true, nil
}

// Backfill on /messages.
const (
	// backfillRounds bounds the backfill requests of one /messages call.
	backfillRounds = 3
	// backfillScan is how many of a room's oldest events are searched for
	// those whose prev events are missing (where history goes on).
	backfillScan = 20
	// Each request asks other servers for this many events, at least.
	minBackfill, maxBackfill = 20, 100
)

// backfillPage goes on with a backward page that reached the start of what
// the read model holds of a room (it returned fewer events than asked):
// unless that start is the room's create event, it has the federation API
// fetch older history (which comes back through RoomOutput), waits for the
// read model and reads on, for at most backfillRounds requests. Users who
// may not see the room's history (never joined, and it is not world
// readable) never cause a backfill. A failed request is logged and the page
// returns what it has, with an end token when it has events, so that the
// client may try again.
func (s *SyncAPI) backfillPage(ctx context.Context, a *roomAccess, userID string, next, to int64, limit int, f *filter.RoomEventFilter,
	evs []storage.Event, asked map[string]bool) ([]storage.Event, int64, bool, error) {
	if s.cfg.Backfiller == nil || !mayBackfill(a) {
		return evs, next, false, nil
	}
	for range backfillRounds {
		if len(evs) >= limit {
			return evs, next, true, nil
		}
		oldest, err := storage.OldestEvents(ctx, s.store.DB(), a.roomID, backfillScan)
		if err != nil {
			return nil, 0, false, err
		}
		if len(oldest) == 0 || oldest[0].Type == spec.MRoomCreate || to > oldest[0].Pos {
			return evs, next, false, nil // the whole history, or the page stops before its start
		}
		from, err := s.backwardExtremities(ctx, oldest)
		if err != nil {
			return nil, 0, false, err
		}
		for _, id := range from {
			asked[id] = true
		}
		n, err := s.cfg.Backfiller.Backfill(ctx, a.roomID, from, min(max(limit-len(evs), minBackfill), maxBackfill))
		if err != nil {
			s.log.Warn("backfill failed", "room_id", a.roomID, "error", err.Error())
			return evs, next, len(evs) > 0, nil
		}
		if n == 0 {
			return evs, next, false, nil
		}
		if err := s.catchUp(ctx, "", a.roomID); err != nil {
			return nil, 0, false, err
		}
		batch, nxt, more, err := s.page(ctx, a, userID, next, to, false, limit-len(evs), f)
		if err != nil {
			return nil, 0, false, err
		}
		evs, next = append(evs, batch...), nxt
		if more {
			return evs, next, true, nil
		}
	}
	// Out of rounds: there may be more to fetch on the next call.
	return evs, next, true, nil
}

// backfillEvent backfills a room until the read model holds an event
// another server named: first as /messages would, on from the start of
// what the read model holds (so that history stays in order below it),
// for at most backfillRounds requests; then, when the event is further
// back, from the event itself. It returns the event, nil when it could
// not be had (a failed request is logged).
func (s *SyncAPI) backfillEvent(ctx context.Context, roomID, eventID string) (*storage.Event, error) {
	held := func() (*storage.Event, error) {
		if err := s.catchUp(ctx, "", roomID); err != nil {
			return nil, err
		}
		evs, err := storage.EventsByID(ctx, s.store.DB(), []string{eventID})
		return evs[eventID], err
	}
	for range backfillRounds {
		oldest, err := storage.OldestEvents(ctx, s.store.DB(), roomID, backfillScan)
		if err != nil {
			return nil, err
		}
		if len(oldest) == 0 || oldest[0].Type == spec.MRoomCreate {
			break
		}
		from, err := s.backwardExtremities(ctx, oldest)
		if err != nil {
			return nil, err
		}
		n, err := s.cfg.Backfiller.Backfill(ctx, roomID, from, maxBackfill)
		if err != nil {
			s.log.Info("backfill for timestamp_to_event failed", "room_id", roomID, "error", err.Error())
			break
		}
		if n == 0 {
			break
		}
		if e, err := held(); err != nil || e != nil {
			return e, err
		}
	}
	if _, err := s.cfg.Backfiller.Backfill(ctx, roomID, []string{eventID}, timestampBackfill); err != nil {
		s.log.Info("backfill of a timestamp_to_event answer failed", "room_id", roomID, "event_id", eventID, "error", err.Error())
		return nil, nil
	}
	return held()
}

// maxGapsBackfilled bounds the gaps of one page backfilled.
const maxGapsBackfilled = 5

// backfillGaps fetches the history missing before the events of a
// backward page whose prev events the read model lacks: gaps in what it
// holds (the room was rejoined after this server left it, catching up
// over federation stopped short, an earlier backfill stopped there). The
// history comes in below what the read model holds, so the next pages
// reach it (history backfilled later lies lower: the messages of a gap
// come in order, though after older events the server held before); a
// failed request is logged.
func (s *SyncAPI) backfillGaps(ctx context.Context, a *roomAccess, evs []storage.Event, limit int, asked map[string]bool) (int, error) {
	if s.cfg.Backfiller == nil || !mayBackfill(a) {
		return 0, nil
	}
	gaps, err := s.afterGaps(ctx, evs)
	if err != nil {
		return 0, err
	}
	var from []string
	for _, id := range gaps {
		if len(from) < maxGapsBackfilled && !asked[id] {
			from = append(from, id)
		}
	}
	if len(from) == 0 {
		return 0, nil
	}
	n, err := s.cfg.Backfiller.Backfill(ctx, a.roomID, from, min(max(limit, minBackfill), maxBackfill))
	if err != nil {
		s.log.Warn("backfill of a gap failed", "room_id", a.roomID, "error", err.Error())
		return 0, nil
	}
	if n == 0 {
		return 0, nil
	}
	return n, s.catchUp(ctx, "", a.roomID)
}

// prevEventIDs returns the prev_events of an event's JSON (room versions
// 1 and 2 give [id, hashes] pairs).
func prevEventIDs(eventJSON []byte) []string {
	var out []string
	for _, p := range gjson.GetBytes(eventJSON, "prev_events").Array() {
		id := p.Str
		if p.IsArray() {
			id = p.Array()[0].Str
		}
		if id != "" {
			out = append(out, id)
		}
	}
	return out
}

// mayBackfill: the user joined the room at some point, or (no membership)
// it is world readable.
func mayBackfill(a *roomAccess) bool {
	if len(a.history) == 0 {
		return true
	}
	for _, c := range a.history {
		if c.Membership == spec.Join {
			return true
		}
	}
	return false
}

// backwardExtremities returns, of a room's oldest events, those whose prev
// events the read model lacks (the oldest event when it finds none).
func (s *SyncAPI) backwardExtremities(ctx context.Context, oldest []storage.Event) ([]string, error) {
	out, err := s.afterGaps(ctx, oldest)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		out = []string{oldest[0].EventID}
	}
	return out, nil
}

// afterGaps returns the IDs of the events whose prev events the read model
// lacks, in the order given, with one read of those prev events.
func (s *SyncAPI) afterGaps(ctx context.Context, evs []storage.Event) ([]string, error) {
	prevs := make([][]string, len(evs))
	var all []string
	for i, e := range evs {
		prevs[i] = prevEventIDs(e.JSON)
		all = append(all, prevs[i]...)
	}
	if len(all) == 0 {
		return nil, nil
	}
	held, err := storage.EventsByID(ctx, s.store.DB(), all)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, e := range evs {
		if slices.ContainsFunc(prevs[i], func(id string) bool { return held[id] == nil }) {
			out = append(out, e.EventID)
		}
	}
	return out, nil
}

// stateFloor moves a position below where the read model's state of a
// room begins (backfilled history) up to it: the state of that history is
// unknown, and the earliest known state is the best answer.
func (s *SyncAPI) stateFloor(ctx context.Context, roomID string, pos int64) (int64, error) {
	if pos > 0 {
		return pos, nil
	}
	first, found, err := storage.FirstStatePos(ctx, s.store.DB(), roomID)
	if err != nil || !found {
		return pos, err
	}
	return max(pos, first), nil
}

// lazyMembers returns the member events, at position at, of the senders of
// events (when the filter lazily loads members).
func (s *SyncAPI) lazyMembers(ctx context.Context, roomID string, at int64, evs []storage.Event, f *filter.RoomEventFilter, fm *formatter) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	if f == nil || !f.LazyLoadMembers || len(evs) == 0 {
		return out, nil
	}
	seen := map[string]bool{}
	var members []string
	for _, e := range evs {
		if !seen[e.Sender] {
			seen[e.Sender] = true
			members = append(members, e.Sender)
		}
	}
	at, err := s.stateFloor(ctx, roomID, at)
	if err != nil {
		return nil, err
	}
	states, err := storage.States(ctx, s.store.DB(), []storage.StateQuery{{RoomID: roomID, At: at, Since: math.MinInt64 / 2, Lazy: true, MembersOnly: true, Members: members}})
	if err != nil {
		return nil, err
	}
	for _, row := range states[roomID] {
		if row.Type == spec.MRoomMember {
			out = append(out, fm.state(row.EventID, row.JSON))
		}
	}
	return out, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/messages
func (s *SyncAPI) getMessages(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	// Who may read the room comes first: a room out of the user's reach
	// is 403 whatever the parameters (as in Synapse).
	if err := s.catchUp(ctx, dev.UserID, httputil.Vars(r)["roomId"]); err != nil {
		return nil, err
	}
	a, err := s.access(ctx, httputil.Vars(r)["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	forward := false
	switch q.Get("dir") {
	case "b":
	case "f":
		forward = true
	case "":
		return nil, mxerr.MissingParam("Missing dir")
	default:
		return nil, mxerr.InvalidParam("dir must be b or f")
	}
	limit, f, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	from := s.pos.pdu.Load() + 1
	if forward {
		from = math.MinInt64 / 2
	}
	if v := q.Get("from"); v != "" {
		if from, err = parseBoundary(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
	}
	to := int64(math.MinInt64 / 2)
	if forward {
		to = math.MaxInt64 / 2
	}
	if v := q.Get("to"); v != "" {
		if to, err = parseBoundary(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid to token")
		}
	}
	evs, next, more, err := s.page(ctx, a, dev.UserID, from, to, forward, limit, f)
	if err != nil {
		return nil, err
	}
	if !forward {
		asked := map[string]bool{}
		if !more && len(evs) < limit {
			// The page reached the start of what is held.
			if evs, next, more, err = s.backfillPage(ctx, a, dev.UserID, next, to, limit, f, evs, asked); err != nil {
				return nil, err
			}
		}
		// Gaps in what is held, for the next pages.
		if n, err := s.backfillGaps(ctx, a, evs, limit, asked); err != nil {
			return nil, err
		} else if n > 0 {
			more = true
		}
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	fm.withMemberships(a.roomID, a.history)
	if err := s.bundleRelations(ctx, fm, evs); err != nil {
		return nil, err
	}
	chunk := make([]json.RawMessage, len(evs))
	for i := range evs {
		chunk[i] = fm.event(&evs[i])
	}
	body := map[string]any{"chunk": chunk, "start": formatBoundary(from)}
	if more && next != from {
		body["end"] = formatBoundary(next)
	}
	newest := int64(math.MinInt64 / 2)
	for _, e := range evs {
		newest = max(newest, e.Pos)
	}
	state, err := s.lazyMembers(ctx, a.roomID, newest, evs, f, fm)
	if err != nil {
		return nil, err
	}
	if len(state) > 0 {
		body["state"] = state
	}
	return body, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
func (s *SyncAPI) getContext(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	limit, f, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx, dev.UserID, vars["roomId"]); err != nil {
		return nil, err
	}
	a, err := s.access(ctx, vars["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	evs, err := storage.EventsByID(ctx, s.store.DB(), []string{vars["eventId"]})
	if err != nil {
		return nil, err
	}
	target, ok := evs[vars["eventId"]]
	if !ok || target.RoomID != a.roomID || len(visibleEvents([]storage.Event{*target}, dev.UserID, a.history)) == 0 {
		return nil, mxerr.NotFound("Event not found")
	}
	before, _, _, err := s.page(ctx, a, dev.UserID, target.Pos, math.MinInt64/2, false, limit/2, f)
	if err != nil {
		return nil, err
	}
	after, _, _, err := s.page(ctx, a, dev.UserID, target.Pos+1, math.MaxInt64/2, true, limit-limit/2, f)
	if err != nil {
		return nil, err
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	fm.withMemberships(a.roomID, a.history)
	if err := s.bundleRelations(ctx, fm, before, []storage.Event{*target}, after); err != nil {
		return nil, err
	}
	format := func(list []storage.Event) []json.RawMessage {
		out := make([]json.RawMessage, len(list))
		for i := range list {
			out[i] = fm.event(&list[i])
		}
		return out
	}
	start, end := target.Pos, target.Pos+1
	if len(before) > 0 {
		start = before[len(before)-1].Pos
	}
	if len(after) > 0 {
		end = after[len(after)-1].Pos + 1
	}
	lastPos, err := s.stateFloor(ctx, a.roomID, end-1)
	if err != nil {
		return nil, err
	}
	rows, err := storage.States(ctx, s.store.DB(), []storage.StateQuery{{RoomID: a.roomID, At: lastPos, Since: math.MinInt64 / 2,
		Lazy: f != nil && f.LazyLoadMembers, Members: senders(append(append(append([]storage.Event{}, before...), *target), after...))}})
	if err != nil {
		return nil, err
	}
	state := []json.RawMessage{}
	for _, row := range rows[a.roomID] {
		state = append(state, fm.state(row.EventID, row.JSON))
	}
	return map[string]any{
		"event":         fm.event(target),
		"events_before": format(before),
		"events_after":  format(after),
		"start":         formatBoundary(start),
		"end":           formatBoundary(end),
		"state":         state,
	}, nil
}

func senders(evs []storage.Event) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range evs {
		if !seen[e.Sender] {
			seen[e.Sender] = true
			out = append(out, e.Sender)
		}
	}
	return out
}

// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
func (s *SyncAPI) getTimestampToEvent(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return nil, mxerr.MissingParam("Missing ts")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, mxerr.InvalidParam("ts must be an integer")
	}
	var forward bool
	switch q.Get("dir") {
	case "f":
		forward = true
	case "b":
	case "":
		return nil, mxerr.MissingParam("Missing dir")
	default:
		return nil, mxerr.InvalidParam("dir must be f or b")
	}
	if err := s.catchUp(ctx, dev.UserID, httputil.Vars(r)["roomId"]); err != nil {
		return nil, err
	}
	a, err := s.access(ctx, httputil.Vars(r)["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	evs, err := storage.EventAtTimestamp(ctx, s.store.DB(), a.roomID, ts, forward, s.pos.pdu.Load(), 100)
	if err != nil {
		return nil, err
	}
	var local *storage.Event
	if visible := visibleEvents(evs, dev.UserID, a.history); len(visible) > 0 {
		local = &visible[0]
	}
	if e, err := s.remoteEventAt(ctx, a, dev.UserID, ts, forward, local); err != nil {
		return nil, err
	} else if e != nil {
		local = e
	}
	if local != nil {
		return map[string]any{"event_id": local.EventID, "origin_server_ts": local.OriginTS}, nil
	}
	return nil, mxerr.NotFound("No event found at or %s %d", map[bool]string{true: "after", false: "before"}[forward], ts)
}

// timestampBackfill is how many events a /timestamp_to_event backfills
// with the event another server found.
const timestampBackfill = 20

// remoteEventAt asks the room's other servers for the event at ts when
// this server's answer (local, nil when none) may be incomplete: there is
// none, or a gap in the room's history lies between it and ts (looking
// forwards, it follows a gap; looking backwards, a gap follows it). An
// event they find that is closer to ts is backfilled when unknown (as the
// spec asks), and returned when the user may see it; otherwise nil. A
// failed request is logged: the local answer stands.
func (s *SyncAPI) remoteEventAt(ctx context.Context, a *roomAccess, userID string, ts int64, forward bool, local *storage.Event) (*storage.Event, error) {
	if s.cfg.Backfiller == nil || !mayBackfill(a) {
		return nil, nil
	}
	if local != nil {
		gap := local.AfterGap
		if !forward {
			var err error
			if gap, err = storage.GapFollows(ctx, s.store.DB(), a.roomID, local.Pos); err != nil {
				return nil, err
			}
		}
		if !gap {
			return nil, nil
		}
	}
	remote, found, err := s.cfg.Backfiller.EventAtTimestamp(ctx, a.roomID, ts, forward)
	if err != nil {
		s.log.Info("timestamp_to_event over federation failed", "room_id", a.roomID, "error", err.Error())
		return nil, nil
	}
	if !found || remote.EventID == "" {
		return nil, nil
	}
	if local != nil && (local.EventID == remote.EventID || (forward && remote.OriginTS >= local.OriginTS) || (!forward && remote.OriginTS <= local.OriginTS)) {
		return nil, nil // the local event is as close
	}
	held, err := storage.EventsByID(ctx, s.store.DB(), []string{remote.EventID})
	if err != nil {
		return nil, err
	}
	e := held[remote.EventID]
	if e == nil {
		if e, err = s.backfillEvent(ctx, a.roomID, remote.EventID); err != nil {
			return nil, err
		}
	}
	if e == nil || e.RoomID != a.roomID {
		return nil, nil
	}
	if len(visibleEvents([]storage.Event{*e}, userID, a.history)) == 0 {
		return nil, nil
	}
	return e, nil
}

var _ = errors.New
