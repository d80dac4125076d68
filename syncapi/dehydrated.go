package syncapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// The to-device messages of a dehydrated device (MSC3814, as Synapse
// serves it): the client that rehydrates the device reads its inbox a page
// at a time. Unlike /sync, reading acknowledges nothing: the messages stay
// until the dehydrated device is deleted or replaced (which empties its
// inbox, as for any deleted device), so that a rehydration that fails
// half-way can be started again by another client.

const (
	// dehydratedEventsPath is the unstable endpoint of the messages.
	dehydratedEventsPath = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events"
	// dehydratedEventsLimit is the page size when the client names none;
	// maxDehydratedEventsLimit the largest page served.
	dehydratedEventsLimit    = 100
	maxDehydratedEventsLimit = 1000
)

func (s *SyncAPI) registerDehydrated(srv *httputil.Server) {
	auth := httputil.Auth()
	srv.Handle(http.MethodGet, dehydratedEventsPath, s.getDehydratedEvents, auth)
	srv.Handle(http.MethodPost, dehydratedEventsPath, s.postDehydratedEvents, auth)
}

// dehydratedPage is one page of a dehydrated device's messages; next is the
// token of the following page, limited whether there may be more.
type dehydratedPage struct {
	events  []json.RawMessage
	next    string
	limited bool
}

// GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events
//
// The current form: the token is the query parameter "from", and
// next_batch is left out of the last page.
func (s *SyncAPI) getDehydratedEvents(r *http.Request) (any, error) {
	page, err := s.dehydratedEvents(r, r.URL.Query().Get("from"))
	if err != nil {
		return nil, err
	}
	out := map[string]any{"events": page.events}
	if page.limited {
		out["next_batch"] = page.next
	}
	return out, nil
}

// POST /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events
//
// The earlier form, which Synapse keeps for older clients: the token is
// the body's "next_batch", and every page has a next_batch (a client
// stops at an empty page).
func (s *SyncAPI) postDehydratedEvents(r *http.Request) (any, error) {
	var req struct {
		NextBatch *string `json:"next_batch"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	var from string
	if req.NextBatch != nil {
		from = *req.NextBatch
	}
	page, err := s.dehydratedEvents(r, from)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": page.events, "next_batch": page.next}, nil
}

// parseDehydratedToken reads a page token ("d" and a to-device position);
// "" is the start.
func parseDehydratedToken(tok string) (int64, error) {
	if tok == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(tok, "d"), 10, 64)
	if !strings.HasPrefix(tok, "d") || err != nil || n < 0 {
		return 0, mxerr.InvalidParam("from parameter %q has an invalid format", tok)
	}
	return n, nil
}

// dehydratedEvents returns the page of the caller's dehydrated device's
// messages after token from: those at positions in (from, now], at most
// the "limit" query parameter of them. Only the caller's own dehydrated
// device may be read (403 otherwise, as in Synapse).
func (s *SyncAPI) dehydratedEvents(r *http.Request, fromToken string) (*dehydratedPage, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	deviceID := httputil.Vars(r)["deviceId"]
	limit := dehydratedEventsLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(max(n, 1), maxDehydratedEventsLimit)
	}
	from, err := parseDehydratedToken(fromToken)
	if err != nil {
		return nil, err
	}
	if s.users == nil {
		return nil, mxerr.Forbidden("No dehydrated device exists")
	}
	d, err := s.users.QueryDehydratedDevice(ctx, dev.UserID)
	if errors.Is(err, userapi.ErrNotFound) {
		return nil, mxerr.Forbidden("No dehydrated device exists")
	}
	if err != nil {
		return nil, err
	}
	if d.DeviceID != deviceID {
		return nil, mxerr.Forbidden("You may only fetch messages for your dehydrated device")
	}

	// The position first: the inbox is recorded before the position
	// moves past a message.
	now := s.pos.toDevice.Load()
	page := &dehydratedPage{events: []json.RawMessage{}, next: "d" + strconv.FormatInt(now, 10)}
	if rng, ok := s.inboxes.get(inboxKey{dev.UserID, deviceID}); !ok || rng.hi <= from || from >= now {
		return page, nil
	}
	msgs, err := storage.ToDeviceSince(ctx, s.store.DB(), dev.UserID, deviceID, from, now, limit)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		ev, err := json.Marshal(map[string]any{"sender": m.Sender, "type": m.Type, "content": m.Content})
		if err != nil {
			return nil, err
		}
		page.events = append(page.events, ev)
	}
	// A full page may not be the last one (as Synapse: even when nothing
	// follows, the next page is then merely empty).
	if n := len(msgs); n == limit && msgs[n-1].Pos != now {
		page.next = "d" + strconv.FormatInt(msgs[n-1].Pos, 10)
		page.limited = true
	}
	return page, nil
}
