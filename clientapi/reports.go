package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/storage"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// registerReports mounts reporting (report_content.md) and the admin API
// that reads the reports (Synapse's event_reports).
func (c *ClientAPI) registerReports(srv *httputil.Server) {
	auth, msg := httputil.Auth(), httputil.RateLimited(RateMessage)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/report/{eventId}", c.postReportEvent, auth, msg)
	srv.HandleClient(http.MethodPost, "/rooms/{roomId}/report", c.postReportRoom, auth, msg)
	srv.HandleClient(http.MethodPost, "/users/{userId}/report", c.postReportUser, auth, msg)

	admin := httputil.Admin()
	srv.Handle(http.MethodGet, "/_synapse/admin/v1/event_reports", c.listEventReports, admin)
	srv.Handle(http.MethodGet, "/_synapse/admin/v1/event_reports/{reportId}", c.getEventReport, admin)
	srv.Handle(http.MethodDelete, "/_synapse/admin/v1/event_reports/{reportId}", c.deleteEventReport, admin)
}

// reportBody is a report's request body. reason is required for rooms and
// users (it may be blank); score is what clients sent before v1.18
// removed it, kept as Synapse keeps it.
type reportBody struct {
	Reason *string `json:"reason"`
	Score  *int64  `json:"score"`
}

func decodeReport(r *http.Request, reasonRequired bool) (*reportBody, error) {
	var b reportBody
	if err := httputil.DecodeJSON(r, &b); err != nil {
		return nil, err
	}
	if reasonRequired && b.Reason == nil {
		return nil, mxerr.BadJSON("Missing reason")
	}
	return &b, nil
}

func (c *ClientAPI) storeReport(ctx context.Context, rep *storage.Report) error {
	rep.ReceivedTS = nowMS()
	id, err := c.store.InsertReport(ctx, rep)
	if err != nil {
		return err
	}
	c.log.Info("content reported", "report_id", id, "kind", rep.Kind, "user_id", rep.UserID,
		"room_id", rep.RoomID, "event_id", rep.EventID, "target_user_id", rep.TargetUserID)
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}: only a member
// of the room who may see the event may report it; otherwise, and for an
// unknown event, 404 (the spec's one answer for all three).
func (c *ClientAPI) postReportEvent(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	body, err := decodeReport(r, false)
	if err != nil {
		return nil, err
	}
	ctx, user := r.Context(), httputil.DeviceFrom(r.Context()).UserID
	eventID := httputil.Vars(r)["eventId"]
	notFound := mxerr.NotFound("The event was not found or you are not joined to the room")
	m, err := c.rooms.QueryMembership(ctx, roomID, user)
	if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil, err
	}
	if m == nil || m.Membership != spec.Join {
		return nil, notFound
	}
	pdus, err := c.rooms.QueryEvents(ctx, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(pdus) == 0 || pdus[0].RoomID().String() != roomID {
		return nil, notFound
	}
	if ok, err := c.rooms.QueryEventVisible(ctx, user, eventID); errors.Is(err, rsapi.ErrEventNotFound) || (err == nil && !ok) {
		return nil, notFound
	} else if err != nil {
		return nil, err
	}
	return struct{}{}, c.storeReport(ctx, &storage.Report{Kind: storage.ReportEvent, UserID: user, RoomID: roomID, EventID: eventID,
		EventSender: string(pdus[0].SenderID()), Reason: body.Reason, Score: body.Score})
}

// POST /_matrix/client/v3/rooms/{roomId}/report (v1.13): anyone may report
// a room this server knows, joined or not.
func (c *ClientAPI) postReportRoom(r *http.Request) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	body, err := decodeReport(r, true)
	if err != nil {
		return nil, err
	}
	if _, err := c.roomInfo(r.Context(), roomID); err != nil {
		return nil, err
	}
	return struct{}{}, c.storeReport(r.Context(), &storage.Report{Kind: storage.ReportRoom, UserID: httputil.DeviceFrom(r.Context()).UserID,
		RoomID: roomID, Reason: body.Reason, Score: body.Score})
}

// POST /_matrix/client/v3/users/{userId}/report (v1.14): a local user must
// exist; another server's user cannot be checked and is taken as named.
func (c *ClientAPI) postReportUser(r *http.Request) (any, error) {
	target := httputil.Vars(r)["userId"]
	if _, err := spec.NewUserID(target, false); err != nil {
		return nil, mxerr.InvalidParam("%q is not a valid user ID", target)
	}
	body, err := decodeReport(r, true)
	if err != nil {
		return nil, err
	}
	if !c.remoteUser(target) {
		if _, err := c.queryAccount(r.Context(), target); err != nil {
			if errors.Is(err, userapi.ErrNotFound) {
				return nil, mxerr.NotFound("The user was not found")
			}
			return nil, err
		}
	}
	return struct{}{}, c.storeReport(r.Context(), &storage.Report{Kind: storage.ReportUser, UserID: httputil.DeviceFrom(r.Context()).UserID,
		TargetUserID: target, Reason: body.Reason, Score: body.Score})
}

// eventReportJSON is a report as Synapse's admin API lists it.
type eventReportJSON struct {
	ID             int64           `json:"id"`
	ReceivedTS     int64           `json:"received_ts"`
	RoomID         string          `json:"room_id"`
	Name           *string         `json:"name"`
	CanonicalAlias *string         `json:"canonical_alias"`
	EventID        string          `json:"event_id"`
	UserID         string          `json:"user_id"`
	Sender         string          `json:"sender"`
	Reason         *string         `json:"reason"`
	Score          *int64          `json:"score"`
	EventJSON      json.RawMessage `json:"event_json,omitempty"`
}

// roomLabels returns the current name and canonical alias of each room (nil
// when unset or the room is no longer known), one state query a room.
func (c *ClientAPI) roomLabels(ctx context.Context, rooms []string) (map[string][2]*string, error) {
	out := make(map[string][2]*string, len(rooms))
	for _, id := range rooms {
		if _, done := out[id]; done {
			continue
		}
		pdus, err := c.rooms.QueryCurrentState(ctx, id, rsapi.StateKeyTuple{EventType: spec.MRoomName},
			rsapi.StateKeyTuple{EventType: spec.MRoomCanonicalAlias})
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return nil, err
		}
		var labels [2]*string
		for _, p := range pdus {
			var content struct {
				Name  *string `json:"name"`
				Alias *string `json:"alias"`
			}
			_ = json.Unmarshal(p.Content(), &content)
			if p.Type() == spec.MRoomName {
				labels[0] = content.Name
			} else {
				labels[1] = content.Alias
			}
		}
		out[id] = labels
	}
	return out, nil
}

func (c *ClientAPI) eventReportsJSON(ctx context.Context, reps []storage.Report) ([]eventReportJSON, error) {
	rooms := make([]string, len(reps))
	for i, rep := range reps {
		rooms[i] = rep.RoomID
	}
	labels, err := c.roomLabels(ctx, rooms)
	if err != nil {
		return nil, err
	}
	out := make([]eventReportJSON, len(reps))
	for i, rep := range reps {
		l := labels[rep.RoomID]
		out[i] = eventReportJSON{ID: rep.ID, ReceivedTS: rep.ReceivedTS, RoomID: rep.RoomID, Name: l[0], CanonicalAlias: l[1],
			EventID: rep.EventID, UserID: rep.UserID, Sender: rep.EventSender, Reason: rep.Reason, Score: rep.Score}
	}
	return out, nil
}

// nonNegativeParam is an optional integer query parameter of at least 0.
func nonNegativeParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("%s must be a non-negative integer", name)
	}
	return n, nil
}

// GET /_synapse/admin/v1/event_reports?from=&limit=&dir=&user_id=&room_id=&event_sender_user_id=
// as Synapse: newest first by default, from an offset, with next_token
// while more follow and the total that match.
func (c *ClientAPI) listEventReports(r *http.Request) (any, error) {
	from, err := nonNegativeParam(r, "from", 0)
	if err != nil {
		return nil, err
	}
	limit, err := nonNegativeParam(r, "limit", 100)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var forward bool
	switch q.Get("dir") {
	case "", "b":
	case "f":
		forward = true
	default:
		return nil, mxerr.InvalidParam("dir must be f or b")
	}
	reps, total, err := c.store.ListReports(r.Context(), storage.ReportFilter{Kind: storage.ReportEvent, UserID: q.Get("user_id"),
		RoomID: q.Get("room_id"), EventSender: q.Get("event_sender_user_id")}, from, limit, forward)
	if err != nil {
		return nil, err
	}
	list, err := c.eventReportsJSON(r.Context(), reps)
	if err != nil {
		return nil, err
	}
	res := map[string]any{"event_reports": list, "total": total}
	if int64(from+len(reps)) < total {
		res["next_token"] = from + len(reps)
	}
	return res, nil
}

func reportIDVar(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(httputil.Vars(r)["reportId"], 10, 64)
	if err != nil || id < 0 {
		return 0, mxerr.InvalidParam("The report_id parameter must be a string representing a positive integer")
	}
	return id, nil
}

// GET /_synapse/admin/v1/event_reports/{reportId}: one report with the
// reported event.
func (c *ClientAPI) getEventReport(r *http.Request) (any, error) {
	id, err := reportIDVar(r)
	if err != nil {
		return nil, err
	}
	rep, err := c.store.SelectReport(r.Context(), storage.ReportEvent, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Event report not found")
	}
	if err != nil {
		return nil, err
	}
	list, err := c.eventReportsJSON(r.Context(), []storage.Report{rep})
	if err != nil {
		return nil, err
	}
	out := list[0]
	pdus, err := c.rooms.QueryEvents(r.Context(), []string{rep.EventID})
	if err != nil {
		return nil, err
	}
	if len(pdus) > 0 {
		out.EventJSON = pdus[0].JSON()
	}
	return out, nil
}

// DELETE /_synapse/admin/v1/event_reports/{reportId}
func (c *ClientAPI) deleteEventReport(r *http.Request) (any, error) {
	id, err := reportIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := c.store.DeleteReport(r.Context(), storage.ReportEvent, id); errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Event report not found")
	} else if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
