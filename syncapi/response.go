package syncapi

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/filter"
	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Response types of /sync.
type (
	eventList struct {
		Events []json.RawMessage `json:"events"`
	}
	timeline struct {
		Events    []json.RawMessage `json:"events"`
		Limited   bool              `json:"limited"`
		PrevBatch string            `json:"prev_batch,omitempty"`
	}
	summary struct {
		Heroes  []string `json:"m.heroes,omitempty"`
		Joined  *int     `json:"m.joined_member_count,omitempty"`
		Invited *int     `json:"m.invited_member_count,omitempty"`
	}
	joinedRoom struct {
		Summary     *summary   `json:"summary,omitempty"`
		State       *eventList `json:"state,omitempty"`
		StateAfter  *eventList `json:"state_after,omitempty"`
		Timeline    *timeline  `json:"timeline"`
		Ephemeral   *eventList `json:"ephemeral"`
		AccountData *eventList `json:"account_data"`
		// UnreadNotifications is always set; UnreadThreadNotifications
		// only when the filter asks for counts by thread.
		UnreadNotifications       *unreadCounts            `json:"unread_notifications,omitempty"`
		UnreadThreadNotifications map[string]*unreadCounts `json:"unread_thread_notifications,omitempty"`
	}
	leftRoom struct {
		State       *eventList `json:"state,omitempty"`
		StateAfter  *eventList `json:"state_after,omitempty"`
		Timeline    *timeline  `json:"timeline"`
		AccountData *eventList `json:"account_data"`
	}
	invitedRoom struct {
		InviteState eventList `json:"invite_state"`
	}
	knockedRoom struct {
		KnockState eventList `json:"knock_state"`
	}
	roomsResponse struct {
		Join   map[string]*joinedRoom  `json:"join,omitempty"`
		Invite map[string]*invitedRoom `json:"invite,omitempty"`
		Leave  map[string]*leftRoom    `json:"leave,omitempty"`
		Knock  map[string]*knockedRoom `json:"knock,omitempty"`
	}
	syncResponse struct {
		NextBatch   string         `json:"next_batch"`
		AccountData *eventList     `json:"account_data,omitempty"`
		Presence    *eventList     `json:"presence,omitempty"`
		Rooms       *roomsResponse `json:"rooms,omitempty"`
		ToDevice    *eventList     `json:"to_device,omitempty"`
		// DeviceLists has only its non-empty lists, as in Synapse.
		DeviceLists *syncDeviceLists `json:"device_lists,omitempty"`
		// The device's one-time key counts and unused fallback key types
		// are always there (as in Synapse).
		OneTimeKeyCounts       map[string]int `json:"device_one_time_keys_count"`
		UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
	}
	syncDeviceLists struct {
		Changed []string `json:"changed,omitempty"`
		Left    []string `json:"left,omitempty"`
	}
)

// Defaults and caps of the timeline limit.
const (
	defaultTimelineLimit = 10
	maxTimelineLimit     = 500
)

// roomPlan is what a sync sends for one room.
type roomPlan struct {
	roomID  string
	section string // join or leave
	full    bool   // send the whole state (initial, newly joined, full_state)
	from    int64  // timeline after this position
	to      int64  // up to this one
	// history is true when the user was not joined all along the
	// timeline range, so events are checked against history visibility.
	history bool
	// newlyJoined: the user joined since the sync's token (the room is
	// new to the client).
	newlyJoined bool
}

// buildSync computes a sync response; empty reports that nothing changed
// since the request's token.
func (s *SyncAPI) buildSync(ctx context.Context, dev *httputil.Device, req *syncRequest) (*syncResponse, bool, error) {
	db := s.store.DB()
	now := s.currentPos()
	initial := req.since == nil
	var since StreamPos
	if !initial {
		since = *req.since
	}
	flt := req.filter
	if flt == nil {
		flt = &filter.Filter{}
	}
	roomFilter := flt.Room
	if roomFilter == nil {
		roomFilter = &filter.RoomFilter{}
	}
	includeLeave := roomFilter.IncludeLeave
	fm := newFormatter(dev.UserID, dev.DeviceID, flt, false)
	if initial {
		s.lazy.reset(dev.UserID, dev.DeviceID)
	}

	memberships, err := storage.CurrentMemberships(ctx, db, dev.UserID)
	if err != nil {
		return nil, false, err
	}
	for _, m := range memberships {
		now.PDU = max(now.PDU, m.Pos) // all positions up to a committed row are committed
	}
	var changes []storage.MembershipChange
	if !initial {
		if changes, err = storage.MembershipChanges(ctx, db, dev.UserID, since.PDU, now.PDU, nil); err != nil {
			return nil, false, err
		}
	}
	changedIn := map[string][]storage.MembershipChange{}
	for _, c := range changes {
		changedIn[c.RoomID] = append(changedIn[c.RoomID], c)
	}

	// To-device messages: next_batch stops at the last one delivered when
	// more wait.
	toDevice, toDevicePos, err := s.syncToDevice(ctx, dev, req.since, now.ToDevice)
	if err != nil {
		return nil, false, err
	}
	now.ToDevice = toDevicePos
	resp := &syncResponse{NextBatch: now.String(), Rooms: &roomsResponse{}}
	if len(toDevice) > 0 {
		resp.ToDevice = &eventList{Events: toDevice}
	}
	ignored, err := s.ignoredUsers(ctx, dev.UserID)
	if err != nil {
		return nil, false, err
	}
	var plans []*roomPlan
	var invites, inviters, knocks []string
	for _, m := range memberships {
		if !roomAllowed(roomFilter.Rooms, roomFilter.NotRooms, m.RoomID) || m.Pos > now.PDU {
			continue
		}
		recent := len(changedIn[m.RoomID]) > 0
		switch m.Membership {
		case spec.Join:
			p := &roomPlan{roomID: m.RoomID, section: "join", from: since.PDU, to: now.PDU}
			switch {
			case initial || joinedDuring(changedIn[m.RoomID]):
				p.full, p.from = true, math.MinInt64/2
				p.history = true
				p.newlyJoined = !initial
			case req.fullState:
				// The whole state, but the timeline still starts at since.
				p.full = true
			}
			plans = append(plans, p)
		case spec.Invite:
			// Invites from ignored users are not shown (as Synapse,
			// they stay pending: the user may still join or reject).
			if (initial || recent) && !ignored[m.Sender] {
				invites = append(invites, m.RoomID)
				inviters = append(inviters, m.Sender)
			}
		case spec.Knock:
			if initial || recent {
				knocks = append(knocks, m.RoomID)
			}
		case spec.Leave, spec.Ban:
			// Rooms left during this sync always show, so that clients
			// learn of it (forgotten or not, as in Synapse); older ones
			// only when the filter asks and the user did not forget them,
			// but for an initial sync those the user was kicked or banned
			// from (as Synapse: "always send down rooms we were banned
			// from or kicked from").
			if m.Forgotten && (initial || !recent) {
				continue
			}
			if (!initial && recent) || includeLeave || (initial && m.ByOther) {
				if !recent && !initial && !req.fullState {
					continue
				}
				p := &roomPlan{roomID: m.RoomID, section: "leave", from: since.PDU, to: m.Pos, history: true}
				switch {
				case initial || joinedDuring(changedIn[m.RoomID]):
					p.full, p.from = true, math.MinInt64/2
				case req.fullState:
					p.full = true
				}
				plans = append(plans, p)
			}
		}
	}

	if invites, err = s.permittedInvites(ctx, dev.UserID, invites, inviters); err != nil {
		return nil, false, err
	}

	var ad map[string][]storage.AccountData
	if initial || now.AccountData > since.AccountData {
		if ad, err = s.accountData(ctx, dev.UserID, since, now, initial); err != nil {
			return nil, false, err
		}
	}
	if err := s.fillRooms(ctx, dev, req, flt, fm, plans, since, now, ad, ignored, resp); err != nil {
		return nil, false, err
	}
	if err := s.fillUnreadCounts(dev.UserID, flt, resp); err != nil {
		return nil, false, err
	}
	stripped, err := storage.StrippedStates(ctx, db, dev.UserID, append(append([]string(nil), invites...), knocks...))
	if err != nil {
		return nil, false, err
	}
	for _, r := range invites {
		if resp.Rooms.Invite == nil {
			resp.Rooms.Invite = map[string]*invitedRoom{}
		}
		resp.Rooms.Invite[r] = &invitedRoom{InviteState: rawList(stripped[r])}
	}
	for _, r := range knocks {
		if resp.Rooms.Knock == nil {
			resp.Rooms.Knock = map[string]*knockedRoom{}
		}
		resp.Rooms.Knock[r] = &knockedRoom{KnockState: rawList(stripped[r])}
	}

	// Global account data.
	if len(ad[""]) > 0 {
		var global []json.RawMessage
		for _, d := range ad[""] {
			if eventAllowed(flt.AccountData, d.Type, "") {
				global = append(global, accountDataEvent(d))
			}
		}
		if len(global) > 0 {
			resp.AccountData = &eventList{Events: global}
		}
	}
	var joinedNow []string
	for _, m := range memberships {
		if m.Membership == spec.Join && m.Pos <= now.PDU {
			joinedNow = append(joinedNow, m.RoomID)
		}
	}
	if err := s.fillDeviceLists(ctx, dev, since, now, initial, changes, joinedNow, resp); err != nil {
		return nil, false, err
	}
	// Presence of those sharing a room, and the whole presence of those
	// who came to share one since the token.
	if s.cfg.PresenceEnabled {
		var newSharers []string
		if !initial && now.PDU > since.PDU {
			if newSharers, err = s.newSharers(ctx, dev.UserID, plans, joinedNow, since, now); err != nil {
				return nil, false, err
			}
		}
		if initial || now.Presence > since.Presence || len(newSharers) > 0 {
			if err := s.fillPresence(ctx, dev.UserID, flt, since, now, initial, newSharers, resp); err != nil {
				return nil, false, err
			}
		}
	}
	r := resp.Rooms
	empty := len(r.Join) == 0 && len(r.Invite) == 0 && len(r.Leave) == 0 && len(r.Knock) == 0 &&
		resp.AccountData == nil && resp.Presence == nil && resp.ToDevice == nil && resp.DeviceLists == nil
	if len(r.Join) == 0 && len(r.Invite) == 0 && len(r.Leave) == 0 && len(r.Knock) == 0 {
		resp.Rooms = nil
	}
	return resp, empty, nil
}

// joinedDuring reports whether a user joined in these membership changes
// (then the room is new to the client: it gets the whole state).
func joinedDuring(changes []storage.MembershipChange) bool {
	for _, c := range changes {
		if c.Membership == spec.Join {
			return true
		}
	}
	return false
}

func rawList(js json.RawMessage) eventList {
	var evs []json.RawMessage
	_ = json.Unmarshal(js, &evs)
	if evs == nil {
		evs = []json.RawMessage{}
	}
	return eventList{Events: evs}
}

func accountDataEvent(d storage.AccountData) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"type": d.Type, "content": d.Content})
	return b
}

// accountData returns the user's account data changed since the token,
// grouped by room ("" for global).
func (s *SyncAPI) accountData(ctx context.Context, userID string, since, now StreamPos, initial bool) (map[string][]storage.AccountData, error) {
	from := since.AccountData
	if initial {
		from = -1
	}
	rows, err := storage.AccountDataSince(ctx, s.store.DB(), userID, from, now.AccountData)
	if err != nil {
		return nil, err
	}
	out := map[string][]storage.AccountData{}
	hasRules := false
	for _, d := range rows {
		if initial && isEmptyObject(d.Content) {
			continue // deleted (MSC3391): only incremental syncs tell of it
		}
		out[d.RoomID] = append(out[d.RoomID], d)
		hasRules = hasRules || (d.RoomID == "" && d.Type == pushRulesType)
	}
	if initial && !hasRules {
		// A user who never changed a push rule has the server defaults.
		out[""] = append(out[""], storage.AccountData{Type: pushRulesType, Content: defaultPushRules(userID)})
	}
	return out, nil
}

// isEmptyObject reports whether content is {}, how a deleted account data
// item is stored.
func isEmptyObject(content json.RawMessage) bool {
	if len(content) > 16 {
		return false
	}
	var fields map[string]json.RawMessage
	return json.Unmarshal(content, &fields) == nil && fields != nil && len(fields) == 0
}

// presenceListMax is the number of presence sharers past which an
// incremental sync reads the presence changes rather than the sharers'.
const presenceListMax = 500

// newSharers lists the users who came to share a room with the user in an
// incremental sync's range (as Synapse): the members of the rooms the user
// joined, and those who joined the user's other rooms. The client has
// none of their presence yet, whenever it last changed.
func (s *SyncAPI) newSharers(ctx context.Context, userID string, plans []*roomPlan, joinedNow []string, since, now StreamPos) ([]string, error) {
	fresh := map[string]bool{}
	for _, p := range plans {
		if p.newlyJoined {
			fresh[p.roomID] = true
		}
	}
	var others []string
	for _, r := range joinedNow {
		if !fresh[r] {
			others = append(others, r)
		}
	}
	users, err := storage.NewlyJoined(ctx, s.store.DB(), others, since.PDU, now.PDU)
	if err != nil {
		return nil, err
	}
	for r := range fresh {
		users = append(users, s.notifier.joinedMembers(r)...)
	}
	sharers := s.notifier.sharers(userID)
	seen := map[string]bool{userID: true}
	out := users[:0]
	for _, u := range users {
		if !seen[u] && sharers[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// fillPresence adds the presence of the users sharing a room with the user
// that changed since the token, and that of newSharers whenever it changed.
func (s *SyncAPI) fillPresence(ctx context.Context, userID string, flt *filter.Filter, since, now StreamPos, initial bool,
	newSharers []string, resp *syncResponse) error {
	users := s.notifier.sharers(userID)
	list := make([]string, 0, len(users))
	for u := range users {
		list = append(list, u)
	}
	from := since.Presence
	if initial {
		from = -1
	}
	var rows []storage.Presence
	var err error
	if !initial && len(list) > presenceListMax {
		// Many sharers (large rooms, remote members): what changed since
		// the last sync is the shorter list.
		changed, err := storage.PresenceChanged(ctx, s.store.DB(), from, now.Presence)
		if err != nil {
			return err
		}
		for _, p := range changed {
			if users[p.UserID] {
				rows = append(rows, p)
			}
		}
	} else if rows, err = storage.PresenceSince(ctx, s.store.DB(), list, from, now.Presence); err != nil {
		return err
	}
	if len(newSharers) > 0 {
		have := make(map[string]bool, len(rows))
		for _, p := range rows {
			have[p.UserID] = true
		}
		var missing []string
		for _, u := range newSharers {
			if !have[u] {
				missing = append(missing, u)
			}
		}
		older, err := storage.PresenceSince(ctx, s.store.DB(), missing, -1, from)
		if err != nil {
			return err
		}
		rows = append(rows, older...)
	}
	t := time.Now()
	var evs []json.RawMessage
	for i := range rows {
		if !eventAllowed(flt.Presence, "m.presence", rows[i].UserID) {
			continue
		}
		b, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": rows[i].UserID, "content": presenceContent(&rows[i], t)})
		evs = append(evs, b)
	}
	if len(evs) > 0 {
		resp.Presence = &eventList{Events: evs}
	}
	return nil
}

// fillRooms builds the join and leave sections: timelines, state,
// ephemeral events, account data and summaries, each in one query for all
// rooms.
func (s *SyncAPI) fillRooms(ctx context.Context, dev *httputil.Device, req *syncRequest, flt *filter.Filter, fm *formatter,
	plans []*roomPlan, since, now StreamPos, roomAD map[string][]storage.AccountData, ignored map[string]bool, resp *syncResponse) error {
	if len(plans) == 0 {
		return nil
	}
	db := s.store.DB()
	initial := req.since == nil
	roomFilter := flt.Room
	if roomFilter == nil {
		roomFilter = &filter.RoomFilter{}
	}
	tf := roomFilter.Timeline
	limit := defaultTimelineLimit
	if tf != nil && tf.Limit != nil {
		limit = min(*tf.Limit, maxTimelineLimit)
	}
	lazy := roomFilter.State != nil && roomFilter.State.LazyLoadMembers
	redundant := lazy && roomFilter.State.IncludeRedundantMembers

	// Timelines.
	var ranges []storage.Range
	for _, p := range plans {
		if tf != nil && !roomAllowed(tf.Rooms, tf.NotRooms, p.roomID) {
			continue
		}
		// Backfilled history (positions below 1) is left to /messages:
		// the read model has no state before it to send with it.
		// An incremental sync cannot bridge a gap in the room's history
		// (events whose prev events were missing, as after a catch-up
		// over federation): the timeline starts after it, limited.
		// A timeline of history the client never had (an initial sync, a
		// newly joined room) ends with the events of greatest depth, as
		// Synapse.
		ranges = append(ranges, storage.Range{RoomID: p.roomID, From: max(p.from, 0), To: p.to, Gaps: !initial,
			ByDepth: initial || p.newlyJoined})
	}
	cond, condArgs := timelineCond(tf)
	ic, icArgs := ignoreCond(ignored)
	cond, condArgs = andCond(cond, condArgs, ic, icArgs)
	events, limited, err := storage.Timelines(ctx, db, ranges, limit, cond, condArgs)
	if err != nil {
		return err
	}
	// History visibility, where the user was not joined throughout.
	var historyRooms []string
	for _, p := range plans {
		if p.history && len(events[p.roomID]) > 0 {
			historyRooms = append(historyRooms, p.roomID)
		}
	}
	if len(historyRooms) > 0 {
		hist, err := storage.MembershipChanges(ctx, db, dev.UserID, math.MinInt64/2, now.PDU, historyRooms)
		if err != nil {
			return err
		}
		byRoom := map[string][]storage.MembershipChange{}
		for _, c := range hist {
			byRoom[c.RoomID] = append(byRoom[c.RoomID], c)
		}
		for _, r := range historyRooms {
			events[r] = visibleEvents(events[r], dev.UserID, byRoom[r])
			fm.withMemberships(r, byRoom[r])
		}
	}
	for _, p := range plans {
		if !p.history && p.section == "join" {
			fm.withJoined(p.roomID)
		}
	}

	// State: the whole state for new rooms, what changed for gappy
	// timelines; with lazy loading, only the members the client lacks.
	var queries []storage.StateQuery
	for _, p := range plans {
		evs := events[p.roomID]
		// The state before the timeline: before its first event, but with
		// what came with that event (the room's state, when it is a join
		// over federation).
		sq := storage.StateQuery{RoomID: p.roomID, At: p.to, Since: p.from, Lazy: lazy}
		if len(evs) > 0 && !req.useStateAfter {
			sq.At = evs[0].Pos
			sq.Before = &storage.BeforeEvent{EventID: evs[0].EventID, Type: evs[0].Type, StateKey: evs[0].StateKey}
		}
		switch {
		case p.full:
			sq.Since = math.MinInt64 / 2
		case !limited[p.roomID] && !req.useStateAfter:
			// The timeline holds every change: nothing but the members
			// lazy loading still owes the client.
			sq.MembersOnly = true
			if !lazy || len(evs) == 0 {
				continue // no timeline, no member to load
			}
		}
		if lazy {
			seen := map[string]bool{dev.UserID: true}
			sq.Members = append(sq.Members, dev.UserID)
			for _, e := range evs {
				if !seen[e.Sender] {
					seen[e.Sender] = true
					sq.Members = append(sq.Members, e.Sender)
				}
			}
		}
		queries = append(queries, sq)
	}
	states, err := storage.States(ctx, db, queries)
	if err != nil {
		return err
	}
	if err := s.stateAtEnd(ctx, queries, events, planEnds(plans), states); err != nil {
		return err
	}

	// Ephemeral data and room account data.
	joined := make([]string, 0, len(plans))
	for _, p := range plans {
		if p.section == "join" {
			joined = append(joined, p.roomID)
		}
	}
	var receipts []storage.Receipt
	if initial || now.Receipt > since.Receipt {
		from := since.Receipt
		if initial {
			from = -1
		}
		if receipts, err = storage.ReceiptsSince(ctx, db, joined, from, now.Receipt); err != nil {
			return err
		}
	}
	typing := s.typing.since(joined, since.Typing, initial)

	// Summaries for rooms whose membership the client must (re)learn.
	var summaryRooms []string
	for _, p := range plans {
		if p.section == "join" && (p.full || hasMemberEvent(events[p.roomID]) || len(states[p.roomID]) > 0) {
			summaryRooms = append(summaryRooms, p.roomID)
		}
	}
	summaries, err := s.summaries(ctx, dev.UserID, summaryRooms)
	if err != nil {
		return err
	}

	if err := s.bundleTimelines(ctx, fm, events); err != nil {
		return err
	}
	for _, p := range plans {
		evs := events[p.roomID]
		tl := &timeline{Events: make([]json.RawMessage, 0, len(evs)), Limited: limited[p.roomID]}
		// fromStart: the timeline holds the room from its create event,
		// nothing came before it.
		fromStart := !tl.Limited && len(evs) > 0 && evs[0].Type == spec.MRoomCreate
		if p.newlyJoined && !fromStart {
			// The client has none of the room's history before this
			// timeline: it is limited (as in Synapse), so that the client
			// knows to page back from prev_batch.
			tl.Limited = true
		}
		if len(evs) > 0 && !fromStart {
			tl.PrevBatch = formatBoundary(evs[0].Pos)
		} else {
			// Nothing before the timeline: prev_batch is the point of
			// this sync (as in Synapse), which /members?at= reads the
			// members at.
			tl.PrevBatch = formatBoundary(p.to + 1)
		}
		for i := range evs {
			tl.Events = append(tl.Events, fm.event(&evs[i]))
		}
		stateEvents := []json.RawMessage{}
		sent := map[string]string{}
		for _, row := range states[p.roomID] {
			if row.Type == spec.MRoomMember && lazy {
				if !redundant && s.lazy.sent(dev.UserID, dev.DeviceID, p.roomID, row.StateKey, row.EventID) {
					continue
				}
				sent[row.StateKey] = row.EventID
			}
			if roomFilter.State != nil && !eventAllowed(&roomFilter.State.EventFilter, row.Type, gjson.GetBytes(row.JSON, "sender").Str) {
				continue
			}
			stateEvents = append(stateEvents, fm.state(row.EventID, row.JSON))
		}
		if lazy {
			for _, e := range evs {
				if e.Type == spec.MRoomMember && e.StateKey != nil {
					sent[*e.StateKey] = e.EventID
				}
			}
			s.lazy.record(dev.UserID, dev.DeviceID, p.roomID, sent)
		}
		var stateList, stateAfter *eventList
		if req.useStateAfter {
			stateAfter = &eventList{Events: stateEvents}
		} else {
			stateList = &eventList{Events: stateEvents}
		}
		adList := &eventList{Events: []json.RawMessage{}}
		for _, d := range roomAD[p.roomID] {
			if roomFilter.AccountData == nil || eventAllowed(&roomFilter.AccountData.EventFilter, d.Type, "") {
				adList.Events = append(adList.Events, accountDataEvent(d))
			}
		}
		if p.section == "leave" {
			if resp.Rooms.Leave == nil {
				resp.Rooms.Leave = map[string]*leftRoom{}
			}
			resp.Rooms.Leave[p.roomID] = &leftRoom{State: stateList, StateAfter: stateAfter, Timeline: tl, AccountData: adList}
			continue
		}
		eph := ephemeral(p.roomID, dev.UserID, receipts, typing, roomFilter.Ephemeral)
		if !p.full && len(tl.Events) == 0 && len(stateEvents) == 0 && len(eph.Events) == 0 && len(adList.Events) == 0 {
			continue
		}
		if resp.Rooms.Join == nil {
			resp.Rooms.Join = map[string]*joinedRoom{}
		}
		resp.Rooms.Join[p.roomID] = &joinedRoom{Summary: summaries[p.roomID], State: stateList, StateAfter: stateAfter,
			Timeline: tl, Ephemeral: eph, AccountData: adList}
	}
	return nil
}

func hasMemberEvent(evs []storage.Event) bool {
	for _, e := range evs {
		if e.Type == spec.MRoomMember {
			return true
		}
	}
	return false
}

// visibleEvents keeps the events the user may see under history
// visibility, given their membership history in the room.
func visibleEvents(evs []storage.Event, userID string, history []storage.MembershipChange) []storage.Event {
	out := evs[:0]
	for _, e := range evs {
		membership := ""
		joinedLater := false
		for _, c := range history {
			if c.Pos < e.Pos {
				membership = c.Membership
			} else if c.Membership == spec.Join {
				joinedLater = true
			}
		}
		own := e.Type == spec.MRoomMember && e.StateKey != nil && *e.StateKey == userID
		// Users see their own leave (a rejected invite or knock
		// included), or they would never see the room go.
		ownDeparture := own && (e.Membership == spec.Leave || e.Membership == spec.Ban) &&
			(membership == spec.Join || membership == spec.Invite || membership == spec.Knock)
		if own && e.Membership == spec.Join {
			membership = spec.Join
		}
		switch {
		case e.Visibility == "world_readable", membership == spec.Join, ownDeparture,
			e.Visibility == "shared" && joinedLater,
			e.Visibility == "invited" && membership == spec.Invite:
			out = append(out, e)
		}
	}
	return out
}

// ephemeral builds a room's typing and receipt events.
func ephemeral(roomID, userID string, receipts []storage.Receipt, typing map[string][]string, f *filter.RoomEventFilter) *eventList {
	out := &eventList{Events: []json.RawMessage{}}
	var ef *filter.EventFilter
	if f != nil {
		ef = &f.EventFilter
	}
	if users, ok := typing[roomID]; ok && eventAllowed(ef, "m.typing", "") {
		b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		out.Events = append(out.Events, b)
	}
	content := map[string]map[string]map[string]map[string]any{}
	for _, r := range receipts {
		if r.RoomID != roomID || (r.Type == "m.read.private" && r.UserID != userID) {
			continue
		}
		if content[r.EventID] == nil {
			content[r.EventID] = map[string]map[string]map[string]any{}
		}
		if content[r.EventID][r.Type] == nil {
			content[r.EventID][r.Type] = map[string]map[string]any{}
		}
		if prev, ok := content[r.EventID][r.Type][r.UserID]; ok && prev["thread_id"] == nil {
			// A user's unthreaded and threaded receipts of one event:
			// the unthreaded one is shown (MSC4102), it reads more.
			continue
		}
		entry := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			entry["thread_id"] = r.ThreadID
		}
		content[r.EventID][r.Type][r.UserID] = entry
	}
	if len(content) > 0 && eventAllowed(ef, "m.receipt", "") {
		b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
		out.Events = append(out.Events, b)
	}
	return out
}

// summaries computes m.heroes and the member counts of rooms. Heroes are
// the first five other joined or invited members in stream order, or,
// when there are none, the first five who left or were banned.
func (s *SyncAPI) summaries(ctx context.Context, userID string, rooms []string) (map[string]*summary, error) {
	out := map[string]*summary{}
	if len(rooms) == 0 {
		return out, nil
	}
	sums, err := storage.RoomSummaries(ctx, s.store.DB(), userID, rooms)
	if err != nil {
		return nil, err
	}
	for r, sum := range sums {
		joined, invited := sum.Joined, sum.Invited
		out[r] = &summary{Heroes: sum.Heroes, Joined: &joined, Invited: &invited}
	}
	return out, nil
}

// planEnds maps the rooms of plans to the end of their sync range.
func planEnds(plans []*roomPlan) map[string]int64 {
	out := make(map[string]int64, len(plans))
	for _, p := range plans {
		out[p.roomID] = p.to
	}
	return out
}

// stateAtEnd completes the state before gappy timelines with the state at
// their end (to) that is in no timeline, as Synapse: a state change the
// timeline filter left out, or one that arrived before the timeline's
// first event but lies on a fork the timeline does not show, still
// reaches the client. The state at the end wins over the state at the
// start for a key, unless its event is in the timeline.
func (s *SyncAPI) stateAtEnd(ctx context.Context, queries []storage.StateQuery, events map[string][]storage.Event, to map[string]int64,
	states map[string][]storage.StateRow) error {
	var ends []storage.StateQuery
	for _, sq := range queries {
		if sq.Before == nil || sq.MembersOnly {
			continue // no timeline, or one that holds every change
		}
		end := sq
		end.At, end.Before = to[sq.RoomID], nil
		ends = append(ends, end)
	}
	if len(ends) == 0 {
		return nil
	}
	rows, err := storage.States(ctx, s.store.DB(), ends)
	if err != nil {
		return err
	}
	for _, end := range ends {
		room := end.RoomID
		inTimeline := map[string]bool{}
		for _, e := range events[room] {
			inTimeline[e.EventID] = true
		}
		// Nor does the state hold the timeline's events (when the
		// timeline is in depth order, some may precede its first event).
		states[room] = slices.DeleteFunc(states[room], func(r storage.StateRow) bool { return inTimeline[r.EventID] })
		at := map[[2]string]int{}
		for i, r := range states[room] {
			at[[2]string{r.Type, r.StateKey}] = i
		}
		for _, r := range rows[room] {
			if inTimeline[r.EventID] {
				continue
			}
			if i, ok := at[[2]string{r.Type, r.StateKey}]; ok {
				states[room][i] = r
				continue
			}
			at[[2]string{r.Type, r.StateKey}] = len(states[room])
			states[room] = append(states[room], r)
		}
	}
	return nil
}
