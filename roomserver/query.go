package roomserver

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// roomHead returns a room's committed head for a query.
func (d *dbctx) roomHead(ctx context.Context, roomID string) (*roomHead, error) {
	h, err := d.head(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrRoomNotFound
	}
	return h, err
}

// QueryRoomInfo implements api.QueryAPI.
func (r *Roomserver) QueryRoomInfo(ctx context.Context, roomID string) (*api.RoomInfo, error) {
	h, err := r.reader().roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return &api.RoomInfo{RoomID: h.id, Version: h.version, HasState: h.snapshot != 0}, nil
}

// stateQuery returns the given tuples (or everything) of a snapshot.
func (d *dbctx) stateQuery(ctx context.Context, s state.Snapshot, tuples []api.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	if len(tuples) == 0 {
		return d.stateEvents(ctx, s)
	}
	return d.lookup(ctx, s, tuples)
}

// QueryCurrentState implements api.QueryAPI.
func (r *Roomserver) QueryCurrentState(ctx context.Context, roomID string, tuples ...api.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s, err := d.snapshot(ctx, h.snapshot)
	if err != nil {
		return nil, err
	}
	return d.stateQuery(ctx, s, tuples)
}

// QueryStateAfterEvent implements api.QueryAPI.
func (r *Roomserver) QueryStateAfterEvent(ctx context.Context, roomID, eventID string, tuples ...api.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	d := r.reader()
	evs, err := d.eventsByID(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	e, ok := evs[eventID]
	if !ok || e.Kind != storage.KindNormal || e.pdu.RoomID().String() != roomID {
		return nil, api.ErrEventNotFound
	}
	s, err := d.snapshot(ctx, e.StateAfter)
	if err != nil {
		return nil, err
	}
	return d.stateQuery(ctx, s, tuples)
}

// QueryEvents implements api.QueryAPI.
func (r *Roomserver) QueryEvents(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error) {
	evs, err := r.reader().eventsByID(ctx, eventIDs)
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, id := range eventIDs {
		if e, ok := evs[id]; ok && e.Kind != storage.KindRejected {
			out = append(out, e.pdu)
		}
	}
	return out, nil
}

// QueryMembership implements api.QueryAPI.
func (r *Roomserver) QueryMembership(ctx context.Context, roomID, userID string) (*api.MemberInfo, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	m, err := storage.SelectMembership(ctx, d.q, h.nid, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return &api.MemberInfo{RoomID: roomID, UserID: userID}, nil
	}
	if err != nil {
		return nil, err
	}
	ids, err := d.eventIDs(ctx, []int64{m.EventNID})
	if err != nil {
		return nil, err
	}
	return &api.MemberInfo{RoomID: roomID, UserID: userID, Membership: m.Membership, EventID: ids[m.EventNID], Forgotten: m.Forgotten}, nil
}

// QueryRoomsForUser implements api.QueryAPI.
func (r *Roomserver) QueryRoomsForUser(ctx context.Context, userID string, memberships ...string) ([]api.MemberInfo, error) {
	d := r.reader()
	ms, err := storage.SelectRoomsForUser(ctx, d.q, userID, memberships)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	roomNIDs := make([]int64, len(ms))
	eventNIDs := make([]int64, len(ms))
	for i, m := range ms {
		roomNIDs[i], eventNIDs[i] = m.RoomNID, m.EventNID
	}
	rooms, err := storage.SelectRoomIDs(ctx, d.q, roomNIDs)
	if err != nil {
		return nil, err
	}
	ids, err := d.eventIDs(ctx, eventNIDs)
	if err != nil {
		return nil, err
	}
	out := make([]api.MemberInfo, len(ms))
	for i, m := range ms {
		out[i] = api.MemberInfo{RoomID: rooms[m.RoomNID], UserID: userID, Membership: m.Membership, EventID: ids[m.EventNID], Forgotten: m.Forgotten}
	}
	return out, nil
}

// QueryLatestEvents implements api.QueryAPI.
func (r *Roomserver) QueryLatestEvents(ctx context.Context, roomID string) ([]string, error) {
	d := r.reader()
	h, err := d.roomHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ids, err := d.eventIDs(ctx, h.latest)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(h.latest))
	for _, n := range h.latest {
		out = append(out, ids[n])
	}
	return out, nil
}

// QueryTransactionID implements api.QueryAPI.
func (r *Roomserver) QueryTransactionID(ctx context.Context, userID, deviceID, eventID string) (string, error) {
	if deviceID == "" {
		return "", nil
	}
	key, err := storage.SelectTxnOfEvent(ctx, r.reader().q, userID, deviceID, eventID)
	if err != nil || key == "" {
		return "", err
	}
	return txnIDOf(key), nil
}

// QueryEventVisible implements api.QueryAPI: the history visibility rules
// of the client-server API, evaluated at the event.
func (r *Roomserver) QueryEventVisible(ctx context.Context, userID, eventID string) (bool, error) {
	d := r.reader()
	evs, err := d.eventsByID(ctx, []string{eventID})
	if err != nil {
		return false, err
	}
	e, ok := evs[eventID]
	if !ok || e.Kind != storage.KindNormal || e.SoftFailed {
		return false, api.ErrEventNotFound
	}
	return d.visible(ctx, e, userID)
}

// Visibility ranks, most permissive first.
var visibilityRank = map[string]int{"world_readable": 0, "shared": 1, "invited": 2, "joined": 3}

// visible applies the spec's rules: world_readable history is public; a
// user sees events sent while joined; with "shared", also those sent before
// a later join; with "invited", those sent while invited. A user's own
// membership event counts with the more joined of the memberships around it,
// and a history visibility change with the more permissive setting.
func (d *dbctx) visible(ctx context.Context, e *event, userID string) (bool, error) {
	before, err := d.snapshot(ctx, e.StateBefore)
	if err != nil {
		return false, err
	}
	pdus, err := d.lookup(ctx, before, []gomatrixserverlib.StateKeyTuple{
		{EventType: spec.MRoomHistoryVisibility}, {EventType: spec.MRoomMember, StateKey: userID},
	})
	if err != nil {
		return false, err
	}
	visibility, membership := "shared", ""
	for _, p := range pdus {
		switch p.Type() {
		case spec.MRoomHistoryVisibility:
			if v, err := p.HistoryVisibility(); err == nil {
				visibility = string(v)
			}
		case spec.MRoomMember:
			membership, _ = p.Membership()
		}
	}
	if e.pdu.Type() == spec.MRoomHistoryVisibility {
		if v, err := e.pdu.HistoryVisibility(); err == nil {
			if rank, ok := visibilityRank[string(v)]; ok && rank < visibilityRank[visibility] {
				visibility = string(v)
			}
		}
	}
	if e.pdu.Type() == spec.MRoomMember && e.pdu.StateKeyEquals(userID) {
		if m, err := e.pdu.Membership(); err == nil && m == api.Join {
			membership = api.Join
		}
	}
	switch {
	case visibility == "world_readable", membership == api.Join:
		return true, nil
	case visibility == "invited" && membership == api.Invite:
		return true, nil
	case visibility == "shared":
		return storage.JoinedSince(ctx, d.q, e.RoomNID, userID, e.NID)
	}
	return false, nil
}
