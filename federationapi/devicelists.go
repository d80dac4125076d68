package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/periodic"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// Device lists across servers. Outbound: every KeyChange of a local user
// becomes an m.device_list_update or m.signing_key_update for the servers
// sharing a room with them, and a local user joining a room tells its
// servers that do not share another room with them about each of their
// devices (with no prev_id, so that they fetch the whole list). Inbound:
// the device-list EDUs other servers send (FederationIn) feed the user
// API's remote device cache; an update that does not follow the cached
// list makes it stale and is followed by a resync (/user/devices), retried
// every resyncInterval while it fails. Users no room is shared with any
// more are dropped from the cache, so that their keys are read from their
// server again.

// Consumer names, which also key their positions in fed_consumers.
const (
	keyChangeConsumer  = "fedapi-keychange"
	deviceListConsumer = "fedapi-devicelists"
)

// resyncInterval is how often stale device lists are fetched again
// (Synapse retries every 30 seconds too); resyncTimeout bounds one fetch.
const (
	resyncInterval = 30 * time.Second
	resyncTimeout  = 30 * time.Second
	resyncBatch    = 100
)

// DeviceListUsers is what the federation API needs of the user API for
// device lists: the local users' devices and keys, and the remote device
// cache.
type DeviceListUsers interface {
	userapi.RemoteKeysAPI
	QueryDevices(ctx context.Context, userID string) ([]userapi.DeviceInfo, error)
	QueryUserDevices(ctx context.Context, userID string) (*userapi.UserDevices, error)
}

// startDeviceLists starts the consumers of key changes (outbound) and
// device-list EDUs (inbound), and the resync of stale lists.
func (f *FederationAPI) startDeviceLists(ctx context.Context) error {
	for _, c := range []struct {
		name, stream string
		subjects     []string
		handle       bus.Handler
	}{
		{keyChangeConsumer, userapi.UserOutputStream.Name, []string{userapi.SubjectKeyChange}, f.onKeyChange},
		{deviceListConsumer, fedapi.FederationInStream.Name,
			[]string{fedapi.InSubject(fedapi.EDUDeviceList), fedapi.InSubject(fedapi.EDUSigningKey)}, f.onDeviceListEDU},
	} {
		stop, err := f.bus.Consume(ctx, bus.ConsumerSpec{
			Stream: c.stream, Durable: c.name, FilterSubjects: c.subjects,
			LastApplied: func(ctx context.Context) (uint64, error) { return storage.ConsumerPosition(ctx, f.store.DB(), c.name) },
		}, c.handle)
		if err != nil {
			return err
		}
		f.addStop(stop)
	}
	f.addStop(periodic.Every(resyncInterval, f.resyncStale))
	return nil
}

func (f *FederationAPI) addStop(stop func()) {
	f.stopMu.Lock()
	f.stops = append(f.stops, stop)
	f.stopMu.Unlock()
}

// deviceListEDU is the content of an outgoing m.device_list_update.
type deviceListEDU struct {
	UserID   string          `json:"user_id"`
	DeviceID string          `json:"device_id"`
	StreamID int64           `json:"stream_id"`
	PrevID   []int64         `json:"prev_id"`
	Deleted  bool            `json:"deleted,omitempty"`
	Keys     json.RawMessage `json:"keys,omitempty"`
	// DisplayName only with Config.AllowDeviceNameLookup.
	DisplayName string `json:"device_display_name,omitempty"`
}

// deviceName is what other servers get of a device's display name.
func (f *FederationAPI) deviceName(name *string) string {
	if name == nil || !f.cfg.AllowDeviceNameLookup {
		return ""
	}
	return *name
}

// onKeyChange sends a local user's device or cross-signing key change to
// the servers sharing a room with them. Device names stay on this server
// unless Config.AllowDeviceNameLookup (as in Synapse).
func (f *FederationAPI) onKeyChange(ctx context.Context, m *bus.Msg) error {
	var c userapi.KeyChange
	if err := json.Unmarshal(m.Data, &c); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable key change: %w", err))
	}
	if !fromOrigin(c.UserID, f.cfg.ServerName) {
		return f.setConsumed(ctx, keyChangeConsumer, m.Seq)
	}
	var eduType string
	var content []byte
	switch c.Kind {
	case userapi.KeyChangeDevice:
		prev := c.PrevID
		if prev == nil {
			prev = []int64{}
		}
		eduType = fedapi.EDUDeviceList
		content, _ = json.Marshal(deviceListEDU{UserID: c.UserID, DeviceID: c.DeviceID, StreamID: c.StreamID, PrevID: prev,
			Deleted: c.Deleted, Keys: nonNull(c.Keys), DisplayName: f.deviceName(c.DeviceDisplayName)})
	case userapi.KeyChangeCrossSigning:
		eduType = fedapi.EDUSigningKey
		content, _ = json.Marshal(map[string]any{"user_id": c.UserID, "master_key": nonNull(c.MasterKey), "self_signing_key": nonNull(c.SelfSigningKey)})
	default: // user-signing keys stay on this server
		return f.setConsumed(ctx, keyChangeConsumer, m.Seq)
	}
	dests, err := f.eduDestinations(ctx, &fedapi.OutboundEDU{UserID: c.UserID})
	if err != nil {
		return err
	}
	return f.enqueueEDUs(ctx, keyChangeConsumer, m.Seq, dests, eduType, [][]byte{content})
}

func nonNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return b
}

// enqueueEDUs queues EDUs for dests with the consumer's position, and
// kicks the queues.
func (f *FederationAPI) enqueueEDUs(ctx context.Context, consumer string, seq uint64, dests []string, eduType string, contents [][]byte) error {
	err := f.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		if len(dests) > 0 {
			now := time.Now().UnixMilli()
			for _, c := range contents {
				if err := storage.EnqueueEDU(ctx, tx, dests, eduType, c, now); err != nil {
					return err
				}
			}
		}
		return storage.SetConsumerPosition(ctx, tx, consumer, seq)
	})
	if err != nil {
		return err
	}
	for _, d := range dests {
		f.queues.kick(spec.ServerName(d))
	}
	return nil
}

// memberDeviceLists is the device-list side of a member event coming out
// of the roomserver: the EDUs to queue for a local user's join (to the
// servers of the room that share no other room with the user), and the
// remote users to drop from the cache: one who leaves, or the remote
// members of a room a local user leaves (conservatively: those who still
// share another room are fetched again at their next update).
func (f *FederationAPI) memberDeviceLists(ctx context.Context, roomID string, pdu gomatrixserverlib.PDU) (dests []string, edus [][]byte, err error) {
	if pdu.StateKey() == nil {
		return nil, nil, nil
	}
	userID := *pdu.StateKey()
	membership, err := pdu.Membership()
	if err != nil {
		return nil, nil, nil
	}
	local := fromOrigin(userID, f.cfg.ServerName)
	switch {
	case !local && (membership == spec.Leave || membership == spec.Ban):
		return nil, nil, f.devUsers.ForgetRemoteDevices(ctx, []string{userID})
	case local && (membership == spec.Leave || membership == spec.Ban):
		state, err := f.rooms.QueryCurrentState(ctx, roomID)
		if err != nil {
			if errors.Is(err, rsapi.ErrRoomNotFound) {
				return nil, nil, nil
			}
			return nil, nil, err
		}
		var remote []string
		for _, ev := range state {
			if ev.Type() == spec.MRoomMember && ev.StateKey() != nil && !fromOrigin(*ev.StateKey(), f.cfg.ServerName) {
				if ms, _ := ev.Membership(); ms == spec.Join {
					remote = append(remote, *ev.StateKey())
				}
			}
		}
		return nil, nil, f.devUsers.ForgetRemoteDevices(ctx, remote)
	case local && membership == spec.Join:
		return f.joinDeviceLists(ctx, roomID, userID)
	}
	return nil, nil, nil
}

// joinDeviceLists builds the m.device_list_update EDUs that tell the
// servers of a room a local user joined, which share no other room with
// them, about each of the user's devices. They follow nothing (empty
// prev_id), so that the servers fetch the whole list.
func (f *FederationAPI) joinDeviceLists(ctx context.Context, roomID, userID string) ([]string, [][]byte, error) {
	servers, err := f.joinedServers(ctx, roomID)
	if err != nil {
		if errors.Is(err, rsapi.ErrRoomNotFound) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	rooms, err := f.rooms.QueryRoomsForUser(ctx, userID, spec.Join)
	if err != nil {
		return nil, nil, err
	}
	already := map[string]bool{}
	for _, r := range rooms {
		if r.RoomID == roomID {
			continue
		}
		others, err := f.joinedServers(ctx, r.RoomID)
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return nil, nil, err
		}
		for _, s := range others {
			already[s] = true
		}
	}
	var fresh []string
	for _, s := range servers {
		if !already[s] {
			fresh = append(fresh, s)
		}
	}
	dests := f.destinations(fresh)
	if len(dests) == 0 {
		return nil, nil, nil
	}
	devices, err := f.devUsers.QueryDevices(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	list, err := f.devUsers.QueryUserDevices(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	keys := map[string]json.RawMessage{}
	for _, d := range list.Devices {
		keys[d.DeviceID] = d.Keys
	}
	edus := make([][]byte, 0, len(devices))
	for _, d := range devices {
		// A restatement (prev_id names its own stream_id): no change, the
		// device as it is, which a receiving Myelin does not list in its
		// users' device_lists.changed a second time (they saw the join);
		// any server without the list resyncs it.
		b, _ := json.Marshal(deviceListEDU{UserID: userID, DeviceID: d.DeviceID, StreamID: list.StreamID, PrevID: []int64{list.StreamID},
			Keys: nonNull(keys[d.DeviceID]), DisplayName: f.deviceName(d.DisplayName)})
		edus = append(edus, b)
	}
	return dests, edus, nil
}

// onDeviceListEDU applies another server's m.device_list_update or
// m.signing_key_update to the remote device cache, for users who share a
// room with a local user (the others are not tracked); an update that
// does not follow the cached list is followed by a resync.
func (f *FederationAPI) onDeviceListEDU(ctx context.Context, m *bus.Msg) error {
	var edu fedapi.InboundEDU
	if err := json.Unmarshal(m.Data, &edu); err != nil {
		return bus.Permanent(fmt.Errorf("undecodable inbound EDU: %w", err))
	}
	var userID string
	var apply func() error
	switch edu.Type {
	case fedapi.EDUDeviceList:
		var u userapi.RemoteDeviceUpdate
		if err := json.Unmarshal(edu.Content, &u); err != nil || u.DeviceID == "" {
			f.log.Debug("malformed device list update ignored", slog.String("origin", edu.Origin))
			return f.setConsumed(ctx, deviceListConsumer, m.Seq)
		}
		userID = u.UserID
		apply = func() error {
			resync, err := f.devUsers.ApplyRemoteDeviceUpdate(ctx, &u)
			if err != nil || !resync {
				return err
			}
			f.resync(ctx, userID)
			return nil
		}
	case fedapi.EDUSigningKey:
		var u userapi.RemoteSigningKeyUpdate
		if err := json.Unmarshal(edu.Content, &u); err != nil {
			f.log.Debug("malformed signing key update ignored", slog.String("origin", edu.Origin))
			return f.setConsumed(ctx, deviceListConsumer, m.Seq)
		}
		userID = u.UserID
		apply = func() error { return f.devUsers.ApplyRemoteSigningKeyUpdate(ctx, &u) }
	default:
		return f.setConsumed(ctx, deviceListConsumer, m.Seq)
	}
	if !fromOrigin(userID, spec.ServerName(edu.Origin)) || fromOrigin(userID, f.cfg.ServerName) {
		return f.setConsumed(ctx, deviceListConsumer, m.Seq)
	}
	shared, err := f.sharesRoom(ctx, userID)
	if err != nil {
		return err
	}
	if shared {
		if err := apply(); err != nil {
			return err
		}
	}
	return f.setConsumed(ctx, deviceListConsumer, m.Seq)
}

// sharesRoom reports whether a remote user is joined to a room a local
// user is joined to.
func (f *FederationAPI) sharesRoom(ctx context.Context, userID string) (bool, error) {
	rooms, err := f.rooms.QueryRoomsForUser(ctx, userID, spec.Join)
	if err != nil {
		return false, err
	}
	for _, r := range rooms {
		servers, err := f.joinedServers(ctx, r.RoomID)
		if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
			return false, err
		}
		for _, s := range servers {
			if s == string(f.cfg.ServerName) {
				return true, nil
			}
		}
	}
	return false, nil
}

// resync fetches a remote user's whole device list from their server and
// stores it. A failure is logged: the list stays stale (and is read from
// the server when asked for) until resyncStale succeeds.
func (f *FederationAPI) resync(ctx context.Context, userID string) {
	_, domain, err := gomatrixserverlib.SplitID('@', userID)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	res, err := f.QueryUserDevices(ctx, string(domain), userID)
	if err == nil {
		list := &userapi.UserDevices{UserID: res.UserID, StreamID: res.StreamID, MasterKey: nonNull(res.MasterKey),
			SelfSigningKey: nonNull(res.SelfSigningKey), Devices: make([]userapi.UserDevice, 0, len(res.Devices))}
		for _, d := range res.Devices {
			ud := userapi.UserDevice{DeviceID: d.DeviceID, Keys: nonNull(d.Keys)}
			if d.DeviceDisplayName != "" {
				name := d.DeviceDisplayName
				ud.DisplayName = &name
			}
			list.Devices = append(list.Devices, ud)
		}
		err = f.devUsers.StoreRemoteDevices(ctx, list)
	}
	if err != nil && ctx.Err() == nil {
		f.log.Info("device list resync failed; retrying later", slog.String("server", string(domain)), slog.String("error", err.Error()))
	}
}

// resyncStale fetches the stale device lists again, and drops those of
// users no room is shared with any more.
func (f *FederationAPI) resyncStale(ctx context.Context) {
	users, err := f.devUsers.StaleRemoteUsers(ctx, resyncBatch)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("reading stale device lists failed", slog.String("error", err.Error()))
		}
		return
	}
	var gone []string
	for _, u := range users {
		if ctx.Err() != nil {
			return
		}
		shared, err := f.sharesRoom(ctx, u)
		if err != nil {
			continue
		}
		if !shared {
			gone = append(gone, u)
			continue
		}
		if _, domain, err := gomatrixserverlib.SplitID('@', u); err == nil && f.policy.allowed(domain) && !strings.EqualFold(string(domain), string(f.cfg.ServerName)) {
			f.resync(ctx, u)
		} else {
			gone = append(gone, u)
		}
	}
	if len(gone) > 0 {
		_ = f.devUsers.ForgetRemoteDevices(ctx, gone)
	}
}
