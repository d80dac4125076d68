// Package storage is the sync API's read model (tables prefixed sync_), on
// SQLite or PostgreSQL with one query text.
package storage

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"strconv"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

//go:embed schema
var schema embed.FS

// ErrNotFound is returned for missing rows.
var ErrNotFound = sqlutil.ErrNotFound

// Storage is the sync API's database.
type Storage struct {
	db *sqlutil.DB
}

// DB is the handle for reads outside a transaction.
func (s *Storage) DB() sqlutil.Querier { return s.db }

// WithTx runs fn in a write transaction.
func (s *Storage) WithTx(ctx context.Context, fn func(tx *sqlutil.Tx) error) error {
	return s.db.WithTx(ctx, fn)
}

// Dialect is the database engine.
func (s *Storage) Dialect() sqlutil.Dialect { return s.db.Dialect }

// New migrates the sync API's tables.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "sync", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// PutFilter stores a filter for the user and returns its ID. Uploading the
// same filter again returns the ID it already has.
func (s *Storage) PutFilter(ctx context.Context, userID string, filterJSON []byte) (string, error) {
	var id int64
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT filter_id FROM sync_filters WHERE user_id = ? AND filter = ?`, userID, string(filterJSON)).Scan(&id)
		if err == nil || !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(filter_id), -1) + 1 FROM sync_filters WHERE user_id = ?`, userID).Scan(&id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sync_filters (user_id, filter_id, filter) VALUES (?, ?, ?)`, userID, id, string(filterJSON))
		return err
	})
	return strconv.FormatInt(id, 10), err
}

// GetFilter returns the stored filter JSON, or ErrNotFound.
func (s *Storage) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || id < 0 {
		return nil, ErrNotFound
	}
	var f string
	err = s.db.QueryRowContext(ctx, `SELECT filter FROM sync_filters WHERE user_id = ? AND filter_id = ?`, userID, id).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(f), err
}
