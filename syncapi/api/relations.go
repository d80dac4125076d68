package api

import (
	"context"
	"encoding/json"
)

// RelationsAPI gives the bundled aggregations the sync API computes from
// its relations index, for events other components serve (GET /event).
type RelationsAPI interface {
	// BundledAggregations returns unsigned."m.relations" of each of the
	// events that has any, as userID sees them; events without any, and
	// events the sync API does not hold, are absent. It fails only on a
	// storage error.
	BundledAggregations(ctx context.Context, userID string, eventIDs []string) (map[string]json.RawMessage, error)
}
