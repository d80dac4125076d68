package syncapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

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
