//go:build goolm

// End-to-end encryption for a bridge's ghost: a mautrix-go application
// service gives its ghost a device of its own (MSC4190), runs a mautrix
// crypto OlmMachine for it that talks to Myelin as that device (as_token,
// user_id and device_id masquerading) and gets its to-device messages,
// one-time key counts and device list changes from the transactions
// (MSC2409, MSC3202), as mautrix bridges do. Needs `-tags goolm`.
package tests

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/testutil"
)

// TestE2EEMautrixAppService: a namespace user's encrypted room works
// through device masquerading, both ways.
func TestE2EEMautrixAppService(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := asTRegistration("cryptobridge", "_crypto_")
	reg.URL = "http://" + ln.Addr().String()
	reg.EphemeralEvents = true
	reg.SoruEphemeralEvents = true
	reg.MSC3202 = true
	reg.MSC4190 = true
	srv := asTServer(t, nil, reg)

	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: srv.Name, HomeserverURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	as.Log = zerolog.Nop()
	hs := &http.Server{Handler: as.Router, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	// The ghost, with its own device, and its crypto machine acting as
	// that device.
	ghostID := id.NewUserID("_crypto_ghost", srv.Name)
	ghost := as.Intent(ghostID)
	if err := ghost.EnsureRegistered(ctx); err != nil {
		t.Fatalf("registering the ghost: %v", err)
	}
	if err := ghost.Client.CreateDeviceMSC4190(ctx, "GHOSTDEV", "bridge device"); err != nil {
		t.Fatalf("creating the ghost's device: %v", err)
	}
	if who, err := ghost.Whoami(ctx); err != nil || who.UserID != ghostID || who.DeviceID != "GHOSTDEV" {
		t.Fatalf("the ghost's whoami as its device: %+v %v", who, err)
	}
	log := zerolog.Nop()
	stateStore, ok := as.StateStore.(crypto.StateStore)
	if !ok {
		t.Fatalf("the appservice's state store %T is no crypto state store", as.StateStore)
	}
	mach := crypto.NewOlmMachine(ghost.Client, &log, crypto.NewMemoryStore(nil), stateStore)
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("uploading the ghost's device keys and one-time keys: %v", err)
	}

	// Transactions feed the machine (to-device, OTK counts, device lists)
	// and record the room's encrypted events.
	ep := appservice.NewEventProcessor(as)
	ep.ExecMode = appservice.Sync
	mach.AddAppserviceListener(ep)
	var mu sync.Mutex
	var encrypted []*event.Event
	toDevice := 0
	ep.On(event.ToDeviceEncrypted, func(_ context.Context, evt *event.Event) {
		mu.Lock()
		toDevice++
		mu.Unlock()
	})
	ep.On(event.EventEncrypted, func(_ context.Context, evt *event.Event) {
		mu.Lock()
		encrypted = append(encrypted, evt)
		mu.Unlock()
	})
	ep.Start(ctx)
	t.Cleanup(ep.Stop)

	// A local user with a normal client invites the ghost into an
	// encrypted room.
	testutil.NewClient(t, srv.URL).Register("alice", "alice-password")
	alice := e2eeLogin(t, srv.URL, "alice", "alice-password")
	room := alice.createEncryptedRoom(ghostID)
	alice.eventually("the ghost joining", func() string {
		if _, err := ghost.JoinRoomByID(ctx, room); err != nil {
			return err.Error()
		}
		return ""
	})
	var enc event.EncryptionEventContent
	if err := ghost.StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
		t.Fatalf("the room's encryption as the ghost: %+v %v", enc, err)
	}
	if err := stateStore.(interface {
		SetEncryptionEvent(context.Context, id.RoomID, *event.EncryptionEventContent) error
	}).SetEncryptionEvent(ctx, room, &enc); err != nil {
		t.Fatal(err)
	}
	alice.waitEncryptedRoom(room, alice.cli.UserID, ghostID)

	// alice's message: the room key reaches the ghost's device as an Olm
	// to-device message in a transaction, and the machine decrypts.
	first := alice.send(room, "hello ghost, secretly")
	alice.eventually("the ghost decrypting "+first.String(), func() string {
		mu.Lock()
		evs := append([]*event.Event(nil), encrypted...)
		mu.Unlock()
		for _, evt := range evs {
			if evt.ID != first {
				continue
			}
			dec, err := mach.DecryptMegolmEvent(ctx, evt)
			if err != nil {
				return err.Error()
			}
			if body := dec.Content.AsMessage().Body; body != "hello ghost, secretly" {
				t.Fatalf("the ghost decrypted %q", body)
			}
			return ""
		}
		return "the encrypted event is not at the bridge yet"
	})
	mu.Lock()
	if toDevice == 0 {
		t.Error("no encrypted to-device event reached the bridge")
	}
	mu.Unlock()

	// The ghost's encrypted reply, sent as its device: alice decrypts it
	// from her /sync.
	if err := mach.ShareGroupSession(ctx, room, []id.UserID{alice.cli.UserID, ghostID}); err != nil {
		t.Fatalf("the ghost sharing its room key: %v", err)
	}
	content, err := mach.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hello alice, from the bridge"})
	if err != nil {
		t.Fatalf("the ghost encrypting: %v", err)
	}
	resp, err := ghost.SendMessageEvent(ctx, room, event.EventEncrypted, content)
	if err != nil {
		t.Fatalf("the ghost sending: %v", err)
	}
	if got := alice.waitDecrypted(resp.EventID); got != "hello alice, from the bridge" {
		t.Errorf("alice decrypted %q", got)
	}
}
