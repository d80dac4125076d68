package tests

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Send-to-device messaging (client-server "Send-to-Device messaging",
// server-server m.direct_to_device): PUT /sendToDevice and the to_device
// section of /sync, locally and across servers.

var tdSeq atomic.Int64

// tdEvent is a to-device event as /sync gives it.
type tdEvent struct {
	Sender  string         `json:"sender"`
	Type    string         `json:"type"`
	Content map[string]any `json:"content"`
}

// tdTxn returns a fresh transaction ID.
func tdTxn() string { return fmt.Sprintf("td%d", tdSeq.Add(1)) }

// tdSend sends to-device messages of one type and fails unless it is 200.
func tdSend(c *testutil.Client, eventType, txnID string, messages map[string]any) {
	c.T.Helper()
	c.MustDo("PUT", testutil.Path("/_matrix/client/v3/sendToDevice/%s/%s", eventType, txnID), map[string]any{"messages": messages}, http.StatusOK)
}

// tdSync syncs (since "" is an initial sync) and returns the to-device
// events and next_batch.
func tdSync(t testing.TB, c *testutil.Client, since string, timeoutMS int) ([]tdEvent, string) {
	t.Helper()
	path := fmt.Sprintf("/_matrix/client/v3/sync?timeout=%d", timeoutMS)
	if since != "" {
		path += "&since=" + since
	}
	r := c.Do("GET", path, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("%s sync: %d %s", c.DeviceID, r.Status, r.Body)
	}
	var body struct {
		NextBatch string `json:"next_batch"`
		ToDevice  *struct {
			Events []tdEvent `json:"events"`
		} `json:"to_device"`
	}
	r.Decode(t, &body)
	if body.ToDevice == nil {
		return nil, body.NextBatch
	}
	return body.ToDevice.Events, body.NextBatch
}

// tdWait syncs from since until some to-device events arrive (30 s at most).
func tdWait(t testing.TB, c *testutil.Client, since string) ([]tdEvent, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, next := tdSync(t, c, since, 1000)
		if len(evs) > 0 {
			return evs, next
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: no to-device event arrived", c.UserID, c.DeviceID)
		}
	}
}

// tdWantSeqs checks that events carry the given "seq" contents in order.
func tdWantSeqs(t testing.TB, what string, evs []tdEvent, want ...int) {
	t.Helper()
	got := make([]int, len(evs))
	for i, e := range evs {
		f, _ := e.Content["seq"].(float64)
		got[i] = int(f)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: seqs %v, want %v", what, got, want)
	}
}

func TestToDeviceLocalDelivery(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.Registration.GuestAccess = true }})
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob1 := c.Register("bob", "pw")
	bob2 := c.Login("bob", "pw")
	_, a0 := tdSync(t, alice, "", 0)
	_, b10 := tdSync(t, bob1, "", 0)
	_, b20 := tdSync(t, bob2, "", 0)

	// To one device: only it gets the message, with sender, type, content.
	tdSend(alice, "m.room_key_request", tdTxn(), map[string]any{bob1.UserID: map[string]any{bob1.DeviceID: map[string]any{"seq": 1}}})
	evs, b11 := tdSync(t, bob1, b10, 0)
	if len(evs) != 1 || evs[0].Sender != alice.UserID || evs[0].Type != "m.room_key_request" || evs[0].Content["seq"] != float64(1) {
		t.Fatalf("bob1 got %+v, want alice's m.room_key_request {seq:1}", evs)
	}
	if evs, _ := tdSync(t, bob2, b20, 0); len(evs) != 0 {
		t.Fatalf("bob2 got %+v, meant for bob1", evs)
	}

	// "*": every device of the user, once each, even when a device ID sits
	// beside it (as Synapse). Unknown users and devices are skipped.
	tdSend(alice, "m.test", tdTxn(), map[string]any{
		bob1.UserID:           map[string]any{"*": map[string]any{"seq": 2}, bob1.DeviceID: map[string]any{"seq": 99}},
		"@nobody:" + srv.Name: map[string]any{"X": map[string]any{"seq": 3}},
		alice.UserID:          map[string]any{"NOSUCHDEVICE": map[string]any{"seq": 4}},
		"not a user ID":       map[string]any{"X": map[string]any{"seq": 5}},
		"@nodomain":           map[string]any{"X": map[string]any{"seq": 6}},
		"@empty:" + srv.Name:  map[string]any{},
	})
	evs, _ = tdSync(t, bob1, b11, 0)
	tdWantSeqs(t, "bob1 after *", evs, 2)
	evs, _ = tdSync(t, bob2, b20, 0)
	tdWantSeqs(t, "bob2 after *", evs, 2)
	if evs, _ := tdSync(t, alice, a0, 0); len(evs) != 0 {
		t.Fatalf("alice got %+v: a message to an unknown device of hers", evs)
	}

	// A user may send to their own other devices; the sending device gets
	// its "*" copy too.
	tdSend(bob2, "m.test", tdTxn(), map[string]any{bob2.UserID: map[string]any{"*": map[string]any{"seq": 7}}})
	evs, _ = tdWait(t, bob2, b20)
	tdWantSeqs(t, "bob2 from itself", evs, 2, 7)
	if evs[1].Sender != bob2.UserID {
		t.Fatalf("sender %s, want %s", evs[1].Sender, bob2.UserID)
	}

	// Guests may send and receive.
	g := c.As("", "", "").MustDo("POST", "/_matrix/client/v3/register?kind=guest", map[string]any{}, http.StatusOK)
	guest := c.As(g["user_id"].(string), g["device_id"].(string), g["access_token"].(string))
	_, g0 := tdSync(t, guest, "", 0)
	tdSend(alice, "m.test", tdTxn(), map[string]any{guest.UserID: map[string]any{"*": map[string]any{"seq": 8}}})
	evs, _ = tdSync(t, guest, g0, 0)
	tdWantSeqs(t, "guest", evs, 8)
	tdSend(guest, "m.test", tdTxn(), map[string]any{alice.UserID: map[string]any{alice.DeviceID: map[string]any{"seq": 9}}})
	evs, _ = tdSync(t, alice, a0, 0)
	tdWantSeqs(t, "alice from the guest", evs, 9)
}

func TestToDeviceTransactionIdempotent(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	alice2 := c.Login("alice", "pw")
	bob := c.Register("bob", "pw")
	_, b0 := tdSync(t, bob, "", 0)
	to := func(seq int) map[string]any {
		return map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"seq": seq}}}
	}
	tdSend(alice, "m.test", "t1", to(1))
	tdSend(alice, "m.test", "t1", to(2))  // a retry: nothing new
	tdSend(alice, "m.other", "t1", to(3)) // another endpoint: another transaction
	tdSend(alice2, "m.test", "t1", to(4)) // another device: another transaction
	evs, _ := tdSync(t, bob, b0, 0)
	tdWantSeqs(t, "after the retries", evs, 1, 3, 4)

	// The transaction is remembered across a restart, and so are the
	// messages not yet acknowledged.
	srv.Restart()
	tdSend(alice, "m.test", "t1", to(5))
	tdSend(alice, "m.test", "t2", to(6))
	evs, _ = tdSync(t, bob, b0, 0)
	tdWantSeqs(t, "after the restart", evs, 1, 3, 4, 6)
}

func TestToDeviceOrderLimitAndAck(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob := c.Register("bob", "pw")
	_, b0 := tdSync(t, bob, "", 0)
	for i := range 150 {
		tdSend(alice, "m.test", tdTxn(), map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"seq": i}}})
	}
	seqs := func(from, to int) []int {
		var out []int
		for i := from; i < to; i++ {
			out = append(out, i)
		}
		return out
	}
	// The first 100, in order; with more waiting, a long-poll returns at
	// once.
	start := time.Now()
	first, b1 := tdSync(t, bob, b0, 20000)
	tdWantSeqs(t, "first sync", first, seqs(0, 100)...)
	// A sync repeated with the old token gets the same messages again: the
	// client did not acknowledge them.
	again, _ := tdSync(t, bob, b0, 20000)
	tdWantSeqs(t, "repeated first sync", again, seqs(0, 100)...)
	// The rest comes next, also at once although nothing new arrived;
	// this sync acknowledges the first 100.
	rest, b2 := tdSync(t, bob, b1, 20000)
	tdWantSeqs(t, "second sync", rest, seqs(100, 150)...)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("syncs with messages waiting took %v: they long-polled", d)
	}
	again, _ = tdSync(t, bob, b1, 0)
	tdWantSeqs(t, "repeated second sync", again, seqs(100, 150)...)
	again, _ = tdSync(t, bob, b0, 0)
	tdWantSeqs(t, "first token after the ack of the first 100", again, seqs(100, 150)...)
	// Syncing with b2 acknowledges everything: nothing comes again, even
	// with the old tokens, nor after a restart.
	if evs, _ := tdSync(t, bob, b2, 0); len(evs) != 0 {
		t.Fatalf("after the ack: %d events", len(evs))
	}
	srv.Restart()
	for _, tok := range []string{b0, b1, b2} {
		if evs, _ := tdSync(t, bob, tok, 0); len(evs) != 0 {
			t.Fatalf("since %s after the ack and a restart: %d events", tok, len(evs))
		}
	}
	// An initial sync delivers what waits, without acknowledging anything.
	tdSend(alice, "m.test", tdTxn(), map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"seq": 150}}})
	evs, _ := tdSync(t, bob, "", 0)
	tdWantSeqs(t, "initial sync", evs, 150)
	evs, _ = tdSync(t, bob, "", 0)
	tdWantSeqs(t, "second initial sync", evs, 150)
}

func TestToDeviceWakesLongPoll(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob := c.Register("bob", "pw")
	_, b0 := tdSync(t, bob, "", 0)
	type result struct {
		evs []tdEvent
		d   time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		evs, _ := tdSync(t, bob, b0, 30000)
		done <- result{evs, time.Since(start)}
	}()
	// Wait until the long-poll waits (nothing to see for a moment), then
	// send.
	select {
	case r := <-done:
		t.Fatalf("the long-poll returned before any message: %+v", r.evs)
	case <-time.After(300 * time.Millisecond):
	}
	tdSend(alice, "m.test", tdTxn(), map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"seq": 1}}})
	select {
	case r := <-done:
		tdWantSeqs(t, "woken long-poll", r.evs, 1)
		if r.d > 10*time.Second {
			t.Fatalf("the long-poll took %v", r.d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the message did not wake bob's long-poll")
	}
}

func TestToDeviceDeletedDeviceInbox(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob := c.Register("bob", "pw")
	phone := c.Login("bob", "pw")
	tdSend(alice, "m.test", tdTxn(), map[string]any{bob.UserID: map[string]any{"*": map[string]any{"seq": 1}}})
	acctMustUIA(bob, "DELETE", acctDevicePath(phone.DeviceID), map[string]any{}, "pw")
	// A new login with the same device ID finds an empty inbox (once the
	// sync API has seen the deletion).
	m := c.As("", "", "").MustDo("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "pw", "device_id": phone.DeviceID,
	}, http.StatusOK)
	again := c.As(m["user_id"].(string), m["device_id"].(string), m["access_token"].(string))
	if evs, _ := tdSync(t, again, "", 0); len(evs) != 0 {
		t.Fatalf("the recreated device got %+v, sent to the deleted one", evs)
	}
	evs, _ := tdSync(t, bob, "", 0)
	tdWantSeqs(t, "bob's other device", evs, 1)
}

func TestToDeviceErrors(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	path := func() string { return testutil.Path("/_matrix/client/v3/sendToDevice/m.test/%s", tdTxn()) }
	r := alice.Do("PUT", path(), testutil.Raw("{not json"))
	if r.Status != http.StatusBadRequest || r.JSON(t)["errcode"] != "M_NOT_JSON" {
		t.Fatalf("not JSON: %d %s", r.Status, r.Body)
	}
	alice.MustFail("PUT", path(), []any{}, http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("PUT", path(), map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
	for _, messages := range []any{"x", []any{}, 3, map[string]any{alice.UserID: "x"}, map[string]any{alice.UserID: []any{}},
		map[string]any{alice.UserID: map[string]any{alice.DeviceID: "x"}}, map[string]any{alice.UserID: map[string]any{"*": []any{1}}}} {
		alice.MustFail("PUT", path(), map[string]any{"messages": messages}, http.StatusBadRequest, "M_BAD_JSON")
	}
	big := map[string]any{"data": strings.Repeat("x", 70<<10)}
	alice.MustFail("PUT", path(), map[string]any{"messages": map[string]any{alice.UserID: map[string]any{alice.DeviceID: big}}},
		http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	c.MustFail("PUT", path(), map[string]any{"messages": map[string]any{}}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// Nothing of the refused requests was delivered; an empty one is fine.
	tdSend(alice, "m.test", tdTxn(), map[string]any{})
	if evs, _ := tdSync(t, alice, "", 0); len(evs) != 0 {
		t.Fatalf("refused requests delivered %+v", evs)
	}
}

// TestToDeviceSyncStatements: an incremental sync that carries 100
// to-device messages runs as many statements as one that carries one.
func TestToDeviceSyncStatements(t *testing.T) {
	srv := testserver.Start(t)
	c := srv.Client()
	alice := c.Register("alice", "pw")
	bob := c.Register("bob", "pw")
	carol := c.Register("carol", "pw")
	_, b0 := tdSync(t, bob, "", 0)
	_, c0 := tdSync(t, carol, "", 0)
	send := func(to *testutil.Client, n int) {
		for i := range n {
			tdSend(alice, "m.test", tdTxn(), map[string]any{to.UserID: map[string]any{to.DeviceID: map[string]any{"seq": i}}})
		}
	}
	send(bob, 1)
	send(carol, 100)
	count := func(u *testutil.Client, since string, want int) uint64 {
		return syncPCount(t, srv, u, "/_matrix/client/v3/sync?timeout=0&since="+since, 3, func(r *testutil.Response) {
			var body struct {
				ToDevice struct {
					Events []tdEvent `json:"events"`
				} `json:"to_device"`
			}
			r.Decode(t, &body)
			if len(body.ToDevice.Events) != want {
				t.Fatalf("%d to-device events, want %d", len(body.ToDevice.Events), want)
			}
		})
	}
	one, hundred := count(bob, b0, 1), count(carol, c0, 100)
	t.Logf("incremental sync statements: %d with 1 to-device message, %d with 100", one, hundred)
	if hundred > one {
		t.Fatalf("100 to-device messages cost %d statements, one cost %d", hundred, one)
	}
	// A device with an empty inbox pays nothing for to-device messages.
	_, a0 := tdSync(t, alice, "", 0)
	if none := count(alice, a0, 0); none >= one {
		t.Errorf("a sync without to-device messages ran %d statements, with one %d", none, one)
	}
}

func TestToDeviceFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "pw")
	alice2 := testutil.NewClient(t, hs1.URL).Register("alice2", "pw")
	bob1 := testutil.NewClient(t, hs2.URL).Register("bob", "pw")
	bob2 := testutil.NewClient(t, hs2.URL).Login("bob", "pw")
	_, a0 := tdSync(t, alice, "", 0)
	_, a20 := tdSync(t, alice2, "", 0)
	_, b10 := tdSync(t, bob1, "", 0)
	_, b20 := tdSync(t, bob2, "", 0)

	// hs1 -> hs2, to one device; a local recipient in the same request.
	tdSend(alice, "m.room_key_request", "f1", map[string]any{
		bob1.UserID:   map[string]any{bob1.DeviceID: map[string]any{"seq": 1}},
		alice2.UserID: map[string]any{"*": map[string]any{"seq": 2}},
	})
	evs, b11 := tdWait(t, bob1, b10)
	tdWantSeqs(t, "bob1 over federation", evs, 1)
	if evs[0].Sender != alice.UserID || evs[0].Type != "m.room_key_request" {
		t.Fatalf("bob1 got %+v", evs[0])
	}
	evs, _ = tdSync(t, alice2, a20, 0)
	tdWantSeqs(t, "alice2 locally", evs, 2)

	// "*" for the remote user reaches both of bob's devices; the retry of
	// f1 delivers nothing again.
	tdSend(alice, "m.room_key_request", "f1", map[string]any{bob1.UserID: map[string]any{bob1.DeviceID: map[string]any{"seq": 1}}})
	tdSend(alice, "m.test", "f2", map[string]any{bob1.UserID: map[string]any{"*": map[string]any{"seq": 3}}})
	evs, _ = tdWait(t, bob1, b11)
	tdWantSeqs(t, "bob1 after *", evs, 3)
	evs, _ = tdWait(t, bob2, b20)
	tdWantSeqs(t, "bob2 after *", evs, 3)

	// hs2 -> hs1.
	tdSend(bob2, "m.test", tdTxn(), map[string]any{alice.UserID: map[string]any{alice.DeviceID: map[string]any{"seq": 4}}})
	evs, _ = tdWait(t, alice, a0)
	tdWantSeqs(t, "alice over federation", evs, 4)
	if evs[0].Sender != bob2.UserID {
		t.Fatalf("sender %s, want %s", evs[0].Sender, bob2.UserID)
	}
}

// TestToDeviceFederationInbound: EDUs of another server are delivered
// once per message ID, and only when the sender is the origin's.
func TestToDeviceFederationInbound(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs := n.Start("hs1.test")
	rm := n.StartRemote("fake.test")
	bob := testutil.NewClient(t, hs.URL).Register("bob", "pw")
	_, b0 := tdSync(t, bob, "", 0)
	edu := func(sender, id string, seq int, device string) gomatrixserverlib.EDU {
		content := fmt.Sprintf(`{"sender":%q,"type":"m.test","message_id":%q,"messages":{%q:{%q:{"seq":%d}},"@x:elsewhere.test":{"*":{}}}}`,
			sender, id, bob.UserID, device, seq)
		return gomatrixserverlib.EDU{Type: "m.direct_to_device", Content: []byte(content)}
	}
	for i, e := range []gomatrixserverlib.EDU{
		edu("@eve:fake.test", "m1", 1, bob.DeviceID),
		edu("@eve:other.test", "m2", 2, bob.DeviceID), // spoofed sender: dropped
		edu("@eve:fake.test", "m1", 3, bob.DeviceID),  // the same message ID: dropped
		edu("@eve:fake.test", "m3", 4, "*"),
	} {
		if _, err := rm.Send("hs1.test", fmt.Sprintf("txn%d", i), nil, []gomatrixserverlib.EDU{e}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	var evs []tdEvent
	deadline := time.Now().Add(30 * time.Second)
	for len(evs) < 2 && time.Now().Before(deadline) {
		evs, _ = tdSync(t, bob, b0, 1000)
	}
	tdWantSeqs(t, "bob from fake.test", evs, 1, 4)
	if evs[0].Sender != "@eve:fake.test" {
		t.Fatalf("sender %s", evs[0].Sender)
	}
}
