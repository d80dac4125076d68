package syncapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Thread subscriptions (MSC4306, as Synapse serves it under its unstable
// prefix): a user subscribes to a thread by hand, or automatically
// because of an event of the thread (a client does so when the user
// replies or is mentioned in it). Unsubscribing remembers when: an
// automatic subscription caused by an event from before then is refused,
// so that a client catching up late does not undo the user's choice.

// Errors of MSC4306.
const (
	codeNotInThread               = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"
	codeConflictingUnsubscription = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION"
)

const threadSubscriptionPath = "/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription"

// registerThreadSubscriptions mounts the subscription endpoints.
func (s *SyncAPI) registerThreadSubscriptions(srv *httputil.Server) {
	auth := httputil.Auth()
	srv.Handle(http.MethodGet, threadSubscriptionPath, s.getThreadSubscription, auth)
	srv.Handle(http.MethodPut, threadSubscriptionPath, s.putThreadSubscription, auth)
	srv.Handle(http.MethodDelete, threadSubscriptionPath, s.deleteThreadSubscription, auth)
}

// threadRoot checks that the user may read the room and that the thread
// root is an event of it they may see; it returns the room access.
func (s *SyncAPI) threadRoot(ctx context.Context, r *http.Request) (*roomAccess, string, error) {
	dev := httputil.DeviceFrom(ctx)
	vars := httputil.Vars(r)
	if err := s.catchUp(ctx, dev.UserID, vars["roomId"]); err != nil {
		return nil, "", err
	}
	a, err := s.access(ctx, vars["roomId"], dev.UserID)
	if err != nil {
		return nil, "", err
	}
	root := vars["threadRootId"]
	evs, err := storage.EventsByID(ctx, s.store.DB(), []string{root})
	if err != nil {
		return nil, "", err
	}
	e, ok := evs[root]
	if !ok || e.RoomID != a.roomID || len(visibleEvents([]storage.Event{*e}, dev.UserID, a.history)) == 0 {
		return nil, "", mxerr.NotFound("No such thread root")
	}
	return a, root, nil
}

// GET /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *SyncAPI) getThreadSubscription(r *http.Request) (any, error) {
	ctx := r.Context()
	a, root, err := s.threadRoot(ctx, r)
	if err != nil {
		return nil, err
	}
	sub, err := storage.GetThreadSubscription(ctx, s.store.DB(), httputil.DeviceFrom(ctx).UserID, a.roomID, root)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !sub.Subscribed) {
		return nil, mxerr.NotFound("Not subscribed to the thread")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"automatic": sub.Automatic}, nil
}

// PUT /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *SyncAPI) putThreadSubscription(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	var body struct {
		Automatic *string `json:"automatic"`
	}
	if err := httputil.DecodeOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	a, root, err := s.threadRoot(ctx, r)
	if err != nil {
		return nil, err
	}
	var causePos int64
	if body.Automatic != nil {
		evs, err := storage.EventsByID(ctx, s.store.DB(), []string{*body.Automatic})
		if err != nil {
			return nil, err
		}
		cause, ok := evs[*body.Automatic]
		if !ok || cause.RoomID != a.roomID || len(visibleEvents([]storage.Event{*cause}, dev.UserID, a.history)) == 0 {
			return nil, mxerr.NotFound("Unknown automatic subscription cause event")
		}
		if rel := relationOf(cause); rel == nil || rel.RelType != storage.RelThread || rel.RelatesTo != root {
			return nil, mxerr.New(codeNotInThread, "The cause event is not in the thread")
		}
		causePos = cause.Pos
	}
	err = s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		cur, err := storage.GetThreadSubscription(ctx, tx, dev.UserID, a.roomID, root)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if body.Automatic == nil {
			return storage.SetThreadSubscription(ctx, tx, dev.UserID, a.roomID, root, &storage.ThreadSubscription{Subscribed: true})
		}
		if cur != nil && cur.Subscribed {
			return nil // a subscription stands, manual or automatic
		}
		if cur != nil && cur.HasUnsubscribedAt && causePos <= cur.UnsubscribedAt {
			return mxerr.New(codeConflictingUnsubscription, "The user unsubscribed from the thread after the cause event").WithStatus(http.StatusConflict)
		}
		return storage.SetThreadSubscription(ctx, tx, dev.UserID, a.roomID, root, &storage.ThreadSubscription{Subscribed: true, Automatic: true})
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// DELETE /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *SyncAPI) deleteThreadSubscription(r *http.Request) (any, error) {
	ctx := r.Context()
	dev := httputil.DeviceFrom(ctx)
	a, root, err := s.threadRoot(ctx, r)
	if err != nil {
		return nil, err
	}
	at := s.pos.pdu.Load()
	err = s.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		// Without a subscription there is nothing to remember (as Synapse).
		if _, err := storage.GetThreadSubscription(ctx, tx, dev.UserID, a.roomID, root); errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		return storage.SetThreadSubscription(ctx, tx, dev.UserID, a.roomID, root,
			&storage.ThreadSubscription{UnsubscribedAt: at, HasUnsubscribedAt: true})
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
