package main

import (
	"context"
	"fmt"
	"time"
)

// sendScenario: users users, each sending msgs messages one after another,
// all users at once (so that len(users) requests are in flight). With
// sharedRoom they all send into one room (scenario "send"); otherwise each
// sends into a room of its own (scenario "send16").
func sendScenario(ctx context.Context, a *api, name string, users, msgs int, sharedRoom bool, rateTarget, p50Target, p99Target string) *Result {
	r := newResult(name)
	prefix := uniquePrefix(name)
	us, err := a.registerMany(ctx, prefix, users, 10)
	if err != nil {
		r.failf("setup: register: %w", err)
		return r
	}
	rooms := make([]string, users)
	if sharedRoom {
		room, err := a.createRoom(ctx, us[0], name)
		if err != nil {
			r.failf("setup: createRoom: %w", err)
			return r
		}
		for i := range rooms {
			rooms[i] = room
		}
		if err := parallel(users-1, 10, func(i int) error { return a.join(ctx, us[i+1], room) }); err != nil {
			r.failf("setup: join: %w", err)
			return r
		}
	} else {
		err := parallel(users, 10, func(i int) error {
			room, err := a.createRoom(ctx, us[i], fmt.Sprintf("%s %d", name, i))
			rooms[i] = room
			return err
		})
		if err != nil {
			r.failf("setup: createRoom: %w", err)
			return r
		}
	}

	var lat collector
	sent := make([]int, users)
	start := time.Now()
	_ = parallel(users, users, func(i int) error {
		for j := range msgs {
			t0 := time.Now()
			_, err := a.send(ctx, us[i], rooms[i], fmt.Sprintf("message %d from %d", j, i))
			lat.add(time.Since(t0))
			if err != nil {
				r.fail(err)
				continue
			}
			sent[i]++
		}
		return nil
	})
	wall := time.Since(start)
	total := 0
	for _, n := range sent {
		total += n
	}
	if total != users*msgs {
		r.failf("%d of %d sends succeeded", total, users*msgs)
	}
	r.add("events_per_s", float64(total)/wall.Seconds(), "ev/s", rateTarget)
	r.addLatencies("send", lat.all(), p50Target, p99Target)
	return r
}

// uniquePrefix makes user names that cannot collide with an earlier run on
// the same server.
func uniquePrefix(scenario string) string {
	return fmt.Sprintf("bench-%s-%x", scenario, time.Now().UnixNano()&0xffffffffff)
}
