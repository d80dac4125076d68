package storage

import (
	"context"
	"database/sql"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// DeviceListChange is a row of sync_device_lists: the position of a user's
// latest device-list change, and of the latest one others see.
type DeviceListChange struct {
	UserID         string
	Pos, SharedPos int64
}

// MarkDeviceListChanged records a change of a user's device list at pos;
// shared says whether the users who share a room with them see it (false
// for a change only the user's own devices care about).
func MarkDeviceListChanged(ctx context.Context, tx *sqlutil.Tx, userID string, pos int64, shared bool) error {
	sharedPos := int64(0)
	if shared {
		sharedPos = pos
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_device_lists (user_id, pos, shared_pos) VALUES (?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET pos = excluded.pos,
		shared_pos = CASE WHEN excluded.shared_pos > 0 THEN excluded.shared_pos ELSE sync_device_lists.shared_pos END`,
		userID, pos, sharedPos)
	return err
}

// DeviceListChanges returns the users whose latest device-list change is
// in (from, to].
func DeviceListChanges(ctx context.Context, q sqlutil.Querier, from, to int64) ([]DeviceListChange, error) {
	rows, err := q.QueryContext(ctx, `SELECT user_id, pos, shared_pos FROM sync_device_lists WHERE pos > ? AND pos <= ?`, from, to)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (DeviceListChange, error) {
		var c DeviceListChange
		err := rows.Scan(&c.UserID, &c.Pos, &c.SharedPos)
		return c, err
	})
}

// MaxDeviceListPos returns the position of the device-list stream.
func MaxDeviceListPos(ctx context.Context, q sqlutil.Querier) (int64, error) {
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(pos) FROM sync_device_lists`).Scan(&n)
	return n.Int64, err
}

// RoomMembershipChanges returns the membership events of every user in
// rooms in (from, to], in order.
func RoomMembershipChanges(ctx context.Context, q sqlutil.Querier, rooms []string, from, to int64) ([]MembershipChange, error) {
	var out []MembershipChange
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT user_id, room_id, pos, membership, event_id, sender FROM sync_memberships
			WHERE pos > ? AND pos <= ? AND room_id IN (`+sqlutil.InList(len(batch))+`) ORDER BY pos`, sqlutil.Args(batch, from, to)...)
		ms, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (MembershipChange, error) {
			var m MembershipChange
			err := rows.Scan(&m.UserID, &m.RoomID, &m.Pos, &m.Membership, &m.EventID, &m.Sender)
			return m, err
		})
		out = append(out, ms...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
