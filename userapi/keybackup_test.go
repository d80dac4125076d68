package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
)

func TestRoomKeyReplaces(t *testing.T) {
	key := func(verified bool, index, forwarded int64) *api.RoomKey {
		return &api.RoomKey{IsVerified: verified, FirstMessageIndex: index, ForwardedCount: forwarded}
	}
	for _, tc := range []struct {
		upload, stored *api.RoomKey
		want           bool
	}{
		{key(true, 10, 5), key(false, 0, 0), true},  // verified beats unverified, whatever the index
		{key(false, 0, 0), key(true, 10, 5), false}, // unverified never replaces verified
		{key(false, 9, 9), key(false, 10, 0), true}, // lower index wins
		{key(false, 11, 0), key(false, 10, 5), false},
		{key(true, 10, 4), key(true, 10, 5), true}, // same index: lower forwarded count wins
		{key(true, 10, 6), key(true, 10, 5), false},
		{key(false, 10, 5), key(false, 10, 5), false}, // equal: the stored key stays
	} {
		if got := tc.upload.Replaces(tc.stored); got != tc.want {
			t.Errorf("%+v replaces %+v: %v, want %v", *tc.upload, *tc.stored, got, tc.want)
		}
	}
}

func backupRoomKey(room, session string, verified bool, index, forwarded int64) api.RoomKey {
	return api.RoomKey{RoomID: room, SessionID: session, IsVerified: verified, FirstMessageIndex: index, ForwardedCount: forwarded,
		SessionData: json.RawMessage(fmt.Sprintf(`{"i":%d,"f":%d}`, index, forwarded))}
}

// An upload of many sessions is a handful of statements; concurrent
// uploads of overlapping sessions keep the count exact and the best keys.
func TestPutRoomKeysBatchedAndConcurrent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		const user = "@alice:test.org"
		v, err := u.CreateKeyBackup(ctx, user, "m.megolm_backup.v1", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		var keys []api.RoomKey
		for i := range 1000 {
			keys = append(keys, backupRoomKey(fmt.Sprintf("!r%d:x", i%10), fmt.Sprintf("s%d", i), false, 100, 5))
		}
		before := db.Queries()
		counts, err := u.PutRoomKeys(ctx, user, v, keys)
		if err != nil || counts.Count != 1000 || counts.ETag != "1" {
			t.Fatalf("upload: %+v %v", counts, err)
		}
		if q := db.Queries() - before; q > 12 {
			t.Fatalf("%d statements for an upload of 1000 sessions", q)
		}

		// 8 uploads at once, each improving a different half of the
		// sessions 0-99 and adding 10 sessions of its own.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var batch []api.RoomKey
				for i := range 100 {
					if i%2 == w%2 {
						batch = append(batch, backupRoomKey(fmt.Sprintf("!r%d:x", i%10), fmt.Sprintf("s%d", i), false, int64(50-w), 5))
					}
				}
				for i := range 10 {
					batch = append(batch, backupRoomKey("!new:x", fmt.Sprintf("w%d-%d", w, i), true, 0, 0))
				}
				_, err := u.PutRoomKeys(ctx, user, v, batch)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		b, err := u.QueryKeyBackup(ctx, user, v)
		if err != nil || b.Count != 1080 {
			t.Fatalf("after concurrent uploads: %+v %v", b, err)
		}
		got, err := u.QueryRoomKeys(ctx, user, v, "!r0:x", "s0")
		// Even sessions were improved by workers 0, 2, 4, 6: the lowest
		// index is worker 6's.
		if err != nil || len(got) != 1 || got[0].FirstMessageIndex != 44 || string(got[0].SessionData) != `{"i":44,"f":5}` {
			t.Fatalf("best key of s0: %+v %v", got, err)
		}
		got, err = u.QueryRoomKeys(ctx, user, v, "!r1:x", "s1")
		if err != nil || len(got) != 1 || got[0].FirstMessageIndex != 43 {
			t.Fatalf("best key of s1: %+v %v", got, err)
		}

		// A duplicate session in one call keeps its best copy.
		dup := []api.RoomKey{backupRoomKey("!d:x", "d", false, 5, 0), backupRoomKey("!d:x", "d", false, 3, 0), backupRoomKey("!d:x", "d", false, 4, 0)}
		if counts, err := u.PutRoomKeys(ctx, user, v, dup); err != nil || counts.Count != 1081 {
			t.Fatalf("duplicates: %+v %v", counts, err)
		}
		if got, err := u.QueryRoomKeys(ctx, user, v, "!d:x", "d"); err != nil || len(got) != 1 || got[0].FirstMessageIndex != 3 {
			t.Fatalf("duplicates kept %+v %v", got, err)
		}
	})
}

// Deactivation deletes the user's backups.
func TestDeactivateDeletesKeyBackups(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, _ := newTestAPI(t, db)
		acc, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "alice", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		v, err := u.CreateKeyBackup(ctx, acc.UserID, "m.megolm_backup.v1", json.RawMessage(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.PutRoomKeys(ctx, acc.UserID, v, []api.RoomKey{backupRoomKey("!r:x", "s", true, 0, 0)}); err != nil {
			t.Fatal(err)
		}
		if err := u.Deactivate(ctx, acc.UserID, false); err != nil {
			t.Fatal(err)
		}
		if _, err := u.QueryKeyBackup(ctx, acc.UserID, ""); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("backup after deactivation: %v", err)
		}
		if _, err := u.QueryRoomKeys(ctx, acc.UserID, v, "", ""); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("keys after deactivation: %v", err)
		}
	})
}
