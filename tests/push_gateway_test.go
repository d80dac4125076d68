package tests

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Black-box tests of push delivery to a push gateway (a fake one on
// 127.0.0.1): the exact payload of both formats, an outage, a restart with
// notifications pending, rejected push keys and the private-address guard.

func setPusher(t *testing.T, c *testutil.Client, pushKey string, data map[string]any) {
	t.Helper()
	c.MustDo("POST", "/_matrix/client/v3/pushers/set", map[string]any{
		"kind": "http", "app_id": "org.example.app", "app_display_name": "Example", "device_display_name": "Phone",
		"pushkey": pushKey, "lang": "en", "profile_tag": "tag", "data": data,
	}, http.StatusOK)
	syncPush(t, c, "", "", 0) // the sync API knows the pusher once a sync has caught up
}

// dmRoom has bob create a direct chat with alice, who joins it.
func dmRoom(t *testing.T, bob, alice *testutil.Client) string {
	t.Helper()
	roomID := bob.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "trusted_private_chat", "is_direct": true,
		"invite": []string{alice.UserID}, "name": "Bob and Alice"}, http.StatusOK)["room_id"].(string)
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	return roomID
}

func TestPushGatewayPayload(t *testing.T) {
	srv := testserver.Start(t)
	gw := testutil.NewPushGateway(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	bob.MustDo("PUT", testutil.Path("/_matrix/client/v3/profile/%s/displayname", bob.UserID), map[string]any{"displayname": "Bob B"}, http.StatusOK)
	roomID := dmRoom(t, bob, alice)
	setPusher(t, alice, "key-full", map[string]any{"url": gw.URL(), "extra": "kept"})
	start := time.Now()

	eventID := pushSend(t, bob, roomID, "m.room.message", text("hi alice"))
	got := gw.WaitFor(t, 1, 10*time.Second)
	var body struct {
		Notification struct {
			EventID           string          `json:"event_id"`
			RoomID            string          `json:"room_id"`
			Type              string          `json:"type"`
			Sender            string          `json:"sender"`
			SenderDisplayName string          `json:"sender_display_name"`
			RoomName          string          `json:"room_name"`
			Prio              string          `json:"prio"`
			Content           json.RawMessage `json:"content"`
			Counts            map[string]int  `json:"counts"`
			Devices           []struct {
				AppID     string                     `json:"app_id"`
				PushKey   string                     `json:"pushkey"`
				PushKeyTS int64                      `json:"pushkey_ts"`
				Data      map[string]any             `json:"data"`
				Tweaks    map[string]json.RawMessage `json:"tweaks"`
			} `json:"devices"`
		} `json:"notification"`
	}
	if err := json.Unmarshal(got[0].Raw, &body); err != nil {
		t.Fatal(err)
	}
	n := body.Notification
	if n.EventID != eventID || n.RoomID != roomID || n.Type != "m.room.message" || n.Sender != bob.UserID ||
		n.SenderDisplayName != "Bob B" || n.RoomName != "Bob and Alice" || n.Prio != "high" || n.Counts["unread"] != 1 {
		t.Errorf("notification: %s", got[0].Raw)
	}
	var content map[string]any
	if err := json.Unmarshal(n.Content, &content); err != nil || content["body"] != "hi alice" {
		t.Errorf("content: %s", n.Content)
	}
	if len(n.Devices) != 1 {
		t.Fatalf("devices: %s", got[0].Raw)
	}
	d := n.Devices[0]
	if d.AppID != "org.example.app" || d.PushKey != "key-full" || d.PushKeyTS > time.Now().Unix() || d.PushKeyTS < start.Unix()-60 {
		t.Errorf("device: %+v", d)
	}
	if _, hasURL := d.Data["url"]; hasURL || d.Data["extra"] != "kept" {
		t.Errorf("device data %v: want the pusher's data without url", d.Data)
	}
	// .m.rule.room_one_to_one: notify with the default sound.
	if string(d.Tweaks["sound"]) != `"default"` {
		t.Errorf("tweaks: %v, want sound default", d.Tweaks)
	}

	// event_id_only sends only the IDs, the counts and the devices.
	setPusher(t, alice, "key-short", map[string]any{"url": gw.URL(), "format": "event_id_only"})
	second := pushSend(t, bob, roomID, "m.room.message", text("again"))
	all := gw.WaitFor(t, 3, 10*time.Second)
	var short map[string]any
	for _, p := range all[1:] {
		if p.EventID == second && len(p.PushKeys) == 1 && p.PushKeys[0] == "key-short" {
			short = p.Notification
		}
	}
	if short == nil {
		t.Fatalf("no event_id_only push for %s among %d", second, len(all))
	}
	for _, k := range []string{"type", "sender", "content", "sender_display_name", "room_name"} {
		if _, ok := short[k]; ok {
			t.Errorf("event_id_only push has %q: %v", k, short)
		}
	}
	if short["room_id"] != roomID || short["counts"].(map[string]any)["unread"] != float64(1) {
		t.Errorf("event_id_only push: %v", short)
	}

	// Reading the room sends each pusher the badge alone: no event,
	// counts.unread 0, as Synapse does so that the phone clears its badge.
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, second), map[string]any{}, http.StatusOK)
	all = gw.WaitFor(t, 5, 10*time.Second)
	badges := 0
	for _, p := range all[3:] {
		counts, _ := p.Notification["counts"].(map[string]any)
		if p.EventID == "" && counts["unread"] == float64(0) && len(p.PushKeys) == 1 {
			badges++
		}
	}
	if badges != 2 {
		t.Errorf("badge updates after reading: %d of the last pushes, want one per pusher (2)", badges)
	}
}

func TestPushGatewayOutageAndRestart(t *testing.T) {
	srv := testserver.Start(t)
	gw := testutil.NewPushGateway(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	roomID := dmRoom(t, bob, alice)
	setPusher(t, alice, "key", map[string]any{"url": gw.URL()})

	// The gateway is down: the notifications wait and arrive once, in
	// order, when it is back.
	gw.FailWith(http.StatusServiceUnavailable)
	first := pushSend(t, bob, roomID, "m.room.message", text("one"))
	gw.WaitForAttempts(t, 1, 10*time.Second)
	second := pushSend(t, bob, roomID, "m.room.message", text("two"))
	gw.FailWith(0)
	got := gw.WaitFor(t, 2, 30*time.Second)
	if got[0].EventID != first || got[1].EventID != second {
		t.Fatalf("after the outage: %s then %s, want %s then %s", got[0].EventID, got[1].EventID, first, second)
	}

	// Myelin restarts with a notification undelivered (the gateway drops
	// connections): it is delivered after the restart, once.
	gw.Drop(true)
	third := pushSend(t, bob, roomID, "m.room.message", text("three"))
	gw.WaitForAttempts(t, gw.Attempts()+1, 10*time.Second)
	srv.Restart()
	gw.Drop(false)
	got = gw.WaitFor(t, 3, 30*time.Second)
	if got[2].EventID != third {
		t.Fatalf("after the restart: %s, want %s", got[2].EventID, third)
	}
	// Nothing more comes: each was delivered once.
	fourth := pushSend(t, bob, roomID, "m.room.message", text("four"))
	got = gw.WaitFor(t, 4, 10*time.Second)
	if len(got) != 4 || got[3].EventID != fourth {
		var ids []string
		for _, p := range got {
			ids = append(ids, p.EventID)
		}
		t.Fatalf("pushes %v, want %s, %s, %s, %s once each", ids, first, second, third, fourth)
	}
}

func TestPushGatewayRejectedPushKey(t *testing.T) {
	srv := testserver.Start(t)
	gw := testutil.NewPushGateway(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	roomID := dmRoom(t, bob, alice)
	setPusher(t, alice, "stale-key", map[string]any{"url": gw.URL()})
	gw.Reject("stale-key")
	pushSend(t, bob, roomID, "m.room.message", text("to a stale device"))
	gw.WaitFor(t, 1, 10*time.Second)
	testutil.Eventually(t, 10*time.Second, "the rejected pusher to go", func() bool {
		return len(alice.MustDo("GET", "/_matrix/client/v3/pushers", nil, http.StatusOK)["pushers"].([]any)) == 0
	})
}

func TestPushGatewayPrivateAddressRefused(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Push.AllowPrivateAddresses = false }})
	gw := testutil.NewPushGateway(t)
	alice := srv.Client().Register("alice", "password1")
	bob := srv.Client().Register("bob", "password1")
	roomID := dmRoom(t, bob, alice)
	setPusher(t, alice, "key", map[string]any{"url": gw.URL()})
	pushSend(t, bob, roomID, "m.room.message", text("nobody should see this"))
	// The notification exists (counts), but no request reached 127.0.0.1.
	countsOf(t, alice, "", roomID, pushCount{1, 0})
	testutil.Eventually(t, 10*time.Second, "the push to be dropped", func() bool {
		return pushOutcomes(t, srv, "failed_permanent") == 1
	})
	if n := gw.Attempts(); n != 0 {
		t.Fatalf("the gateway on 127.0.0.1 got %d requests with push.allow_private_addresses off", n)
	}
}

// pushOutcomes reads the server's count of pushes with an outcome.
func pushOutcomes(t *testing.T, srv *testserver.Server, outcome string) float64 {
	t.Helper()
	mfs, err := srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "myelin_syncapi_pushes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
