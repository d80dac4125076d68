package appservice

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/appservice/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// MSC3202's transaction extensions, for the services with
// org.matrix.msc3202 (encrypting bridges), as Synapse sends them:
//
//   - org.matrix.msc3202.device_lists: the users whose device list or
//     cross-signing keys changed (local users' KeyChange, remote users'
//     RemoteKeyChange) who are the service's users or share a room with
//     one of them, queued in as_queue like events. "left" is always empty,
//     as in Synapse, which does not compute it either.
//   - org.matrix.msc3202.device_one_time_keys_count (and Synapse's older
//     spelling device_one_time_key_counts) and
//     org.matrix.msc3202.device_unused_fallback_key_types: the counts of
//     every device of the service's users the transaction concerns (its
//     sender, its users joined to the rooms of the transaction's events
//     and ephemeral events, the recipients of its to-device messages),
//     read when the transaction is built and stored in its body.

const userOutputConsumer = "appservice-useroutput"

// Users is what the component reads of users: their devices and what
// one-time and fallback keys those have left (userapi/api).
type Users interface {
	QueryDevicesOfUsers(ctx context.Context, userIDs []string) (map[string][]userapi.DeviceInfo, error)
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*userapi.OneTimeKeyCounts, error)
}

func (a *AppService) msc3202Services() []*asapi.Service {
	var out []*asapi.Service
	for _, s := range a.interest.services {
		if s.MSC3202 {
			out = append(out, s)
		}
	}
	return out
}

func (a *AppService) startUserOutput(ctx context.Context) error {
	if len(a.msc3202Services()) == 0 {
		return nil
	}
	if err := a.startFrom(ctx, userapi.UserOutputStream.Name, userOutputConsumer); err != nil {
		return fmt.Errorf("appservice: user output position: %w", err)
	}
	stop, err := a.bus.Consume(ctx, bus.ConsumerSpec{
		Stream:         userapi.UserOutputStream.Name,
		Durable:        userOutputConsumer,
		FilterSubjects: []string{userapi.SubjectKeyChange, userapi.SubjectRemoteKeyChange},
		LastApplied:    storage.Consumers.LastApplied(a.store.DB(), userOutputConsumer),
	}, a.onUserOutput)
	if err != nil {
		return err
	}
	a.stops = append(a.stops, stop)
	return nil
}

// onUserOutput queues a device list change for the MSC3202 services that
// care about the user.
func (a *AppService) onUserOutput(ctx context.Context, m *bus.Msg) error {
	var c struct {
		UserID string `json:"user_id"`
		Kind   string `json:"kind"`
	}
	if err := json.Unmarshal(m.Data, &c); err != nil || c.UserID == "" {
		return bus.Permanent(fmt.Errorf("undecodable key change: %v", err))
	}
	var rows []storage.QueueRow
	if c.Kind != userapi.KeyChangeUserSigning { // the user's own devices' business
		var rooms []string
		loaded := false
		for _, s := range a.msc3202Services() {
			ok := s.IsInterestedInUser(c.UserID)
			if !ok && !loaded {
				members, err := a.interest.rooms.QueryRoomsForUser(ctx, c.UserID, spec.Join)
				if err != nil {
					return err
				}
				for _, mi := range members {
					rooms = append(rooms, mi.RoomID)
				}
				loaded = true
			}
			for _, roomID := range rooms {
				if ok {
					break
				}
				var err error
				if ok, err = a.interest.hasJoined(ctx, roomID, s); err != nil {
					return err
				}
			}
			if ok {
				js, _ := json.Marshal(c.UserID)
				rows = append(rows, storage.QueueRow{ServiceID: s.ID, Kind: storage.KindDeviceList, Payload: js})
			}
		}
	}
	return a.apply(ctx, userOutputConsumer, m.Seq, rows)
}

// deviceLists is MSC3202's device_lists.
type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// keyCounts fills in the one-time key counts and unused fallback key types
// of the devices of the service's users the transaction concerns.
func (a *AppService) keyCounts(ctx context.Context, s *asapi.Service, body *txnBody) error {
	if a.users == nil {
		return nil
	}
	users := map[string]bool{s.SenderID: true}
	rooms := map[string]bool{}
	for _, e := range body.Events {
		rooms[gjson.GetBytes(e, "room_id").Str] = true
	}
	for _, e := range body.Ephemeral {
		if r := gjson.GetBytes(e, "room_id").Str; r != "" {
			rooms[r] = true
		}
	}
	for _, m := range body.MSC2409ToDevice {
		users[gjson.GetBytes(m, "to_user_id").Str] = true
	}
	for roomID := range rooms {
		if roomID == "" {
			continue
		}
		joined, err := a.interest.joinedOf(ctx, roomID, s)
		if err != nil {
			return err
		}
		for _, u := range joined {
			users[u] = true
		}
	}
	list := make([]string, 0, len(users))
	for u := range users {
		if u != "" && strings.HasSuffix(u, ":"+a.cfg.ServerName) {
			list = append(list, u)
		}
	}
	slices.Sort(list)
	devices, err := a.users.QueryDevicesOfUsers(ctx, list)
	if err != nil {
		return err
	}
	for _, u := range list {
		for _, d := range devices[u] {
			c, err := a.users.OneTimeKeyCounts(ctx, u, d.DeviceID)
			if err != nil {
				return err
			}
			if c == nil {
				continue
			}
			if body.OTKCounts == nil {
				body.OTKCounts = map[string]map[string]map[string]int{}
				body.FallbackKeyTypes = map[string]map[string][]string{}
			}
			if body.OTKCounts[u] == nil {
				body.OTKCounts[u] = map[string]map[string]int{}
				body.FallbackKeyTypes[u] = map[string][]string{}
			}
			counts := c.Counts
			if counts == nil {
				counts = map[string]int{}
			}
			fallback := c.UnusedFallbackKeyTypes
			if fallback == nil {
				fallback = []string{}
			}
			body.OTKCounts[u][d.DeviceID] = counts
			body.FallbackKeyTypes[u][d.DeviceID] = fallback
		}
	}
	body.OTKCountsOld = body.OTKCounts
	return nil
}
