package api

import (
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// RestrictedJoinRule reads the content of an m.room.join_rules event: the
// join rule and, for restricted and knock_restricted rules, the rooms whose
// members may join (the room IDs of the allow entries of type
// m.room_membership). Malformed entries are left out, and an allow that is
// not a list allows no room (as Synapse reads it): such rules need an
// invite.
func RestrictedJoinRule(content []byte) (joinRule string, allowedRooms []string) {
	joinRule = gjson.GetBytes(content, "join_rule").Str
	allow := gjson.GetBytes(content, "allow")
	if !allow.IsArray() {
		return joinRule, nil
	}
	for _, a := range allow.Array() {
		if !a.IsObject() || a.Get("type").Str != spec.MRoomMembership {
			continue
		}
		if id := a.Get("room_id"); id.Type == gjson.String {
			if _, err := spec.NewRoomID(id.Str); err == nil {
				allowedRooms = append(allowedRooms, id.Str)
			}
		}
	}
	return joinRule, allowedRooms
}
