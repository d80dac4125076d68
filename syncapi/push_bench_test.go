package syncapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

const storageMainThread = storage.MainThread

// pushBenchRoom returns the RoomOutput messages of a room where alice is
// joined with members other users of server (local when it is the bench
// server), then n messages of alice's.
func pushBenchRoom(tb testing.TB, members int, server string, n int) (setup, msgs [][]byte) {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	r := newBenchRoom(0, key)
	empty, alice := "", "@alice:"+benchServer
	setup = append(setup,
		r.next(tb, spec.MRoomCreate, &empty, map[string]any{"room_version": "10", "creator": alice}),
		r.next(tb, spec.MRoomMember, &alice, map[string]any{"membership": "join", "displayname": "Alice"}),
		r.next(tb, spec.MRoomJoinRules, &empty, map[string]any{"join_rule": "public"}))
	for i := 0; i < members; i++ {
		u := fmt.Sprintf("@user%d:%s", i, server)
		r.sender = u
		setup = append(setup, r.next(tb, spec.MRoomMember, &u, map[string]any{"membership": "join", "displayname": fmt.Sprintf("User %d", i)}))
	}
	r.sender = alice
	for i := 0; i < n; i++ {
		msgs = append(msgs, r.next(tb, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("hello everyone, message %d", i)}))
	}
	return setup, msgs
}

// BenchmarkConsumeWithPush measures the events per second the sync API
// applies to a room where every event is evaluated against the push rules
// (server defaults) of each local member and their notifications written:
// 1,000 local members, 10 local members, and, as the cost without push,
// 10 remote members (nobody to evaluate for).
func BenchmarkConsumeWithPush(b *testing.B) {
	for _, c := range []struct {
		name    string
		members int
		server  string
	}{
		{"local=1000", 1000, benchServer},
		{"local=10", 10, benchServer},
		{"remote=10", 10, "remote.test"},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := benchSyncAPI(b)
			setup, msgs := pushBenchRoom(b, c.members, c.server, b.N)
			ctx := context.Background()
			seq := uint64(0)
			apply := func(m []byte) {
				seq++
				if err := s.onRoomOutputs(ctx, []*bus.Msg{{Data: m, Seq: seq}}); err != nil {
					b.Fatal(err)
				}
			}
			for _, m := range setup {
				apply(m)
			}
			// Counts and notification events are saved as the server
			// saves them: in the background, and once more at the end.
			stop, err := s.startUnread(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for _, m := range msgs {
				apply(m)
			}
			stop()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if c.server == benchServer {
				// Each member has every message unread.
				room := newBenchRoom(0, nil).id
				for _, u := range []string{"@user0:" + benchServer, fmt.Sprintf("@user%d:%s", c.members-1, benchServer)} {
					if got := s.unread.counts(u, []string{room})[room][storageMainThread].n; got != b.N {
						b.Fatalf("%s has %d unread, want %d", u, got, b.N)
					}
				}
			}
		})
	}
}
