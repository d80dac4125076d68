package syncapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// maxSyncTimeout bounds how long one long-poll may wait.
const maxSyncTimeout = 5 * time.Minute

type syncRequest struct {
	since         *StreamPos
	timeout       time.Duration
	fullState     bool
	setPresence   string
	filter        *filter.Filter
	useStateAfter bool
}

// parseSyncRequest reads the query of /sync.
func (s *SyncAPI) parseSyncRequest(ctx context.Context, r *http.Request, userID string) (*syncRequest, error) {
	q := r.URL.Query()
	req := &syncRequest{}
	if v := q.Get("since"); v != "" {
		p, err := ParseStreamPos(v)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid since token")
		}
		req.since = &p
	}
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxerr.InvalidParam("timeout must be a non-negative integer")
		}
		req.timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch v := q.Get("full_state"); v {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return nil, mxerr.InvalidParam("full_state must be true or false")
	}
	switch v := q.Get("set_presence"); v {
	case "", presenceOnline, presenceOffline, presenceUnavailable:
		req.setPresence = v
	default:
		return nil, mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	switch v := q.Get("use_state_after"); v {
	case "", "false":
	case "true":
		req.useStateAfter = true
	default:
		return nil, mxerr.InvalidParam("use_state_after must be true or false")
	}
	if v := q.Get("filter"); v != "" {
		f, err := s.loadFilter(ctx, userID, v)
		if err != nil {
			return nil, err
		}
		req.filter = f
	}
	return req, nil
}

// loadFilter reads an inline filter or a stored one.
func (s *SyncAPI) loadFilter(ctx context.Context, userID, v string) (*filter.Filter, error) {
	raw := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "{") {
		stored, err := s.store.GetFilter(ctx, userID, v)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxerr.InvalidParam("No filter %s", v)
		}
		if err != nil {
			return nil, err
		}
		raw = stored
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, mxerr.BadJSON("Invalid filter: %v", err)
	}
	return f, nil
}

// currentPos is the position of every stream now.
func (s *SyncAPI) currentPos() StreamPos {
	return StreamPos{
		PDU:         s.pos.pdu.Load(),
		Typing:      s.typing.current(),
		Receipt:     s.pos.receipt.Load(),
		AccountData: s.pos.accountData.Load(),
		Presence:    s.pos.presence.Load(),
		ToDevice:    s.pos.toDevice.Load(),
		DeviceList:  s.pos.deviceList.Load(),
	}
}

// GET /_matrix/client/v3/sync
func (s *SyncAPI) getSync(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	req, err := s.parseSyncRequest(ctx, r, dev.UserID)
	if err != nil {
		return nil, err
	}
	defer s.presence.syncing(ctx, dev.UserID, req.setPresence)()
	if err := s.catchUp(ctx, dev.UserID); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(req.timeout)
	for {
		wake := s.notifier.channel(dev.UserID)
		resp, empty, err := s.buildSync(ctx, dev, req)
		if err != nil {
			return nil, err
		}
		if !empty || req.since == nil || req.fullState {
			return resp, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return resp, nil
		}
		if !s.longPoll(ctx, wake, wait) {
			return resp, nil
		}
	}
}

// longPoll waits up to d for wake; false when the wait ended without it
// (timeout, the client went away, or the server drains).
func (s *SyncAPI) longPoll(ctx context.Context, wake <-chan struct{}, d time.Duration) bool {
	s.metrics.longPolls.Inc()
	defer s.metrics.longPolls.Dec()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-s.draining:
	}
	return false
}
