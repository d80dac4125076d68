package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/internal/lru"
	"github.com/myelin-chat/myelin/internal/pushrules"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// pushRulesType is the account data type of push rules.
const pushRulesType = "m.push_rules"

// pushCache holds what evaluating events against push rules needs, so
// that an event costs no query per member: each user's compiled rules and,
// per room, the members' display names and the power levels.
type pushCache struct {
	rules *lru.Cache[string, *pushrules.Compiled]
	// gen moves whenever a user's rules change, so that rules read before
	// the change are not cached after it.
	gen   atomic.Uint64
	rooms *lru.Cache[string, *roomPush]
	// ignores are whom each user ignores (m.ignored_user_list), which
	// push evaluation and /sync both read; gen covers them too.
	ignores *lru.Cache[string, map[string]bool]
}

// roomPush is a room's evaluation context; nil fields are not loaded yet.
// Only the room output consumer (one goroutine) reads and changes them.
type roomPush struct {
	names map[string]string // joined local members' display names
	power *rsapi.PowerLevels
}

// newPushCache holds the compiled rules of up to users users (about 2 KB
// each for the default rules) and the context of up to rooms rooms.
func newPushCache(users, rooms int) *pushCache {
	return &pushCache{
		rules:   lru.New[string, *pushrules.Compiled](users, nil),
		rooms:   lru.New[string, *roomPush](rooms, nil),
		ignores: lru.New[string, map[string]bool](users, nil),
	}
}

// forgetRules drops a user's compiled rules after they changed.
func (c *pushCache) forgetRules(userID string) {
	c.gen.Add(1)
	c.rules.Remove(userID)
}

// forgetIgnores drops whom a user ignores after it changed.
func (c *pushCache) forgetIgnores(userID string) {
	c.gen.Add(1)
	c.ignores.Remove(userID)
}

// compiledRules returns the compiled rules of each user (in the order of
// users): from the cache, or read (one query for all the users missing)
// and compiled. A user with no stored rules has the server defaults.
func (s *SyncAPI) compiledRules(ctx context.Context, q sqlutil.Querier, users []string) ([]*pushrules.Compiled, error) {
	out := make([]*pushrules.Compiled, len(users))
	var missing []string
	for i, u := range users {
		if c, ok := s.push.rules.Get(u); ok {
			out[i] = c
		} else {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	gen := s.push.gen.Load()
	stored, err := storage.GlobalAccountData(ctx, q, missing, pushRulesType)
	if err != nil {
		return nil, err
	}
	for i, u := range users {
		if out[i] != nil {
			continue
		}
		c := compileRules(u, stored[u])
		out[i] = c
		if s.push.gen.Load() == gen {
			s.push.rules.Put(u, c)
		}
	}
	return out, nil
}

// compileRules compiles the global ruleset of m.push_rules account data,
// the server defaults when there is none.
func compileRules(userID string, content []byte) *pushrules.Compiled {
	if len(content) > 0 {
		var v struct {
			Global *pushrules.Ruleset `json:"global"`
		}
		if json.Unmarshal(content, &v) == nil && v.Global != nil {
			return pushrules.Compile(userID, *v.Global)
		}
	}
	return pushrules.CompileDefaults(userID)
}

// defaultPushRules is the m.push_rules content of a user who never
// changed a rule.
func defaultPushRules(userID string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"global": pushrules.Defaults(userID)})
	return b
}

// roomPushInfo returns the room's evaluation context, loading what is
// missing: display names only when needed.
func (s *SyncAPI) roomPushInfo(ctx context.Context, q sqlutil.Querier, roomID string, verImpl gomatrixserverlib.IRoomVersion, needNames bool) (*roomPush, error) {
	info, ok := s.push.rooms.Get(roomID)
	if !ok {
		info = &roomPush{}
		s.push.rooms.Put(roomID, info)
	}
	if info.power == nil {
		_, createJSON, err := storage.CurrentStateEvent(ctx, q, roomID, spec.MRoomCreate, "")
		if err != nil {
			return nil, err
		}
		_, plJSON, err := storage.CurrentStateEvent(ctx, q, roomID, spec.MRoomPowerLevels, "")
		if err != nil {
			return nil, err
		}
		if createJSON != nil {
			create, err := verImpl.NewEventFromTrustedJSON(createJSON, false)
			if err != nil {
				return nil, err
			}
			var pl gomatrixserverlib.PDU
			if plJSON != nil {
				if pl, err = verImpl.NewEventFromTrustedJSON(plJSON, false); err != nil {
					return nil, err
				}
			}
			if info.power, err = rsapi.NewPowerLevels(create, pl); err != nil {
				return nil, err
			}
		}
	}
	if needNames && info.names == nil {
		members, err := storage.CurrentMemberEvents(ctx, q, roomID)
		if err != nil {
			return nil, err
		}
		names := make(map[string]string, len(members))
		for u, js := range members {
			if s.isLocal(u) {
				names[u] = gjson.GetBytes(js, "content.displayname").Str
			}
		}
		info.names = names
	}
	return info, nil
}

// notePushState keeps the cached room context in step with a state
// event of the room.
func (s *SyncAPI) notePushState(roomID string, pdu gomatrixserverlib.PDU) {
	info, ok := s.push.rooms.Get(roomID)
	if !ok {
		return
	}
	switch pdu.Type() {
	case spec.MRoomPowerLevels, spec.MRoomCreate:
		info.power = nil
	case spec.MRoomMember:
		u := *pdu.StateKey()
		if info.names == nil || !s.isLocal(u) {
			return
		}
		if m, _ := pdu.Membership(); m == spec.Join {
			info.names[u] = gjson.GetBytes(pdu.Content(), "displayname").Str
		} else {
			delete(info.names, u)
		}
	}
}

// unreadChange is what an applied event changes of the unread counts,
// applied to them once its transaction has committed.
type unreadChange struct {
	pos                  int64
	roomID               string
	sender, senderThread string // a local sender, who has read up to the event
	ev                   *storage.NotificationEvent
}

// evaluatePush runs a new timeline event through the push rules of the
// room's local members other than its sender (and of a local invitee).
// What it changes of the counts is applied after commit (w.unread), and
// saved with them.
func (s *SyncAPI) evaluatePush(ctx context.Context, tx *sqlutil.Tx, roomID string, pdu gomatrixserverlib.PDU, verImpl gomatrixserverlib.IRoomVersion,
	pos int64, w *wakes) error {
	if pdu.StateKey() != nil {
		s.notePushState(roomID, pdu)
	}
	ch, err := s.pushChange(ctx, tx, roomID, pdu, verImpl, pos)
	w.unread = ch
	return err
}

// pushChange evaluates an event at pos: whom it notifies, and whether its
// sender is a local user (who has read the room up to it).
func (s *SyncAPI) pushChange(ctx context.Context, q sqlutil.Querier, roomID string, pdu gomatrixserverlib.PDU, verImpl gomatrixserverlib.IRoomVersion,
	pos int64) (*unreadChange, error) {
	sender := string(pdu.SenderID())
	content := pdu.Content()
	ch := &unreadChange{pos: pos, roomID: roomID}
	thread := s.threadOf(ctx, q, content)
	if s.isLocal(sender) {
		ch.sender, ch.senderThread = sender, thread
	}
	users, joined := s.notifier.pushTargets(roomID, sender)
	if pdu.Type() == spec.MRoomMember && pdu.StateKey() != nil && *pdu.StateKey() != sender && s.isLocal(*pdu.StateKey()) {
		if m, _ := pdu.Membership(); m == spec.Invite {
			users = append(users, *pdu.StateKey())
		}
	}
	if len(users) == 0 {
		return ch, nil
	}
	ev, err := pushrules.NewEvent(pushFields(pdu.JSON()))
	if err != nil {
		s.log.Warn("event not evaluated for push", "room_id", roomID, "event_id", pdu.EventID(), "error", err.Error())
		return ch, nil
	}
	needNames := gjson.GetBytes(content, "body").Type == gjson.String
	info, err := s.roomPushInfo(ctx, q, roomID, verImpl, needNames)
	if err != nil {
		return nil, err
	}
	rc := &pushrules.RoomContext{MemberCount: joined}
	if info.power != nil {
		rc.SenderPowerLevel = info.power.UserLevel(sender)
		rc.NotificationLevels = info.power.Notifications
	}
	rules, err := s.compiledRules(ctx, q, users)
	if err != nil {
		return nil, err
	}
	// Nobody is notified of an event by a user they ignore.
	ignores, err := s.ignoredLists(ctx, q, users)
	if err != nil {
		return nil, err
	}
	notified := make([]storage.Notified, 0, len(users))
	var actions []json.RawMessage // distinct: most users share one or two
	type seen struct {
		ruleID  string
		actions []json.RawMessage
		idx     int
	}
	var known []seen // the rules that matched so far, with their actions' index
	ee := pushrules.NewEventEval(ev, rc)
	// When the default rules give every user the same result (a join, for
	// one), only the users who changed their rules are evaluated.
	uniform, ures, uok := ee.Uniform(), pushrules.Result{}, false
	if uniform {
		ures, uok = ee.Result()
	}
	for i, u := range users {
		if ignores[u][sender] {
			continue
		}
		var res pushrules.Result
		var ok bool
		if uniform && rules[i].Defaults() {
			res, ok = ures, uok
		} else {
			res, ok = rules[i].EvaluateShared(ee, info.names[u])
		}
		if !ok || !res.Notify {
			continue
		}
		k := slices.IndexFunc(known, func(s seen) bool {
			return s.ruleID == res.RuleID && slices.EqualFunc(s.actions, res.Actions, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) })
		})
		if k < 0 {
			a := joinActions(res.Actions)
			idx := slices.IndexFunc(actions, func(b json.RawMessage) bool { return bytes.Equal(a, b) })
			if idx < 0 {
				idx = len(actions)
				actions = append(actions, a)
			}
			known = append(known, seen{res.RuleID, res.Actions, idx})
			k = len(known) - 1
		}
		notified = append(notified, storage.Notified{UserID: u, Highlight: res.Highlight, Actions: known[k].idx})
	}
	if len(notified) == 0 {
		return ch, nil
	}
	ch.ev = &storage.NotificationEvent{EventPos: pos, RoomID: roomID, EventID: pdu.EventID(), ThreadID: thread,
		TS: int64(pdu.OriginServerTS()), Actions: actions}
	ch.ev.SetUsers(notified)
	return ch, nil
}

// joinActions is the JSON array of a rule's actions (each valid JSON
// already).
func joinActions(actions []json.RawMessage) json.RawMessage {
	n := 2
	for _, a := range actions {
		n += len(a) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, a := range actions {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, a...)
	}
	return append(out, ']')
}

// pushFields keeps of an event's JSON what push rules may look at, so
// that its signatures, hashes and references are not flattened for
// nothing.
func pushFields(eventJSON []byte) []byte {
	out := make([]byte, 0, len(eventJSON))
	out = append(out, '{')
	gjson.ParseBytes(eventJSON).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type", "sender", "state_key", "room_id", "content":
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = append(out, k.Raw...)
			out = append(out, ':')
			out = append(out, v.Raw...)
		}
		return true
	})
	return append(out, '}')
}

// maxThreadHops bounds how many relations are followed to find an
// event's thread, as the spec recommends.
const maxThreadHops = 3

// threadOf returns the thread an event with this content belongs to: the
// root of its m.thread relation, or of the event it relates to, followed
// at most maxThreadHops times; storage.MainThread otherwise.
func (s *SyncAPI) threadOf(ctx context.Context, q sqlutil.Querier, content []byte) string {
	rel := gjson.GetBytes(content, `m\.relates_to`)
	for hop := 0; hop < maxThreadHops && rel.IsObject(); hop++ {
		target := rel.Get("event_id").Str
		if target == "" {
			break
		}
		if rel.Get("rel_type").Str == "m.thread" {
			return target
		}
		evs, err := storage.EventsByID(ctx, q, []string{target})
		if err != nil || evs[target] == nil {
			break
		}
		rel = gjson.GetBytes(evs[target].JSON, `content.m\.relates_to`)
	}
	return storage.MainThread
}
