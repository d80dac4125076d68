package sqlutil

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"time"
)

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// Migrate applies the component's pending migrations. fsys holds
// schema/sqlite/NNNN_name.sql and schema/postgres/NNNN_name.sql (a package's
// `//go:embed schema`); each file runs in its own
// transaction and is recorded in the component's table <component>_migrations.
// Concurrent processes migrating the same PostgreSQL database serialise on an
// advisory lock.
func (db *DB) Migrate(ctx context.Context, component string, fsys fs.FS) error {
	dir := "schema/" + string(db.Dialect)
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("sqlutil: %s migrations: %w", component, err)
	}
	type migration struct {
		version int
		name    string
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return fmt.Errorf("sqlutil: %s migration %q: name must be NNNN_name.sql", component, e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{v, e.Name()})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })

	table := component + "_migrations"
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+table+
		` (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
		if !IsUniqueViolation(err) { // two PostgreSQL processes creating it at once
			return fmt.Errorf("sqlutil: create %s: %w", table, err)
		}
	}
	for _, m := range ms {
		text, err := fs.ReadFile(fsys, path.Join(dir, m.name))
		if err != nil {
			return err
		}
		err = db.WithTx(ctx, func(tx *Tx) error {
			if db.Dialect == Postgres {
				h := fnv.New32a()
				h.Write([]byte(table))
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(h.Sum32())); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, string(text)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (version, name, applied_ts) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlutil: %s migration %s: %w", component, m.name, err)
		}
	}
	return nil
}
