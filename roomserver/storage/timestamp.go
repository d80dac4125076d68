package storage

import (
	"context"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// SelectEventAtTimestamp returns the event of a room's DAG (not rejected,
// not soft-failed, not an outlier) closest to ts in a direction: forward
// (the first at or after ts) or backward (the last at or before ts);
// ErrNotFound when there is none. Ties on the timestamp are broken by
// depth, then by arrival, as Synapse does: the one that comes next in the
// direction of the search.
func SelectEventAtTimestamp(ctx context.Context, q sqlutil.Querier, roomNID, ts int64, forward bool) (eventID string, originTS int64, err error) {
	query := `SELECT event_id, origin_server_ts FROM rs_events
		WHERE room_nid = ? AND kind = ? AND soft_failed = FALSE AND origin_server_ts <= ?
		ORDER BY origin_server_ts DESC, depth DESC, event_nid DESC LIMIT 1`
	if forward {
		query = `SELECT event_id, origin_server_ts FROM rs_events
		WHERE room_nid = ? AND kind = ? AND soft_failed = FALSE AND origin_server_ts >= ?
		ORDER BY origin_server_ts ASC, depth ASC, event_nid ASC LIMIT 1`
	}
	err = q.QueryRowContext(ctx, query, roomNID, KindNormal, ts).Scan(&eventID, &originTS)
	return eventID, originTS, sqlutil.NotFound(err)
}
