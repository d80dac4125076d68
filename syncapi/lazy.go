package syncapi

import (
	"sync"

	"github.com/myelin-chat/myelin/internal/lru"
)

// lazyCache remembers, per device, which member events lazy loading has
// sent for each room, so that later syncs leave them out (unless the
// filter asks for redundant members). It is advisory: after eviction or a
// restart, members are simply sent again.
type lazyCache struct {
	devices *lru.Cache[string, *deviceMembers]
}

type deviceMembers struct {
	mu    sync.Mutex
	rooms map[string]map[string]string // room -> user -> member event ID sent
}

func newLazyCache(devices int) *lazyCache {
	return &lazyCache{devices: lru.New[string, *deviceMembers](devices, nil)}
}

func deviceKey(userID, deviceID string) string { return userID + "|" + deviceID }

// reset forgets what a device was sent (an initial sync starts over).
func (l *lazyCache) reset(userID, deviceID string) {
	l.devices.Put(deviceKey(userID, deviceID), &deviceMembers{rooms: map[string]map[string]string{}})
}

// sent reports whether the device has this member event of the room.
func (l *lazyCache) sent(userID, deviceID, roomID, member, eventID string) bool {
	dm, ok := l.devices.Get(deviceKey(userID, deviceID))
	if !ok {
		return false
	}
	dm.mu.Lock()
	defer dm.mu.Unlock()
	return dm.rooms[roomID][member] == eventID
}

// record notes member events sent to the device.
func (l *lazyCache) record(userID, deviceID, roomID string, members map[string]string) {
	key := deviceKey(userID, deviceID)
	dm, ok := l.devices.Get(key)
	if !ok {
		dm = &deviceMembers{rooms: map[string]map[string]string{}}
		l.devices.Put(key, dm)
	}
	dm.mu.Lock()
	defer dm.mu.Unlock()
	if dm.rooms[roomID] == nil {
		dm.rooms[roomID] = map[string]string{}
	}
	for u, id := range members {
		dm.rooms[roomID][u] = id
	}
}
