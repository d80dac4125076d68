package tests

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const userDirPath = "/_matrix/client/v3/user_directory/search"

// userDirSearch returns the user IDs a search finds, and limited.
func userDirSearch(t testing.TB, c *testutil.Client, term string, limit ...int) ([]string, bool) {
	t.Helper()
	body := map[string]any{"search_term": term}
	if len(limit) > 0 {
		body["limit"] = limit[0]
	}
	m := c.MustDo("POST", userDirPath, body, http.StatusOK)
	var ids []string
	for _, r := range m["results"].([]any) {
		ids = append(ids, r.(map[string]any)["user_id"].(string))
	}
	return ids, m["limited"] == true
}

// userDirEventually waits until a search finds exactly want.
func userDirEventually(t *testing.T, c *testutil.Client, term string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := userDirSearch(t, c, term)
		slices.Sort(got)
		slices.Sort(want)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("search %q by %s found %v, want %v", term, c.UserID, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setDisplayName(t testing.TB, c *testutil.Client, name string) {
	t.Helper()
	c.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", c.UserID), map[string]any{"displayname": name}, http.StatusOK)
}

// The user directory finds, by user ID or display name, the users who
// share a room with the searcher or are in a public room, and no one
// else; a name taken in one room is not shown outside it; profile changes
// show at once.
func TestUserDirectory(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testUserDirectory(t, testserver.Options{}) })
	t.Run("postgres", func(t *testing.T) { testUserDirectory(t, testserver.Options{Postgres: true}) })
}

func testUserDirectory(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	carol := srv.Client().Register("carol", "pw")
	dave := srv.Client().Register("dave", "pw")
	eve := srv.Client().Register("eve", "pw")
	setDisplayName(t, bob, "Bobby Tables")
	setDisplayName(t, carol, "Carol Public")
	setDisplayName(t, eve, "Eve Hidden")
	join := func(c *testutil.Client, room string) {
		c.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, http.StatusOK)
	}
	private := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}}, http.StatusOK)["room_id"].(string)
	join(bob, private)
	public := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	secret := eve.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{dave.UserID}}, http.StatusOK)["room_id"].(string)
	join(dave, secret)

	// Alice shares a room with bob: by display name (any case, any part)
	// and by user ID.
	userDirEventually(t, alice, "bobby", bob.UserID)
	userDirEventually(t, alice, "TABLES", bob.UserID)
	userDirEventually(t, alice, "@bob:", bob.UserID)
	// Carol is in a public room: anyone finds her. Eve is only in a
	// private room with dave: alice does not find her, dave does.
	userDirEventually(t, alice, "carol", carol.UserID)
	userDirEventually(t, alice, "eve", nil...)
	userDirEventually(t, dave, "eve hidden", eve.UserID)
	// Searchers do not find themselves (as Synapse).
	userDirEventually(t, eve, "eve hidden", nil...)
	// "%" and "_" are matched as themselves.
	userDirEventually(t, alice, "%", nil...)
	userDirEventually(t, alice, "_", nil...)

	// A name bob takes in the private room is not the directory's.
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", private, bob.UserID),
		map[string]any{"membership": "join", "displayname": "Secret Nick"}, http.StatusOK)
	setDisplayName(t, bob, "Robert")
	userDirEventually(t, alice, "robert", bob.UserID)
	userDirEventually(t, dave, "secret nick", nil...)
	userDirEventually(t, alice, "bobby", nil...)
	m := alice.MustDo("POST", userDirPath, map[string]any{"search_term": "robert"}, http.StatusOK)
	if r := m["results"].([]any)[0].(map[string]any); r["display_name"] != "Robert" {
		t.Fatalf("bob's directory entry %v, want display_name Robert", r)
	}

	// Leaving the shared room: bob is no longer found by alice.
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", private), map[string]any{}, http.StatusOK)
	userDirEventually(t, alice, "robert", nil...)
	// Making the private room public makes its members findable.
	eve.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.join_rules", secret), map[string]any{"join_rule": "public"}, http.StatusOK)
	userDirEventually(t, alice, "eve hidden", eve.UserID)

	// limit and limited: carol, dave and eve are all in public rooms now.
	join(dave, public)
	if ids, limited := userDirSearch(t, alice, ":", 2); len(ids) != 2 || !limited {
		t.Fatalf("limit 2: %v limited=%v", ids, limited)
	}
	if ids, limited := userDirSearch(t, alice, ":", 100); len(ids) < 3 || limited {
		t.Fatalf("limit 100: %v limited=%v", ids, limited)
	}

	// Errors.
	alice.MustFail("POST", userDirPath, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("POST", userDirPath, map[string]any{"search_term": 5}, http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("POST", userDirPath, map[string]any{"search_term": "x", "limit": -1}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", userDirPath, testutil.Raw("{"), http.StatusBadRequest, "M_NOT_JSON")
	srv.Client().MustFail("POST", userDirPath, map[string]any{"search_term": "x"}, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// Another server's user who joined a public room here is found by the
// profile of their join.
func TestUserDirectoryFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "pw")
	dave := testutil.NewClient(t, hs1.URL).Register("dave", "pw")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "pw")
	setDisplayName(t, bob, "Remote Bob")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", room), map[string]any{}, http.StatusOK)
	userDirEventually(t, dave, "remote bob", bob.UserID)
	// And hs2's directory has alice, from the room's state its join brought.
	userDirEventually(t, bob, "@alice:hs1.test", alice.UserID)
}
