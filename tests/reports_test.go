package tests

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

const eventReportsPath = "/_synapse/admin/v1/event_reports"

func reportEventPath(roomID, eventID string) string {
	return testutil.Path("/_matrix/client/v3/rooms/%s/report/%s", roomID, eventID)
}

// Reporting (report_content.md): a member reports an event it can see,
// anyone a known room or user; the server's admins read the event reports
// through Synapse's admin API (list with filters and paging, one with the
// event, delete).
func TestReports(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testReports(t, testserver.Options{}) })
	t.Run("postgres", func(t *testing.T) { testReports(t, testserver.Options{Postgres: true}) })
}

func testReports(t *testing.T, o testserver.Options) {
	srv := testserver.Start(t, o)
	admin := registerWithSharedSecret(t, srv, "admin", "pw", true)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	carol := srv.Client().Register("carol", "pw")
	room := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Lobby"}, http.StatusOK)["room_id"].(string)
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, http.StatusOK)
	send := func(c *testutil.Client, body string) string {
		return c.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", room, body),
			map[string]any{"msgtype": "m.text", "body": body}, http.StatusOK)["event_id"].(string)
	}
	spam := send(alice, "spam")
	other := send(alice, "other")

	// Event reports: joined members only; unknown events and other rooms' are 404.
	bob.MustDo("POST", reportEventPath(room, spam), map[string]any{"reason": "this makes me sad", "score": -100}, http.StatusOK)
	bob.MustDo("POST", reportEventPath(room, other), map[string]any{}, http.StatusOK)
	carol.MustFail("POST", reportEventPath(room, spam), map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("POST", reportEventPath(room, "$unknown"), map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
	otherRoom := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)
	carol.MustFail("POST", reportEventPath(otherRoom, spam), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("POST", reportEventPath("not-a-room", spam), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
	bob.MustFail("POST", reportEventPath(room, spam), map[string]any{"reason": 5}, http.StatusBadRequest, "M_BAD_JSON")
	bob.MustFail("POST", reportEventPath(room, spam), testutil.Raw("{"), http.StatusBadRequest, "M_NOT_JSON")
	srv.Client().MustFail("POST", reportEventPath(room, spam), map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")

	// Room and user reports: no membership needed; a reason is.
	carol.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/report", room), map[string]any{"reason": ""}, http.StatusOK)
	carol.MustFail("POST", testutil.Path("/_matrix/client/v3/rooms/%s/report", room), map[string]any{}, http.StatusBadRequest, "M_BAD_JSON")
	carol.MustFail("POST", testutil.Path("/_matrix/client/v3/rooms/%s/report", "!unknown:"+srv.Config.ServerName), map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
	carol.MustDo("POST", testutil.Path("/_matrix/client/v3/users/%s/report", alice.UserID), map[string]any{"reason": "rude"}, http.StatusOK)
	carol.MustDo("POST", testutil.Path("/_matrix/client/v3/users/%s/report", "@someone:elsewhere.example"), map[string]any{"reason": "rude"}, http.StatusOK)
	carol.MustFail("POST", testutil.Path("/_matrix/client/v3/users/%s/report", "@nobody:"+srv.Config.ServerName), map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
	carol.MustFail("POST", testutil.Path("/_matrix/client/v3/users/%s/report", "nobody"), map[string]any{"reason": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")

	// The admin API lists the two event reports, newest first.
	m := admin.MustDo("GET", eventReportsPath, nil, http.StatusOK)
	reps, _ := m["event_reports"].([]any)
	if m["total"] != 2.0 || len(reps) != 2 || m["next_token"] != nil {
		t.Fatalf("event_reports = %v", m)
	}
	first := reps[1].(map[string]any)
	if first["event_id"] != spam || first["room_id"] != room || first["user_id"] != bob.UserID || first["sender"] != alice.UserID ||
		first["reason"] != "this makes me sad" || first["score"] != -100.0 || first["name"] != "Lobby" || first["received_ts"] == nil {
		t.Fatalf("first report = %v", first)
	}
	if second := reps[0].(map[string]any); second["event_id"] != other || second["reason"] != nil {
		t.Fatalf("second report = %v", second)
	}
	// Paging and filters.
	m = admin.MustDo("GET", eventReportsPath+"?limit=1&dir=f", nil, http.StatusOK)
	if reps := m["event_reports"].([]any); len(reps) != 1 || reps[0].(map[string]any)["event_id"] != spam || m["next_token"] != 1.0 {
		t.Fatalf("first page = %v", m)
	}
	m = admin.MustDo("GET", eventReportsPath+"?limit=1&dir=f&from=1", nil, http.StatusOK)
	if reps := m["event_reports"].([]any); len(reps) != 1 || reps[0].(map[string]any)["event_id"] != other || m["next_token"] != nil {
		t.Fatalf("second page = %v", m)
	}
	for q, n := range map[string]float64{"user_id=" + url.QueryEscape(bob.UserID): 2, "user_id=" + url.QueryEscape(carol.UserID): 0,
		"room_id=" + url.QueryEscape(room): 2, "event_sender_user_id=" + url.QueryEscape(bob.UserID): 0} {
		if m := admin.MustDo("GET", eventReportsPath+"?"+q, nil, http.StatusOK); m["total"] != n {
			t.Errorf("?%s: total %v, want %v", q, m["total"], n)
		}
	}
	for _, q := range []string{"from=-1", "limit=x", "dir=up"} {
		admin.MustFail("GET", eventReportsPath+"?"+q, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	bob.MustFail("GET", eventReportsPath, nil, http.StatusForbidden, "M_FORBIDDEN")

	// One report, with the event; deleting it.
	id := int64(first["id"].(float64))
	one := admin.MustDo("GET", fmt.Sprintf("%s/%d", eventReportsPath, id), nil, http.StatusOK)
	if ev, _ := one["event_json"].(map[string]any); one["event_id"] != spam || ev == nil || ev["content"].(map[string]any)["body"] != "spam" {
		t.Fatalf("report %d = %v", id, one)
	}
	admin.MustFail("GET", eventReportsPath+"/abc", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	admin.MustFail("GET", eventReportsPath+"/99999", nil, http.StatusNotFound, "M_NOT_FOUND")
	admin.MustDo("DELETE", fmt.Sprintf("%s/%d", eventReportsPath, id), nil, http.StatusOK)
	admin.MustFail("DELETE", fmt.Sprintf("%s/%d", eventReportsPath, id), nil, http.StatusNotFound, "M_NOT_FOUND")
	if m := admin.MustDo("GET", eventReportsPath, nil, http.StatusOK); m["total"] != 1.0 {
		t.Fatalf("after the delete: %v", m)
	}
}
