package storage

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// maxHeroes is how many heroes a room summary names (as Synapse).
const maxHeroes = 5

// RoomSummary is the m.room.summary of a room for one user: the numbers
// of joined and invited members, and the heroes, sorted: the first
// maxHeroes members other than the user to have joined or been invited, or
// when there are none the first who left or were banned.
type RoomSummary struct {
	Joined, Invited int
	Heroes          []string
}

// RoomSummaries returns the summary of each room for userID. It counts in
// the database and reads at most 2*maxHeroes member rows a room, whatever
// the size of the room (sync_state_members).
func RoomSummaries(ctx context.Context, q sqlutil.Querier, userID string, rooms []string) (map[string]*RoomSummary, error) {
	out := make(map[string]*RoomSummary, len(rooms))
	for _, r := range rooms {
		out[r] = &RoomSummary{}
	}
	err := sqlutil.InBatches(rooms, 500, func(batch []string) error {
		rows, err := q.QueryContext(ctx, `SELECT room_id, membership, COUNT(*) FROM sync_state
			WHERE type = 'm.room.member' AND to_pos IS NULL AND membership IN ('join', 'invite') AND room_id IN (`+sqlutil.InList(len(batch))+`)
			GROUP BY room_id, membership`, sqlutil.Args(batch)...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var room, membership string
			var n int
			if err := rows.Scan(&room, &membership, &n); err != nil {
				return err
			}
			if s := out[room]; s != nil && membership == "join" {
				s.Joined = n
			} else if s != nil {
				s.Invited = n
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	type hero struct {
		user    string
		present bool
	}
	candidates := map[string][]hero{}
	// Per room, the first present and the first departed members: one
	// statement for up to 200 rooms (400 selects, under SQLite's limit of
	// 500 in a compound select).
	err = sqlutil.InBatches(rooms, 200, func(batch []string) error {
		parts := make([]string, 0, 2*len(batch))
		args := make([]any, 0, 4*len(batch))
		for i, r := range batch {
			for j, ms := range []string{`'join', 'invite'`, `'leave', 'ban'`} {
				parts = append(parts, fmt.Sprintf(`SELECT * FROM (SELECT room_id, state_key, %d AS departed FROM sync_state
					WHERE room_id = ? AND type = 'm.room.member' AND to_pos IS NULL AND membership IN (%s) AND state_key <> ?
					ORDER BY from_pos, state_key LIMIT %d) h%d_%d`, j, ms, maxHeroes, i, j))
				args = append(args, r, userID)
			}
		}
		rows, err := q.QueryContext(ctx, strings.Join(parts, " UNION ALL "), args...)
		return sqlutil.Each(rows, err, func(rows *sql.Rows) error {
			var room, user string
			var departed int
			if err := rows.Scan(&room, &user, &departed); err != nil {
				return err
			}
			candidates[room] = append(candidates[room], hero{user, departed == 0})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for room, hs := range candidates {
		var present, departed []string
		for _, h := range hs {
			if h.present {
				present = append(present, h.user)
			} else {
				departed = append(departed, h.user)
			}
		}
		heroes := present
		if len(heroes) == 0 {
			heroes = departed
		}
		sort.Strings(heroes)
		out[room].Heroes = heroes
	}
	return out, nil
}
