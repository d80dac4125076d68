package api

import (
	"math"

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
