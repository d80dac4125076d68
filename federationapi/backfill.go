package federationapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// Bounds of one Backfill.
const (
	// maxBackfill bounds the events asked of a server.
	maxBackfill = 100
	// backfillServers bounds the servers asked.
	backfillServers = 3
	// maxBackfillRoots bounds the events whose state before is fetched
	// (/state_ids): those whose prev events are neither here nor in the
	// batch. Events past it are left for another backfill.
	maxBackfillRoots = 5
	// maxBackfillAuthFetches bounds the /event_auth requests for events
	// whose auth events are missing.
	maxBackfillAuthFetches = 10
)

// Backfill implements fedapi.FederationAPI: it asks the room's other
// servers in turn (at most backfillServers) for the history before from
// (/backfill), verifies what comes back, drops what is stored already,
// fetches the state before the oldest events (whose prev events are
// unknown) and the auth events missing, and stores the events oldest first
// as backfilled history. The first server that yields new events ends the
// search.
func (f *FederationAPI) Backfill(ctx context.Context, roomID string, from []string, limit int) (int, error) {
	if len(from) == 0 {
		return 0, nil
	}
	limit = min(max(limit, 1), maxBackfill)
	info, err := f.rooms.QueryRoomInfo(ctx, roomID)
	if err != nil {
		return 0, err
	}
	if !info.HasState {
		return 0, fmt.Errorf("this server is not in room %s", roomID)
	}
	servers, err := f.rooms.QueryJoinedServers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	servers = f.destinations(servers)
	var errs []error
	tried := 0
	for _, s := range servers {
		if tried == backfillServers {
			break
		}
		tried++
		n, err := f.backfillFrom(ctx, spec.ServerName(s), info, from, limit)
		if err != nil {
			f.log.Info("backfill failed", slog.String("room_id", roomID), slog.String("server", s), slog.String("error", err.Error()))
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		if n > 0 {
			return n, nil
		}
	}
	if len(errs) == tried && tried > 0 {
		return 0, errors.Join(errs...)
	}
	return 0, nil
}

// backfillFrom backfills from one server and returns how many new events
// entered the room's history.
func (f *FederationAPI) backfillFrom(ctx context.Context, server spec.ServerName, info *rsapi.RoomInfo, from []string, limit int) (int, error) {
	in, err := f.newIntake(server, info)
	if err != nil {
		return 0, err
	}
	// The answer starts with the from events themselves.
	txn, err := f.client.Backfill(ctx, f.cfg.ServerName, server, info.RoomID, limit+len(from), from)
	if err != nil {
		return 0, remoteError(server, err)
	}
	// Only the history before from: not other events the server adds.
	pdus := f.pulled(ctx, in.verImpl, info.RoomID, txn.PDUs, from, limit+len(from))
	unlock := f.roomLocks.lock(info.RoomID)
	defer unlock()
	ids := make([]string, 0, len(pdus)*3)
	for _, p := range pdus {
		ids = append(ids, p.EventID())
		ids = append(ids, p.PrevEventIDs()...)
		ids = append(ids, p.AuthEventIDs()...)
	}
	if err := in.kinds(ctx, ids); err != nil {
		return 0, err
	}
	pdus = slices.DeleteFunc(pdus, func(p gomatrixserverlib.PDU) bool {
		k := in.known[p.EventID()]
		return k == rsapi.KindNormal || k == rsapi.KindRejected
	})
	if len(pdus) > limit {
		pdus = pdus[:limit] // the server sends the newest first: keep those next to what is here
	}
	if len(pdus) == 0 {
		return 0, nil
	}
	slices.SortStableFunc(pdus, byDepth)
	// Oldest first: each event goes in when its prev events are in the
	// DAG or before it in the batch, or with the state before it.
	var batch []gomatrixserverlib.PDU
	var outliers []gomatrixserverlib.PDU
	statesBefore := map[string][]string{}
	inBatch := map[string]bool{}
	roots, authFetches := 0, 0
	for _, p := range pdus {
		gap := slices.ContainsFunc(p.PrevEventIDs(), func(id string) bool { return !in.inDAG(id) && !inBatch[id] })
		if gap {
			if roots == maxBackfillRoots {
				continue
			}
			roots++
			stateIDs, fetched, err := in.stateBefore(ctx, p)
			if err != nil {
				f.log.Info("backfill: no state before an event", slog.String("room_id", info.RoomID), slog.String("event_id", p.EventID()),
					slog.String("error", err.Error()))
				continue
			}
			statesBefore[p.EventID()] = stateIDs
			outliers = append(outliers, fetched...)
			// What it fetched is stored by the time the event is.
			for _, o := range fetched {
				in.known[o.EventID()] = rsapi.KindOutlier
			}
		}
		missingAuth := slices.ContainsFunc(p.AuthEventIDs(), func(id string) bool { return !in.stored(id) && !inBatch[id] })
		if missingAuth {
			if authFetches == maxBackfillAuthFetches {
				delete(statesBefore, p.EventID())
				continue
			}
			authFetches++
			fetched, err := in.authEvents(ctx, p, outliers, inBatch)
			if err != nil {
				delete(statesBefore, p.EventID())
				continue
			}
			outliers = append(outliers, fetched...)
			for _, o := range fetched {
				in.known[o.EventID()] = rsapi.KindOutlier
			}
		}
		batch = append(batch, p)
		inBatch[p.EventID()] = true
	}
	if len(batch) == 0 {
		return 0, nil
	}
	if err := f.inputOutliers(ctx, info.RoomID, dedupe(outliers, inBatch)); err != nil {
		return 0, err
	}
	msg := &rsapi.InputMessage{RoomID: info.RoomID, Events: raws(batch), Backfilled: true}
	if len(statesBefore) > 0 {
		msg.StatesBefore = statesBefore
	}
	res, err := f.input.Input(ctx, msg)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res.Events {
		if !r.Existed && r.Rejected == "" {
			n++
		}
	}
	return n, nil
}

// dedupe drops repeated events and those of the batch (which go in as
// events, not outliers).
func dedupe(pdus []gomatrixserverlib.PDU, inBatch map[string]bool) []gomatrixserverlib.PDU {
	seen := map[string]bool{}
	out := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for _, p := range pdus {
		if seen[p.EventID()] || inBatch[p.EventID()] {
			continue
		}
		seen[p.EventID()] = true
		out = append(out, p)
	}
	return out
}
