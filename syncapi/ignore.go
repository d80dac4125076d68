package syncapi

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/myelin-chat/myelin/internal/invitefilter"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// ignoredUserListType is the global account data of the users a user
// ignores (ignore_users.md): {"ignored_users": {"@u:s": {}}}.
const ignoredUserListType = "m.ignored_user_list"

// ignoredLists returns whom each user ignores (a nil map: nobody), from
// the push cache or read in one query for the users missing from it.
func (s *SyncAPI) ignoredLists(ctx context.Context, q sqlutil.Querier, users []string) (map[string]map[string]bool, error) {
	out := make(map[string]map[string]bool, len(users))
	var missing []string
	for _, u := range users {
		if l, ok := s.push.ignores.Get(u); ok {
			out[u] = l
		} else {
			missing = append(missing, u)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	gen := s.push.gen.Load()
	stored, err := storage.GlobalAccountData(ctx, q, missing, ignoredUserListType)
	if err != nil {
		return nil, err
	}
	for _, u := range missing {
		l := parseIgnoredUsers(stored[u])
		out[u] = l
		if s.push.gen.Load() == gen {
			s.push.ignores.Put(u, l)
		}
	}
	return out, nil
}

// ignoredUsers returns whom one user ignores.
func (s *SyncAPI) ignoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	l, err := s.ignoredLists(ctx, s.store.DB(), []string{userID})
	return l[userID], err
}

// parseIgnoredUsers reads m.ignored_user_list content; what is not a
// user ID there ignores nobody.
func parseIgnoredUsers(content []byte) map[string]bool {
	var v struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if len(content) == 0 || json.Unmarshal(content, &v) != nil || len(v.IgnoredUsers) == 0 {
		return nil
	}
	out := make(map[string]bool, len(v.IgnoredUsers))
	for u := range v.IgnoredUsers {
		if strings.HasPrefix(u, "@") {
			out[u] = true
		}
	}
	return out
}

// ignoreCond is SQL on sync_events "e" that leaves out the events of
// ignored users but their state events, which clients still see (so that
// a room's name does not look different for ignoring its sender).
func ignoreCond(ignored map[string]bool) (string, []any) {
	if len(ignored) == 0 {
		return "", nil
	}
	args := make([]any, 0, len(ignored))
	for u := range ignored {
		args = append(args, u)
	}
	return "NOT (e.state_key IS NULL AND e.sender IN (" + sqlutil.InList(len(args)) + "))", args
}

// andCond joins two SQL conditions (either may be empty).
func andCond(a string, aArgs []any, b string, bArgs []any) (string, []any) {
	switch {
	case a == "":
		return b, bArgs
	case b == "":
		return a, aArgs
	}
	return "(" + a + ") AND (" + b + ")", append(append([]any{}, aArgs...), bArgs...)
}

// permittedInvites keeps the invites (rooms[i] from inviters[i]) that the
// user's invite permission neither ignores nor blocks: a blocked invite
// that came before the block, or one a server let through, is not served
// either (invite_permission.md). Nothing is read when there is no invite.
func (s *SyncAPI) permittedInvites(ctx context.Context, userID string, rooms, inviters []string) ([]string, error) {
	if len(rooms) == 0 {
		return rooms, nil
	}
	cfg, err := invitefilter.Load(ctx, func(ctx context.Context, typ string) ([]byte, error) {
		stored, err := storage.GlobalAccountData(ctx, s.store.DB(), []string{userID}, typ)
		return stored[userID], err
	})
	if err != nil {
		return nil, err
	}
	out := rooms[:0]
	for i, r := range rooms {
		if cfg.Decide(inviters[i]) == invitefilter.Allow {
			out = append(out, r)
		}
	}
	return out, nil
}
