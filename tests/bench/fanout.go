package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutFilter is what the long-polling clients sync with: Element's
// usual shape (lazy-loaded members), with a timeline long enough that a
// client a second behind still gets every message.
const fanoutFilter = `{"room":{"timeline":{"limit":200},"state":{"lazy_load_members":true}}}`

// fanoutScenario: clients members of one room long-poll /sync while one
// sender sends rate messages a second for dur, each send started on
// schedule (not after the previous one returned). Every client must see
// every message that was sent.
func fanoutScenario(ctx context.Context, a *api, p proc, clients int, rate float64, dur time.Duration) *Result {
	r := newResult("fanout")
	prefix := uniquePrefix("fanout")
	us, err := a.registerMany(ctx, prefix, clients+1, 10)
	if err != nil {
		r.failf("setup: register: %w", err)
		return r
	}
	sender, members := us[0], us[1:]
	room, err := a.createRoom(ctx, sender, "fanout")
	if err != nil {
		r.failf("setup: createRoom: %w", err)
		return r
	}
	if err := parallel(clients, 10, func(i int) error { return a.join(ctx, members[i], room) }); err != nil {
		r.failf("setup: join: %w", err)
		return r
	}

	total := max(1, int(rate*dur.Seconds()))
	sendStart := make([]atomic.Int64, total) // UnixNano; 0 until the send starts
	sentOK := make([]atomic.Bool, total)
	var deliveries collector
	var limited, dups, unknown atomic.Int64
	received := make([][]atomic.Bool, clients)
	counts := make([]atomic.Int64, clients)
	for i := range received {
		received[i] = make([]atomic.Bool, total)
	}

	// The clients: an initial sync, then long-polls until told to stop.
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var ready, polling sync.WaitGroup
	ready.Add(clients)
	polling.Add(clients)
	for i := range clients {
		go func() {
			defer polling.Done()
			since := ""
			first := true
			for pollCtx.Err() == nil {
				timeout := 30000
				if first {
					timeout = 0
				}
				resp, err := a.sync(pollCtx, members[i], fanoutFilter, since, timeout)
				now := time.Now()
				if err != nil {
					if pollCtx.Err() == nil {
						r.failf("client %d: %w", i, err)
						time.Sleep(100 * time.Millisecond)
					}
					continue
				}
				since = resp.NextBatch
				if first {
					first = false
					ready.Done()
					continue // history before the sender starts
				}
				jr, ok := resp.Rooms.Join[room]
				if !ok {
					continue
				}
				if jr.Timeline.Limited {
					limited.Add(1)
				}
				for _, ev := range jr.Timeline.Events {
					if ev.Type != "m.room.message" {
						continue
					}
					var c struct {
						Seq *int `json:"bench_seq"`
					}
					if json.Unmarshal(ev.Content, &c) != nil || c.Seq == nil || *c.Seq < 0 || *c.Seq >= total {
						unknown.Add(1)
						continue
					}
					st := sendStart[*c.Seq].Load()
					if received[i][*c.Seq].Swap(true) {
						dups.Add(1)
						continue
					}
					counts[i].Add(1)
					deliveries.add(now.Sub(time.Unix(0, st)))
				}
			}
		}()
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	select {
	case <-allReady:
	case <-time.After(60 * time.Second):
		r.failf("setup: the clients' initial syncs did not all succeed within 60 s")
		return r
	case <-ctx.Done():
		return r
	}
	time.Sleep(500 * time.Millisecond) // let the clients settle into their long-polls

	cpu0, cpuErr := p.cpuIfKnown()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	var sends collector
	var inflight sync.WaitGroup
	for seq := range total {
		at := start.Add(time.Duration(seq) * interval)
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			t0 := time.Now()
			sendStart[seq].Store(t0.UnixNano())
			_, err := a.sendContent(ctx, sender, room, map[string]any{
				"msgtype": "m.text", "body": fmt.Sprintf("fanout message %d", seq), "bench_seq": seq,
			})
			sends.add(time.Since(t0))
			if err != nil {
				r.fail(err)
				return
			}
			sentOK[seq].Store(true)
		}()
	}
	inflight.Wait()
	sendWall := time.Since(start)
	okSends := 0
	for i := range sentOK {
		if sentOK[i].Load() {
			okSends++
		}
	}
	// Every client should have every message soon; wait up to 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for i := range counts {
			if counts[i].Load() < int64(okSends) {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(start)
	cpu1, cpuErr2 := p.cpuIfKnown()
	stopPolls()
	polling.Wait()

	lost := 0
	for i := range received {
		for seq := range received[i] {
			if sentOK[seq].Load() && !received[i][seq].Load() {
				lost++
			}
		}
	}
	if okSends != total {
		r.failf("%d of %d sends succeeded", okSends, total)
	}
	if lost > 0 {
		r.failf("%d deliveries lost (of %d messages x %d clients)", lost, okSends, clients)
	}
	if n := unknown.Load(); n > 0 {
		r.failf("%d messages the sender did not send", n)
	}
	r.add("sent_per_s", float64(okSends)/sendWall.Seconds(), "msg/s", "")
	r.addLatencies("send", sends.all(), "", "<50")
	r.addLatencies("delivery", deliveries.all(), "", "<50")
	r.add("lost", float64(lost), "", "<1")
	r.add("limited_timelines", float64(limited.Load()), "", "")
	r.add("duplicates", float64(dups.Load()), "", "")
	if err := errors.Join(cpuErr, cpuErr2); err != nil {
		r.fail(err)
	} else if p.pid != 0 {
		r.add("server_cpu", (cpu1-cpu0).Seconds()/wall.Seconds(), "cores", "<1")
	}
	return r
}
