// Package sqlutil puts SQLite and PostgreSQL behind one query text.
//
// Queries are written once with ? placeholders in the SQL subset both engines
// share (RETURNING, ON CONFLICT (cols) DO UPDATE, CTEs, window functions); the
// dialect layer rebinds them to $n for PostgreSQL. Only DDL differs per engine,
// in embedded per-component migrations (see Migrate).
//
// SQLite runs in WAL mode with one writer connection (immediate transactions,
// busy timeout) and a pool of readers, so writes never fail with SQLITE_BUSY
// and reads never wait for writes. Code holding a transaction must do all its
// work through that transaction: on SQLite a second write outside it would
// wait for the single writer connection the transaction holds.
package sqlutil

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

// Dialect names a database engine.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Options tune the connection pools.
type Options struct {
	// MaxOpenConns caps PostgreSQL connections and SQLite readers.
	MaxOpenConns int
	// SQLiteCacheSize is the page cache of each SQLite connection, in
	// bytes (0: DefaultSQLiteCacheSize): SQLite's caches hold at most
	// (1 + MaxOpenConns) times this.
	SQLiteCacheSize int64
}

// readerMaxIdle is how long an unused SQLite reader stays open.
const readerMaxIdle = time.Minute

// DefaultSQLiteCacheSize is the page cache per SQLite connection when
// Options leaves it at zero.
const DefaultSQLiteCacheSize = 2 << 20

// Querier is what storage code runs queries on: a *DB or a *Tx.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// DB is a database handle. Writes (ExecContext, WithTx) go to the writer;
// reads (QueryContext, QueryRowContext) to the reader pool. On PostgreSQL both
// are the same pool.
type DB struct {
	Dialect Dialect
	writer  *sql.DB
	reader  *sql.DB
	rebound sync.Map // query text -> rebound text
	queries atomic.Uint64
	metrics atomic.Pointer[dbMetrics] // nil until RegisterMetrics
}

// Queries counts the statements run so far (for tests that bound them).
func (db *DB) Queries() uint64 { return db.queries.Load() }

// Open connects to url: "sqlite:<path>" (or "file:<path>") for SQLite,
// "postgres://..." or "postgresql://..." for PostgreSQL. SQLite creates the
// file and its directory when missing.
func Open(ctx context.Context, dsn string, o Options) (*DB, error) {
	if o.MaxOpenConns <= 0 {
		o.MaxOpenConns = 10
	}
	if o.SQLiteCacheSize <= 0 {
		o.SQLiteCacheSize = DefaultSQLiteCacheSize
	}
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn, o)
	case strings.HasPrefix(dsn, "sqlite:"), strings.HasPrefix(dsn, "file:"):
		return openSQLite(ctx, dsn, o)
	default:
		return nil, fmt.Errorf("sqlutil: unsupported database url %q (want sqlite:<path> or postgres://...)", redact(dsn))
	}
}

func openPostgres(ctx context.Context, dsn string, o Options) (*DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlutil: open postgres: %w", err)
	}
	db.SetMaxOpenConns(o.MaxOpenConns)
	db.SetMaxIdleConns(min(o.MaxOpenConns, 5))
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlutil: connect to postgres %s: %w", redact(dsn), err)
	}
	return &DB{Dialect: Postgres, writer: db, reader: db}, nil
}

func openSQLite(ctx context.Context, dsn string, o Options) (*DB, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	path = strings.TrimPrefix(path, "//")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		return nil, errors.New("sqlutil: empty sqlite path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlutil: create database directory: %w", err)
		}
	}
	// The database holds password hashes and keys: keep it private. SQLite
	// gives its -wal and -shm files the same mode.
	if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath()
	// A negative cache_size is in KiB.
	common := "_busy_timeout=10000&_foreign_keys=on&_synchronous=NORMAL&_cache_size=-" + strconv.FormatInt(max(o.SQLiteCacheSize>>10, 1), 10) + "&_stmt_cache_size=64"
	writer, err := sql.Open("sqlite3", base+"?_journal_mode=WAL&_txlock=immediate&"+common)
	if err != nil {
		return nil, fmt.Errorf("sqlutil: open sqlite: %w", err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	// The writer connects first so that WAL mode is on before any reader opens.
	if err := writer.PingContext(ctx); err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqlutil: open sqlite %s: %w", path, err)
	}
	reader, err := sql.Open("sqlite3", base+"?_query_only=true&"+common)
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqlutil: open sqlite reader: %w", err)
	}
	reader.SetMaxOpenConns(o.MaxOpenConns)
	reader.SetMaxIdleConns(min(o.MaxOpenConns, 4))
	// A reader's page cache is freed with it: readers unused for a while
	// close, so that an idle server gives back what a burst of reads
	// cached.
	reader.SetConnMaxIdleTime(readerMaxIdle)
	return &DB{Dialect: SQLite, writer: writer, reader: reader}, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.writer.Close()
	if db.reader != db.writer {
		err = errors.Join(err, db.reader.Close())
	}
	return err
}

// Rebind turns ? placeholders into the dialect's form ($1, $2... for
// PostgreSQL). Question marks inside single-quoted literals are left alone.
func (db *DB) Rebind(query string) string {
	db.queries.Add(1)
	if db.Dialect != Postgres {
		return query
	}
	if q, ok := db.rebound.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n, inQuote := 0, false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inQuote = !inQuote
			b.WriteByte(c)
		case c == '?' && !inQuote:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	q := b.String()
	db.rebound.Store(query, q)
	return q
}

// ExecContext runs a write on the writer.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	defer db.observe(opExec, time.Now())
	return db.writer.ExecContext(ctx, db.Rebind(query), args...)
}

// QueryContext runs a read on the reader pool.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	defer db.observe(opQuery, time.Now())
	return db.reader.QueryContext(ctx, db.Rebind(query), args...)
}

// QueryRowContext runs a single-row read on the reader pool.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	defer db.observe(opQuery, time.Now())
	return db.reader.QueryRowContext(ctx, db.Rebind(query), args...)
}

// Tx is a write transaction.
type Tx struct {
	tx *sql.Tx
	db *DB
}

func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	defer t.db.observe(opExec, time.Now())
	return t.tx.ExecContext(ctx, t.db.Rebind(query), args...)
}

func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	defer t.db.observe(opQuery, time.Now())
	return t.tx.QueryContext(ctx, t.db.Rebind(query), args...)
}

func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	defer t.db.observe(opQuery, time.Now())
	return t.tx.QueryRowContext(ctx, t.db.Rebind(query), args...)
}

// Dialect is the engine the transaction runs on.
func (t *Tx) Dialect() Dialect { return t.db.Dialect }

// WithTx runs fn in a write transaction, committing when it returns nil and
// rolling back otherwise (or when it panics).
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	defer db.observe(opTx, time.Now())
	sqlTx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlutil: begin: %w", err)
	}
	tx := &Tx{tx: sqlTx, db: db}
	defer func() {
		if p := recover(); p != nil {
			_ = sqlTx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = sqlTx.Rollback()
			return
		}
		if cerr := sqlTx.Commit(); cerr != nil {
			err = fmt.Errorf("sqlutil: commit: %w", cerr)
		}
	}()
	return fn(tx)
}

// InList returns "?,?,...,?" with n placeholders for an IN (...) list.
func InList(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}

// Args turns a list into query arguments (for an InList), after prefix.
func Args[T any](list []T, prefix ...any) []any {
	out := make([]any, 0, len(prefix)+len(list))
	out = append(out, prefix...)
	for _, v := range list {
		out = append(out, v)
	}
	return out
}

// ErrNotFound is what storage packages return for a missing row.
var ErrNotFound = errors.New("not found")

// NotFound turns database/sql's "no rows" into ErrNotFound.
func NotFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint violation on either engine.
func IsUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

// redact hides the password of a DSN for error messages and logs.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// ReleaseMemory frees what SQLite's page caches hold beyond what they use
// (PRAGMA shrink_memory on the writer; readers free theirs when they
// close after readerMaxIdle) and returns the C heap's free pages to the OS.
// Nothing on PostgreSQL.
func (db *DB) ReleaseMemory(ctx context.Context) error {
	if db.Dialect != SQLite {
		return nil
	}
	_, err := db.writer.ExecContext(ctx, "PRAGMA shrink_memory")
	trimCHeap()
	return err
}
