package syncapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Relations and threads (client-server API "Forming relationships between
// events", "Threading"), served from sync_relations and sync_threads,
// which the read model fills as events arrive (see indexRelation).

const (
	// defaultRelationsLimit is the page size of /relations and /threads
	// without a limit (Synapse's).
	defaultRelationsLimit = 5
	// maxThreadsLimit caps /threads pages.
	maxThreadsLimit = 100
	// relationsDepth is how many levels below the parent's children a
	// recursive /relations follows (as Synapse).
	relationsDepth = 3
)

// registerRelations mounts /relations and /threads.
func (s *SyncAPI) registerRelations(srv *httputil.Server) {
	auth, guests := httputil.Auth(), httputil.Guests()
	for _, p := range []string{"", "/{relType}", "/{relType}/{eventType}"} {
		srv.Handle(http.MethodGet, "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}"+p, s.getRelations, auth, guests)
	}
	srv.Handle(http.MethodGet, "/_matrix/client/v1/rooms/{roomId}/threads", s.getThreads, auth, guests)
}

// limitParam reads a non-negative limit query parameter.
func limitParam(r *http.Request, def, maxLimit int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, maxLimit), nil
}

// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
func (s *SyncAPI) getRelations(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	q := r.URL.Query()
	if err := s.catchUp(ctx, dev.UserID, vars["roomId"]); err != nil {
		return nil, err
	}
	a, err := s.access(ctx, vars["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	forward := false
	switch q.Get("dir") {
	case "", "b":
	case "f":
		forward = true
	default:
		return nil, mxerr.InvalidParam("dir must be b or f")
	}
	limit, err := limitParam(r, defaultRelationsLimit, maxPageLimit)
	if err != nil {
		return nil, err
	}
	recurseParam := q.Get("recurse")
	if recurseParam == "" {
		recurseParam = q.Get("org.matrix.msc3981.recurse")
	}
	depth := 0
	switch recurseParam {
	case "", "false":
	case "true":
		depth = relationsDepth
	default:
		return nil, mxerr.InvalidParam("recurse must be true or false")
	}
	from, to := s.pos.pdu.Load()+1, int64(math.MinInt64/2)
	if forward {
		from, to = math.MinInt64/2, math.MaxInt64/2
	}
	if v := q.Get("from"); v != "" {
		if from, err = parseBoundary(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = parseBoundary(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid to token")
		}
		if !forward {
			to-- // the events from the boundary on, as /messages
		}
	}
	// The parent must be an event of the room the user may see.
	evs, err := storage.EventsByID(ctx, s.store.DB(), []string{vars["eventId"]})
	if err != nil {
		return nil, err
	}
	parent, ok := evs[vars["eventId"]]
	if !ok || parent.RoomID != a.roomID || len(visibleEvents([]storage.Event{*parent}, dev.UserID, a.history)) == 0 {
		return nil, mxerr.NotFound("Unknown parent event")
	}
	page, err := storage.RelationsPage(ctx, s.store.DB(), storage.RelationsQuery{
		RoomID: a.roomID, ParentID: parent.EventID, RelType: vars["relType"], EventType: vars["eventType"],
		From: from, To: to, Forward: forward, Limit: limit + 1, Depth: depth,
	})
	if err != nil {
		return nil, err
	}
	body := map[string]any{}
	if len(page) > limit {
		page = page[:limit]
		next := page[len(page)-1].Pos
		if forward {
			next++
		}
		body["next_batch"] = formatBoundary(next)
	}
	if v := q.Get("from"); v != "" {
		body["prev_batch"] = v
	}
	if recurseParam != "" {
		body["recursion_depth"] = depth
	}
	visible := visibleEvents(page, dev.UserID, a.history)
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	fm.withMemberships(a.roomID, a.history)
	if err := s.bundleRelations(ctx, fm, visible); err != nil {
		return nil, err
	}
	chunk := make([]json.RawMessage, len(visible))
	for i := range visible {
		chunk[i] = fm.event(&visible[i])
	}
	body["chunk"] = chunk
	return body, nil
}

// GET /_matrix/client/v1/rooms/{roomId}/threads
func (s *SyncAPI) getThreads(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	q := r.URL.Query()
	if err := s.catchUp(ctx, dev.UserID, httputil.Vars(r)["roomId"]); err != nil {
		return nil, err
	}
	a, err := s.access(ctx, httputil.Vars(r)["roomId"], dev.UserID)
	if err != nil {
		return nil, err
	}
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = dev.UserID
	default:
		return nil, mxerr.InvalidParam("include must be all or participated")
	}
	limit, err := limitParam(r, defaultRelationsLimit, maxThreadsLimit)
	if err != nil {
		return nil, err
	}
	before := int64(math.MaxInt64 / 2)
	if v := q.Get("from"); v != "" {
		if before, err = parseBoundary(v); err != nil {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
	}
	threads, err := storage.Threads(ctx, s.store.DB(), a.roomID, before, participant, limit+1)
	if err != nil {
		return nil, err
	}
	body := map[string]any{}
	if len(threads) > limit {
		threads = threads[:limit]
		body["next_batch"] = formatBoundary(threads[len(threads)-1].LatestPos)
	}
	ids := make([]string, len(threads))
	for i, t := range threads {
		ids[i] = t.RootID
	}
	roots, err := storage.EventsByID(ctx, s.store.DB(), ids)
	if err != nil {
		return nil, err
	}
	var list []storage.Event
	for _, id := range ids {
		if e := roots[id]; e != nil && e.RoomID == a.roomID {
			list = append(list, *e)
		}
	}
	list = visibleEvents(list, dev.UserID, a.history)
	fm := newFormatter(dev.UserID, dev.DeviceID, nil, true)
	fm.withMemberships(a.roomID, a.history)
	if err := s.bundleRelations(ctx, fm, list); err != nil {
		return nil, err
	}
	chunk := make([]json.RawMessage, len(list))
	for i := range list {
		chunk[i] = fm.event(&list[i])
	}
	body["chunk"] = chunk
	return body, nil
}
