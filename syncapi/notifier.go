package syncapi

import (
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// notifier wakes the long-polling syncs of the users an update concerns,
// and nobody else. Each user has a channel that is closed (and replaced)
// when something they may see happens; a sync takes the channel before it
// computes its response, so nothing slips between the two.
type notifier struct {
	mu      sync.Mutex
	signals map[string]chan struct{}
	// members maps rooms to their joined or invited local users (true
	// when joined), and users to their rooms, for fan-out.
	members map[string]map[string]bool
	rooms   map[string]map[string]bool
	// remote maps rooms to their joined remote users, and remoteRooms
	// those users to their rooms: whose presence local users see, and
	// which rooms have other servers to send EDUs to.
	remote      map[string]map[string]bool
	remoteRooms map[string]map[string]bool
}

func newNotifier() *notifier {
	return &notifier{signals: map[string]chan struct{}{}, members: map[string]map[string]bool{}, rooms: map[string]map[string]bool{},
		remote: map[string]map[string]bool{}, remoteRooms: map[string]map[string]bool{}}
}

// channel returns the user's current wake-up channel.
func (n *notifier) channel(userID string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.signals[userID]
	if !ok {
		ch = make(chan struct{})
		n.signals[userID] = ch
	}
	return ch
}

func (n *notifier) wakeLocked(userID string) {
	if ch, ok := n.signals[userID]; ok {
		close(ch)
		delete(n.signals, userID)
	}
}

// wakeUsers wakes the given users.
func (n *notifier) wakeUsers(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		n.wakeLocked(u)
	}
}

// wakeRoom wakes the local members of a room (and the extra users).
func (n *notifier) wakeRoom(roomID string, extra ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u := range n.members[roomID] {
		n.wakeLocked(u)
	}
	for _, u := range extra {
		n.wakeLocked(u)
	}
}

// wakeSharers wakes the local users who share a room with userID (a local
// or a remote user), and userID.
func (n *notifier) wakeSharers(userID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeLocked(userID)
	for room := range n.rooms[userID] {
		for u := range n.members[room] {
			n.wakeLocked(u)
		}
	}
	for room := range n.remoteRooms[userID] {
		for u, joined := range n.members[room] {
			if joined {
				n.wakeLocked(u)
			}
		}
	}
}

// setMember records a user's membership of a room: local users joined or
// invited, remote users joined.
func (n *notifier) setMember(roomID, userID, membership string, local bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !local {
		if membership == spec.Join {
			add(n.remote, roomID, userID, true)
			add(n.remoteRooms, userID, roomID, true)
		} else {
			remove(n.remote, roomID, userID)
			remove(n.remoteRooms, userID, roomID)
		}
		return
	}
	if membership == spec.Join || membership == spec.Invite {
		add(n.members, roomID, userID, membership == spec.Join)
		add(n.rooms, userID, roomID, true)
		return
	}
	remove(n.members, roomID, userID)
	remove(n.rooms, userID, roomID)
}

func add(m map[string]map[string]bool, k, v string, val bool) {
	if m[k] == nil {
		m[k] = map[string]bool{}
	}
	m[k][v] = val
}

func remove(m map[string]map[string]bool, k, v string) {
	delete(m[k], v)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// sharers returns the users, local and remote, who are joined to a room
// userID (a local user) is joined to, userID included: those who see each
// other's presence.
func (n *notifier) sharers(userID string) map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]bool{userID: true}
	for room := range n.rooms[userID] {
		if !n.members[room][userID] {
			continue
		}
		for u, joined := range n.members[room] {
			if joined {
				out[u] = true
			}
		}
		for u := range n.remote[room] {
			out[u] = true
		}
	}
	return out
}

// hasRemote reports whether remote users are joined to a room: whether
// its EDUs have servers to go to.
func (n *notifier) hasRemote(roomID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.remote[roomID]) > 0
}

// sharesWithRemote reports whether a local user is joined to a room with
// remote users (whose servers want the user's presence).
func (n *notifier) sharesWithRemote(userID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for room := range n.rooms[userID] {
		if n.members[room][userID] && len(n.remote[room]) > 0 {
			return true
		}
	}
	return false
}

// hasLocalJoined reports whether a local user is joined to a room: whether
// this server is in it.
func (n *notifier) hasLocalJoined(roomID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, joined := range n.members[roomID] {
		if joined {
			return true
		}
	}
	return false
}

// pushTargets returns the joined local members of a room other than
// sender, whose push rules an event of sender's is evaluated against, and
// the number of joined members, local and remote.
func (n *notifier) pushTargets(roomID, sender string) (users []string, joined int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	users = make([]string, 0, len(n.members[roomID]))
	for u, j := range n.members[roomID] {
		if !j {
			continue
		}
		joined++
		if u != sender {
			users = append(users, u)
		}
	}
	return users, joined + len(n.remote[roomID])
}

// joinedRooms lists the rooms a local user is joined to.
func (n *notifier) joinedRooms(userID string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for room := range n.rooms[userID] {
		if n.members[room][userID] {
			out = append(out, room)
		}
	}
	return out
}

// readKeys are the write marks a read by a local user waits for: the
// user's own and those of the rooms the user is joined or invited to,
// where other users' writes change what the user reads.
func (n *notifier) readKeys(userID string, extra ...string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, 1+len(n.rooms[userID])+len(extra))
	out = append(out, userID)
	for room := range n.rooms[userID] {
		out = append(out, room)
	}
	return append(out, extra...)
}

// joinedMembers lists the joined members of a room, local and remote.
func (n *notifier) joinedMembers(roomID string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.members[roomID])+len(n.remote[roomID]))
	for u, joined := range n.members[roomID] {
		if joined {
			out = append(out, u)
		}
	}
	for u := range n.remote[roomID] {
		out = append(out, u)
	}
	return out
}
