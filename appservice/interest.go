package appservice

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/lru"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// roomCacheSize bounds the rooms whose members and aliases are cached.
const roomCacheSize = 10000

// aliasTTL is how long a room's aliases are trusted: directory aliases
// change without a room event (canonical alias events invalidate at once).
const aliasTTL = time.Minute

// roomInfo is what decides a service's interest in a room beyond the
// event itself: the local users in some service's user namespaces who are
// joined (Synapse's get_local_users_in_room, filtered), and the room's
// aliases (the canonical alias, its alt_aliases and the directory's).
type roomInfo struct {
	mu        sync.Mutex
	members   map[string]bool // nil: not loaded
	aliases   []string
	aliasesAt time.Time // zero: not loaded
}

// interest decides which services want an event, with a bounded cache of
// rooms' interesting members and aliases.
type interest struct {
	services []*asapi.Service
	server   string
	rooms    Rooms
	cache    *lru.Cache[string, *roomInfo]
}

func newInterest(services []*asapi.Service, server string, rooms Rooms) *interest {
	return &interest{services: services, server: server, rooms: rooms, cache: lru.New[string, *roomInfo](roomCacheSize, nil)}
}

// anyService reports whether some service is interested in userID: only
// those users' memberships are cached.
func (in *interest) anyService(userID string) bool {
	if !strings.HasSuffix(userID, ":"+in.server) {
		return false
	}
	for _, s := range in.services {
		if s.IsInterestedInUser(userID) {
			return true
		}
	}
	return false
}

func (in *interest) room(roomID string) *roomInfo {
	if ri, ok := in.cache.Get(roomID); ok {
		return ri
	}
	ri := &roomInfo{}
	in.cache.Put(roomID, ri)
	return ri
}

// hasJoined reports whether one of the service's users is joined to the
// room, loading the room's interesting members from the roomserver's
// current state once.
func (in *interest) hasJoined(ctx context.Context, roomID string, s *asapi.Service) (bool, error) {
	ri := in.room(roomID)
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if ri.members == nil {
		state, err := in.rooms.QueryCurrentState(ctx, roomID)
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return false, err
		}
		members := map[string]bool{}
		for _, ev := range state {
			if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
				continue
			}
			u := *ev.StateKey()
			if m, _ := ev.Membership(); m == spec.Join && in.anyService(u) {
				members[u] = true
			}
		}
		ri.members = members
	}
	for u := range ri.members {
		if s.IsInterestedInUser(u) {
			return true, nil
		}
	}
	return false, nil
}

// joinedOf returns the service's users joined to the room.
func (in *interest) joinedOf(ctx context.Context, roomID string, s *asapi.Service) ([]string, error) {
	if _, err := in.hasJoined(ctx, roomID, s); err != nil {
		return nil, err
	}
	ri := in.room(roomID)
	ri.mu.Lock()
	defer ri.mu.Unlock()
	var out []string
	for u := range ri.members {
		if s.IsInterestedInUser(u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// roomAliases returns the room's aliases: its canonical alias and
// alt_aliases, and those of the directory.
func (in *interest) roomAliases(ctx context.Context, roomID string) ([]string, error) {
	ri := in.room(roomID)
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if !ri.aliasesAt.IsZero() && time.Since(ri.aliasesAt) < aliasTTL {
		return ri.aliases, nil
	}
	aliases, err := in.rooms.QueryAliasesForRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	state, err := in.rooms.QueryCurrentState(ctx, roomID, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCanonicalAlias, StateKey: ""})
	if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil, err
	}
	for _, ev := range state {
		c := ev.Content()
		if a := gjson.GetBytes(c, "alias").Str; a != "" {
			aliases = append(aliases, a)
		}
		for _, a := range gjson.GetBytes(c, "alt_aliases").Array() {
			if a.Type == gjson.String {
				aliases = append(aliases, a.Str)
			}
		}
	}
	ri.aliases, ri.aliasesAt = aliases, time.Now()
	return aliases, nil
}

// observe updates the cache with an event of the room's timeline, after
// the services' interest in it was decided: a membership change of an
// interesting user, a new canonical alias, or a state change that replaced
// more than the event's own piece of state (a state resolution), after
// which the room's members are read again.
func (in *interest) observe(roomID string, ev gomatrixserverlib.PDU, addsState []string) {
	ri, ok := in.cache.Get(roomID)
	if !ok {
		return
	}
	ri.mu.Lock()
	defer ri.mu.Unlock()
	for _, id := range addsState {
		if id != ev.EventID() {
			ri.members, ri.aliasesAt = nil, time.Time{}
			return
		}
	}
	if len(addsState) == 0 || ev.StateKey() == nil {
		return
	}
	switch ev.Type() {
	case spec.MRoomCanonicalAlias:
		ri.aliasesAt = time.Time{}
	case spec.MRoomMember:
		u := *ev.StateKey()
		if ri.members == nil || !in.anyService(u) {
			return
		}
		if m, _ := ev.Membership(); m == spec.Join {
			ri.members[u] = true
		} else {
			delete(ri.members, u)
		}
	}
}

// forget drops a room from the cache (a membership change outside the
// room's DAG).
func (in *interest) forget(roomID string) { in.cache.Remove(roomID) }

// servicesFor returns the services interested in an event of a room, as
// Synapse's ApplicationService.is_interested_in_event decides: its room
// ID is in a room namespace, its sender or (for a membership event) its
// state key is one of the service's users, one of the room's aliases is
// in an alias namespace, or one of the service's users is joined to the
// room. inDAG is false for events outside the room's DAG (out-of-band
// invites), for which the room's members and aliases are not known.
func (in *interest) servicesFor(ctx context.Context, roomID string, ev gomatrixserverlib.PDU, inDAG bool) ([]*asapi.Service, error) {
	var out []*asapi.Service
	sender := string(ev.SenderID())
	var member string
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
		member = *ev.StateKey()
	}
	for _, s := range in.services {
		ok, err := in.serviceWants(ctx, s, roomID, sender, member, inDAG)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (in *interest) serviceWants(ctx context.Context, s *asapi.Service, roomID, sender, member string, inDAG bool) (bool, error) {
	if s.RoomInNamespace(roomID) || s.IsInterestedInUser(sender) || (member != "" && s.IsInterestedInUser(member)) {
		return true, nil
	}
	if !inDAG {
		return false, nil
	}
	if len(s.Aliases) > 0 {
		aliases, err := in.roomAliases(ctx, roomID)
		if err != nil {
			return false, err
		}
		for _, a := range aliases {
			if m, _ := s.AliasInNamespace(a); m {
				return true, nil
			}
		}
	}
	return in.hasJoined(ctx, roomID, s)
}
