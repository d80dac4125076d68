package main

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

// lazyFilter is an initial sync filter with lazy-loaded members, as
// Element's.
const lazyFilter = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}`

// initialSyncScenario: one user in rooms rooms of events messages each;
// runs initial syncs without a filter and as many with lazy-loaded
// members, each of which must list every room.
func initialSyncScenario(ctx context.Context, a *api, rooms, events, runs int) *Result {
	r := newResult("initialsync")
	u, err := a.register(ctx, uniquePrefix("initialsync"))
	if err != nil {
		r.failf("setup: register: %w", err)
		return r
	}
	ids := make([]string, rooms)
	err = parallel(rooms, 10, func(i int) error {
		id, err := a.createRoom(ctx, u, fmt.Sprintf("initialsync %d", i))
		if err != nil {
			return err
		}
		ids[i] = id
		for j := range events {
			if _, err := a.send(ctx, u, id, fmt.Sprintf("message %d in room %d", j, i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.failf("setup: %w", err)
		return r
	}
	for _, v := range []struct{ name, filter string }{{"sync", ""}, {"sync_lazy", lazyFilter}} {
		var lat []time.Duration
		for range runs {
			t0 := time.Now()
			resp, err := a.sync(ctx, u, v.filter, "", -1)
			lat = append(lat, time.Since(t0))
			if err != nil {
				r.fail(err)
				continue
			}
			if err := hasRooms(resp, ids, true); err != nil {
				r.failf("%s: %w", v.name, err)
			}
		}
		l := latencies(lat)
		r.add(v.name+"_p50", l.pct(50), "ms", "")
		r.add(v.name+"_max", l.pct(100), "ms", "")
	}
	return r
}

// hasRooms checks that an initial sync lists every room, with timeline
// events when withTimeline.
func hasRooms(resp *syncResponse, ids []string, withTimeline bool) error {
	for _, id := range ids {
		jr, ok := resp.Rooms.Join[id]
		if !ok {
			return fmt.Errorf("room %s missing from rooms.join (%d rooms listed)", id, len(resp.Rooms.Join))
		}
		if withTimeline && len(jr.Timeline.Events) == 0 {
			return fmt.Errorf("room %s has an empty timeline", id)
		}
	}
	return nil
}

// joinsScenario: n users, registered beforehand, join one public room conc
// at a time; then the last newcomers' first lazy-loaded syncs.
func joinsScenario(ctx context.Context, a *api, n, conc, syncs int) *Result {
	r := newResult("joins")
	prefix := uniquePrefix("joins")
	owner, err := a.register(ctx, prefix+"-owner")
	if err != nil {
		r.failf("setup: register: %w", err)
		return r
	}
	t0 := time.Now()
	us, err := a.registerMany(ctx, prefix, n, 10)
	if err != nil {
		r.failf("setup: register: %w", err)
		return r
	}
	r.add("registrations_per_s", float64(n)/time.Since(t0).Seconds(), "reg/s", "")
	room, err := a.createRoom(ctx, owner, "joins")
	if err != nil {
		r.failf("setup: createRoom: %w", err)
		return r
	}

	var lat collector
	joined := make([]bool, n)
	start := time.Now()
	_ = parallel(n, conc, func(i int) error {
		t := time.Now()
		err := a.join(ctx, us[i], room)
		lat.add(time.Since(t))
		if err != nil {
			r.fail(err)
			return nil
		}
		joined[i] = true
		return nil
	})
	wall := time.Since(start)
	ok := 0
	for _, j := range joined {
		if j {
			ok++
		}
	}
	if ok != n {
		r.failf("%d of %d joins succeeded", ok, n)
	}
	r.add("joins_per_s", float64(ok)/wall.Seconds(), "joins/s", ">=100")
	r.addLatencies("join", lat.all(), "<50", "")

	var members struct {
		Joined map[string]any `json:"joined"`
	}
	if err := a.do(ctx, owner, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil, &members); err != nil {
		r.fail(err)
	} else if len(members.Joined) != ok+1 {
		r.failf("joined_members lists %d members, want %d", len(members.Joined), ok+1)
	}

	// The newcomers' first syncs: the last joiners, who have never synced.
	var first []time.Duration
	for i := max(0, n-syncs); i < n; i++ {
		if !joined[i] {
			continue
		}
		t := time.Now()
		resp, err := a.sync(ctx, us[i], lazyFilter, "", -1)
		first = append(first, time.Since(t))
		if err != nil {
			r.fail(err)
			continue
		}
		if err := hasRooms(resp, []string{room}, true); err != nil {
			r.failf("newcomer's sync: %w", err)
			continue
		}
		// Lazy loading: the state holds the timeline's senders' members,
		// not the whole room.
		jr := resp.Rooms.Join[room]
		if m := countType(jr.State.Events, "m.room.member"); m > len(jr.Timeline.Events)+1 {
			r.failf("newcomer's lazy-loaded sync has %d member events in state for %d timeline events", m, len(jr.Timeline.Events))
		}
	}
	l := latencies(first)
	r.add("newcomer_sync_p50", l.pct(50), "ms", "<20")
	r.add("newcomer_sync_max", l.pct(100), "ms", "")
	return r
}

func countType(evs []syncEvent, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}
