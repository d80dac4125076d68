package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go/jetstream"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/testutil"
)

// An EDU of a received transaction is not lost when FederationIn cannot
// take it at once: it is queued with the transaction's stored response and
// the outbox relay publishes it once the stream takes messages again.
// Failed before: the EDU was published, without a message ID, before the
// response was stored; a failed publish was only logged, and the sending
// server, told the transaction was received, never sent it again. (The
// suite had never made a publish fail.)
func TestFederationInEDUSurvivesFailedPublish(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	fuser := "@fuser:fake.test"
	r.join(fuser)
	ctx := context.Background()
	b := r.hs.Bus
	refuseStream(t, r, fedapi.FederationInStream.Name)
	content, _ := json.Marshal(map[string]any{"room_id": r.roomID, "user_id": fuser, "typing": true, "timeout": 30000})
	if _, err := r.rm.Send("hs1.test", "edu-fail", nil, []gomatrixserverlib.EDU{{Type: fedapi.EDUTyping, Content: content}}); err != nil {
		t.Fatalf("send: %v", err)
	}
	// The publish failed before the response came back; now the stream
	// takes messages again.
	if err := b.EnsureStreams(ctx, fedapi.Streams()...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := r.alice.MustDo("GET", "/_matrix/client/v3/sync?timeout=0", nil, http.StatusOK)
		if users, _ := epTTyping(t, m, r.roomID); slices.Contains(users, fuser) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the typing EDU never arrived")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refuseStream makes the stream refuse every new message (until
// EnsureStreams restores its configuration).
func refuseStream(t *testing.T, r *ingTRoom, name string) {
	t.Helper()
	ctx := context.Background()
	b := r.hs.Bus
	st, err := b.JS.Stream(ctx, b.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := info.Config
	full.MaxBytes, full.Discard = 1, jetstream.DiscardNew
	if _, err := b.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
}

// A local user's public read receipt reaches the room's other servers even
// when FederationOut cannot take it at once: it is queued in the
// transaction that stores it and the relay publishes it later. Failed
// before: the receipt EDU was published best effort after the commit, and
// a failed publish was only logged.
func TestReceiptEDUSurvivesFailedPublish(t *testing.T) {
	r, _ := ingTSetup(t, "10")
	r.join("@fuser:fake.test")
	eventID := r.alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/rcpt1", r.roomID),
		map[string]any{"msgtype": "m.text", "body": "read me"}, http.StatusOK)["event_id"].(string)
	refuseStream(t, r, fedapi.FederationOutStream.Name)
	r.alice.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", r.roomID, eventID), map[string]any{}, http.StatusOK)
	if err := r.hs.Bus.EnsureStreams(context.Background(), fedapi.Streams()...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		got := false
		for _, e := range r.edus {
			got = got || e.Type == fedapi.EDUReceipt && strings.Contains(string(e.Content), eventID)
		}
		r.mu.Unlock()
		if got {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the receipt EDU never reached the other server")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
