package pushgateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/netguard"
	"github.com/myelin-chat/myelin/internal/testutil"
)

// jsonEqual fails the test unless got and want are the same JSON value.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expectation: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("payload\n got %s\nwant %s", got, want)
	}
}

func testTarget(t *testing.T, url, format string) Target {
	t.Helper()
	data := map[string]any{"url": url, "custom": map[string]any{"k": "v"}}
	if format != "" {
		data["format"] = format
	}
	raw, _ := json.Marshal(data)
	tg, err := NewTarget("@alice:hs", "org.example.app", "pk-alice", raw, 1_700_000_123_456, "tag")
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func fullNotification() Notification {
	return Notification{
		Pos: 7, EventID: "$ev", RoomID: "!room:hs", Type: "m.room.message", Sender: "@bob:hs",
		SenderDisplayName: "Bob", RoomName: "Lounge", RoomAlias: "#lounge:hs",
		Content: json.RawMessage(`{"msgtype":"m.text","body":"<b>hi</b> & bye"}`),
		Tweaks:  map[string]json.RawMessage{"sound": json.RawMessage(`"default"`), "highlight": json.RawMessage(`false`)},
		Unread:  3,
	}
}

func TestPayloadDefaultFormat(t *testing.T) {
	b, err := Payload(testTarget(t, "https://gw/_matrix/push/v1/notify", ""), fullNotification())
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"notification":{
		"event_id":"$ev","room_id":"!room:hs","type":"m.room.message","sender":"@bob:hs",
		"sender_display_name":"Bob","room_name":"Lounge","room_alias":"#lounge:hs","prio":"high",
		"content":{"msgtype":"m.text","body":"<b>hi</b> & bye"},
		"counts":{"unread":3},
		"devices":[{"app_id":"org.example.app","pushkey":"pk-alice","pushkey_ts":1700000123,
			"data":{"custom":{"k":"v"}},"tweaks":{"sound":"default","highlight":false}}]}}`)
	if strings.Contains(string(b), `\u003c`) {
		t.Errorf("content HTML-escaped: %s", b)
	}
}

func TestPayloadEventIDOnly(t *testing.T) {
	b, err := Payload(testTarget(t, "https://gw/_matrix/push/v1/notify", FormatEventIDOnly), fullNotification())
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"notification":{"event_id":"$ev","room_id":"!room:hs","prio":"high","counts":{"unread":3},
		"devices":[{"app_id":"org.example.app","pushkey":"pk-alice","pushkey_ts":1700000123,
			"data":{"custom":{"k":"v"},"format":"event_id_only"}}]}}`)
}

// Empty optional fields are left out; counts.unread and data are always
// there; member events say membership and user_is_target, even false.
func TestPayloadLeavesOutEmptyFields(t *testing.T) {
	tg := Target{UserID: "@alice:hs", AppID: "a", PushKey: "k", URL: "https://gw/_matrix/push/v1/notify", PushKeyTS: 999}
	b, err := Payload(tg, Notification{EventID: "$e", RoomID: "!r:hs", Type: "m.room.message", Sender: "@bob:hs",
		Content: json.RawMessage(` { } `)})
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, b, `{"notification":{"event_id":"$e","room_id":"!r:hs","type":"m.room.message","sender":"@bob:hs",
		"prio":"low","counts":{"unread":0},"devices":[{"app_id":"a","pushkey":"k","pushkey_ts":0,"data":{}}]}}`)

	for _, target := range []bool{false, true} {
		b, err = Payload(tg, Notification{EventID: "$m", RoomID: "!r:hs", Type: "m.room.member", Sender: "@bob:hs",
			UserIsTarget: target, Content: json.RawMessage(`{"membership":"invite"}`), Unread: 1,
			Tweaks: map[string]json.RawMessage{"highlight": json.RawMessage(`true`)}})
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, b, `{"notification":{"event_id":"$m","room_id":"!r:hs","type":"m.room.member","sender":"@bob:hs",
			"membership":"invite","user_is_target":`+map[bool]string{false: "false", true: "true"}[target]+`,"prio":"high",
			"content":{"membership":"invite"},"counts":{"unread":1},
			"devices":[{"app_id":"a","pushkey":"k","pushkey_ts":0,"data":{},"tweaks":{"highlight":true}}]}}`)
	}

	if _, err := Payload(tg, Notification{EventID: "$e", Content: json.RawMessage(`{broken`)}); err == nil {
		t.Error("invalid content accepted")
	}
}

func TestPrio(t *testing.T) {
	tw := func(k, v string) map[string]json.RawMessage { return map[string]json.RawMessage{k: json.RawMessage(v)} }
	for _, c := range []struct {
		name string
		n    Notification
		want string
	}{
		{"plain message", Notification{Type: "m.room.message"}, "low"},
		{"encrypted", Notification{Type: "m.room.encrypted"}, "high"},
		{"highlight tweak", Notification{Type: "m.room.message", Tweaks: tw("highlight", "true")}, "high"},
		{"highlight false", Notification{Type: "m.room.message", Tweaks: tw("highlight", "false")}, "low"},
		{"sound", Notification{Type: "m.room.message", Tweaks: tw("sound", `"ring"`)}, "high"},
		{"empty sound", Notification{Type: "m.room.message", Tweaks: tw("sound", `""`)}, "low"},
		{"null sound", Notification{Type: "m.room.message", Tweaks: tw("sound", `null`)}, "low"},
		{"other tweak", Notification{Type: "m.room.message", Tweaks: tw("colour", `"red"`)}, "low"},
		{"Highlight field", Notification{Type: "m.room.message", Highlight: true}, "high"},
	} {
		if got := prio(c.n); got != c.want {
			t.Errorf("%s: prio %s, want %s", c.name, got, c.want)
		}
	}
	for v, want := range map[string]bool{`true`: true, `false`: false, `0`: false, `1`: true, `""`: false, `"x"`: true,
		`[]`: false, `[0]`: true, `{}`: false, `{"a":1}`: true, `null`: false, ``: false} {
		if truthy(json.RawMessage(v)) != want {
			t.Errorf("truthy(%s) = %v", v, !want)
		}
	}
}

func TestNewTarget(t *testing.T) {
	tg, err := NewTarget("@a:hs", "app", "pk", json.RawMessage(`{"url":"https://gw/_matrix/push/v1/notify","format":"event_id_only","x":[1]}`), 5000, "p")
	if err != nil {
		t.Fatal(err)
	}
	if tg.URL != "https://gw/_matrix/push/v1/notify" || tg.Format != FormatEventIDOnly || tg.PushKeyTS != 5000 || tg.ProfileTag != "p" {
		t.Fatalf("target %+v", tg)
	}
	jsonEqual(t, tg.Data, `{"format":"event_id_only","x":[1]}`)
	for _, bad := range []string{`{}`, `{"url":5}`, `[]`, `null`, `nope`} {
		if _, err := NewTarget("@a:hs", "app", "pk", json.RawMessage(bad), 0, ""); err == nil {
			t.Errorf("data %s accepted", bad)
		}
	}
}

func localClient() *Client {
	return NewClient(ClientConfig{AllowPrivateAddresses: true, Timeout: 5 * time.Second})
}

func TestNotifyClassifiesAnswers(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	c := localClient()
	tg := testTarget(t, gw.URL(), "")
	for _, s := range []struct {
		status    int
		permanent bool
	}{{400, true}, {401, true}, {403, true}, {404, true}, {405, true}, {408, false}, {413, true},
		{429, false}, {500, false}, {502, false}, {503, false}, {504, false}} {
		gw.FailWith(s.status)
		_, err := c.Notify(context.Background(), tg, fullNotification())
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != s.status || e.Permanent != s.permanent {
			t.Errorf("status %d: err %v (%+v), want permanent=%v", s.status, err, e, s.permanent)
		}
	}
	gw.FailWith(0)
	gw.Drop(true)
	_, err := c.Notify(context.Background(), tg, fullNotification())
	var e *Error
	if !errors.As(err, &e) || e.Permanent || e.StatusCode != 0 {
		t.Errorf("closed connection: %v, want a transient error", err)
	}
	gw.Drop(false)
	if rejected, err := c.Notify(context.Background(), tg, fullNotification()); err != nil || rejected {
		t.Fatalf("accepted: rejected=%v err=%v", rejected, err)
	}
	if got := gw.Notifications(); len(got) != 1 || got[0].EventID != "$ev" {
		t.Fatalf("gateway recorded %+v", got)
	}
	bad := tg
	bad.URL = "ftp://gw/_matrix/push/v1/notify"
	if _, err := c.Notify(context.Background(), bad, fullNotification()); !errors.As(err, &e) || !e.Permanent {
		t.Errorf("ftp URL: %v, want permanent", err)
	}
}

func TestNotifyRejected(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	c := localClient()
	gw.Reject("pk-other")
	tg := testTarget(t, gw.URL(), "")
	if rejected, err := c.Notify(context.Background(), tg, fullNotification()); err != nil || rejected {
		t.Fatalf("another key rejected: rejected=%v err=%v, want false", rejected, err)
	}
	gw.Reject(tg.PushKey)
	if rejected, err := c.Notify(context.Background(), tg, fullNotification()); err != nil || !rejected {
		t.Fatalf("own key rejected: rejected=%v err=%v, want true", rejected, err)
	}
}

// The gateway is on 127.0.0.1: without AllowPrivateAddresses no
// connection is made and the failure is permanent.
func TestNotifyBlockedByNetguard(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	c := NewClient(ClientConfig{})
	_, err := c.Notify(context.Background(), testTarget(t, gw.URL(), ""), fullNotification())
	var e *Error
	if !errors.As(err, &e) || !e.Permanent || !errors.Is(err, netguard.ErrBlocked) {
		t.Fatalf("err = %v, want a permanent netguard error", err)
	}
	if strings.Contains(err.Error(), "/_matrix/push") {
		t.Errorf("error names the URL: %v", err)
	}
	if n := gw.Attempts(); n != 0 {
		t.Fatalf("gateway got %d requests", n)
	}
}

func TestNotifyRedirectNotFollowed(t *testing.T) {
	gw := testutil.NewPushGateway(t)
	redirect := httptest.NewServer(http.RedirectHandler(gw.URL(), http.StatusTemporaryRedirect))
	defer redirect.Close()
	_, err := localClient().Notify(context.Background(), testTarget(t, redirect.URL+testutil.PushGatewayPath, ""), fullNotification())
	var e *Error
	if !errors.As(err, &e) || !e.Permanent || e.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v, want a permanent 307", err)
	}
	if n := gw.Attempts(); n != 0 {
		t.Fatalf("redirect followed: gateway got %d requests", n)
	}
}

// Headers, Retry-After, the response size bound and the request timeout.
func TestNotifyRequestAndResponseBounds(t *testing.T) {
	var mu sync.Mutex
	var status int
	var answer string
	var block chan struct{}
	set := func(s int, a string, b chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		status, answer, block = s, a, b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("User-Agent") != "Myelin/test" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		mu.Lock()
		status, answer, block := status, answer, block
		mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	c := NewClient(ClientConfig{AllowPrivateAddresses: true, UserAgent: "Myelin/test", Timeout: 200 * time.Millisecond})
	tg := testTarget(t, srv.URL+testutil.PushGatewayPath, "")

	set(http.StatusTooManyRequests, "", nil)
	_, err := c.Notify(context.Background(), tg, fullNotification())
	var e *Error
	if !errors.As(err, &e) || e.Permanent || e.RetryAfter != 7*time.Second {
		t.Fatalf("429: %v %+v, want transient with Retry-After 7s", err, e)
	}

	// The rejected list lies beyond the 64 KiB read: delivered, nothing rejected.
	set(http.StatusOK, `{"padding":"`+strings.Repeat("x", 100<<10)+`","rejected":["pk-alice"]}`, nil)
	if rejected, err := c.Notify(context.Background(), tg, fullNotification()); err != nil || rejected {
		t.Fatalf("huge answer: rejected=%v err=%v", rejected, err)
	}
	set(http.StatusOK, "not json", nil)
	if rejected, err := c.Notify(context.Background(), tg, fullNotification()); err != nil || rejected {
		t.Fatalf("non-JSON 200: rejected=%v err=%v", rejected, err)
	}

	release := make(chan struct{})
	defer close(release)
	set(http.StatusOK, "", release)
	start := time.Now()
	_, err = c.Notify(context.Background(), tg, fullNotification())
	if !errors.As(err, &e) || e.Permanent || time.Since(start) > 5*time.Second {
		t.Fatalf("hanging gateway: %v after %v, want a transient timeout", err, time.Since(start))
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "120": 2 * time.Minute, " 5 ": 5 * time.Second, "0": 0, "-3": 0, "soon": 0, "999999999": 0,
		now.Add(30 * time.Second).Format(http.TimeFormat): 30 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q = %v, want %v", v, got, want)
		}
	}
}

func BenchmarkPayload(b *testing.B) {
	tg := Target{UserID: "@alice:hs", AppID: "app", PushKey: "pk", URL: "https://gw/_matrix/push/v1/notify",
		Data: json.RawMessage(`{"custom":"x"}`), PushKeyTS: 1}
	n := fullNotification()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Payload(tg, n); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNotify(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	defer srv.Close()
	c := localClient()
	tg := Target{UserID: "@alice:hs", AppID: "app", PushKey: "pk", URL: srv.URL + testutil.PushGatewayPath, PushKeyTS: 1}
	n := fullNotification()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Notify(context.Background(), tg, n); err != nil {
			b.Fatal(err)
		}
	}
}
