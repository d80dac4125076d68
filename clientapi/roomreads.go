package clientapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/clientevent"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// readableState decides which state of a room a user may read: the current
// state while joined, or when the history is world readable; the state at
// their departure after leaving (as Synapse does) or being banned (the
// spec's "left the room"; Synapse refuses the banned, with a comment
// doubting it should), unless they have forgotten the room since. It
// returns the event to read the state after ("" for the current state).
func (c *ClientAPI) readableState(ctx context.Context, roomID, userID string) (string, error) {
	if _, err := c.roomInfo(ctx, roomID); err != nil {
		return "", err
	}
	m, err := c.rooms.QueryMembership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if m.Membership == rsapi.Join {
		return "", nil
	}
	hv, err := c.currentEvent(ctx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil {
		return "", err
	}
	if hv != nil {
		if v, err := hv.HistoryVisibility(); err == nil && v == gomatrixserverlib.HistoryVisibilityWorldReadable {
			return "", nil
		}
	}
	if (m.Membership == rsapi.Leave || m.Membership == rsapi.Ban) && m.EventID != "" && !m.Forgotten {
		return m.EventID, nil
	}
	return "", mxerr.Forbidden("You aren't a member of the room")
}

// readState returns state the user may read (the given tuples, or all).
func (c *ClientAPI) readState(ctx context.Context, roomID, userID string, tuples ...rsapi.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	at, err := c.readableState(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if at == "" {
		return c.rooms.QueryCurrentState(ctx, roomID, tuples...)
	}
	return c.rooms.QueryStateAfterEvent(ctx, roomID, at, tuples...)
}

// requestedState is the whole state of the request's {roomId} that the
// caller may read.
func (c *ClientAPI) requestedState(r *http.Request) ([]gomatrixserverlib.PDU, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	return c.readState(r.Context(), roomID, httputil.DeviceFrom(r.Context()).UserID)
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (c *ClientAPI) getState(r *http.Request) (any, error) {
	pdus, err := c.requestedState(r)
	if err != nil {
		return nil, err
	}
	return clientevent.List(pdus, clientevent.WithRoomID), nil
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (c *ClientAPI) getStateEvent(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	vars := httputil.Vars(r)
	pdus, err := c.readState(r.Context(), roomID, httputil.DeviceFrom(r.Context()).UserID,
		rsapi.StateKeyTuple{EventType: vars["eventType"], StateKey: vars["stateKey"]})
	if err != nil {
		return nil, err
	}
	if len(pdus) == 0 {
		return nil, mxerr.NotFound("The room has no state event of type %s with state key %q", vars["eventType"], vars["stateKey"])
	}
	switch r.URL.Query().Get("format") {
	case "event":
		return clientevent.New(pdus[0], clientevent.WithRoomID), nil
	case "", "content":
		return json.RawMessage(pdus[0].Content()), nil
	default:
		return nil, mxerr.InvalidParam("format must be content or event")
	}
}

// GET /_matrix/client/v3/rooms/{roomId}/joined_members: the current joined
// members, for members of the room (or anyone, when its history is world
// readable); after leaving or being banned, 403 even when the history is
// world readable, as in Synapse (which checks with allow_departed_users),
// until the user forgets the room. Every member has both display_name and
// avatar_url, null when unset (as in Synapse).
func (c *ClientAPI) getJoinedMembers(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	userID := httputil.DeviceFrom(ctx).UserID
	at, err := c.readableState(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if at != "" {
		return nil, mxerr.Forbidden("You are not a member of the room")
	}
	m, err := c.rooms.QueryMembership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if (m.Membership == rsapi.Leave || m.Membership == rsapi.Ban) && m.EventID != "" && !m.Forgotten {
		return nil, mxerr.Forbidden("You are no longer a member of the room")
	}
	pdus, err := c.rooms.QueryCurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	type member struct {
		DisplayName *string `json:"display_name"`
		AvatarURL   *string `json:"avatar_url"`
	}
	joined := map[string]member{}
	for _, p := range pdus {
		if m, _ := p.Membership(); p.Type() != spec.MRoomMember || m != rsapi.Join {
			continue
		}
		var content struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(p.Content(), &content)
		joined[*p.StateKey()] = member{DisplayName: content.DisplayName, AvatarURL: content.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}

// GET /_matrix/client/v3/joined_rooms
func (c *ClientAPI) getJoinedRooms(r *http.Request) (any, error) {
	rooms, err := c.rooms.QueryRoomsForUser(r.Context(), httputil.DeviceFrom(r.Context()).UserID, rsapi.Join)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(rooms))
	for i, m := range rooms {
		ids[i] = m.RoomID
	}
	return map[string]any{"joined_rooms": ids}, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}: an event the user
// may see under the room's history visibility; any other is "not found".
func (c *ClientAPI) getEvent(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	eventID := httputil.Vars(r)["eventId"]
	notFound := mxerr.NotFound("Event not found")
	pdus, err := c.rooms.QueryEvents(r.Context(), []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(pdus) == 0 || pdus[0].RoomID().String() != roomID {
		return nil, notFound
	}
	dev := httputil.DeviceFrom(r.Context())
	ok, err := c.rooms.QueryEventVisible(r.Context(), dev.UserID, eventID)
	if errors.Is(err, rsapi.ErrEventNotFound) || (err == nil && !ok) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	ev := clientevent.New(pdus[0], clientevent.WithRoomID)
	unsigned := map[string]string{}
	// The sender's device that sent it sees its transaction ID.
	if string(pdus[0].SenderID()) == dev.UserID {
		txnID, err := c.rooms.QueryTransactionID(r.Context(), dev.UserID, dev.DeviceID, eventID)
		if err != nil {
			return nil, err
		}
		if txnID != "" {
			unsigned["transaction_id"] = txnID
		}
	}
	// The user's membership at the event, its own change included
	// (MSC4115); events outside the room's timeline (outliers) go without.
	after, err := c.rooms.QueryStateAfterEvent(r.Context(), roomID, eventID, rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: dev.UserID})
	switch {
	case errors.Is(err, rsapi.ErrEventNotFound):
	case err != nil:
		return nil, err
	case len(after) > 0:
		unsigned["membership"], _ = after[0].Membership()
	default:
		unsigned["membership"] = spec.Leave
	}
	for k, v := range unsigned {
		u := ev.Unsigned
		if len(u) == 0 {
			u = json.RawMessage(`{}`)
		}
		if ev.Unsigned, err = sjson.SetBytes(u, k, v); err != nil {
			return nil, err
		}
	}
	// Its bundled aggregations (threads, references, the latest edit).
	if c.cfg.Relations != nil {
		rel, err := c.cfg.Relations.BundledAggregations(r.Context(), dev.UserID, []string{eventID})
		if err != nil {
			return nil, err
		}
		if agg, ok := rel[eventID]; ok {
			u := ev.Unsigned
			if len(u) == 0 {
				u = json.RawMessage(`{}`)
			}
			if ev.Unsigned, err = sjson.SetRawBytes(u, `m\.relations`, agg); err != nil {
				return nil, err
			}
		}
	}
	return ev, nil
}

// mutualRoomsBatch is how many rooms one /mutual_rooms answer lists, as
// Synapse's.
const mutualRoomsBatch = 100

// GET /_matrix/client/v1/mutual_rooms?user_id=&from= (mutual_rooms.md): the
// rooms where both the caller and user_id are joined, in room ID order, a
// batch at a time; from and next_batch are the last room ID of the
// previous batch, base64url-encoded. Another server's user counts too:
// this server knows the members of the rooms it is in.
func (c *ClientAPI) getMutualRooms(r *http.Request) (any, error) {
	me := httputil.DeviceFrom(r.Context()).UserID
	q := r.URL.Query()
	other := q.Get("user_id")
	if other == "" {
		return nil, mxerr.MissingParam("Missing user_id")
	}
	if _, err := spec.NewUserID(other, false); err != nil {
		return nil, mxerr.InvalidParam("The user ID provided was invalid")
	}
	if other == me {
		return nil, mxerr.InvalidParam("You cannot request a list of shared rooms with yourself")
	}
	var after string
	if from := q.Get("from"); from != "" {
		b, err := base64.RawURLEncoding.DecodeString(from)
		if _, rerr := spec.NewRoomID(string(b)); err != nil || rerr != nil {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
		after = string(b)
	}
	mine, err := c.rooms.QueryRoomsForUser(r.Context(), me, rsapi.Join)
	if err != nil {
		return nil, err
	}
	theirs, err := c.rooms.QueryRoomsForUser(r.Context(), other, rsapi.Join)
	if err != nil {
		return nil, err
	}
	joined := make(map[string]bool, len(mine))
	for _, m := range mine {
		joined[m.RoomID] = true
	}
	shared := []string{}
	for _, m := range theirs {
		if joined[m.RoomID] {
			shared = append(shared, m.RoomID)
		}
	}
	sort.Strings(shared)
	res := map[string]any{"count": len(shared)}
	i := sort.SearchStrings(shared, after)
	if i < len(shared) && shared[i] == after {
		i++
	}
	batch := shared[i:]
	if len(batch) > mutualRoomsBatch {
		batch = batch[:mutualRoomsBatch]
		res["next_batch"] = base64.RawURLEncoding.EncodeToString([]byte(batch[len(batch)-1]))
	}
	res["joined"] = batch
	return res, nil
}
