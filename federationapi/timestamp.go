package federationapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
)

// timestampServers bounds the servers one EventAtTimestamp asks.
const timestampServers = 5

// EventAtTimestamp implements fedapi.FederationAPI: it asks the room's
// other joined servers in turn (GET /timestamp_to_event) until one knows
// an event of the room at ts in the direction. An answer that is not an
// event ID of the room's form, or a timestamp on the wrong side of ts, is
// hostile and skipped. As Synapse, a 404 from one server moves on to the
// next.
func (f *FederationAPI) EventAtTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (fedapi.RemoteEventAt, bool, error) {
	servers, err := f.rooms.QueryJoinedServers(ctx, roomID)
	if err != nil {
		return fedapi.RemoteEventAt{}, false, err
	}
	servers = f.destinations(servers)
	dir := "b"
	if forward {
		dir = "f"
	}
	path := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?" +
		url.Values{"ts": {strconv.FormatInt(ts, 10)}, "dir": {dir}}.Encode()
	var errs []error
	answered := 0
	for i, s := range servers {
		if i == timestampServers {
			break
		}
		var res struct {
			EventID  string `json:"event_id"`
			OriginTS *int64 `json:"origin_server_ts"`
		}
		err := remoteError(spec.ServerName(s), f.doSigned(ctx, http.MethodGet, spec.ServerName(s), path, nil, &res))
		var re *fedapi.RemoteError
		if errors.As(err, &re) && re.Status == http.StatusNotFound {
			answered++
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return fedapi.RemoteEventAt{}, false, ctx.Err()
			}
			f.log.Info("timestamp_to_event failed", slog.String("room_id", roomID), slog.String("server", s), slog.String("error", err.Error()))
			errs = append(errs, err)
			continue
		}
		answered++
		if res.OriginTS == nil || len(res.EventID) < 2 || res.EventID[0] != '$' ||
			(forward && *res.OriginTS < ts) || (!forward && *res.OriginTS > ts) {
			f.log.Info("timestamp_to_event: a bad answer", slog.String("room_id", roomID), slog.String("server", s))
			continue
		}
		return fedapi.RemoteEventAt{Server: s, EventID: res.EventID, OriginTS: *res.OriginTS}, true, nil
	}
	if answered == 0 && len(errs) > 0 {
		return fedapi.RemoteEventAt{}, false, fmt.Errorf("%w: %v", fedapi.ErrNoServer, errors.Join(errs...))
	}
	return fedapi.RemoteEventAt{}, false, nil
}
