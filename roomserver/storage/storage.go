// Package storage is the roomserver's tables (prefix rs_): rooms, events
// with numeric IDs, state snapshots as deduplicated blocks, memberships,
// transaction IDs, redactions, aliases and the published directory, and the
// input positions and output queue of the roomserver's streams.
package storage

import (
	"context"
	"embed"
	"errors"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

//go:embed schema
var schema embed.FS

// Sentinel errors.
var (
	ErrNotFound = sqlutil.ErrNotFound
	ErrExists   = errors.New("already exists")
)

// Storage is the roomserver's database.
type Storage struct {
	db *sqlutil.DB
}

// New migrates the roomserver's tables.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "rs", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// WithTx runs fn in a write transaction.
func (s *Storage) WithTx(ctx context.Context, fn func(tx *sqlutil.Tx) error) error {
	return s.db.WithTx(ctx, fn)
}

// DB is the handle for reads outside a transaction.
func (s *Storage) DB() sqlutil.Querier { return s.db }
