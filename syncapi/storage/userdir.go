package storage

import (
	"context"
	"database/sql"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// DirectoryUser is a user as the user directory shows them.
type DirectoryUser struct {
	UserID      string
	DisplayName *string
	AvatarURL   *string
}

// UpsertDirectoryUsers records users' profiles (each user once in users);
// with overwrite false, only those the directory does not have yet. The
// rows go in batches: a join over federation brings thousands.
func UpsertDirectoryUsers(ctx context.Context, tx *sqlutil.Tx, users []DirectoryUser, overwrite bool) error {
	conflict := `DO NOTHING`
	if overwrite {
		conflict = `DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url`
	}
	return sqlutil.InBatches(users, 300, func(batch []DirectoryUser) error {
		args := make([]any, 0, 3*len(batch))
		for _, u := range batch {
			args = append(args, u.UserID, u.DisplayName, u.AvatarURL)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_user_directory (user_id, display_name, avatar_url) VALUES `+
			strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", len(batch)), ", ")+` ON CONFLICT (user_id) `+conflict, args...)
		return err
	})
}

// SetDirectoryField sets (nil: clears) a user's display name (field
// "displayname") or avatar URL ("avatar_url") in the directory.
func SetDirectoryField(ctx context.Context, tx *sqlutil.Tx, userID, field string, value *string) error {
	col := map[string]string{"displayname": "display_name", "avatar_url": "avatar_url"}[field]
	if col == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_user_directory (user_id, `+col+`) VALUES (?, ?)
		ON CONFLICT (user_id) DO UPDATE SET `+col+` = excluded.`+col, userID, value)
	return err
}

// SetPublicRoom records whether anyone may find a room's members (its
// join rule is public).
func SetPublicRoom(ctx context.Context, tx *sqlutil.Tx, roomID string, public bool) error {
	if public {
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_public_rooms (room_id) VALUES (?) ON CONFLICT (room_id) DO NOTHING`, roomID)
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM sync_public_rooms WHERE room_id = ?`, roomID)
	return err
}

// SearchUserDirectory returns up to limit users whose user ID or display
// name contains term (case-insensitively) and who are joined to a public
// room or to a room where searcher is joined, as Synapse's directory
// (without search_all_users), but the searcher: those with a display
// name first, by name.
func SearchUserDirectory(ctx context.Context, q sqlutil.Querier, searcher, term string, limit int) ([]DirectoryUser, error) {
	like := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(term)) + "%"
	rows, err := q.QueryContext(ctx, `SELECT d.user_id, d.display_name, d.avatar_url FROM sync_user_directory d
		WHERE (LOWER(d.user_id) LIKE ? ESCAPE '\' OR LOWER(d.display_name) LIKE ? ESCAPE '\') AND d.user_id <> ?
		AND d.user_id IN (
			SELECT m.state_key FROM sync_state m
			WHERE m.type = 'm.room.member' AND m.membership = 'join' AND m.to_pos IS NULL
			AND (m.room_id IN (SELECT p.room_id FROM sync_public_rooms p)
				OR m.room_id IN (SELECT s.room_id FROM sync_state s WHERE s.type = 'm.room.member' AND s.state_key = ?
					AND s.membership = 'join' AND s.to_pos IS NULL)))
		ORDER BY CASE WHEN d.display_name IS NULL THEN 1 ELSE 0 END, LOWER(COALESCE(d.display_name, d.user_id)), d.user_id
		LIMIT ?`, like, like, searcher, searcher, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (DirectoryUser, error) {
		var u DirectoryUser
		var name, avatar sql.NullString
		err := rows.Scan(&u.UserID, &name, &avatar)
		if name.Valid {
			u.DisplayName = &name.String
		}
		if avatar.Valid {
			u.AvatarURL = &avatar.String
		}
		return u, err
	})
}
