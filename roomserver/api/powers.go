package api

import (
	"math"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// PowerLevels are a room's power levels as the auth rules see them: in room
// versions that privilege creators (12 and later), the creators outrank
// every level.
type PowerLevels struct {
	gomatrixserverlib.PowerLevelContent
	Creators map[string]bool
}

// NewPowerLevels reads the power levels from a room's create and power
// levels events (nil power levels: the defaults of a room without them).
func NewPowerLevels(create, powerLevels gomatrixserverlib.PDU) (*PowerLevels, error) {
	pdus := []gomatrixserverlib.PDU{create}
	if powerLevels != nil {
		pdus = append(pdus, powerLevels)
	}
	ae, err := gomatrixserverlib.NewAuthEvents(pdus)
	if err != nil {
		return nil, err
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(ae, string(create.SenderID()))
	if err != nil {
		return nil, err
	}
	p := &PowerLevels{PowerLevelContent: pl, Creators: map[string]bool{}}
	if verImpl, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && verImpl.PrivilegedCreators() {
		for _, c := range gomatrixserverlib.CreatorsFromCreateEvent(create) {
			p.Creators[c] = true
		}
	}
	return p, nil
}

// PowerLevelsFromState reads the power levels from state events that
// include the create event (and the power levels event, if the room has
// one); nil when the create event is missing.
func PowerLevelsFromState(state []gomatrixserverlib.PDU) (*PowerLevels, error) {
	var create, pl gomatrixserverlib.PDU
	for _, p := range state {
		switch {
		case p.Type() == spec.MRoomCreate && p.StateKeyEquals(""):
			create = p
		case p.Type() == spec.MRoomPowerLevels && p.StateKeyEquals(""):
			pl = p
		}
	}
	if create == nil {
		return nil, nil
	}
	return NewPowerLevels(create, pl)
}

// UserLevel is the power level of a user.
func (p *PowerLevels) UserLevel(userID string) int64 {
	if p.Creators[userID] {
		return math.MaxInt64
	}
	return p.PowerLevelContent.UserLevel(spec.SenderID(userID))
}

// Inviters are the joined members of a room who may invite, as restricted
// joins need one to authorise them: highest power level first, then by
// user ID. state holds the room's member events (other events are
// ignored).
func (p *PowerLevels) Inviters(state []gomatrixserverlib.PDU) []string {
	var out []string
	for _, e := range state {
		if e.Type() != spec.MRoomMember || e.StateKey() == nil {
			continue
		}
		if m, _ := e.Membership(); m != spec.Join {
			continue
		}
		if u := *e.StateKey(); p.UserLevel(u) >= p.Invite {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if li, lj := p.UserLevel(out[i]), p.UserLevel(out[j]); li != lj {
			return li > lj
		}
		return out[i] < out[j]
	})
	return out
}
