package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/eventrules"
	"github.com/myelin-chat/myelin/internal/mxerr"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
)

// defaultMaxPrevEvents caps the prev_events of local events, as Synapse does.
const defaultMaxPrevEvents = 10

// inputError is a refusal to send back to the caller.
func inputError(code, format string, args ...any) *api.InputError {
	return &api.InputError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// built is a local event ready to store.
type built struct {
	pdu       gomatrixserverlib.PDU
	before    state.Snapshot
	beforeNID int64
	prevs     []*event
	// gap: some prev events are not in the DAG (the state before came
	// with the event), so history between it and the room's is missing.
	gap bool
}

// buildLocal builds, signs and authorises a local user's event on top of
// the room's forward extremities. head is nil when p creates the room.
func (d *dbctx) buildLocal(ctx context.Context, head *roomHead, p api.ProtoEvent, createVersion string, maxPrev int, now time.Time) (*built, error) {
	r := d.r
	var version gomatrixserverlib.RoomVersion
	if head == nil {
		version = gomatrixserverlib.RoomVersion(createVersion)
	} else {
		version = head.version
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil || !api.SupportedRoomVersion(version) {
		return nil, inputError(mxerr.CodeUnsupportedRoomVersion, "Unsupported room version %s", version)
	}
	if len(p.Content) == 0 || p.Content[0] != '{' {
		return nil, inputError(mxerr.CodeBadJSON, "Event content must be a JSON object")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender,
		Type:     p.Type,
		StateKey: p.StateKey,
		Content:  spec.RawJSON(p.Content),
		Version:  verImpl,
	}
	if p.Type == spec.MRoomRedaction && p.Redacts != "" {
		// Room versions 11 and later (the ones without a creator in the
		// create event) carry the target in the content.
		if verImpl.CreatorInCreateEvent() {
			proto.Redacts = p.Redacts
		} else {
			var c map[string]any
			if err := json.Unmarshal(p.Content, &c); err != nil {
				return nil, inputError(mxerr.CodeBadJSON, "Invalid redaction content")
			}
			c["redacts"] = p.Redacts
			proto.Content, _ = json.Marshal(c)
		}
	}
	b := &built{}
	if head != nil {
		proto.RoomID = head.id
		if err := d.chooseParents(ctx, head, maxPrev, b); err != nil {
			return nil, err
		}
		prevIDs := make([]string, len(b.prevs))
		depth := int64(0)
		for i, pe := range b.prevs {
			prevIDs[i] = pe.EventID
			depth = max(depth, pe.Depth)
		}
		proto.PrevEvents = prevIDs
		proto.Depth = eventrules.NextDepth(depth)
	} else {
		if p.Type != spec.MRoomCreate {
			return nil, inputError(mxerr.CodeNotFound, "Unknown room")
		}
		proto.PrevEvents = []string{}
		proto.AuthEvents = []string{}
		proto.Depth = 1
		if !verImpl.DomainlessRoomIDs() {
			proto.RoomID = newRoomID(r.cfg.ServerName)
		}
	}

	authEvents, err := d.authEventsFor(ctx, &proto, b.before)
	if err != nil {
		return nil, err
	}
	builder := verImpl.NewEventBuilderFromProtoEvent(&proto)
	if head != nil {
		if err := builder.AddAuthEvents(authEvents); err != nil {
			return nil, err
		}
	}
	if p.OriginServerTS > 0 {
		now = time.UnixMilli(p.OriginServerTS)
	}
	ev, err := builder.Build(now, r.cfg.ServerName, r.cfg.KeyID, r.cfg.PrivateKey)
	if err != nil {
		var ve gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) {
			// The whole event over 65,536 bytes is too large; an over-long
			// type or state key is a malformed request.
			if strings.Contains(ve.Message, "event is too long") {
				return nil, inputError(mxerr.CodeTooLarge, "Event is larger than 65536 bytes")
			}
			return nil, inputError(mxerr.CodeBadJSON, "%s", ve.Message)
		}
		return nil, inputError(mxerr.CodeBadJSON, "Invalid event: %v", err)
	}
	if head == nil {
		// The create event is its own first auth event.
		if authEvents, err = gomatrixserverlib.NewAuthEvents([]gomatrixserverlib.PDU{ev}); err != nil {
			return nil, err
		}
	}
	if err := eventrules.Allowed(ev, authEvents, userIDForSender); err != nil {
		// A malformed event (in room version 12, power levels naming a
		// creator) is the client's bad request, 400 as in Synapse.
		var ve *gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) && ve.Code == 400 {
			return nil, inputError(mxerr.CodeBadJSON, "%s", ve.Message)
		}
		return nil, inputError(mxerr.CodeForbidden, "%s", notAllowedMessage(err))
	}
	b.pdu = ev
	return b, nil
}

// notAllowedMessage turns an auth failure into a message for the client.
func notAllowedMessage(err error) string {
	var na *gomatrixserverlib.NotAllowed
	if errors.As(err, &na) {
		return na.Message
	}
	return err.Error()
}

// chooseParents picks the prev_events of a new local event (the forward
// extremities with the greatest depth, at most maxPrev) and the state before
// it: the current state when all extremities are named, else their resolved
// state.
func (d *dbctx) chooseParents(ctx context.Context, head *roomHead, maxPrev int, b *built) error {
	if maxPrev <= 0 {
		maxPrev = defaultMaxPrevEvents
	}
	evs, err := d.eventsByNID(ctx, head.latest)
	if err != nil {
		return err
	}
	for _, nid := range head.latest {
		if e, ok := evs[nid]; ok {
			b.prevs = append(b.prevs, e)
		}
	}
	if len(b.prevs) == 0 {
		return fmt.Errorf("room %s has no forward extremities", head.id)
	}
	if len(b.prevs) <= maxPrev {
		b.beforeNID = head.snapshot
		b.before, err = d.snapshot(ctx, head.snapshot)
		return err
	}
	slices.SortFunc(b.prevs, func(x, y *event) int { return int(y.Depth - x.Depth) })
	b.prevs = b.prevs[:maxPrev]
	b.before, b.beforeNID, err = d.stateAfterAll(ctx, head, b.prevs)
	return err
}

// authEventsFor returns the auth events a proto event needs, from the state
// before it.
func (d *dbctx) authEventsFor(ctx context.Context, proto *gomatrixserverlib.ProtoEvent, before state.Snapshot) (*gomatrixserverlib.AuthEvents, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		return nil, inputError(mxerr.CodeBadJSON, "%v", err)
	}
	pdus, err := d.lookup(ctx, before, needed.Tuples())
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}

// stateAfterAll is the state after a set of events: the state after the one
// event, or the resolution of their states.
func (d *dbctx) stateAfterAll(ctx context.Context, head *roomHead, evs []*event) (state.Snapshot, int64, error) {
	nids := make([]int64, 0, len(evs))
	for _, e := range evs {
		if !slices.Contains(nids, e.StateAfter) {
			nids = append(nids, e.StateAfter)
		}
	}
	if len(nids) == 1 {
		s, err := d.snapshot(ctx, nids[0])
		return s, nids[0], err
	}
	sets := make([]state.Snapshot, len(nids))
	for i, n := range nids {
		s, err := d.snapshot(ctx, n)
		if err != nil {
			return nil, 0, err
		}
		sets[i] = s
	}
	resolved, err := d.resolve(ctx, head, sets)
	if err != nil {
		return nil, 0, err
	}
	nid, err := d.storeSnapshot(ctx, resolved)
	return resolved, nid, err
}

func newRoomID(server spec.ServerName) string {
	return "!" + randomString(18) + ":" + string(server)
}

// randomString returns n random ASCII letters.
func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
