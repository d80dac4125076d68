package tests

import (
	"net/http"
	"net/url"
	"sort"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

func mutualRoomsPath(userID string, from ...string) string {
	q := url.Values{"user_id": {userID}}
	if len(from) > 0 {
		q.Set("from", from[0])
	}
	return "/_matrix/client/v1/mutual_rooms?" + q.Encode()
}

// GET /v1/mutual_rooms lists the rooms both users are joined to (not those
// one has left or is only invited to), with the total count, in batches.
func TestMutualRooms(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	create := func() string {
		return alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	}
	var want []string
	for range 3 {
		id := create()
		bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(id), map[string]any{}, http.StatusOK)
		want = append(want, id)
	}
	create() // alice's alone
	left := create()
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(left), map[string]any{}, http.StatusOK)
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(left)+"/leave", map[string]any{}, http.StatusOK)
	invited := create()
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(invited)+"/invite", map[string]any{"user_id": bob.UserID}, http.StatusOK)
	sort.Strings(want)

	for _, tc := range []struct{ caller, other string }{{"alice", bob.UserID}, {"bob", alice.UserID}} {
		c := map[string]*testutil.Client{"alice": alice, "bob": bob}[tc.caller]
		m := c.MustDo("GET", mutualRoomsPath(tc.other), nil, http.StatusOK)
		if !sameJSON(t, m, map[string]any{"joined": []any{want[0], want[1], want[2]}, "count": 3.0}) {
			t.Fatalf("%s's mutual rooms = %v, want %v", tc.caller, m, want)
		}
	}
	// A user nobody shares a room with, or who does not exist: none.
	carol := srv.Client().Register("carol", "pw")
	if m := alice.MustDo("GET", mutualRoomsPath(carol.UserID), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"joined": []any{}, "count": 0.0}) {
		t.Fatalf("mutual rooms with carol = %v", m)
	}
	if m := alice.MustDo("GET", mutualRoomsPath("@nobody:elsewhere.example"), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"joined": []any{}, "count": 0.0}) {
		t.Fatalf("mutual rooms with an unknown user = %v", m)
	}

	// Errors.
	alice.MustFail("GET", "/_matrix/client/v1/mutual_rooms", nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", mutualRoomsPath("not-a-user"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", mutualRoomsPath(alice.UserID), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", mutualRoomsPath(bob.UserID, "%%%"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", mutualRoomsPath(bob.UserID, "bm90LWEtcm9vbQ"), nil, http.StatusBadRequest, "M_INVALID_PARAM")
	srv.Client().MustFail("GET", mutualRoomsPath(bob.UserID), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// More than a batch of shared rooms: next_batch pages through all of them
// once, and count is the total on every page.
func TestMutualRoomsPagination(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	const n = 103
	ids := make([]string, n)
	for i, r := range concurrently(n, func(int) *testutil.Response {
		return alice.Do("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "invite": []string{bob.UserID}})
	}) {
		if r.Status != http.StatusOK {
			t.Fatalf("createRoom: %d %s", r.Status, r.Body)
		}
		ids[i] = r.JSON(t)["room_id"].(string)
	}
	for i, r := range concurrently(n, func(i int) *testutil.Response {
		return bob.Do("POST", "/_matrix/client/v3/join/"+url.PathEscape(ids[i]), map[string]any{})
	}) {
		if r.Status != http.StatusOK {
			t.Fatalf("join %d: %d %s", i, r.Status, r.Body)
		}
	}
	seen := map[string]bool{}
	var from []string
	for page := 0; ; page++ {
		m := alice.MustDo("GET", mutualRoomsPath(bob.UserID, from...), nil, http.StatusOK)
		if m["count"] != float64(n) {
			t.Fatalf("page %d: count %v, want %d", page, m["count"], n)
		}
		for _, id := range m["joined"].([]any) {
			if seen[id.(string)] {
				t.Fatalf("page %d repeats %s", page, id)
			}
			seen[id.(string)] = true
		}
		next, ok := m["next_batch"].(string)
		if !ok {
			break
		}
		if page > 2 {
			t.Fatal("too many pages")
		}
		from = []string{next}
	}
	if len(seen) != n {
		t.Fatalf("pages listed %d rooms, want %d", len(seen), n)
	}
}
