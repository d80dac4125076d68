package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

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
// member, or the room is world readable.
func (s *SyncAPI) access(ctx context.Context, roomID, userID string) (*roomAccess, error) {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	hist, err := storage.MembershipChanges(ctx, s.store.DB(), userID, math.MinInt64/2, math.MaxInt64/2, []string{roomID})
	if err != nil {
		return nil, err
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
func (s *SyncAPI) page(ctx context.Context, a *roomAccess, userID string, from, to int64, forward bool, limit int, f *filter.RoomEventFilter) ([]storage.Event, bool, error) {
	cond, args := timelineCond(f)
	var out []storage.Event
	for range pageRounds {
		if len(out) >= limit {
			break
		}
		var batch []storage.Event
		var err error
		if forward {
			batch, err = storage.RoomEvents(ctx, s.store.DB(), a.roomID, from-1, to, true, limit-len(out), cond, args)
		} else {
			batch, err = storage.RoomEvents(ctx, s.store.DB(), a.roomID, to-1, from, false, limit-len(out), cond, args)
		}
		if err != nil {
			return nil, false, err
		}
		if len(batch) == 0 {
			return out, false, nil
		}
		last := batch[len(batch)-1].Pos
		full := len(batch) == limit-len(out)
		out = append(out, visibleEvents(batch, userID, a.history)...)
		if forward {
			from = last + 1
		} else {
			from = last
		}
		if !full {
			return out, false, nil
		}
	}
	return out, true, nil
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
	if err := s.catchUp(ctx); err != nil {
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
	a, err := s.access(ctx, httputil.Vars(r)["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	evs, more, err := s.page(ctx, a, dev.UserID, from, to, forward, limit, f)
	if err != nil {
		return nil, err
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	chunk := make([]json.RawMessage, len(evs))
	for i := range evs {
		chunk[i] = fm.event(&evs[i])
	}
	body := map[string]any{"chunk": chunk, "start": formatBoundary(from)}
	if len(evs) > 0 && more {
		last := evs[len(evs)-1].Pos
		if forward {
			last++
		}
		body["end"] = formatBoundary(last)
	}
	newest := int64(0)
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
	if err := s.catchUp(ctx); err != nil {
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
	before, _, err := s.page(ctx, a, dev.UserID, target.Pos, math.MinInt64/2, false, limit/2, f)
	if err != nil {
		return nil, err
	}
	after, _, err := s.page(ctx, a, dev.UserID, target.Pos+1, math.MaxInt64/2, true, limit-limit/2, f)
	if err != nil {
		return nil, err
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
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
	lastPos := end - 1
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
	if err := s.catchUp(ctx); err != nil {
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
	if visible := visibleEvents(evs, dev.UserID, a.history); len(visible) > 0 {
		return map[string]any{"event_id": visible[0].EventID, "origin_server_ts": visible[0].OriginTS}, nil
	}
	return nil, mxerr.NotFound("No event found at or %s %d", map[bool]string{true: "after", false: "before"}[forward], ts)
}

var _ = errors.New
