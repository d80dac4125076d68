package syncapi

import (
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/clientevent"
	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// formatter turns stored events into what a request asked for: client
// format (with or without room_id) or federation format, with the sender
// device's transaction ID, the replaced state's content, and only the
// filter's event_fields.
type formatter struct {
	userID, deviceID string
	federation       bool
	withRoomID       bool
	fields           []string
	// memberships are the user's membership changes per room, for
	// unsigned.membership (MSC4115); joined are rooms they were joined
	// to all along the events formatted. Rooms in neither go without.
	memberships map[string][]storage.MembershipChange
	joined      map[string]bool
	// relations are the bundled aggregations of the events being served
	// (unsigned."m.relations"), by event ID (see bundleRelations).
	relations map[string]json.RawMessage
}

func newFormatter(userID, deviceID string, f *filter.Filter, withRoomID bool) *formatter {
	fm := &formatter{userID: userID, deviceID: deviceID, withRoomID: withRoomID}
	if f != nil {
		fm.federation = f.EventFormat == "federation"
		fm.fields = f.EventFields
	}
	return fm
}

// withMemberships gives the user's membership changes in a room (all of
// them, in order) for unsigned.membership.
func (fm *formatter) withMemberships(roomID string, changes []storage.MembershipChange) {
	if fm.memberships == nil {
		fm.memberships = map[string][]storage.MembershipChange{}
	}
	fm.memberships[roomID] = changes
}

// withJoined says the user was joined to the room all along the events.
func (fm *formatter) withJoined(roomID string) {
	if fm.joined == nil {
		fm.joined = map[string]bool{}
	}
	fm.joined[roomID] = true
}

// membershipAt is the user's membership at an event, including the
// changes it made ("leave" before any), or "" when unknown.
func (fm *formatter) membershipAt(e *storage.Event) string {
	if fm.joined[e.RoomID] {
		return spec.Join
	}
	changes, ok := fm.memberships[e.RoomID]
	if !ok {
		return ""
	}
	m := spec.Leave
	for _, c := range changes {
		if c.Pos > e.Pos {
			break
		}
		m = c.Membership
	}
	return m
}

// event formats a timeline event.
func (fm *formatter) event(e *storage.Event) json.RawMessage {
	var out []byte
	if fm.federation {
		out = withEventID(e.JSON, e.EventID)
	} else {
		ce := clientevent.FromJSON(e.EventID, e.JSON, fm.withRoomID)
		out, _ = json.Marshal(ce)
	}
	if e.TxnID != "" && e.Sender == fm.userID && e.DeviceID == fm.deviceID {
		out, _ = sjson.SetBytes(out, "unsigned.transaction_id", e.TxnID)
	}
	if m := fm.membershipAt(e); m != "" {
		out, _ = sjson.SetBytes(out, "unsigned.membership", m)
	}
	if e.ReplacesState != "" {
		out, _ = sjson.SetBytes(out, "unsigned.replaces_state", e.ReplacesState)
		if len(e.PrevContent) > 0 {
			out, _ = sjson.SetRawBytes(out, "unsigned.prev_content", e.PrevContent)
		}
		if e.PrevSender != "" {
			out, _ = sjson.SetBytes(out, "unsigned.prev_sender", e.PrevSender)
		}
	}
	out = fm.project(out)
	if r, ok := fm.relations[e.EventID]; ok {
		// Even when event_fields left out unsigned, as Synapse.
		out, _ = sjson.SetRawBytes(out, `unsigned.m\.relations`, r)
	}
	return out
}

// state formats a state event from the state table.
func (fm *formatter) state(eventID string, js []byte) json.RawMessage {
	if fm.federation {
		return fm.project(withEventID(js, eventID))
	}
	out, _ := json.Marshal(clientevent.FromJSON(eventID, js, fm.withRoomID))
	return fm.project(out)
}

// withEventID adds the event ID to a federation-format event: from room
// version 3 on it is not part of the event, but clients need it.
func withEventID(js []byte, eventID string) []byte {
	out, err := sjson.SetBytes(append([]byte(nil), js...), "event_id", eventID)
	if err != nil {
		return js
	}
	return out
}

// project keeps only the filter's event_fields.
func (fm *formatter) project(js []byte) json.RawMessage {
	if len(fm.fields) == 0 {
		return js
	}
	out := []byte(`{}`)
	for _, path := range fm.fields {
		if v := gjson.GetBytes(js, path); v.Exists() {
			out, _ = sjson.SetRawBytes(out, path, []byte(v.Raw))
		}
	}
	return out
}

// matchType reports whether an event type matches a filter pattern ("*"
// is a wildcard).
func matchType(pattern, typ string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == typ
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(typ, parts[0]) {
		return false
	}
	rest := typ[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return strings.HasSuffix(rest, parts[len(parts)-1])
}

// eventAllowed applies an event filter's type and sender lists.
func eventAllowed(f *filter.EventFilter, typ, sender string) bool {
	if f == nil {
		return true
	}
	any := func(list *[]string, match func(string) bool) bool {
		for _, v := range *list {
			if match(v) {
				return true
			}
		}
		return false
	}
	if f.NotTypes != nil && any(f.NotTypes, func(p string) bool { return matchType(p, typ) }) {
		return false
	}
	if f.Types != nil && !any(f.Types, func(p string) bool { return matchType(p, typ) }) {
		return false
	}
	if f.NotSenders != nil && any(f.NotSenders, func(s string) bool { return s == sender }) {
		return false
	}
	if f.Senders != nil && !any(f.Senders, func(s string) bool { return s == sender }) {
		return false
	}
	return true
}

// roomAllowed applies room and not_rooms lists.
func roomAllowed(rooms, notRooms *[]string, roomID string) bool {
	if notRooms != nil {
		for _, r := range *notRooms {
			if r == roomID {
				return false
			}
		}
	}
	if rooms != nil {
		for _, r := range *rooms {
			if r == roomID {
				return true
			}
		}
		return false
	}
	return true
}

// timelineCond turns a room event filter into SQL on sync_events "e": the
// limit then counts only matching events.
func timelineCond(f *filter.RoomEventFilter) (string, []any) {
	if f == nil {
		return "", nil
	}
	var conds []string
	var args []any
	likes := func(list []string, negate bool) {
		if len(list) == 0 {
			if !negate {
				conds = append(conds, "FALSE")
			}
			return
		}
		var ors []string
		for _, p := range list {
			if strings.Contains(p, "*") {
				esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(p)
				ors = append(ors, `e.type LIKE ? ESCAPE '\'`)
				args = append(args, strings.ReplaceAll(esc, "*", "%"))
			} else {
				ors = append(ors, "e.type = ?")
				args = append(args, p)
			}
		}
		c := "(" + strings.Join(ors, " OR ") + ")"
		if negate {
			c = "NOT " + c
		}
		conds = append(conds, c)
	}
	if f.Types != nil {
		likes(*f.Types, false)
	}
	if f.NotTypes != nil {
		likes(*f.NotTypes, true)
	}
	senders := func(list []string, negate bool) {
		if len(list) == 0 {
			if !negate {
				conds = append(conds, "FALSE")
			}
			return
		}
		op := "IN"
		if negate {
			op = "NOT IN"
		}
		conds = append(conds, "e.sender "+op+" ("+strings.Repeat("?,", len(list)-1)+"?)")
		for _, s := range list {
			args = append(args, s)
		}
	}
	if f.Senders != nil {
		senders(*f.Senders, false)
	}
	if f.NotSenders != nil {
		senders(*f.NotSenders, true)
	}
	relationConds(f, &conds, &args)
	if f.ContainsURL != nil {
		if *f.ContainsURL {
			conds = append(conds, "e.contains_url")
		} else {
			conds = append(conds, "NOT e.contains_url")
		}
	}
	return strings.Join(conds, " AND "), args
}

// relationConds adds the filter's relation conditions on sync_events "e":
// the event's own relation type (MSC3874), and the children it must have
// (related_by_rel_types and related_by_senders, one child matching both).
func relationConds(f *filter.RoomEventFilter, conds *[]string, args *[]any) {
	in := func(col string, list []string) string {
		for _, v := range list {
			*args = append(*args, v)
		}
		return col + " IN (" + strings.Repeat("?,", len(list)-1) + "?)"
	}
	if f.RelTypes != nil {
		if len(*f.RelTypes) == 0 {
			*conds = append(*conds, "FALSE")
		} else {
			*conds = append(*conds, "EXISTS (SELECT 1 FROM sync_relations own WHERE own.event_id = e.event_id AND "+in("own.rel_type", *f.RelTypes)+")")
		}
	}
	if f.NotRelTypes != nil && len(*f.NotRelTypes) > 0 {
		*conds = append(*conds, "NOT EXISTS (SELECT 1 FROM sync_relations own WHERE own.event_id = e.event_id AND "+in("own.rel_type", *f.NotRelTypes)+")")
	}
	var child []string
	if f.RelatedByRelTypes != nil {
		if len(*f.RelatedByRelTypes) == 0 {
			child = append(child, "FALSE")
		} else {
			child = append(child, in("c.rel_type", *f.RelatedByRelTypes))
		}
	}
	if f.RelatedBySenders != nil {
		if len(*f.RelatedBySenders) == 0 {
			child = append(child, "FALSE")
		} else {
			child = append(child, in("c.sender", *f.RelatedBySenders))
		}
	}
	if len(child) > 0 {
		*conds = append(*conds, "EXISTS (SELECT 1 FROM sync_relations c WHERE c.relates_to_id = e.event_id AND c.room_id = e.room_id AND "+
			strings.Join(child, " AND ")+")")
	}
}
