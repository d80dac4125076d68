package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/eventrules"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// The federation API is what other components ask of remote servers.
var _ fedapi.FederationAPI = (*FederationAPI)(nil)

// Bounds of the outgoing membership work.
const (
	// maxServersTried bounds the candidate servers of one join, leave or
	// knock.
	maxServersTried = 20
	// maxAuthFetches bounds the events fetched one by one to complete the
	// auth chain of a send_join response.
	maxAuthFetches = 200
	// maxJoinState and maxJoinAuthChain bound the events of a send_join
	// answer (checked before any is parsed): the state before the join
	// goes to the roomserver as one bus message of its IDs, which holds
	// about this many.
	maxJoinState     = 150_000
	maxJoinAuthChain = 2 * maxJoinState
)

// stopError is a failure after a server accepted a membership (storing
// what it answered): trying another server would not help.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// remoteError turns the error of a request to server into a
// *fedapi.RemoteError when the server answered with an HTTP error; a
// request that got no answer (or one that is not JSON) becomes an error
// wrapping fedapi.ErrNoServer; refusals of the domain lists (ErrDenied) and
// cancellations stay as they are.
func remoteError(server spec.ServerName, err error) error {
	if err == nil {
		return nil
	}
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		re := &fedapi.RemoteError{Server: string(server), Status: he.Code}
		var body struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if json.Unmarshal(he.Contents, &body) == nil {
			re.Code, re.Message = body.Code, body.Message
		}
		return re
	}
	if errors.Is(err, fedapi.ErrDenied) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", fedapi.ErrNoServer, server, err)
}

// failover reports whether another server might answer a membership
// request differently than one that failed with err: like Synapse, after
// errors of the server itself (5xx), unknown endpoints, a failure to
// authorise a restricted join (join only), and no answer at all; unlike
// Synapse, also after 404 M_NOT_FOUND (that server does not know the
// room; another may be in it) and answers that are not Matrix errors.
// Refusals that any server of the room would repeat (403, 400...) end the
// attempt.
func failover(join bool) func(error) bool {
	return func(err error) bool {
		var re *fedapi.RemoteError
		if !errors.As(err, &re) {
			return !errors.Is(err, context.Canceled)
		}
		switch {
		case re.Status >= 500, re.Code == "":
			return true
		case re.Status == 404 && (re.Code == "M_UNRECOGNIZED" || re.Code == "M_NOT_FOUND"), re.Status == 405:
			return true
		case re.Status == 400 && re.Code == "M_UNRECOGNIZED":
			return true
		case re.Status == 400 && join && (re.Code == "M_UNABLE_TO_AUTHORISE_JOIN" || re.Code == "M_UNABLE_TO_GRANT_JOIN"):
			return true
		}
		return false
	}
}

// candidates cleans a list of servers to try: valid names, without this
// server and duplicates, at most maxServersTried.
func (f *FederationAPI) candidates(servers []string) []spec.ServerName {
	seen := map[string]bool{}
	var out []spec.ServerName
	for _, s := range servers {
		name := spec.ServerName(s)
		k := strings.ToLower(s)
		if s == "" || seen[k] || f.isLocal(name) {
			continue
		}
		if _, _, ok := spec.ParseAndValidateServerName(name); !ok {
			continue
		}
		seen[k] = true
		out = append(out, name)
		if len(out) == maxServersTried {
			break
		}
	}
	return out
}

// tryServers calls try with each server in turn until one succeeds, fails
// with a *stopError or fails in a way another server would not change
// (failover false). When every server failed, the result is the last
// server's *fedapi.RemoteError if every server answered with a client
// error (4xx), ErrDenied if the domain lists refused them all, and an
// error wrapping ErrNoServer otherwise.
func (f *FederationAPI) tryServers(ctx context.Context, what string, servers []spec.ServerName, fo func(error) bool, try func(spec.ServerName) error) error {
	if len(servers) == 0 {
		return fmt.Errorf("%w: no server to %s through", fedapi.ErrNoServer, what)
	}
	var errs []error
	var last *fedapi.RemoteError
	answered, denied := 0, 0
	for _, s := range servers {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := try(s)
		if err == nil {
			return nil
		}
		var stop *stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if !fo(err) {
			return err
		}
		f.log.Info("could not "+what+" through a server", slog.String("server", string(s)), slog.String("error", err.Error()))
		var re *fedapi.RemoteError
		if errors.As(err, &re) && re.Status >= 400 && re.Status < 500 && re.Code != "" {
			answered++
			last = re
		}
		if errors.Is(err, fedapi.ErrDenied) {
			denied++
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
	}
	switch {
	case answered == len(servers):
		return last
	case denied == len(servers):
		return fmt.Errorf("%w: %v", fedapi.ErrDenied, errors.Join(errs...))
	}
	return fmt.Errorf("%w: could not %s through any of %d servers: %v", fedapi.ErrNoServer, what, len(servers), errors.Join(errs...))
}

// doSigned sends a request signed as this server and decodes the JSON
// answer into out (errors as the federation client returns them).
func (f *FederationAPI) doSigned(ctx context.Context, method string, dest spec.ServerName, path string, body, out any) error {
	req := fclient.NewFederationRequest(method, f.cfg.ServerName, dest, path)
	if body != nil {
		if err := req.SetContent(body); err != nil {
			return err
		}
	}
	if err := req.Sign(f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey); err != nil {
		return err
	}
	hr, err := req.HTTPRequest()
	if err != nil {
		return err
	}
	return f.client.DoRequestAndParseResponse(ctx, hr, out)
}

func versionQuery() string {
	q := url.Values{}
	for _, v := range rsapi.SupportedRoomVersions() {
		q.Add("ver", string(v))
	}
	return q.Encode()
}

// roomVersion is the implementation of a room version a server answered
// (empty: 1, as the spec says of make_join answers without one); versions
// this server does not support are an M_INCOMPATIBLE_ROOM_VERSION error.
func roomVersion(server spec.ServerName, v gomatrixserverlib.RoomVersion) (gomatrixserverlib.IRoomVersion, error) {
	if v == "" {
		v = gomatrixserverlib.RoomVersionV1
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(v)
	if err != nil || !rsapi.SupportedRoomVersion(verImpl.Version()) {
		return nil, &fedapi.RemoteError{Server: string(server), Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: fmt.Sprintf("room version %q is not supported by this server", v)}
	}
	return verImpl, nil
}

// buildMembership completes and signs the membership event a resident
// server prepared (make_join, make_leave, make_knock) for a local user:
// the template's content (such as join_authorised_via_users_server) with
// the caller's on top, and the membership.
func (f *FederationAPI) buildMembership(verImpl gomatrixserverlib.IRoomVersion, proto gomatrixserverlib.ProtoEvent, roomID, userID, membership string, content map[string]any) (gomatrixserverlib.PDU, error) {
	merged := map[string]any{}
	if len(proto.Content) > 0 {
		_ = json.Unmarshal(proto.Content, &merged)
	}
	via, hasVia := merged["join_authorised_via_users_server"]
	maps.Copy(merged, content)
	if hasVia {
		merged["join_authorised_via_users_server"] = via
	}
	merged["membership"] = membership
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	stateKey := userID
	proto.Type = spec.MRoomMember
	proto.RoomID = roomID
	proto.SenderID = userID
	proto.StateKey = &stateKey
	proto.Redacts = ""
	proto.Content = raw
	proto.Unsigned = nil
	proto.Signature = nil
	eb := verImpl.NewEventBuilderFromProtoEvent(&proto)
	return eb.Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
}

// localUser checks that userID is a user of this server.
func (f *FederationAPI) localUser(userID string) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return fmt.Errorf("invalid user ID %q: %w", userID, err)
	}
	if !f.isLocal(uid.Domain()) {
		return fmt.Errorf("%s is not a user of this server", userID)
	}
	return nil
}

// ---- joins ----

// PerformJoin implements fedapi.FederationAPI: make_join and send_join
// through each server in turn, then the room's state (auth chain and
// state as outliers) and the join, with the state before it, go to the
// roomserver. The resident server sends the join to the room's other
// servers.
func (f *FederationAPI) PerformJoin(ctx context.Context, req *fedapi.JoinRequest) (string, error) {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return "", fmt.Errorf("invalid room ID %q: %w", req.RoomID, err)
	}
	if err := f.localUser(req.UserID); err != nil {
		return "", err
	}
	err := f.tryServers(ctx, "join", f.candidates(req.Servers), failover(true), func(s spec.ServerName) error {
		return f.joinVia(ctx, s, req)
	})
	if err != nil {
		return "", err
	}
	return req.RoomID, nil
}

// joinVia joins through one server.
func (f *FederationAPI) joinVia(ctx context.Context, server spec.ServerName, req *fedapi.JoinRequest) error {
	var mj fclient.RespMakeJoin
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(req.RoomID) + "/" + url.PathEscape(req.UserID) + "?" + versionQuery()
	if err := f.doSigned(ctx, "GET", server, path, nil, &mj); err != nil {
		return remoteError(server, err)
	}
	verImpl, err := roomVersion(server, mj.RoomVersion)
	if err != nil {
		return err
	}
	join, err := f.buildMembership(verImpl, mj.JoinEvent, req.RoomID, req.UserID, spec.Join, req.Content)
	if err != nil {
		return fmt.Errorf("building the join from %s's template: %w", server, err)
	}
	// Past send_join the room holds the join: finish even if the caller
	// gives up.
	work := context.WithoutCancel(ctx)
	sj, err := f.client.SendJoin(work, f.cfg.ServerName, server, join)
	if err != nil {
		return remoteError(server, err)
	}
	join, state, chain, err := f.checkSendJoin(work, server, verImpl, req.RoomID, join, &sj)
	if err != nil {
		return fmt.Errorf("%w: %s answered send_join with %v", fedapi.ErrNoServer, server, err)
	}
	if err := f.storeJoin(work, req.RoomID, join, state, chain); err != nil {
		return &stopError{err}
	}
	f.log.Info("joined a room over federation", slog.String("room_id", req.RoomID), slog.String("user_id", req.UserID),
		slog.String("server", string(server)), slog.Int("state_events", len(state)))
	return nil
}

// checkSendJoin checks a send_join answer as CheckSendJoinResponse does,
// in a way that also holds for room version 12 (where the create event is
// implied, not listed in auth_events): the events' formats, rooms and
// signatures (those that fail are dropped), unique state keys, the create
// event of the room's version, the auth events the chain lacks (fetched
// from the server, bounded), and the join against the state. It returns
// the join (the server's copy when it co-signed it, as restricted joins
// need), the state and the rest of the auth chain. The roomserver then
// authorises each of them against its own auth events.
func (f *FederationAPI) checkSendJoin(ctx context.Context, server spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, roomID string,
	join gomatrixserverlib.PDU, sj *fclient.RespSendJoin) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	if len(sj.StateEvents) > maxJoinState || len(sj.AuthEvents) > maxJoinAuthChain {
		return nil, nil, nil, fmt.Errorf("%d state and %d auth chain events, more than %d and %d", len(sj.StateEvents), len(sj.AuthEvents),
			maxJoinState, maxJoinAuthChain)
	}
	if len(sj.Event) > 0 {
		if ev, err := f.verifyEvent(ctx, verImpl, roomID, json.RawMessage(sj.Event)); err == nil && ev.EventID() == join.EventID() &&
			ev.Type() == spec.MRoomMember && ev.StateKeyEquals(*join.StateKey()) {
			if m, _ := ev.Membership(); m == spec.Join {
				join = ev
			}
		}
	}
	byID := map[string]gomatrixserverlib.PDU{}
	var state, chain []gomatrixserverlib.PDU
	tuples := map[gomatrixserverlib.StateKeyTuple]bool{}
	for _, p := range f.verifyEvents(ctx, verImpl, roomID, rawJSONs(sj.StateEvents)) {
		if p.StateKey() == nil {
			return nil, nil, nil, fmt.Errorf("state event %s has no state key", p.EventID())
		}
		t := gomatrixserverlib.StateKeyTuple{EventType: p.Type(), StateKey: *p.StateKey()}
		if tuples[t] {
			return nil, nil, nil, fmt.Errorf("the state has two events for (%s, %s)", t.EventType, t.StateKey)
		}
		tuples[t] = true
		if p.EventID() == join.EventID() {
			continue
		}
		byID[p.EventID()] = p
		state = append(state, p)
	}
	for _, p := range f.verifyEvents(ctx, verImpl, roomID, rawJSONs(sj.AuthEvents)) {
		if _, ok := byID[p.EventID()]; ok || p.EventID() == join.EventID() {
			continue
		}
		byID[p.EventID()] = p
		chain = append(chain, p)
	}
	var create gomatrixserverlib.PDU
	for _, p := range state {
		if p.Type() == spec.MRoomCreate && p.StateKeyEquals("") {
			create = p
		}
	}
	if create == nil {
		return nil, nil, nil, errors.New("the state has no create event")
	}
	var cc struct {
		Version string `json:"room_version"`
	}
	_ = json.Unmarshal(create.Content(), &cc)
	if cc.Version == "" {
		cc.Version = "1"
	}
	if gomatrixserverlib.RoomVersion(cc.Version) != verImpl.Version() {
		return nil, nil, nil, fmt.Errorf("the create event is of room version %s, make_join said %s", cc.Version, verImpl.Version())
	}
	more, err := f.missingAuth(ctx, server, verImpl, roomID, byID, append([]gomatrixserverlib.PDU{join}, append(state, chain...)...))
	if err != nil {
		return nil, nil, nil, err
	}
	chain = append(chain, more...)
	// The join must pass the auth rules against the state before it.
	ae, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := eventrules.Allowed(join, ae, userIDForSender); err != nil {
		return nil, nil, nil, fmt.Errorf("the join is not allowed by the state: %w", err)
	}
	return join, state, chain, nil
}

// missingAuth fetches (from server, one by one, verified) the auth events
// of pdus that are neither among them nor stored here, and theirs in turn,
// at most maxAuthFetches.
func (f *FederationAPI) missingAuth(ctx context.Context, server spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, roomID string,
	have map[string]gomatrixserverlib.PDU, pdus []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	tried := map[string]bool{}
	for fetches := 0; ; {
		var missing []string
		for _, p := range pdus {
			for _, id := range p.AuthEventIDs() {
				if _, ok := have[id]; !ok && !tried[id] && id != p.EventID() {
					tried[id] = true
					missing = append(missing, id)
				}
			}
		}
		if len(missing) == 0 {
			return out, nil
		}
		known, err := f.rooms.QueryEventKinds(ctx, missing)
		if err != nil {
			return nil, err
		}
		pdus = nil
		for _, id := range missing {
			if known[id] != 0 {
				continue
			}
			if fetches++; fetches > maxAuthFetches {
				return out, nil // the roomserver rejects what still lacks auth events
			}
			txn, err := f.client.GetEvent(ctx, f.cfg.ServerName, server, id)
			if err != nil {
				continue
			}
			for _, raw := range txn.PDUs {
				if p, err := f.verifyEvent(ctx, verImpl, roomID, raw); err == nil && p.EventID() == id {
					have[id] = p
					out = append(out, p)
					pdus = append(pdus, p)
				}
			}
		}
	}
}

// storeJoin stores a joined room: the auth chain and state as outliers,
// then the join with the state before it.
func (f *FederationAPI) storeJoin(ctx context.Context, roomID string, join gomatrixserverlib.PDU, state, chain []gomatrixserverlib.PDU) error {
	unlock := f.roomLocks.lock(roomID)
	defer unlock()
	if err := f.inputOutliers(ctx, roomID, append(slices.Clone(chain), state...)); err != nil {
		return fmt.Errorf("storing the room's state: %w", err)
	}
	ids := make([]string, len(state))
	for i, p := range state {
		ids[i] = p.EventID()
	}
	res, err := f.input.Input(ctx, &rsapi.InputMessage{
		RoomID:       roomID,
		Events:       []json.RawMessage{join.JSON()},
		StatesBefore: map[string][]string{join.EventID(): ids},
	})
	if err != nil {
		return fmt.Errorf("storing the join: %w", err)
	}
	for _, r := range res.Events {
		if r.EventID == join.EventID() && r.Rejected != "" {
			return fmt.Errorf("the join was rejected: %s", r.Rejected)
		}
	}
	return nil
}

// ---- leaves ----

// PerformLeave implements fedapi.FederationAPI: make_leave and send_leave
// through each server in turn, then the leave goes to the roomserver as an
// out-of-band membership. When no server takes it and the user's
// membership here is an invite or a knock, the leave is made locally only
// (as Synapse does): the user is rid of the invite or knock, which the
// room may still hold.
func (f *FederationAPI) PerformLeave(ctx context.Context, req *fedapi.MembershipRequest) error {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return fmt.Errorf("invalid room ID %q: %w", req.RoomID, err)
	}
	if err := f.localUser(req.UserID); err != nil {
		return err
	}
	var leave gomatrixserverlib.PDU
	var version gomatrixserverlib.RoomVersion
	err := f.tryServers(ctx, "leave", f.candidates(req.Servers), failover(false), func(s spec.ServerName) error {
		ml, err := f.client.MakeLeave(ctx, f.cfg.ServerName, s, req.RoomID, req.UserID)
		if err != nil {
			return remoteError(s, err)
		}
		v := ml.RoomVersion
		if v == "" {
			if info, err := f.rooms.QueryRoomInfo(ctx, req.RoomID); err == nil {
				v = info.Version
			}
		}
		verImpl, err := roomVersion(s, v)
		if err != nil {
			return err
		}
		ev, err := f.buildMembership(verImpl, ml.LeaveEvent, req.RoomID, req.UserID, spec.Leave, req.Content)
		if err != nil {
			return fmt.Errorf("building the leave from %s's template: %w", s, err)
		}
		if err := f.client.SendLeave(context.WithoutCancel(ctx), f.cfg.ServerName, s, ev); err != nil {
			return remoteError(s, err)
		}
		leave, version = ev, verImpl.Version()
		return nil
	})
	if err != nil {
		var lerr error
		if leave, version, lerr = f.localLeave(ctx, req); lerr != nil {
			return err
		}
		f.log.Info("rejected an invite or knock locally only: no server took the leave", slog.String("room_id", req.RoomID),
			slog.String("user_id", req.UserID), slog.String("error", err.Error()))
	}
	_, err = f.input.Input(context.WithoutCancel(ctx), &rsapi.InputMessage{RoomID: req.RoomID, OutOfBand: &rsapi.OutOfBandInput{
		RoomVersion: string(version), Event: leave.JSON(),
	}})
	return err
}

// localLeave builds the leave that ends a local user's invite or knock in
// a room this server is not in without asking any server, as Synapse's
// out-of-band leave: after the invite or knock, authorised by its auth
// events and itself.
func (f *FederationAPI) localLeave(ctx context.Context, req *fedapi.MembershipRequest) (gomatrixserverlib.PDU, gomatrixserverlib.RoomVersion, error) {
	info, err := f.rooms.QueryRoomInfo(ctx, req.RoomID)
	if err != nil {
		return nil, "", err
	}
	if info.HasState {
		return nil, "", errors.New("this server has the room's state")
	}
	m, err := f.rooms.QueryMembership(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, "", err
	}
	if (m.Membership != spec.Invite && m.Membership != spec.Knock) || m.EventID == "" {
		return nil, "", fmt.Errorf("no invite or knock to end (membership %q)", m.Membership)
	}
	prev, err := f.rooms.QueryEvents(ctx, []string{m.EventID})
	if err != nil || len(prev) == 0 {
		return nil, "", fmt.Errorf("the %s event %s is not stored: %v", m.Membership, m.EventID, err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.Version)
	if err != nil {
		return nil, "", err
	}
	content := map[string]any{}
	maps.Copy(content, req.Content)
	content["membership"] = spec.Leave
	raw, _ := json.Marshal(content)
	stateKey := req.UserID
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: req.UserID, RoomID: req.RoomID, Type: spec.MRoomMember, StateKey: &stateKey, Content: raw,
		PrevEvents: []string{m.EventID}, AuthEvents: append(slices.Clone(prev[0].AuthEventIDs()), m.EventID),
		Depth: eventrules.NextDepth(prev[0].Depth()),
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	return ev, info.Version, err
}

// ---- knocks ----

// PerformKnock implements fedapi.FederationAPI: make_knock and send_knock
// through each server in turn, then the knock goes to the roomserver as an
// out-of-band membership with the room's stripped state the server
// answered (knock_room_state).
func (f *FederationAPI) PerformKnock(ctx context.Context, req *fedapi.MembershipRequest) error {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return fmt.Errorf("invalid room ID %q: %w", req.RoomID, err)
	}
	if err := f.localUser(req.UserID); err != nil {
		return err
	}
	var knock gomatrixserverlib.PDU
	var version gomatrixserverlib.RoomVersion
	var stripped []json.RawMessage
	err := f.tryServers(ctx, "knock", f.candidates(req.Servers), failover(false), func(s spec.ServerName) error {
		mk, err := f.client.MakeKnock(ctx, f.cfg.ServerName, s, req.RoomID, req.UserID, rsapi.SupportedRoomVersions())
		if err != nil {
			return remoteError(s, err)
		}
		verImpl, err := roomVersion(s, mk.RoomVersion)
		if err != nil {
			return err
		}
		ev, err := f.buildMembership(verImpl, mk.KnockEvent, req.RoomID, req.UserID, spec.Knock, req.Content)
		if err != nil {
			return fmt.Errorf("building the knock from %s's template: %w", s, err)
		}
		var res struct {
			KnockRoomState []json.RawMessage `json:"knock_room_state"`
		}
		path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(req.RoomID) + "/" + url.PathEscape(ev.EventID())
		if err := f.doSigned(context.WithoutCancel(ctx), "PUT", s, path, ev, &res); err != nil {
			return remoteError(s, err)
		}
		knock, version, stripped = ev, verImpl.Version(), res.KnockRoomState
		return nil
	})
	if err != nil {
		return err
	}
	_, err = f.input.Input(context.WithoutCancel(ctx), &rsapi.InputMessage{RoomID: req.RoomID, OutOfBand: &rsapi.OutOfBandInput{
		RoomVersion: string(version), Event: knock.JSON(), StrippedState: stripped,
	}})
	return err
}

// ---- invites ----

// inviteStateTuples are the state events an invite carries for the
// invitee to see the room by (Synapse's room_prejoin_state defaults), with
// the inviter's member event.
var inviteStateTuples = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomCanonicalAlias, spec.MRoomAvatar, spec.MRoomEncryption, spec.MRoomName,
	"m.room.topic",
}

// PerformInvite implements fedapi.FederationAPI: the invite is built on
// the room's forward extremities and signed here, sent to the invitee's
// server (/v2/invite) with the room's state for the invitee to see it by
// (full events, the create event among them, as MSC4311 asks), and the
// copy the invitee's server signed (checked: same event, both servers'
// signatures) enters the room; this server sends it to the room's other
// servers. A room that refuses the invite fails with an error wrapping
// rsapi.ErrNotAllowed, a room this server is not in with one wrapping
// rsapi.ErrRoomNotFound.
func (f *FederationAPI) PerformInvite(ctx context.Context, req *fedapi.InviteRequest) (string, error) {
	invitee, err := spec.NewUserID(req.Invitee, true)
	if err != nil {
		return "", fmt.Errorf("invalid user ID %q: %w", req.Invitee, err)
	}
	dest := invitee.Domain()
	if f.isLocal(dest) {
		return "", fmt.Errorf("%s is a user of this server", req.Invitee)
	}
	if err := f.localUser(req.Sender); err != nil {
		return "", err
	}
	if !f.policy.allowed(dest) {
		return "", fmt.Errorf("%w: %s", fedapi.ErrDenied, dest)
	}
	content := map[string]any{}
	maps.Copy(content, req.Content)
	content["membership"] = spec.Invite
	raw, _ := json.Marshal(content)
	stateKey := req.Invitee
	proto, version, err := f.rooms.QueryEventTemplate(ctx, req.RoomID, rsapi.ProtoEvent{
		Sender: req.Sender, Type: spec.MRoomMember, StateKey: &stateKey, Content: raw,
	})
	if err != nil {
		return "", err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(version)
	if err != nil {
		return "", err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), f.cfg.ServerName, f.cfg.KeyID, f.cfg.PrivateKey)
	if err != nil {
		return "", err
	}
	roomState, err := f.inviteRoomState(ctx, req.RoomID, req.Sender)
	if err != nil {
		return "", err
	}
	body := map[string]any{"room_version": version, "event": ev, "invite_room_state": roomState}
	var res struct {
		Event json.RawMessage `json:"event"`
	}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(req.RoomID) + "/" + url.PathEscape(ev.EventID())
	if err := f.doSigned(ctx, "PUT", dest, path, body, &res); err != nil {
		return "", remoteError(dest, err)
	}
	signed, err := verImpl.NewEventFromUntrustedJSON(res.Event)
	if err != nil {
		return "", fmt.Errorf("%w: %s answered the invite with an invalid event: %v", fedapi.ErrNoServer, dest, err)
	}
	if signed.EventID() != ev.EventID() {
		return "", fmt.Errorf("%w: %s answered the invite with another event (%s)", fedapi.ErrNoServer, dest, signed.EventID())
	}
	// The invitee's server must have signed (and this server's signature
	// must have survived).
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, f.keyring, userIDForSender); err != nil {
		return "", fmt.Errorf("%w: %s answered the invite without valid signatures: %v", fedapi.ErrNoServer, dest, err)
	}
	work := context.WithoutCancel(ctx)
	unlock := f.roomLocks.lock(req.RoomID)
	defer unlock()
	out, err := f.input.Input(work, &rsapi.InputMessage{
		RoomID: req.RoomID, Events: []json.RawMessage{signed.JSON()}, SendAsServer: string(f.cfg.ServerName),
	})
	if err != nil {
		return "", err
	}
	for _, r := range out.Events {
		if r.Rejected != "" {
			return "", fmt.Errorf("%w: %s", rsapi.ErrNotAllowed, r.Rejected)
		}
		if r.SoftFailed {
			return "", fmt.Errorf("%w: the room's state changed under the invite", rsapi.ErrNotAllowed)
		}
	}
	f.log.Info("invited a remote user", slog.String("room_id", req.RoomID), slog.String("event_id", signed.EventID()),
		slog.String("server", string(dest)))
	return signed.EventID(), nil
}

// inviteRoomState is the state an invite carries: full events of the
// room's current state (inviteStateTuples and the inviter's member event).
func (f *FederationAPI) inviteRoomState(ctx context.Context, roomID, sender string) ([]json.RawMessage, error) {
	tuples := make([]rsapi.StateKeyTuple, 0, len(inviteStateTuples)+1)
	for _, t := range inviteStateTuples {
		tuples = append(tuples, rsapi.StateKeyTuple{EventType: t})
	}
	tuples = append(tuples, rsapi.StateKeyTuple{EventType: spec.MRoomMember, StateKey: sender})
	evs, err := f.rooms.QueryCurrentState(ctx, roomID, tuples...)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.JSON())
	}
	return out, nil
}
