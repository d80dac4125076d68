// Package storage is the user API's tables (prefix user_): accounts,
// devices, access and refresh tokens, profiles, account data, push rules
// and pushers, end-to-end encryption keys and signatures, remote device
// lists, key backups, dehydrated devices and the outbox of UserOutput, on
// SQLite or PostgreSQL with one query text.
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

// Storage is the user API's database.
type Storage struct {
	db *sqlutil.DB
}

// New migrates the user API's tables and returns its storage.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "user", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// WithTx runs fn in a write transaction.
func (s *Storage) WithTx(ctx context.Context, fn func(tx *sqlutil.Tx) error) error {
	return s.db.WithTx(ctx, fn)
}

// DB is the handle for queries outside a transaction.
func (s *Storage) DB() sqlutil.Querier { return s.db }
