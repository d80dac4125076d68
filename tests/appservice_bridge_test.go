package tests

// Issue 17's end-to-end check: a mautrix-go application service run as a
// bridge is run (its own HTTP server on 127.0.0.1, its registration file
// given to the server, ghosts in an exclusive namespace registered with
// m.login.application_service through its IntentAPI) bridges a
// conversation with a local user both ways, across a restart of Myelin
// while the bridge is down and across a restart of the bridge itself.

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// e2eBridge is a bridge process: each start is a new mautrix-go
// AppService (fresh memory state store, fresh transaction dedup) with the
// same registration, listening on the same address.
type e2eBridge struct {
	t    *testing.T
	reg  *appservice.Registration
	addr string

	mu     sync.Mutex
	srv    *http.Server
	quit   chan struct{}
	events []*event.Event
}

func newE2EBridge(t *testing.T) *e2eBridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &e2eBridge{t: t, addr: ln.Addr().String(), quit: make(chan struct{})}
	_ = ln.Close()
	b.reg = appservice.CreateRegistration()
	b.reg.ID = "e2ebridge"
	b.reg.URL = "http://" + b.addr
	b.reg.SenderLocalpart = "e2ebot"
	t.Cleanup(func() { b.stop(); close(b.quit) })
	return b
}

// configure writes the registration (ghosts @e2e_* held exclusively) and
// gives its file to the server.
func (b *e2eBridge) configure(cfg *config.Config) {
	b.reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@e2e_.*", Exclusive: true}}
	path := filepath.Join(b.t.TempDir(), "e2ebridge.yaml")
	if err := b.reg.Save(path); err != nil {
		b.t.Fatal(err)
	}
	cfg.AppServiceConfigFiles = append(cfg.AppServiceConfigFiles, path)
}

// start runs a new AppService instance on the bridge's address.
func (b *e2eBridge) start(srv *testserver.Server) *appservice.AppService {
	b.t.Helper()
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: b.reg, HomeserverDomain: srv.Name, HomeserverURL: srv.URL})
	if err != nil {
		b.t.Fatal(err)
	}
	// One reader per instance, for the whole test: what an instance
	// acknowledged is recorded even if it stops right after.
	go func() {
		for {
			select {
			case <-b.quit:
				return
			case ev := <-as.Events:
				b.mu.Lock()
				b.events = append(b.events, ev)
				b.mu.Unlock()
			}
		}
	}()
	return b.serve(as)
}

// stop closes the bridge's HTTP server (connections are refused).
func (b *e2eBridge) stop() {
	b.mu.Lock()
	hs := b.srv
	b.srv = nil
	b.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
	}
}

// messages returns the IDs of the m.room.message events of the room the
// bridge handled, in order, duplicates included.
func (b *e2eBridge) messages(roomID string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, ev := range b.events {
		if ev.Type == event.EventMessage && ev.RoomID.String() == roomID {
			out = append(out, ev.ID.String())
		}
	}
	return out
}

func (b *e2eBridge) find(cond func(*event.Event) bool) *event.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range b.events {
		if cond(ev) {
			return ev
		}
	}
	return nil
}

// waitMessages waits until the bridge has handled exactly want (in
// order, each once) as the room's messages.
func (b *e2eBridge) waitMessages(t *testing.T, roomID string, want []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := b.messages(roomID)
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) || time.Now().After(deadline) {
			t.Fatalf("messages at the bridge\n %v\nwant, once each and in order,\n %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// e2eSyncUntil syncs alice incrementally until the room's timeline has
// the event; it returns the event and the next since token.
func e2eSyncUntil(t *testing.T, c *testutil.Client, since, roomID, eventID string) (map[string]any, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := syncTDo(c, syncTQuery("since", since, "timeout", "500"))
		since = s.NextBatch
		if jr := s.Rooms.Join[roomID]; jr != nil && jr.Timeline != nil {
			for _, e := range jr.Timeline.Events {
				if e["event_id"] == eventID {
					return e, since
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s not in alice's sync; last %s", eventID, syncTShort(s.Body))
		}
	}
}

func TestAppServiceBridgeEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testAppServiceBridgeEndToEnd(t, false) })
	t.Run("postgres", func(t *testing.T) { testAppServiceBridgeEndToEnd(t, true) })
}

func testAppServiceBridgeEndToEnd(t *testing.T, postgres bool) {
	ctx := context.Background()
	b := newE2EBridge(t)
	srv := testserver.Start(t, testserver.Options{Configure: b.configure, Postgres: postgres})
	as := b.start(srv)
	alice := srv.Client().Register("alice", "password1")

	// The namespace is exclusive: a user cannot take a ghost's name.
	srv.Client().MustFail("POST", "/_matrix/client/v3/register",
		map[string]any{"username": "e2e_taken", "password": "password1", "auth": map[string]any{"type": "m.login.dummy"}},
		http.StatusBadRequest, "M_EXCLUSIVE")
	srv.Client().MustFail("GET", "/_matrix/client/v3/register/available?username=e2e_taken", nil, http.StatusBadRequest, "M_EXCLUSIVE")

	// The bridge registers its ghost (m.login.application_service).
	ghostID := id.NewUserID("e2e_bob", srv.Name)
	if err := as.Intent(ghostID).EnsureRegistered(ctx); err != nil {
		t.Fatalf("registering the ghost: %v", err)
	}

	// Alice invites the ghost: the invite reaches the bridge, which joins.
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Bridged DM"}, http.StatusOK)["room_id"].(string)
	since := syncTDo(alice, syncTQuery("timeout", "0")).NextBatch
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", roomID), map[string]any{"user_id": ghostID.String()}, http.StatusOK)
	testutil.Eventually(t, 15*time.Second, "the ghost's invite at the bridge", func() bool {
		return b.find(func(ev *event.Event) bool {
			return ev.Type == event.StateMember && ev.GetStateKey() == ghostID.String() && ev.RoomID.String() == roomID &&
				ev.Content.AsMember().Membership == event.MembershipInvite
		}) != nil
	})
	if err := as.Intent(ghostID).EnsureJoined(ctx, id.RoomID(roomID)); err != nil {
		t.Fatalf("the ghost joining: %v", err)
	}

	var want []string
	ghostTS := map[string]int64{}
	ts := int64(1600000000000)
	fromAlice := func(body string) {
		t.Helper()
		want = append(want, pushSend(t, alice, roomID, "m.room.message", text(body)))
	}
	// fromGhost sends as the ghost (as_token + user_id, ?ts=) and checks
	// that alice's sync shows it with that origin_server_ts.
	fromGhost := func(as *appservice.AppService, body string) {
		t.Helper()
		ts += 1000
		resp, err := as.Intent(ghostID).SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: body}, mautrix.ReqSendEvent{Timestamp: ts})
		if err != nil {
			t.Fatalf("the ghost sending %q: %v", body, err)
		}
		want = append(want, resp.EventID.String())
		ghostTS[resp.EventID.String()] = ts
		var ev map[string]any
		ev, since = e2eSyncUntil(t, alice, since, roomID, resp.EventID.String())
		if ev["sender"] != ghostID.String() || int64(ev["origin_server_ts"].(float64)) != ts ||
			ev["content"].(map[string]any)["body"] != body {
			t.Fatalf("the ghost's message in alice's sync: %v (want ts %d)", ev, ts)
		}
	}

	// Both ways.
	fromAlice("hello from matrix")
	b.waitMessages(t, roomID, want)
	if ev := b.find(func(ev *event.Event) bool { return ev.ID.String() == want[0] }); ev.Sender.String() != alice.UserID ||
		ev.Content.AsMessage().Body != "hello from matrix" {
		t.Fatalf("alice's message at the bridge: %+v", ev)
	}
	fromGhost(as, "hello from the other network")
	b.waitMessages(t, roomID, want)

	// The bridge goes down; Myelin restarts (same data) meanwhile; alice
	// keeps talking; the bridge comes back (same process).
	b.stop()
	fromAlice("while the bridge is down 1")
	srv.Restart()
	fromAlice("while the bridge is down 2")
	fromAlice("while the bridge is down 3")
	b.serve(as)
	b.waitMessages(t, roomID, want)
	fromGhost(as, "back again")
	b.waitMessages(t, roomID, want)

	// The bridge restarts as a new instance with the same registration
	// (it has forgotten its ghosts and its transactions) and the
	// conversation goes on both ways.
	b.stop()
	fromAlice("during the bridge's restart")
	as = b.start(srv)
	if err := as.Intent(ghostID).EnsureJoined(ctx, id.RoomID(roomID)); err != nil {
		t.Fatalf("the ghost rejoining after the bridge's restart: %v", err)
	}
	fromGhost(as, "after my restart")
	fromAlice("welcome back")
	b.waitMessages(t, roomID, want)

	// Nothing is left to send, and nothing came late or twice; the
	// ghost's echoes reached the bridge with their massaged timestamps.
	testutil.Eventually(t, 10*time.Second, "nothing pending for the bridge", func() bool {
		p, ok := gauge(t, srv.Registry, "myelin_appservice_pending_items", map[string]string{"service": "e2ebridge"})
		return ok && p == 0
	})
	b.waitMessages(t, roomID, want)
	for evID, ts := range ghostTS {
		if ev := b.find(func(ev *event.Event) bool { return ev.ID.String() == evID }); ev.Sender != ghostID || ev.Timestamp != ts {
			t.Fatalf("the ghost's echo at the bridge: sender %s, ts %d, want %d", ev.Sender, ev.Timestamp, ts)
		}
	}
}

// serve listens on the bridge's address with the instance (again, for an
// instance whose listener was closed: a bridge whose HTTP side was down,
// its memory intact, as after a network outage).
func (b *e2eBridge) serve(as *appservice.AppService) *appservice.AppService {
	b.t.Helper()
	ln := relisten(b.t, b.addr)
	hs := &http.Server{Handler: as.Router, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	b.mu.Lock()
	b.srv = hs
	b.mu.Unlock()
	return as
}
