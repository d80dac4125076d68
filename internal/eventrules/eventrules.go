// Package eventrules holds the rules on room events that gomatrixserverlib
// leaves out, shared by the roomserver (events it builds, events it takes
// in, state resolution) and the federation API (events other servers
// send): the bounds of depth, prev_events, auth_events and size of a
// received PDU, and the integer power levels of room versions 10 and later.
//
// Allowed is gomatrixserverlib.Allowed with these rules added; every auth
// check goes through it, so that a room's state is the same here as on the
// servers that follow the rules.
package eventrules

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Bounds of a PDU.
const (
	// MaxDepth is the greatest depth an event may have: the greatest
	// integer canonical JSON carries (2^53-1). Synapse's MAX_DEPTH is
	// 2^63-1, its database's limit, but room versions 6 and later refuse
	// any integer past 2^53-1, so an event of a greater depth could be
	// sent nowhere.
	MaxDepth = 1<<53 - 1
	// MaxPrevEvents and MaxAuthEvents are Synapse's limits on what a
	// received event may reference (FederationEventHandler's
	// _sanity_check_event).
	MaxPrevEvents = 20
	MaxAuthEvents = 10
	// MaxPDUBytes is the spec's size limit of an event in the federation
	// format, signatures included, as canonical JSON.
	MaxPDUBytes = 65536
)

// NextDepth is the depth of an event whose deepest prev event has depth
// d: one more, but never past MaxDepth, so that no event another server
// sent (at MaxDepth, say) makes a room unwritable.
func NextDepth(d int64) int64 { return min(max(d, 0)+1, MaxDepth) }

// CheckReceived checks the bounds of an event another server sent, on the
// JSON as it came (before gomatrixserverlib redacts an event whose content
// hash does not match, which would hide its size): at most MaxPDUBytes,
// a depth from 0 to MaxDepth, at most MaxPrevEvents prev_events and
// MaxAuthEvents auth_events. The error says which bound the event broke.
func CheckReceived(raw []byte) error {
	if len(raw) > MaxPDUBytes {
		// Measured as the spec says: canonical JSON, without "unsigned"
		// (what the sender added on the way, which gomatrixserverlib
		// drops too).
		stripped, err := sjson.DeleteBytes(raw, "unsigned")
		if err != nil {
			return fmt.Errorf("invalid event JSON: %w", err)
		}
		canon, err := gomatrixserverlib.CanonicalJSON(stripped)
		if err != nil {
			return fmt.Errorf("invalid event JSON: %w", err)
		}
		if len(canon) > MaxPDUBytes {
			return fmt.Errorf("event is %d bytes, more than %d", len(canon), MaxPDUBytes)
		}
	}
	fields := gjson.GetManyBytes(raw, "depth", "prev_events", "auth_events")
	d := fields[0]
	if !d.Exists() {
		return errors.New("event has no depth")
	}
	if !isInteger(d) {
		return fmt.Errorf("depth %s is not an integer", d.Raw)
	}
	if n, err := strconv.ParseInt(d.Raw, 10, 64); err != nil || n < 0 || n > MaxDepth {
		return fmt.Errorf("depth %s is out of range (0 to %d)", d.Raw, int64(MaxDepth))
	}
	if n := len(fields[1].Array()); n > MaxPrevEvents {
		return fmt.Errorf("event has %d prev_events, more than %d", n, MaxPrevEvents)
	}
	if n := len(fields[2].Array()); n > MaxAuthEvents {
		return fmt.Errorf("event has %d auth_events, more than %d", n, MaxAuthEvents)
	}
	return nil
}

// integerJSON matches a JSON number that is an integer (no fraction, no
// exponent), as Synapse's `type(v) is int`.
var integerJSON = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// Allowed is gomatrixserverlib.Allowed with the rules it leaves out: in
// room versions 10 and later, power levels must be integers and their
// maps objects (gomatrixserverlib lets null through, so that
// {"users":null} would strip every user's level). A power levels event
// breaking them fails with a *gomatrixserverlib.EventValidationError of
// Code 400: the client's bad request, as Synapse answers.
func Allowed(ev gomatrixserverlib.PDU, provider gomatrixserverlib.AuthEventProvider, querier spec.UserIDForSender) error {
	if ev.Type() == spec.MRoomPowerLevels && ev.StateKeyEquals("") {
		if err := CheckPowerLevels(ev.Version(), ev.Content()); err != nil {
			return err
		}
	}
	return gomatrixserverlib.Allowed(ev, provider, querier)
}

// powerLevelInts and powerLevelMaps are the properties of power levels
// content that the auth rules of room version 10 require to be integers,
// and objects of integers.
var (
	powerLevelInts = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}
	powerLevelMaps = []string{"events", "notifications", "users"}
)

// CheckPowerLevels applies the auth rules' checks of the values of an
// m.room.power_levels content in a room version that requires integers
// (10 and later; earlier versions accept strings and are not checked):
// the levels, when present, are integers, and "events", "notifications"
// and "users", when present, are objects whose values are integers.
// Failing, it returns a *gomatrixserverlib.EventValidationError of Code
// 400.
func CheckPowerLevels(version gomatrixserverlib.RoomVersion, content []byte) error {
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !integerPowerLevels(verImpl) {
		return nil
	}
	bad := func(format string, args ...any) error {
		return &gomatrixserverlib.EventValidationError{Code: 400, Message: "invalid power levels: " + fmt.Sprintf(format, args...)}
	}
	c := gjson.ParseBytes(content)
	if !c.IsObject() {
		return bad("the content is not an object")
	}
	for _, k := range powerLevelInts {
		if v := c.Get(gjson.Escape(k)); v.Exists() && !isInteger(v) {
			return bad("%q is %s, not an integer", k, v.Raw)
		}
	}
	for _, k := range powerLevelMaps {
		v := c.Get(gjson.Escape(k))
		if !v.Exists() {
			continue
		}
		if !v.IsObject() {
			return bad("%q is %s, not an object", k, v.Raw)
		}
		var err error
		v.ForEach(func(key, level gjson.Result) bool {
			if !isInteger(level) {
				err = bad("%q of %q is %s, not an integer", key.Str, k, level.Raw)
			}
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func isInteger(v gjson.Result) bool { return v.Type == gjson.Number && integerJSON.MatchString(v.Raw) }

// integerPowerLevels reports whether a room version requires power levels
// to be integers: whether it refuses a level given as a string (room
// versions 10 and later), asked of gomatrixserverlib, which keeps the
// property to itself.
func integerPowerLevels(verImpl gomatrixserverlib.IRoomVersion) bool {
	var c gomatrixserverlib.PowerLevelContent
	return verImpl.ParsePowerLevels([]byte(`{"ban":"50"}`), &c) != nil
}
