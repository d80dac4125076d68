package syncapi

import (
	"encoding/json"
	"math"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

var memberships = map[string]bool{spec.Join: true, spec.Invite: true, spec.Leave: true, spec.Ban: true, spec.Knock: true}

// GET /_matrix/client/v3/rooms/{roomId}/members: the member events at a
// point (at: a sync or pagination token; default now), as the user may see
// them: while joined, or when the room is world readable, any point; after
// leaving or being banned, no later than their departure (unless they
// forgot the room since).
func (s *SyncAPI) getMembers(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	for _, k := range []string{"membership", "not_membership"} {
		if v := q.Get(k); v != "" && !memberships[v] {
			return nil, mxerr.InvalidParam("%s must be one of join, invite, leave, ban, knock", k)
		}
	}
	roomID := httputil.Vars(r)["roomId"]
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	if err := s.catchUp(ctx, dev.UserID, roomID); err != nil {
		return nil, err
	}
	at := s.pos.pdu.Load()
	if v := q.Get("at"); v != "" {
		b, err := parseBoundary(v)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid at token")
		}
		at = min(at, b-1)
	}
	db := s.store.DB()
	create, _, err := storage.CurrentStateEvent(ctx, db, roomID, spec.MRoomCreate, "")
	if err != nil {
		return nil, err
	}
	if create == "" {
		return nil, mxerr.NotFound("Unknown room %s", roomID)
	}
	hist, err := storage.MembershipChanges(ctx, db, dev.UserID, math.MinInt64/2, math.MaxInt64/2, []string{roomID})
	if err != nil {
		return nil, err
	}
	current := ""
	var leftAt int64
	if len(hist) > 0 {
		last := hist[len(hist)-1]
		current, leftAt = last.Membership, last.Pos
	}
	if current == spec.Leave || current == spec.Ban {
		// A room the user forgot reads as one they were never in.
		if forgot, err := storage.Forgotten(ctx, db, dev.UserID, roomID); err != nil {
			return nil, err
		} else if forgot {
			current = ""
		}
	}
	switch current {
	case spec.Join:
	case spec.Leave, spec.Ban:
		if _, hv, err := storage.CurrentStateEvent(ctx, db, roomID, spec.MRoomHistoryVisibility, ""); err != nil {
			return nil, err
		} else if historyVisibility(hv) != "world_readable" {
			at = min(at, leftAt)
		}
	default:
		_, hv, err := storage.CurrentStateEvent(ctx, db, roomID, spec.MRoomHistoryVisibility, "")
		if err != nil {
			return nil, err
		}
		if hv == nil || historyVisibility(hv) != "world_readable" {
			return nil, mxerr.Forbidden("You aren't a member of the room")
		}
	}
	rows, err := storage.States(ctx, db, []storage.StateQuery{{RoomID: roomID, At: at, Since: math.MinInt64 / 2, MembersOnly: true}})
	if err != nil {
		return nil, err
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	chunk := []json.RawMessage{}
	for _, row := range rows[roomID] {
		if want := q.Get("membership"); want != "" && row.Membership != want {
			continue
		}
		if not := q.Get("not_membership"); not != "" && row.Membership == not {
			continue
		}
		chunk = append(chunk, fm.state(row.EventID, row.JSON))
	}
	return map[string]any{"chunk": chunk}, nil
}
