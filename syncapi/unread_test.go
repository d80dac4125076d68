package syncapi

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// A crash loses no notification: the counts not saved when the sync API
// stopped are rebuilt at the next start from the events after the saved
// position, less what receipts had read.
func TestUnreadCountsSurviveACrash(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		open := func() *SyncAPI {
			s, err := New(ctx, Config{ServerName: benchServer}, db, nil, &ftRooms{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.load(ctx); err != nil {
				t.Fatal(err)
			}
			return s
		}
		setup, msgs := pushBenchRoom(t, 3, benchServer, 6)
		room := newBenchRoom(0, nil).id
		s1 := open()
		stop, err := s1.startUnread(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(0)
		apply := func(s *SyncAPI, m []byte) {
			seq++
			if err := s.onRoomOutputs(ctx, []*bus.Msg{{Data: m, Seq: seq}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range setup {
			apply(s1, m)
		}
		for _, m := range msgs[:3] {
			apply(s1, m)
		}
		stop() // a clean stop saves: 3 unread each
		s2 := open()
		stop2, err := s2.startUnread(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[3:] {
			apply(s2, m)
		}
		// user1 read up to the fifth message; then the process dies
		// before the counts are saved (no stop2).
		fifth, err := storage.MaxEventPos(ctx, s2.store.DB())
		if err != nil {
			t.Fatal(err)
		}
		fifth--
		evs, err := storage.RoomEvents(ctx, s2.store.DB(), room, fifth-1, fifth+1, true, 1, "", nil)
		if err != nil || len(evs) != 1 {
			t.Fatalf("fifth message: %v %v", evs, err)
		}
		if err := s2.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return storage.UpsertReceipt(ctx, tx, &storage.Receipt{RoomID: room, Type: "m.read", UserID: "@user1:" + benchServer,
				EventID: evs[0].EventID, TS: 1, Pos: 1})
		}); err != nil {
			t.Fatal(err)
		}
		_ = stop2 // never called: the crash
		s3 := open()
		stop3, err := s3.startUnread(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stop3()
		for user, want := range map[string]int{"@user0:" + benchServer: 6, "@user1:" + benchServer: 1, "@user2:" + benchServer: 6} {
			if got := s3.unread.counts(user, []string{room})[room][storage.MainThread].n; got != want {
				t.Errorf("%s: %d unread after the crash, want %d", user, got, want)
			}
		}
		// The notification events were written again: /notifications and
		// pushers see all six.
		if err := s3.saveUnread(ctx); err != nil {
			t.Fatal(err)
		}
		nevs, err := storage.NotificationEvents(ctx, s3.store.DB(), []string{room}, 0, 1<<62, false, 100)
		if err != nil || len(nevs) != 6 {
			t.Errorf("notification events after the crash: %d %v, want 6", len(nevs), err)
		}
	})
}
