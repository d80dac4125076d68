package syncapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// unreadCounts are the notification counts of a room or thread in /sync.
type unreadCounts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

// fillUnreadCounts gives every joined room of the response its unread
// notifications, from memory: all threads together, or, when the filter
// asks for unread_thread_notifications, the main timeline apart from each
// thread.
func (s *SyncAPI) fillUnreadCounts(userID string, flt *filter.Filter, resp *syncResponse) error {
	if resp.Rooms == nil || len(resp.Rooms.Join) == 0 {
		return nil
	}
	rooms := make([]string, 0, len(resp.Rooms.Join))
	for id, jr := range resp.Rooms.Join {
		rooms = append(rooms, id)
		jr.UnreadNotifications = &unreadCounts{}
	}
	byThread := flt.Room != nil && flt.Room.Timeline != nil && flt.Room.Timeline.UnreadThreadNotifications
	for roomID, threads := range s.unread.counts(userID, rooms) {
		jr := resp.Rooms.Join[roomID]
		for thread, c := range threads {
			if !byThread || thread == storage.MainThread {
				jr.UnreadNotifications.NotificationCount += c.n
				jr.UnreadNotifications.HighlightCount += c.h
				continue
			}
			if jr.UnreadThreadNotifications == nil {
				jr.UnreadThreadNotifications = map[string]*unreadCounts{}
			}
			jr.UnreadThreadNotifications[thread] = &unreadCounts{NotificationCount: c.n, HighlightCount: c.h}
		}
	}
	return nil
}

// Paging of GET /notifications.
const (
	defaultNotificationsLimit = 20
	maxNotificationsLimit     = 100
	// notificationsScan bounds the notification events one request reads
	// to find the user's (a later page goes on from where it stopped).
	notificationsScan = 5000
)

// notification is an entry of GET /notifications.
type notification struct {
	Actions    json.RawMessage `json:"actions"`
	Event      json.RawMessage `json:"event"`
	ProfileTag *string         `json:"profile_tag,omitempty"`
	Read       bool            `json:"read"`
	RoomID     string          `json:"room_id"`
	TS         int64           `json:"ts"`
}

// GET /_matrix/client/v3/notifications
func (s *SyncAPI) getNotifications(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	limit := defaultNotificationsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, maxNotificationsLimit)
	}
	var from int64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
		from = n
	}
	onlyHighlight := false
	switch v := q.Get("only"); v {
	case "":
	case "highlight":
		onlyHighlight = true
	default:
		return nil, mxerr.InvalidParam("Unknown value of only: %q", v)
	}
	if err := s.catchUp(ctx, dev.UserID); err != nil {
		return nil, err
	}
	if err := s.saveUnread(ctx); err != nil { // the notification events not saved yet
		return nil, err
	}
	resp := struct {
		Notifications []notification `json:"notifications"`
		NextToken     string         `json:"next_token,omitempty"`
	}{Notifications: []notification{}}
	if limit == 0 {
		return resp, nil
	}
	db := s.store.DB()
	memberships, err := storage.CurrentMemberships(ctx, db, dev.UserID)
	if err != nil {
		return nil, err
	}
	rooms := make([]string, 0, len(memberships))
	for _, m := range memberships {
		rooms = append(rooms, m.RoomID)
	}
	if len(rooms) == 0 {
		return resp, nil
	}
	reads, err := storage.UserReadPositions(ctx, db, dev.UserID, rooms)
	if err != nil {
		return nil, err
	}
	// Newest first through the notification events of the user's rooms,
	// keeping the user's, at most notificationsScan events per request.
	before := int64(math.MaxInt64)
	if from > 0 {
		before = from
	}
	type found struct {
		e *storage.NotificationEvent
		n storage.Notified
	}
	var hits []found
	scanned, last := 0, int64(0)
	for len(hits) < limit && scanned < notificationsScan {
		evs, err := storage.NotificationEvents(ctx, db, rooms, math.MinInt64, before, true, 200)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			scanned++
			last, before = e.EventPos, e.EventPos
			if n, ok := e.Find(dev.UserID); ok && (!onlyHighlight || n.Highlight) {
				hits = append(hits, found{e, n})
				if len(hits) == limit {
					break
				}
			}
		}
		if len(evs) < 200 {
			last = 0 // the start of the history: no more pages
			break
		}
	}
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.e.EventID
	}
	evs, err := storage.EventsByID(ctx, db, ids)
	if err != nil {
		return nil, err
	}
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	for _, h := range hits {
		e, ok := evs[h.e.EventID]
		if !ok {
			continue
		}
		read := h.e.EventPos <= reads.Position(h.e.RoomID, h.e.ThreadID)
		resp.Notifications = append(resp.Notifications, notification{Actions: h.e.ActionsOf(h.n), Event: fm.event(e), Read: read,
			RoomID: h.e.RoomID, TS: h.e.TS})
	}
	if len(hits) == limit || last > 0 {
		resp.NextToken = strconv.FormatInt(before, 10)
	}
	return resp, nil
}
