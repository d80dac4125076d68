// Package sqltest opens fresh databases of both engines for tests. Only
// tests import it, so the production binary does not link "testing".
package sqltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// PostgresEnv names the environment variable holding the PostgreSQL DSN that
// tests use. CI always sets it; without it the PostgreSQL runs are skipped.
const PostgresEnv = "MYELIN_TEST_POSTGRES"

// ForEachDB runs body once on a fresh SQLite database and, when
// MYELIN_TEST_POSTGRES is set, once on a fresh PostgreSQL schema.
func ForEachDB(t *testing.T, body func(t *testing.T, db *sqlutil.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { body(t, Open(t, sqlutil.SQLite)) })
	t.Run("postgres", func(t *testing.T) {
		if os.Getenv(PostgresEnv) == "" {
			t.Skip(PostgresEnv + " not set")
		}
		body(t, Open(t, sqlutil.Postgres))
	})
}

// DSN returns the DSN of a fresh, empty database for one test: a SQLite
// file in t.TempDir(), or a new PostgreSQL schema (dropped when the test ends)
// selected through search_path.
func DSN(t testing.TB, d sqlutil.Dialect) string {
	t.Helper()
	if d == sqlutil.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	}
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Fatal(PostgresEnv + " not set")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "test_" + hex.EncodeToString(b[:])
	admin, err := sqlutil.Open(context.Background(), base, sqlutil.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatalf("connect to %s: %v", PostgresEnv, err)
	}
	if _, err := admin.ExecContext(context.Background(), `CREATE SCHEMA `+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Open opens a fresh database of the given dialect for one test and
// closes it when the test ends.
func Open(t testing.TB, d sqlutil.Dialect) *sqlutil.DB {
	t.Helper()
	db, err := sqlutil.Open(context.Background(), DSN(t, d), sqlutil.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatalf("open test db: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
