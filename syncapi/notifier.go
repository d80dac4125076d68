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
}

func newNotifier() *notifier {
	return &notifier{signals: map[string]chan struct{}{}, members: map[string]map[string]bool{}, rooms: map[string]map[string]bool{}}
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

// wakeSharers wakes the local users who share a room with userID.
func (n *notifier) wakeSharers(userID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeLocked(userID)
	for room := range n.rooms[userID] {
		for u := range n.members[room] {
			n.wakeLocked(u)
		}
	}
}

// setMember records a local user's membership of a room.
func (n *notifier) setMember(roomID, userID, membership string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if membership == spec.Join || membership == spec.Invite {
		if n.members[roomID] == nil {
			n.members[roomID] = map[string]bool{}
		}
		n.members[roomID][userID] = membership == spec.Join
		if n.rooms[userID] == nil {
			n.rooms[userID] = map[string]bool{}
		}
		n.rooms[userID][roomID] = true
		return
	}
	delete(n.members[roomID], userID)
	if len(n.members[roomID]) == 0 {
		delete(n.members, roomID)
	}
	delete(n.rooms[userID], roomID)
	if len(n.rooms[userID]) == 0 {
		delete(n.rooms, userID)
	}
}

// sharers returns the local users who are joined to a room userID is
// joined to (userID included): those who see each other's presence.
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
	}
	return out
}
