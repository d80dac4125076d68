// Package storage is the federation API's database (tables prefixed fed_):
// remote server keys, received transactions, the outgoing queues and the
// state of each destination, on SQLite or PostgreSQL with one query text.
package storage

import (
	"context"
	"embed"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

//go:embed schema
var schema embed.FS

// ErrNotFound is returned for missing rows.
var ErrNotFound = sqlutil.ErrNotFound

// Storage is the federation API's database.
type Storage struct {
	db *sqlutil.DB
}

// DB is the handle for reads outside a transaction.
func (s *Storage) DB() sqlutil.Querier { return s.db }

// WithTx runs fn in a write transaction.
func (s *Storage) WithTx(ctx context.Context, fn func(tx *sqlutil.Tx) error) error {
	return s.db.WithTx(ctx, fn)
}

// New migrates the federation API's tables.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "fed", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}
