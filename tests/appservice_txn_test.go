package tests

// Transactions to application services (the application service API's
// "Pushing events"), received by a bridge written with mautrix-go's
// appservice package, which runs in the test with its own HTTP server on
// 127.0.0.1 and checks the hs_token itself.

import (
	"bytes"
	"encoding/json"
	"fmt"

	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// bridgeTxn is a transaction as the bridge's HTTP server saw it.
type bridgeTxn struct {
	ID     string
	Body   []byte
	Status int
	Query  string
}

// testBridge is a mautrix-go application service behind a recorder that
// can make it answer 500 or stop listening.
type testBridge struct {
	t    *testing.T
	as   *appservice.AppService
	reg  *appservice.Registration
	addr string

	mu     sync.Mutex
	txns   []bridgeTxn
	events []*event.Event
	failAs int // answer this status instead of handling (0: handle)
	srv    *http.Server
}

// newTestBridge makes the bridge's registration (users @ghost_*, not
// exclusive so that the test can register them, and aliases #bridged_*, not exclusive either so that a user can create one)
// and starts its HTTP server.
func newTestBridge(t *testing.T, configure func(*appservice.Registration)) *testBridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBridge{t: t, addr: ln.Addr().String()}
	b.reg = appservice.CreateRegistration()
	b.reg.ID = "testbridge"
	b.reg.URL = "http://" + b.addr
	b.reg.SenderLocalpart = "bridgebot"
	if configure != nil {
		configure(b.reg)
	}
	b.as = appservice.Create()
	b.as.Registration = b.reg
	go func() {
		for ev := range b.as.Events {
			b.mu.Lock()
			b.events = append(b.events, ev)
			b.mu.Unlock()
		}
	}()
	b.serve(ln)
	t.Cleanup(func() { b.stop() })
	return b
}

func (b *testBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	b.mu.Lock()
	fail := b.failAs
	b.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	if fail != 0 {
		http.Error(w, `{"errcode":"M_UNKNOWN"}`, fail)
		rec.status = fail
	} else {
		b.as.Router.ServeHTTP(rec, r)
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"); ok {
		b.mu.Lock()
		b.txns = append(b.txns, bridgeTxn{ID: id, Body: body, Status: rec.status, Query: r.URL.RawQuery})
		b.mu.Unlock()
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) { r.status = code; r.ResponseWriter.WriteHeader(code) }

func (b *testBridge) serve(ln net.Listener) {
	b.mu.Lock()
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	srv := b.srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the bridge's listener: the homeserver's connections are
// refused.
func (b *testBridge) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// restart listens again on the same address.
func (b *testBridge) restart() {
	b.t.Helper()
	b.serve(relisten(b.t, b.addr))
}

// relisten listens on addr again, retrying for two seconds while the
// closed listener's port is released.
func relisten(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("bridge listening again on %s: %v", addr, err)
	return nil
}

func (b *testBridge) fail(status int) {
	b.mu.Lock()
	b.failAs = status
	b.mu.Unlock()
}

// configure adds the bridge's registration file to a server's
// configuration; its namespaces are built from the server name.
func (b *testBridge) configure(cfg *config.Config) {
	name := regexp.QuoteMeta(cfg.ServerName)
	b.reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@ghost_.*:" + name, Exclusive: false}}
	b.reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#bridged_.*:" + name, Exclusive: false}}
	b.as.HomeserverDomain = cfg.ServerName
	y, err := b.reg.YAML()
	if err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(b.t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		b.t.Fatal(err)
	}
	cfg.AppServiceConfigFiles = append(cfg.AppServiceConfigFiles, path)
}

// received returns the events the bridge handled, in order.
func (b *testBridge) received() []*event.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*event.Event(nil), b.events...)
}

func (b *testBridge) transactions() []bridgeTxn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]bridgeTxn(nil), b.txns...)
}

// waitEvent waits for the bridge to have handled the event.
func (b *testBridge) waitEvent(t *testing.T, eventID string) *event.Event {
	t.Helper()
	var found *event.Event
	testutil.Eventually(t, 20*time.Second, "event "+eventID+" at the bridge", func() bool {
		for _, ev := range b.received() {
			if ev.ID.String() == eventID {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func (b *testBridge) has(eventID string) bool {
	for _, ev := range b.received() {
		if ev.ID.String() == eventID {
			return true
		}
	}
	return false
}

func startWithBridge(t *testing.T, b *testBridge) *testserver.Server {
	return testserver.Start(t, testserver.Options{Configure: b.configure})
}

func TestAppServiceTransactionEvents(t *testing.T) {
	b := newTestBridge(t, nil)
	srv := startWithBridge(t, b)
	alice := srv.Client().Register("alice", "password1")
	ghost := srv.Client().Register("ghost_one", "password1")
	carol := srv.Client().Register("carol", "password1")

	// An invite of a namespace user reaches the bridge (its state key is
	// the ghost), and so does the room's history from then on.
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "Bridged"}, http.StatusOK)["room_id"].(string)
	invite := alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", roomID), map[string]any{"user_id": ghost.UserID}, http.StatusOK)
	_ = invite
	var inviteID string
	testutil.Eventually(t, 20*time.Second, "the ghost's invite at the bridge", func() bool {
		for _, ev := range b.received() {
			if ev.Type == event.StateMember && ev.GetStateKey() == ghost.UserID && ev.Content.AsMember().Membership == event.MembershipInvite {
				inviteID = ev.ID.String()
				return ev.RoomID.String() == roomID && ev.Sender.String() == alice.UserID
			}
		}
		return false
	})
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)

	// A room without a ghost is none of the bridge's business.
	other := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	unseen := pushSend(t, carol, other, "m.room.message", text("not for the bridge"))

	// A user's message in the ghost's room reaches it, as a ClientEvent.
	msgID := pushSend(t, alice, roomID, "m.room.message", text("hello bridge"))
	ev := b.waitEvent(t, msgID)
	if ev.RoomID.String() != roomID || ev.Sender.String() != alice.UserID || ev.Content.AsMessage().Body != "hello bridge" || ev.Timestamp == 0 {
		t.Fatalf("message at the bridge: %+v", ev)
	}

	// A room whose alias is in the bridge's alias namespace reaches it
	// without a ghost in it.
	aliased := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "bridged_lobby"}, http.StatusOK)["room_id"].(string)
	aliasMsg := pushSend(t, carol, aliased, "m.room.message", text("in an aliased room"))
	b.waitEvent(t, aliasMsg)

	// The ghost leaving: its leave reaches the bridge, the room's next
	// message does not.
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
	after := pushSend(t, alice, roomID, "m.room.message", text("after the ghost left"))
	sentinel := pushSend(t, carol, aliased, "m.room.message", text("sentinel"))
	b.waitEvent(t, sentinel)
	if b.has(unseen) || b.has(after) {
		t.Fatalf("the bridge received events of rooms without its users (%s: %v, %s: %v)", unseen, b.has(unseen), after, b.has(after))
	}
	var leave *event.Event
	for _, ev := range b.received() {
		if ev.Type == event.StateMember && ev.GetStateKey() == ghost.UserID && ev.Content.AsMember().Membership == event.MembershipLeave {
			leave = ev
		}
	}
	if leave == nil {
		t.Fatal("the ghost's leave did not reach the bridge")
	}
	// The state it replaced is in unsigned, as clients see it.
	if pc := leave.Unsigned.PrevContent; pc == nil || pc.Raw["membership"] != "join" {
		t.Fatalf("leave's unsigned.prev_content: %+v", leave.Unsigned.PrevContent)
	}

	// Every transaction carried the hs_token in the Authorization header
	// (mautrix checked it: 200), no access_token in the query, and events
	// in order without duplicates.
	seen := map[string]bool{}
	for _, tx := range b.transactions() {
		if tx.Status != http.StatusOK || tx.Query != "" {
			t.Fatalf("transaction %s: status %d, query %q", tx.ID, tx.Status, tx.Query)
		}
		var body struct {
			Events []struct {
				EventID string `json:"event_id"`
			} `json:"events"`
		}
		if err := json.Unmarshal(tx.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, e := range body.Events {
			if seen[e.EventID] {
				t.Fatalf("event %s sent twice", e.EventID)
			}
			seen[e.EventID] = true
		}
	}
	if !seen[inviteID] || !seen[msgID] {
		t.Fatalf("invite %s or message %s not in the transactions", inviteID, msgID)
	}
}

// TestAppServiceTransactionHSToken checks that the bridge refuses a wrong
// hs_token (the test bridge's own check works), so that the 200s above
// prove the token was right.
func TestAppServiceTransactionHSToken(t *testing.T) {
	b := newTestBridge(t, nil)
	req, _ := http.NewRequest("PUT", "http://"+b.addr+"/_matrix/app/v1/transactions/1", strings.NewReader(`{"events":[]}`))
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong hs_token: %d", resp.StatusCode)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue(), true
			}
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

// TestAppServiceTransactionOutageAndRestart: the bridge answers 500, then
// Myelin restarts while the bridge is stopped; once the bridge is back,
// everything arrives once, in order, and the transaction that failed is
// resent with its ID and body.
func TestAppServiceTransactionOutageAndRestart(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testAppServiceOutageAndRestart(t, false) })
	t.Run("postgres", func(t *testing.T) { testAppServiceOutageAndRestart(t, true) })
}

func testAppServiceOutageAndRestart(t *testing.T, postgres bool) {
	b := newTestBridge(t, nil)
	srv := testserver.Start(t, testserver.Options{Configure: b.configure, Postgres: postgres})
	alice := srv.Client().Register("alice", "password1")
	ghost := srv.Client().Register("ghost_two", "password1")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	before := pushSend(t, alice, roomID, "m.room.message", text("before"))
	b.waitEvent(t, before)

	b.fail(http.StatusInternalServerError)
	first := pushSend(t, alice, roomID, "m.room.message", text("during the outage"))
	svc := map[string]string{"service": "testbridge"}
	testutil.Eventually(t, 20*time.Second, "two failed attempts", func() bool {
		n := 0
		for _, tx := range b.transactions() {
			if tx.Status == http.StatusInternalServerError {
				n++
			}
		}
		return n >= 2
	})
	if up, _ := gauge(t, srv.Registry, "myelin_appservice_up", svc); up != 0 {
		t.Fatalf("myelin_appservice_up during the outage: %v", up)
	}
	if pending, _ := gauge(t, srv.Registry, "myelin_appservice_pending_items", svc); pending < 1 {
		t.Fatalf("myelin_appservice_pending_items during the outage: %v", pending)
	}
	if errs, _ := gauge(t, srv.Registry, "myelin_appservice_transactions_total", map[string]string{"service": "testbridge", "result": "error"}); errs < 2 {
		t.Fatalf("myelin_appservice_transactions_total{result=error}: %v", errs)
	}
	var failed []bridgeTxn
	for _, tx := range b.transactions() {
		if tx.Status == http.StatusInternalServerError {
			failed = append(failed, tx)
		}
	}
	if failed[0].ID != failed[1].ID || !bytes.Equal(failed[0].Body, failed[1].Body) {
		t.Fatalf("retries differ: %s %s / %s %s", failed[0].ID, failed[0].Body, failed[1].ID, failed[1].Body)
	}

	// The bridge stops; Myelin restarts; more happens; the bridge comes
	// back.
	b.stop()
	b.fail(0)
	srv.Restart()
	second := pushSend(t, alice, roomID, "m.room.message", text("after the restart"))
	b.restart()
	b.waitEvent(t, first)
	b.waitEvent(t, second)

	// The failed transaction was resent as it was, and acknowledged.
	var resent *bridgeTxn
	for _, tx := range b.transactions() {
		if tx.Status == http.StatusOK && tx.ID == failed[0].ID {
			resent = &tx
		}
	}
	if resent == nil || !bytes.Equal(resent.Body, failed[0].Body) {
		t.Fatalf("transaction %s not resent with its body (%+v)", failed[0].ID, resent)
	}
	third := pushSend(t, alice, roomID, "m.room.message", text("third"))
	b.waitEvent(t, third)
	var order []string
	counts := map[string]int{}
	for _, ev := range b.received() {
		if ev.Type == event.EventMessage {
			order = append(order, ev.ID.String())
			counts[ev.ID.String()]++
		}
	}
	want := []string{before, first, second, third}
	if len(order) != len(want) {
		t.Fatalf("messages at the bridge %v, want %v once each", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("messages at the bridge %v, want %v", order, want)
		}
	}
	// Across the acknowledged transactions, no event came twice (mautrix
	// ignores a repeated txn ID, so this checks what Myelin sent).
	seen := map[string]string{}
	for _, tx := range b.transactions() {
		if tx.Status != http.StatusOK {
			continue
		}
		var body struct {
			Events []struct {
				EventID string `json:"event_id"`
			} `json:"events"`
		}
		if err := json.Unmarshal(tx.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, e := range body.Events {
			if prev, dup := seen[e.EventID]; dup && prev != tx.ID {
				t.Fatalf("event %s in transactions %s and %s", e.EventID, prev, tx.ID)
			}
			seen[e.EventID] = tx.ID
		}
	}
	if up, _ := gauge(t, srv.Registry, "myelin_appservice_up", svc); up != 1 {
		t.Fatalf("myelin_appservice_up after the outage: %v", up)
	}
	testutil.Eventually(t, 10*time.Second, "nothing pending", func() bool {
		p, _ := gauge(t, srv.Registry, "myelin_appservice_pending_items", svc)
		return p == 0
	})
}

// TestAppServiceTransactionEphemeral: with receive_ephemeral and
// org.matrix.msc3202, the bridge gets typing and receipts of its ghost's
// room, to-device messages for the ghost's device, the device list
// changes of users sharing a room with the ghost, and the ghost's
// one-time key counts.
func TestAppServiceTransactionEphemeral(t *testing.T) {
	b := newTestBridge(t, func(r *appservice.Registration) {
		r.EphemeralEvents = true
		r.MSC3202 = true
	})
	var toDevice []*event.Event
	var otks []string
	var changed []string
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case ev, ok := <-b.as.ToDeviceEvents:
				if !ok {
					return
				}
				b.mu.Lock()
				toDevice = append(toDevice, ev)
				b.mu.Unlock()
			case c := <-b.as.OTKCounts:
				b.mu.Lock()
				otks = append(otks, fmt.Sprintf("%s/%s=%d", c.UserID, c.DeviceID, c.SignedCurve25519))
				b.mu.Unlock()
			case dl := <-b.as.DeviceLists:
				b.mu.Lock()
				for _, u := range dl.Changed {
					changed = append(changed, u.String())
				}
				b.mu.Unlock()
			}
		}
	}()
	srv := startWithBridge(t, b)
	alice := srv.Client().Register("alice", "password1")
	ghost := srv.Client().Register("ghost_eph", "password1")
	carol := srv.Client().Register("carol", "password1")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	lonely := carol.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)

	ephemeral := func(typ, roomID string) []*event.Event {
		var out []*event.Event
		for _, ev := range b.received() {
			if ev.Type.Type == typ && ev.RoomID.String() == roomID {
				out = append(out, ev)
			}
		}
		return out
	}

	// Typing in the ghost's room reaches the bridge; in another room not.
	carol.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", lonely, carol.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK)
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", roomID, alice.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK)
	testutil.Eventually(t, 20*time.Second, "alice typing at the bridge", func() bool {
		for _, ev := range ephemeral("m.typing", roomID) {
			if ids, _ := ev.Content.Raw["user_ids"].([]any); len(ids) == 1 && ids[0] == alice.UserID {
				return true
			}
		}
		return false
	})
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", roomID, alice.UserID), map[string]any{"typing": false}, http.StatusOK)
	testutil.Eventually(t, 20*time.Second, "alice stopping typing at the bridge", func() bool {
		evs := ephemeral("m.typing", roomID)
		ids, ok := evs[len(evs)-1].Content.Raw["user_ids"].([]any)
		return ok && len(ids) == 0
	})

	// A public read receipt reaches it; a private one does not.
	msg := pushSend(t, alice, roomID, "m.room.message", text("read me"))
	carolMsg := pushSend(t, carol, lonely, "m.room.message", text("lonely"))
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read.private/%s", roomID, msg), map[string]any{}, http.StatusOK)
	carol.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", lonely, carolMsg), map[string]any{}, http.StatusOK)
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", roomID, msg), map[string]any{}, http.StatusOK)
	testutil.Eventually(t, 20*time.Second, "alice's receipt at the bridge", func() bool {
		for _, ev := range ephemeral("m.receipt", roomID) {
			if r, ok := ev.Content.Raw[msg].(map[string]any)["m.read"].(map[string]any)[alice.UserID].(map[string]any); ok && r["ts"] != nil {
				return true
			}
		}
		return false
	})
	for _, ev := range ephemeral("m.receipt", roomID) {
		if _, private := ev.Content.Raw[msg].(map[string]any)["m.read.private"]; private {
			t.Fatalf("a private receipt reached the bridge: %v", ev.Content.Raw)
		}
	}
	if len(ephemeral("m.typing", lonely)) > 0 || len(ephemeral("m.receipt", lonely)) > 0 {
		t.Fatal("ephemeral events of a room without the bridge's users reached it")
	}

	// The presence of a user sharing a room with the ghost reaches it;
	// that of a user who does not, not.
	carol.MustDo("PUT", testutil.Path("/_matrix/client/v3/presence/%s/status", carol.UserID), map[string]any{"presence": "unavailable", "status_msg": "away"}, http.StatusOK)
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/presence/%s/status", alice.UserID), map[string]any{"presence": "online", "status_msg": "bridging"}, http.StatusOK)
	presence := func(userID string) []*event.Event {
		var out []*event.Event
		for _, ev := range b.received() {
			if ev.Type.Type == "m.presence" && ev.Sender.String() == userID {
				out = append(out, ev)
			}
		}
		return out
	}
	testutil.Eventually(t, 20*time.Second, "alice's presence at the bridge", func() bool {
		for _, ev := range presence(alice.UserID) {
			if ev.Content.Raw["presence"] == "online" && ev.Content.Raw["status_msg"] == "bridging" {
				return true
			}
		}
		return false
	})
	if len(presence(carol.UserID)) > 0 {
		t.Fatal("the presence of a user sharing no room with the bridge's users reached it")
	}

	// A to-device message for the ghost's device reaches it, with its
	// recipient.
	tdSend(alice, "com.example.ping", tdTxn(), map[string]any{ghost.UserID: map[string]any{ghost.DeviceID: map[string]any{"n": 1}}})
	testutil.Eventually(t, 20*time.Second, "the to-device message at the bridge", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, ev := range toDevice {
			if ev.Type.Type == "com.example.ping" && ev.Sender.String() == alice.UserID && ev.ToUserID.String() == ghost.UserID &&
				ev.ToDeviceID.String() == ghost.DeviceID {
				return true
			}
		}
		return false
	})

	// MSC3202: the ghost's one-time keys are counted in the next
	// transaction; alice's new device keys are a device list change.
	dev := testutil.NewE2EEDevice(t, ghost.UserID, ghost.DeviceID)
	keysUpload(ghost, map[string]any{"device_keys": dev.DeviceKeys(t), "one_time_keys": dev.OneTimeKeys(t, 0, 3)})
	aliceDev := testutil.NewE2EEDevice(t, alice.UserID, alice.DeviceID)
	keysUpload(alice, map[string]any{"device_keys": aliceDev.DeviceKeys(t)})
	pushSend(t, alice, roomID, "m.room.message", text("count my keys"))
	wantOTK := ghost.UserID + "/" + ghost.DeviceID + "=3"
	testutil.Eventually(t, 20*time.Second, "the ghost's key count and alice's device list change at the bridge", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return slices.Contains(otks, wantOTK) && slices.Contains(changed, alice.UserID)
	})

	// The body's keys are those of Synapse: the stable ephemeral key (not
	// the unstable one, for a receive_ephemeral registration), MSC2409's
	// to_device and MSC3202's device lists and counts.
	keys := map[string]bool{}
	for _, tx := range b.transactions() {
		var body map[string]json.RawMessage
		if err := json.Unmarshal(tx.Body, &body); err != nil {
			t.Fatal(err)
		}
		for k := range body {
			keys[k] = true
		}
	}
	for _, k := range []string{"events", "ephemeral", "de.sorunome.msc2409.to_device", "org.matrix.msc3202.device_lists",
		"org.matrix.msc3202.device_one_time_keys_count", "org.matrix.msc3202.device_unused_fallback_key_types"} {
		if !keys[k] {
			t.Errorf("no transaction had %s (keys: %v)", k, keys)
		}
	}
	if keys["de.sorunome.msc2409.ephemeral"] {
		t.Error("the unstable ephemeral key was sent to a receive_ephemeral registration")
	}
}

// TestAppServiceTransactionBatches: what piled up while the bridge was
// down goes in transactions of at most 100 events (Synapse's limit), in
// order, each once.
func TestAppServiceTransactionBatches(t *testing.T) {
	b := newTestBridge(t, nil)
	srv := startWithBridge(t, b)
	alice := srv.Client().Register("alice", "password1")
	ghost := srv.Client().Register("ghost_batch", "password1")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	b.waitEvent(t, pushSend(t, alice, roomID, "m.room.message", text("warm up")))

	b.fail(http.StatusServiceUnavailable)
	var want []string
	for i := 0; i < 230; i++ {
		want = append(want, pushSend(t, alice, roomID, "m.room.message", text(fmt.Sprint(i))))
	}
	testutil.Eventually(t, 20*time.Second, "pending items", func() bool {
		p, _ := gauge(t, srv.Registry, "myelin_appservice_pending_items", map[string]string{"service": "testbridge"})
		return p == 230
	})
	b.fail(0)
	b.waitEvent(t, want[len(want)-1])

	var got []string
	full := 0
	for _, tx := range b.transactions() {
		if tx.Status != http.StatusOK {
			continue
		}
		var body struct {
			Events []struct {
				EventID string `json:"event_id"`
				Type    string `json:"type"`
			} `json:"events"`
		}
		if err := json.Unmarshal(tx.Body, &body); err != nil {
			t.Fatal(err)
		}
		if len(body.Events) > 100 {
			t.Fatalf("transaction %s has %d events", tx.ID, len(body.Events))
		}
		if len(body.Events) == 100 {
			full++
		}
		for _, e := range body.Events {
			if e.Type == "m.room.message" {
				got = append(got, e.EventID)
			}
		}
	}
	got = got[1:] // the warm-up message
	if full < 2 {
		t.Errorf("%d full transactions of 100 events, want 2 for the backlog", full)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the bridge got %d messages, want the %d sent, in order", len(got), len(want))
	}
}

// TestAppServiceTransactionLegacyEphemeral: a registration with only
// MSC2409's de.sorunome.msc2409.push_ephemeral gets ephemeral events under
// the unstable key, as Synapse sends them.
func TestAppServiceTransactionLegacyEphemeral(t *testing.T) {
	b := newTestBridge(t, func(r *appservice.Registration) { r.SoruEphemeralEvents = true })
	srv := startWithBridge(t, b)
	alice := srv.Client().Register("alice", "password1")
	ghost := srv.Client().Register("ghost_legacy", "password1")
	roomID := alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, http.StatusOK)["room_id"].(string)
	ghost.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", roomID, ghost.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusForbidden)
	ghost.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/typing/%s", roomID, alice.UserID), map[string]any{"typing": true, "timeout": 30000}, http.StatusOK)
	testutil.Eventually(t, 20*time.Second, "typing under the unstable key", func() bool {
		for _, tx := range b.transactions() {
			var body map[string]json.RawMessage
			if json.Unmarshal(tx.Body, &body) != nil {
				continue
			}
			if _, stable := body["ephemeral"]; stable {
				t.Fatalf("stable ephemeral key sent to a legacy registration: %s", tx.Body)
			}
			if strings.Contains(string(body["de.sorunome.msc2409.ephemeral"]), `"m.typing"`) {
				return true
			}
		}
		return false
	})
}
