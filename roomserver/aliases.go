package roomserver

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// SetAlias implements api.AliasAPI.
func (r *Roomserver) SetAlias(ctx context.Context, alias, roomID, creator string) error {
	err := storage.InsertAlias(ctx, r.store.DB(), alias, roomID, creator)
	if errors.Is(err, storage.ErrExists) {
		return api.ErrAliasExists
	}
	return err
}

// QueryAlias implements api.AliasAPI.
func (r *Roomserver) QueryAlias(ctx context.Context, alias string) (string, error) {
	roomID, _, err := r.QueryAliasCreator(ctx, alias)
	return roomID, err
}

// QueryAliasCreator implements api.AliasAPI.
func (r *Roomserver) QueryAliasCreator(ctx context.Context, alias string) (string, string, error) {
	roomID, creator, err := storage.SelectAlias(ctx, r.store.DB(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", api.ErrAliasNotFound
	}
	return roomID, creator, err
}

// RemoveAlias implements api.AliasAPI.
func (r *Roomserver) RemoveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = r.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		roomID, creator, err = storage.DeleteAlias(ctx, tx, alias)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", api.ErrAliasNotFound
	}
	return roomID, creator, err
}

// QueryAliasesForRoom implements api.AliasAPI.
func (r *Roomserver) QueryAliasesForRoom(ctx context.Context, roomID string) ([]string, error) {
	return storage.SelectAliasesForRoom(ctx, r.store.DB(), roomID)
}

// SetPublished implements api.AliasAPI.
func (r *Roomserver) SetPublished(ctx context.Context, roomID string, published bool) error {
	return storage.SetPublished(ctx, r.store.DB(), roomID, published, time.Now().UnixMilli())
}

// QueryPublished implements api.AliasAPI.
func (r *Roomserver) QueryPublished(ctx context.Context, roomID string) (bool, error) {
	return storage.SelectPublished(ctx, r.store.DB(), roomID)
}

// ForgetRoom implements api.AliasAPI: only rooms the user is no longer in
// can be forgotten. The flag and its OutputForget are written in one
// transaction; the update holds only while the membership read is still
// the current one (a concurrent join wins).
func (r *Roomserver) ForgetRoom(ctx context.Context, userID, roomID string) error {
	h, err := r.reader().roomHead(ctx, roomID)
	if errors.Is(err, api.ErrRoomNotFound) {
		return nil // an unknown room: nothing to forget
	}
	if err != nil {
		return err
	}
	queued := false
	err = r.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		d := r.inTx(tx) // never committed to the caches: it only reads
		m, err := storage.SelectMembership(ctx, tx, h.nid, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // never a member: nothing to forget
		}
		if err != nil {
			return err
		}
		if m.Membership == api.Join || m.Membership == api.Invite || m.Membership == api.Knock {
			return api.ErrNotAllowed
		}
		if m.Forgotten {
			return nil
		}
		if ok, err := storage.SetForgotten(ctx, tx, h.nid, userID, m.EventNID); err != nil || !ok {
			if err == nil {
				err = api.ErrNotAllowed // the membership changed meanwhile
			}
			return err
		}
		ids, err := d.eventIDs(ctx, []int64{m.EventNID})
		if err != nil {
			return err
		}
		queued = true
		return d.queueOutput(ctx, roomID, "forget|"+userID+"|"+ids[m.EventNID], &api.OutputMessage{V: 1,
			Forget: &api.OutputForget{RoomID: roomID, UserID: userID, EventID: ids[m.EventNID]}})
	})
	if err != nil || !queued {
		return err
	}
	r.announce(ctx, roomID, userID)
	return nil
}

// summaryTuples are the state a directory entry shows.
var summaryTuples = []gomatrixserverlib.StateKeyTuple{
	{EventType: spec.MRoomCreate}, {EventType: spec.MRoomName}, {EventType: "m.room.topic"},
	{EventType: spec.MRoomCanonicalAlias}, {EventType: "m.room.avatar"}, {EventType: spec.MRoomHistoryVisibility},
	{EventType: spec.MRoomGuestAccess}, {EventType: spec.MRoomJoinRules},
}

// SetAppServicePublished implements api.AliasAPI.
func (r *Roomserver) SetAppServicePublished(ctx context.Context, appServiceID, networkID, roomID string, published bool) error {
	return storage.SetAppServicePublished(ctx, r.store.DB(), appServiceID, networkID, roomID, published, time.Now().UnixMilli())
}

// QueryPublicRooms implements api.AliasAPI.
func (r *Roomserver) QueryPublicRooms(ctx context.Context, searchTerm string, network api.DirectoryNetwork) ([]api.PublicRoom, error) {
	published, err := storage.SelectPublishedRooms(ctx, r.store.DB(), network.AllNetworks, network.AppServiceID, network.NetworkID)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(searchTerm))
	out := []api.PublicRoom{}
	for _, p := range published {
		pr, err := r.publicRoom(ctx, p.RoomID)
		if err != nil {
			return nil, err
		}
		pr.NumJoinedMembers = int(p.JoinedMembers)
		// As Synapse: a published room nobody can join or read is not
		// listed.
		if !pr.WorldReadable && pr.JoinRule != "public" && pr.JoinRule != "knock" && pr.JoinRule != "knock_restricted" {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name+"\x00"+pr.Topic+"\x00"+pr.CanonicalAlias), term) {
			continue
		}
		out = append(out, pr)
	}
	return out, nil
}

// publicRoom summarises a room for the directory from its current state.
func (r *Roomserver) publicRoom(ctx context.Context, roomID string) (api.PublicRoom, error) {
	pr := api.PublicRoom{RoomID: roomID}
	pdus, err := r.QueryCurrentState(ctx, roomID, summaryTuples...)
	if err != nil {
		return pr, err
	}
	for _, p := range pdus {
		c := gjsonContent(p)
		switch p.Type() {
		case spec.MRoomCreate:
			pr.RoomType = c("type")
		case spec.MRoomName:
			pr.Name = c("name")
		case "m.room.topic":
			pr.Topic = c("topic")
		case spec.MRoomCanonicalAlias:
			pr.CanonicalAlias = c("alias")
		case "m.room.avatar":
			pr.AvatarURL = c("url")
		case spec.MRoomHistoryVisibility:
			pr.WorldReadable = c("history_visibility") == "world_readable"
		case spec.MRoomGuestAccess:
			pr.GuestCanJoin = c("guest_access") == "can_join"
		case spec.MRoomJoinRules:
			pr.JoinRule = c("join_rule")
		}
	}
	return pr, nil
}
