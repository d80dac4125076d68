package storage

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// schemaBefore is the roomserver's schema without the migrations from
// version first on.
func schemaBefore(t *testing.T, first string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(schema, "schema", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := p[strings.LastIndex(p, "/")+1:]
		if name >= first {
			return nil
		}
		data, err := fs.ReadFile(schema, p)
		out[p] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigrateJoinedServers: migration 0008 fills rs_joined_servers from
// the memberships already stored.
func TestMigrateJoinedServers(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if err := db.Migrate(ctx, "rs", schemaBefore(t, "0008")); err != nil {
			t.Fatal(err)
		}
		for i, m := range []struct {
			room             int64
			user, membership string
		}{
			{1, "@alice:a.test", "join"}, {1, "@bob:a.test", "join"}, {1, "@carol:b.test:8448", "join"},
			{1, "@dan:c.test", "leave"}, {1, "@erin:d.test", "invite"}, {2, "@alice:a.test", "ban"}, {2, "@frank:e.test", "join"},
		} {
			if _, err := db.ExecContext(ctx, `INSERT INTO rs_membership (room_nid, user_id, membership, event_nid) VALUES (?, ?, ?, ?)`,
				m.room, m.user, m.membership, i+1); err != nil {
				t.Fatal(err)
			}
		}
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for room, want := range map[int64][]string{1: {"a.test", "b.test:8448"}, 2: {"e.test"}, 3: nil} {
			got, err := SelectJoinedServers(ctx, s.DB(), room)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("servers of room %d after migration = %v %v, want %v", room, got, err, want)
			}
		}
		// The counts are right too: the last of a server's users leaving
		// takes it off the list, not the first.
		err = s.WithTx(ctx, func(tx *sqlutil.Tx) error {
			_, err := UpsertMembership(ctx, tx, 1, "@alice:a.test", "leave", 10)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := SelectJoinedServers(ctx, s.DB(), 1); !slices.Equal(got, []string{"a.test", "b.test:8448"}) {
			t.Fatalf("servers after one of a.test's two users left: %v", got)
		}
	})
}
