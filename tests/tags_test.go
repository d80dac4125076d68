package tests

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// tagsPath is a room's tags path, or one tag's when a tag is given.
func tagsPath(userID, roomID string, tag ...string) string {
	if len(tag) > 0 {
		return testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/tags/%s", userID, roomID, tag[0])
	}
	return testutil.Path("/_matrix/client/v3/user/%s/rooms/%s/tags", userID, roomID)
}

// Room tags (tags.md): PUT and DELETE change one tag of the m.tag room
// account data, GET lists them, /sync delivers m.tag in the room's
// account_data, and each user's tags are their own.
func TestRoomTags(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)

	if m := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"tags": map[string]any{}}) {
		t.Fatalf("tags before any is set: %v", m)
	}
	since := syncTInitial(alice).NextBatch
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "m.favourite"), map[string]any{"order": 0.25}, http.StatusOK)
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "u.Work"), map[string]any{}, http.StatusOK)
	want := map[string]any{"tags": map[string]any{"m.favourite": map[string]any{"order": 0.25}, "u.Work": map[string]any{}}}
	if m := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK); !sameJSON(t, m, want) {
		t.Fatalf("tags = %v, want %v", m, want)
	}
	e, since := accountDataIn(t, alice, since, room, "m.tag")
	for e != nil && !sameJSON(t, e["content"].(map[string]any), want) {
		e, since = accountDataIn(t, alice, since, room, "m.tag")
	}
	if e == nil {
		t.Fatalf("sync has no m.tag with %v", want)
	}

	// Setting a tag again replaces its object; DELETE removes one tag only.
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "m.favourite"), map[string]any{"order": 0.5}, http.StatusOK)
	alice.MustDo("DELETE", tagsPath(alice.UserID, room, "u.Work"), nil, http.StatusOK)
	want = map[string]any{"tags": map[string]any{"m.favourite": map[string]any{"order": 0.5}}}
	if m := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK); !sameJSON(t, m, want) {
		t.Fatalf("tags after the update and delete = %v, want %v", m, want)
	}
	// m.tag is also the room account data item.
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "m.tag", room), nil, http.StatusOK); !sameJSON(t, m, want) {
		t.Fatalf("m.tag account data = %v, want %v", m, want)
	}
	e, _ = accountDataIn(t, alice, since, room, "m.tag")
	if e == nil || !sameJSON(t, e["content"].(map[string]any), want) {
		// The sync may carry an intermediate m.tag first.
		e, _ = accountDataIn(t, alice, "", room, "m.tag")
		if e == nil || !sameJSON(t, e["content"].(map[string]any), want) {
			t.Fatalf("sync after the delete: %v, want content %v", e, want)
		}
	}
	// Deleting a tag that is not set succeeds and changes nothing.
	alice.MustDo("DELETE", tagsPath(alice.UserID, room, "u.Missing"), nil, http.StatusOK)
	if m := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK); !sameJSON(t, m, want) {
		t.Fatalf("tags after deleting an unset tag = %v", m)
	}

	// Tags are per user.
	bob := srv.Client().Register("bob", "pw")
	if m := bob.MustDo("GET", tagsPath(bob.UserID, room), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"tags": map[string]any{}}) {
		t.Fatalf("bob sees tags %v", m)
	}
}

// Concurrent tag changes of one room are not lost: each is a
// read-modify-write of the one m.tag item, under its row lock on
// PostgreSQL.
func TestRoomTagsConcurrent(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { roomTagsConcurrent(t, testserver.Start(t)) })
	t.Run("postgres", func(t *testing.T) { roomTagsConcurrent(t, testserver.Start(t, testserver.Options{Postgres: true})) })
}

func roomTagsConcurrent(t *testing.T, srv *testserver.Server) {
	alice := srv.Client().Register("alice", "pw")
	room := "!room:" + srv.Config.ServerName
	const n = 20
	for i, r := range concurrently(n, func(i int) *testutil.Response {
		return alice.Do("PUT", tagsPath(alice.UserID, room, fmt.Sprintf("u.t%d", i)), map[string]any{"order": float64(i) / n})
	}) {
		if r.Status != http.StatusOK {
			t.Fatalf("PUT tag %d: %d %s", i, r.Status, r.Body)
		}
	}
	tags := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK)["tags"].(map[string]any)
	if len(tags) != n {
		t.Fatalf("%d tags after %d concurrent PUTs: %v", len(tags), n, tags)
	}
}

func TestRoomTagsErrors(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	room := "!room:" + srv.Config.ServerName
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "m.favourite"), map[string]any{}, http.StatusOK)

	// Another user's tags.
	bob.MustFail("GET", tagsPath(alice.UserID, room), nil, http.StatusForbidden, "M_FORBIDDEN")
	bob.MustFail("PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	bob.MustFail("DELETE", tagsPath(alice.UserID, room, "m.favourite"), nil, http.StatusForbidden, "M_FORBIDDEN")
	// No token (guests: TestGuestPermissions).
	anon := testutil.NewClient(t, srv.URL)
	anon.MustFail("GET", tagsPath(alice.UserID, room), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// A bad room ID, an over-long tag, bodies that are not a tag object.
	alice.MustFail("PUT", tagsPath(alice.UserID, "not-a-room", "u.x"), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u."+strings.Repeat("x", 254)), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "u."+strings.Repeat("x", 253)), map[string]any{}, http.StatusOK)
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u.x"), testutil.Raw("{"), http.StatusBadRequest, "M_NOT_JSON")
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u.x"), testutil.Raw("[]"), http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u.x"), testutil.Raw("null"), http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u.x"), map[string]any{"order": "first"}, http.StatusBadRequest, "M_BAD_JSON")
	// Tags beyond 64 KiB in all.
	big := strings.Repeat("x", 60<<10)
	alice.MustDo("PUT", tagsPath(alice.UserID, room, "u.big1"), map[string]any{"note": big[:30<<10]}, http.StatusOK)
	alice.MustFail("PUT", tagsPath(alice.UserID, room, "u.big2"), map[string]any{"note": big}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// None of the refused requests changed anything.
	tags := alice.MustDo("GET", tagsPath(alice.UserID, room), nil, http.StatusOK)["tags"].(map[string]any)
	if len(tags) != 3 || tags["m.favourite"] == nil || tags["u.big1"] == nil {
		t.Fatalf("tags after the refused requests: %d tags", len(tags))
	}
}
