package sqlutil_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func migrated(t *testing.T, db *sqlutil.DB) {
	t.Helper()
	ctx := context.Background()
	fsys := os.DirFS("testdata")
	if err := db.Migrate(ctx, "t", fsys); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// A second run applies nothing and does not fail.
	if err := db.Migrate(ctx, "t", fsys); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
}

func TestMigrateAndQuery(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		var versions int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t_migrations`).Scan(&versions); err != nil || versions != 2 {
			t.Fatalf("migrations recorded = %d, %v; want 2", versions, err)
		}
		var id int64
		err := db.QueryRowContext(ctx, `SELECT 1`).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		err = db.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return tx.QueryRowContext(ctx, `INSERT INTO t_items (name, n, note) VALUES (?, ?, '?') RETURNING id`, "a", 1).Scan(&id)
		})
		if err != nil {
			t.Fatalf("insert: %v", err)
		}
		var note string
		if err := db.QueryRowContext(ctx, `SELECT note FROM t_items WHERE id = ?`, id).Scan(&note); err != nil || note != "?" {
			t.Fatalf("note = %q, %v; want a literal ?", note, err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO t_items (name) VALUES (?)`, "a")
		if !sqlutil.IsUniqueViolation(err) {
			t.Fatalf("duplicate insert: err = %v, want unique violation", err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO t_items (name, n) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET n = t_items.n + 1`, "a", 0)
		if err != nil {
			t.Fatalf("upsert: %v", err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT n FROM t_items WHERE name IN (`+sqlutil.InList(2)+`)`, "a", "zz").Scan(&n); err != nil || n != 2 {
			t.Fatalf("n = %d, %v; want 2", n, err)
		}
	})
}

func TestWithTxRollsBack(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		boom := errors.New("boom")
		err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO t_items (name) VALUES (?)`, "gone"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		var c int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t_items`).Scan(&c); err != nil || c != 0 {
			t.Fatalf("rows after rollback = %d, %v", c, err)
		}
	})
}

// Concurrent writers never see "database is locked": SQLite writes queue on
// the single writer connection.
func TestConcurrentWriters(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		migrated(t, db)
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 10 {
					err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
						_, err := tx.ExecContext(ctx, `INSERT INTO t_items (name) VALUES (?)`, fmt.Sprintf("%d-%d", i, j))
						return err
					})
					if err != nil {
						errs <- err
					}
					var c int
					if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t_items`).Scan(&c); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var c int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t_items`).Scan(&c); err != nil || c != 200 {
			t.Fatalf("rows = %d, %v; want 200", c, err)
		}
	})
}

func TestRebind(t *testing.T) {
	db := &sqlutil.DB{Dialect: sqlutil.Postgres}
	got := db.Rebind(`SELECT a FROM b WHERE c = ? AND d = '?' AND e IN (?,?)`)
	want := `SELECT a FROM b WHERE c = $1 AND d = '?' AND e IN ($2,$3)`
	if got != want {
		t.Fatalf("Rebind = %q, want %q", got, want)
	}
}

func TestOpenRejectsUnknownURL(t *testing.T) {
	if _, err := sqlutil.Open(context.Background(), "mysql://x", sqlutil.Options{}); err == nil {
		t.Fatal("want error for mysql url")
	}
}

// Every SQLite connection, the writer and the readers, gets the configured
// page cache, and the default when none is configured.
func TestSQLiteCacheSize(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		size int64
		want int // PRAGMA cache_size: negative KiB
	}{{1 << 20, -1024}, {0, -(sqlutil.DefaultSQLiteCacheSize >> 10)}} {
		db, err := sqlutil.Open(ctx, "sqlite:"+t.TempDir()+"/c.db", sqlutil.Options{MaxOpenConns: 2, SQLiteCacheSize: c.size})
		if err != nil {
			t.Fatal(err)
		}
		var reader, writer int
		if err := db.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&reader); err != nil {
			t.Fatal(err)
		}
		if err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
			return tx.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&writer)
		}); err != nil {
			t.Fatal(err)
		}
		if reader != c.want || writer != c.want {
			t.Errorf("size %d: cache_size reader %d writer %d, want %d", c.size, reader, writer, c.want)
		}
		db.Close()
	}
}

// ReleaseMemory works on both engines, and the database still answers
// after it.
func TestReleaseMemory(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		if err := db.ReleaseMemory(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("after ReleaseMemory: %d, %v", n, err)
		}
	})
}
