package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go/jetstream"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
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
	st, err := b.JS.Stream(ctx, b.Name(fedapi.FederationInStream.Name))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The stream refuses every new message.
	full := info.Config
	full.MaxBytes, full.Discard = 1, jetstream.DiscardNew
	if _, err := b.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
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
