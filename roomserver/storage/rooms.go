package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/state"
)

// Room is a row of rs_rooms.
type Room struct {
	NID           int64
	RoomID        string
	Version       string
	SnapshotNID   int64
	LatestNIDs    []int64
	JoinedMembers int64
}

// InsertRoom creates a room; ErrExists if the ID is taken.
func InsertRoom(ctx context.Context, tx *sqlutil.Tx, roomID, version string) (int64, error) {
	var nid int64
	err := tx.QueryRowContext(ctx, `INSERT INTO rs_rooms (room_id, room_version, latest_event_nids) VALUES (?, ?, ?)
		ON CONFLICT (room_id) DO NOTHING RETURNING room_nid`, roomID, version, []byte{}).Scan(&nid)
	if err != nil {
		if sqlutil.NotFound(err) == ErrNotFound {
			return 0, ErrExists
		}
		return 0, err
	}
	return nid, nil
}

const roomColumns = `room_nid, room_id, room_version, state_snapshot_nid, latest_event_nids, joined_members`

func scanRoom(sc interface{ Scan(...any) error }) (*Room, error) {
	var r Room
	var latest []byte
	if err := sc.Scan(&r.NID, &r.RoomID, &r.Version, &r.SnapshotNID, &latest, &r.JoinedMembers); err != nil {
		return nil, sqlutil.NotFound(err)
	}
	var err error
	r.LatestNIDs, err = state.DecodeNIDs(latest)
	return &r, err
}

// SelectRoom returns a room by ID, or ErrNotFound.
func SelectRoom(ctx context.Context, q sqlutil.Querier, roomID string) (*Room, error) {
	return scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rs_rooms WHERE room_id = ?`, roomID))
}

// SelectRoomByNID returns a room by numeric ID, or ErrNotFound.
func SelectRoomByNID(ctx context.Context, q sqlutil.Querier, nid int64) (*Room, error) {
	return scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rs_rooms WHERE room_nid = ?`, nid))
}

// UpdateRoom stores the room's current state, extremities and member count.
func UpdateRoom(ctx context.Context, tx *sqlutil.Tx, r *Room) error {
	_, err := tx.ExecContext(ctx, `UPDATE rs_rooms SET state_snapshot_nid = ?, latest_event_nids = ?, joined_members = ? WHERE room_nid = ?`,
		r.SnapshotNID, state.EncodeNIDs(r.LatestNIDs), r.JoinedMembers, r.NID)
	return err
}

// SelectRoomIDs maps room numeric IDs to room IDs.
func SelectRoomIDs(ctx context.Context, q sqlutil.Querier, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT room_nid, room_id FROM rs_rooms WHERE room_nid IN (`+sqlutil.InList(len(nids))+`)`, sqlutil.Args(nids)...)
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var nid int64
		var id string
		if err := rows.Scan(&nid, &id); err != nil {
			return err
		}
		out[nid] = id
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
