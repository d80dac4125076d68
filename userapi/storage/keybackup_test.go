package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func createTestBackup(t *testing.T, s *Storage, userID string) int64 {
	t.Helper()
	var v int64
	err := s.WithTx(context.Background(), func(tx *sqlutil.Tx) error {
		var err error
		v, err = CreateKeyBackup(context.Background(), tx, userID, "alg", json.RawMessage(`{"k":1}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Versions are numbered per user and never reused; the current one is the
// newest not deleted; a deleted one keeps its row without sessions.
func TestKeyBackupVersions(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		if _, err := SelectCurrentKeyBackup(ctx, s.DB(), "@a:x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("no backup yet: %v", err)
		}
		err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			ok, err := LockKeyBackups(ctx, tx, "@a:x")
			if ok {
				t.Error("locked the backups of a user who never made one")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if v1, v2, vb := createTestBackup(t, s, "@a:x"), createTestBackup(t, s, "@a:x"), createTestBackup(t, s, "@b:x"); v1 != 1 || v2 != 2 || vb != 1 {
			t.Fatalf("versions %d %d, other user %d", v1, v2, vb)
		}
		if cur, err := SelectCurrentKeyBackup(ctx, s.DB(), "@a:x"); err != nil || cur.Version != 2 || cur.Algorithm != "alg" ||
			string(cur.AuthData) != `{"k":1}` || cur.ETag != 0 || cur.Count != 0 || cur.Deleted {
			t.Fatalf("current %+v %v", cur, err)
		}
		if err := UpdateKeyBackupAuthData(ctx, s.DB(), "@a:x", 1, json.RawMessage(`{"k":2}`)); err != nil {
			t.Fatal(err)
		}
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := UpsertBackupSessions(ctx, tx, "@a:x", 2, []BackupSession{{RoomID: "!r", SessionID: "s", SessionData: json.RawMessage(`{}`)}}); err != nil {
				return err
			}
			if _, _, err := BumpKeyBackup(ctx, tx, "@a:x", 2, 1); err != nil {
				return err
			}
			return MarkKeyBackupDeleted(ctx, tx, "@a:x", 2)
		})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := SelectKeyBackup(ctx, s.DB(), "@a:x", 2); err != nil || !b.Deleted || b.Count != 0 {
			t.Fatalf("deleted version %+v %v", b, err)
		}
		if rows, err := SelectBackupSessions(ctx, s.DB(), "@a:x", 2, "", ""); err != nil || len(rows) != 0 {
			t.Fatalf("sessions of a deleted version: %v %v", rows, err)
		}
		if cur, err := SelectCurrentKeyBackup(ctx, s.DB(), "@a:x"); err != nil || cur.Version != 1 || string(cur.AuthData) != `{"k":2}` {
			t.Fatalf("current after deleting the newest: %+v %v", cur, err)
		}
		if v := createTestBackup(t, s, "@a:x"); v != 3 {
			t.Fatalf("a version after a deleted one: %d", v)
		}
		if _, err := SelectKeyBackup(ctx, s.DB(), "@a:x", 9); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown version: %v", err)
		}
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error { return DeleteAllKeyBackups(ctx, tx, "@a:x") })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := SelectKeyBackup(ctx, s.DB(), "@a:x", 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after deleting all: %v", err)
		}
		if cur, err := SelectCurrentKeyBackup(ctx, s.DB(), "@b:x"); err != nil || cur.Version != 1 {
			t.Fatalf("another user's backup after deleting all of one: %+v %v", cur, err)
		}
	})
}

// Concurrent creates get distinct versions.
func TestKeyBackupConcurrentCreate(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		s := newTestStorage(t, db)
		const n = 12
		versions := make(chan int64, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				versions <- createTestBackup(t, s, "@a:x")
			}()
		}
		wg.Wait()
		close(versions)
		seen := map[int64]bool{}
		for v := range versions {
			if seen[v] || v < 1 || v > n {
				t.Fatalf("version %d twice or out of range", v)
			}
			seen[v] = true
		}
	})
}

// Sessions are written and read in batches larger than one statement's,
// by key and by selection.
func TestBackupSessionsBatches(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s := newTestStorage(t, db)
		v := createTestBackup(t, s, "@a:x")
		other := createTestBackup(t, s, "@b:x")
		const n = 1000
		var sessions []BackupSession
		var keys []BackupSessionKey
		for i := range n {
			room := fmt.Sprintf("!room%d:x", i%3)
			id := fmt.Sprintf("s%04d", i)
			sessions = append(sessions, BackupSession{RoomID: room, SessionID: id, FirstMessageIndex: int64(i), ForwardedCount: int64(i % 5),
				IsVerified: i%2 == 0, SessionData: json.RawMessage(fmt.Sprintf(`{"c":%d}`, i))})
			keys = append(keys, BackupSessionKey{room, id})
		}
		before := db.Queries()
		err := s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if err := UpsertBackupSessions(ctx, tx, "@a:x", v, sessions); err != nil {
				return err
			}
			return UpsertBackupSessions(ctx, tx, "@b:x", other, sessions[:1])
		})
		if err != nil {
			t.Fatal(err)
		}
		if q := db.Queries() - before; q > 6 {
			t.Fatalf("%d statements to write %d sessions", q, n)
		}
		// By key: the stored ones among present and absent keys.
		probe := append(append([]BackupSessionKey{}, keys...), BackupSessionKey{"!room0:x", "absent"}, BackupSessionKey{"!nope:x", "s0000"})
		got, err := SelectBackupSessionsByKey(ctx, s.DB(), "@a:x", v, probe)
		if err != nil || len(got) != n {
			t.Fatalf("by key: %d sessions, %v", len(got), err)
		}
		if g := got[BackupSessionKey{"!room1:x", "s0001"}]; g.FirstMessageIndex != 1 || g.ForwardedCount != 1 || g.IsVerified {
			t.Fatalf("by key: %+v", g)
		}
		// Overwrite one.
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return UpsertBackupSessions(ctx, tx, "@a:x", v, []BackupSession{{RoomID: "!room1:x", SessionID: "s0001", FirstMessageIndex: 0,
				ForwardedCount: 0, IsVerified: true, SessionData: json.RawMessage(`{"new":true}`)}})
		})
		if err != nil {
			t.Fatal(err)
		}
		one, err := SelectBackupSessions(ctx, s.DB(), "@a:x", v, "!room1:x", "s0001")
		if err != nil || len(one) != 1 || !one[0].IsVerified || string(one[0].SessionData) != `{"new":true}` {
			t.Fatalf("overwritten session %+v %v", one, err)
		}
		room, err := SelectBackupSessions(ctx, s.DB(), "@a:x", v, "!room2:x", "")
		if err != nil || len(room) != 333 || room[0].SessionID != "s0002" {
			t.Fatalf("room: %d %v", len(room), err)
		}
		all, err := SelectBackupSessions(ctx, s.DB(), "@a:x", v, "", "")
		if err != nil || len(all) != n {
			t.Fatalf("all: %d %v", len(all), err)
		}
		var deleted int64
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			var err error
			deleted, err = DeleteBackupSessions(ctx, tx, "@a:x", v, "!room0:x", "")
			return err
		})
		if err != nil || deleted != 334 {
			t.Fatalf("deleted %d %v", deleted, err)
		}
		if b, err := SelectBackupSessions(ctx, s.DB(), "@b:x", other, "", ""); err != nil || len(b) != 1 {
			t.Fatalf("another user's sessions: %v %v", b, err)
		}
	})
}
