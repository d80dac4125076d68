package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// takeRescissions takes in the PDUs of a room this server is not in, known
// only through a local user's invite: of them, it accepts the leaves by
// which the inviter withdraws an invite (the inviting server sends them to
// the invitee's, as Synapse does). The protocol gives this
// server no state to authorise them against, so, as Synapse, it accepts
// only the inviter's own leave for the invitee, naming the invite among its
// auth events, as an out-of-band membership; every other PDU is refused.
func (f *FederationAPI) takeRescissions(ctx context.Context, info *rsapi.RoomInfo, pdus []json.RawMessage) map[string]error {
	results := map[string]error{}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	notIn := fmt.Errorf("this server is not in room %s", info.RoomID)
	for _, raw := range pdus {
		if err != nil {
			if id := eventIDOf(raw); id != "" {
				results[id] = err
			}
			continue
		}
		id := eventIDFor(verImpl, raw)
		pdu, verr := f.verifyEvent(ctx, verImpl, info.RoomID, raw)
		if verr != nil {
			results[id] = verr
			continue
		}
		if ok, rerr := f.isRescission(ctx, pdu); rerr != nil {
			results[id] = rerr
			continue
		} else if !ok {
			results[id] = notIn
			continue
		}
		if _, ierr := f.input.Input(context.WithoutCancel(ctx), &rsapi.InputMessage{RoomID: info.RoomID, OutOfBand: &rsapi.OutOfBandInput{
			RoomVersion: string(info.Version), Event: pdu.JSON(),
		}}); ierr != nil {
			results[id] = ierr
			continue
		}
		f.log.Info("invite withdrawn", slog.String("room_id", info.RoomID), slog.String("event_id", pdu.EventID()))
		results[id] = nil
	}
	return results
}

// isRescission reports whether a verified event withdraws the invite of a
// local user: a leave for the user, sent by who sent the invite, which is
// the user's current membership and among the event's auth events.
func (f *FederationAPI) isRescission(ctx context.Context, pdu gomatrixserverlib.PDU) (bool, error) {
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || !f.isLocalUser(*pdu.StateKey()) ||
		string(pdu.SenderID()) == *pdu.StateKey() {
		return false, nil
	}
	if m, err := pdu.Membership(); err != nil || m != spec.Leave {
		return false, nil
	}
	mi, err := f.rooms.QueryMembership(ctx, pdu.RoomID().String(), *pdu.StateKey())
	if err != nil {
		return false, err
	}
	if mi.Membership != spec.Invite || mi.EventID == "" || !slices.Contains(pdu.AuthEventIDs(), mi.EventID) {
		return false, nil
	}
	invites, err := f.rooms.QueryEvents(ctx, []string{mi.EventID})
	if err != nil {
		return false, err
	}
	return len(invites) == 1 && invites[0].SenderID() == pdu.SenderID(), nil
}
