package api

import (
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
)

// SupportedRoomVersion reports whether Myelin takes part in rooms of a
// version: the stable versions 1 to 12. gomatrixserverlib also marks the
// experimental state DAG version (MSC4242) stable; Myelin implements
// neither it nor pseudonymous IDs.
func SupportedRoomVersion(v gomatrixserverlib.RoomVersion) bool {
	impl, err := gomatrixserverlib.GetRoomVersion(v)
	return err == nil && impl.Stable() && !impl.StateDAGs() && v != gomatrixserverlib.RoomVersionPseudoIDs
}

// SupportedRoomVersions lists the supported room versions, sorted.
func SupportedRoomVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for v := range gomatrixserverlib.RoomVersions() {
		if SupportedRoomVersion(v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}
