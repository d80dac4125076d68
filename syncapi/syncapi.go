// Package syncapi serves what clients read the world through: /sync,
// /messages, /context, typing, receipts and presence, from a read model fed
// by streams. It also owns filters, which shape those reads.
package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// SyncAPI is the sync component.
type SyncAPI struct {
	store *storage.Storage
	log   *slog.Logger
}

// New migrates the sync API's tables and returns the component.
func New(ctx context.Context, db *sqlutil.DB, log *slog.Logger) (*SyncAPI, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("syncapi: %w", err)
	}
	return &SyncAPI{store: st, log: log.With("component", "syncapi")}, nil
}

// Register mounts the sync API's client routes.
func (s *SyncAPI) Register(srv *httputil.Server) {
	srv.HandleClient(http.MethodPost, "/user/{userId}/filter", s.postFilter, httputil.Auth(), httputil.Guests())
	srv.HandleClient(http.MethodGet, "/user/{userId}/filter/{filterId}", s.getFilter, httputil.Auth(), httputil.Guests())
}

// POST /user/{userId}/filter
func (s *SyncAPI) postFilter(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	if httputil.Vars(r)["userId"] != dev.UserID {
		return nil, mxerr.Forbidden("Cannot create filters for other users")
	}
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := httputil.UnmarshalObject(body, &raw); err != nil {
		return nil, err
	}
	if _, err := filter.Parse(body); err != nil {
		return nil, mxerr.BadJSON("%v", err)
	}
	// Stored canonical, so that the same filter written differently gets
	// the same ID.
	canonical, err := gomatrixserverlib.CanonicalJSON(body)
	if err != nil {
		return nil, mxerr.BadJSON("%v", err)
	}
	id, err := s.store.PutFilter(r.Context(), dev.UserID, canonical)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": id}, nil
}

// GET /user/{userId}/filter/{filterId}
func (s *SyncAPI) getFilter(r *http.Request) (any, error) {
	dev := httputil.DeviceFrom(r.Context())
	vars := httputil.Vars(r)
	if vars["userId"] != dev.UserID {
		return nil, mxerr.Forbidden("Cannot get filters of other users")
	}
	f, err := s.store.GetFilter(r.Context(), dev.UserID, vars["filterId"])
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("No such filter")
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(f), nil
}
