//go:build goolm

// End-to-end encryption with a real client library: mautrix-go's crypto
// (with goolm, its pure-Go Olm) drives Myelin as a bridge or bot would.
// These tests need `-tags goolm` (.ci/run runs them):
//
//	go test -tags goolm -run TestE2EEMautrix ./tests/
package tests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// e2eeUser is one logged-in device of a user, with its own crypto store,
// syncing in the background and recording what it decrypted.
type e2eeUser struct {
	t      *testing.T
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	decrypted map[id.EventID]string // body of each m.room.message that arrived encrypted
	plain     map[id.EventID]string // and of each that did not
}

// e2eeLogin logs a registered user in on a new device of baseURL and
// starts its crypto and sync loop.
func e2eeLogin(t *testing.T, baseURL, localpart, password string) *e2eeUser {
	t.Helper()
	ctx := context.Background()
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.Log = zerolog.Nop()
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         password,
		StoreCredentials: true,
	}); err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	u := &e2eeUser{t: t, cli: cli, decrypted: map[id.EventID]string{}, plain: map[id.EventID]string{}, done: make(chan struct{})}
	db := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.db", localpart, cli.DeviceID))
	if u.helper, err = cryptohelper.NewCryptoHelper(cli, []byte("pickle key of "+localpart), db); err != nil {
		t.Fatal(err)
	}
	if err := u.helper.Init(ctx); err != nil {
		t.Fatalf("crypto of %s: %v", localpart, err)
	}
	cli.Crypto = u.helper
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnEventType(event.EventMessage, func(_ context.Context, evt *event.Event) {
		msg := evt.Content.AsMessage()
		u.mu.Lock()
		defer u.mu.Unlock()
		if evt.Mautrix.WasEncrypted {
			u.decrypted[evt.ID] = msg.Body
		} else {
			u.plain[evt.ID] = msg.Body
		}
	})
	syncCtx, cancel := context.WithCancel(ctx)
	u.cancel = cancel
	go func() {
		defer close(u.done)
		_ = cli.SyncWithContext(syncCtx)
	}()
	t.Cleanup(u.stop)
	return u
}

func (u *e2eeUser) stop() {
	if u.cancel != nil {
		u.cancel()
		<-u.done
		u.cancel = nil
		_ = u.helper.Close()
	}
}

// eventually polls check until it returns "" (30 s at most).
func (u *e2eeUser) eventually(what string, check func() string) {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		if last = check(); last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	u.t.Fatalf("%s (%s): %s", what, u.cli.UserID, last)
}

// waitDecrypted waits until the device has decrypted the event, and
// returns its body.
func (u *e2eeUser) waitDecrypted(eventID id.EventID) string {
	u.t.Helper()
	var body string
	u.eventually("decrypting "+eventID.String(), func() string {
		u.mu.Lock()
		defer u.mu.Unlock()
		if _, ok := u.plain[eventID]; ok {
			return "the event arrived unencrypted"
		}
		var ok bool
		if body, ok = u.decrypted[eventID]; !ok {
			return "not decrypted yet"
		}
		return ""
	})
	return body
}

// waitEncryptedRoom waits until the device knows the room is encrypted and
// has the joined members (from its sync), so that what it sends is
// encrypted for all of them.
func (u *e2eeUser) waitEncryptedRoom(roomID id.RoomID, members ...id.UserID) {
	u.t.Helper()
	ctx := context.Background()
	u.eventually("room state", func() string {
		if enc, err := u.cli.StateStore.IsEncrypted(ctx, roomID); err != nil || !enc {
			return fmt.Sprintf("room not known as encrypted (%v)", err)
		}
		for _, m := range members {
			if mem, err := u.cli.StateStore.GetMember(ctx, roomID, m); err != nil || mem.Membership != event.MembershipJoin {
				return fmt.Sprintf("%s not known as joined (%v)", m, err)
			}
		}
		return ""
	})
}

// send sends an encrypted text message and checks that it went out
// encrypted.
func (u *e2eeUser) send(roomID id.RoomID, body string) id.EventID {
	u.t.Helper()
	ctx := context.Background()
	resp, err := u.cli.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		u.t.Fatalf("send: %v", err)
	}
	evt, err := u.cli.GetEvent(ctx, roomID, resp.EventID)
	if err != nil {
		u.t.Fatal(err)
	}
	if evt.Type != event.EventEncrypted {
		u.t.Fatalf("the message went out as %s, want m.room.encrypted", evt.Type)
	}
	return resp.EventID
}

// createEncryptedRoom creates a private room with encryption on and the
// invitees invited.
func (u *e2eeUser) createEncryptedRoom(invite ...id.UserID) id.RoomID {
	u.t.Helper()
	resp, err := u.cli.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: invite,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		u.t.Fatal(err)
	}
	return resp.RoomID
}

func (u *e2eeUser) join(roomID id.RoomID, via ...string) {
	u.t.Helper()
	if _, err := u.cli.JoinRoom(context.Background(), roomID.String(), &mautrix.ReqJoinRoom{Via: via}); err != nil {
		u.t.Fatalf("join: %v", err)
	}
}

// TestE2EEMautrixLocal: two users on one server chat in an encrypted room
// and both decrypt; the second user's second device, logged in before
// the message, gets the room key by to-device and decrypts too.
func TestE2EEMautrixLocal(t *testing.T) {
	srv := testserver.Start(t)
	testutil.NewClient(t, srv.URL).Register("alice", "alice-password")
	testutil.NewClient(t, srv.URL).Register("bob", "bob-password")
	alice := e2eeLogin(t, srv.URL, "alice", "alice-password")
	bob := e2eeLogin(t, srv.URL, "bob", "bob-password")
	bob2 := e2eeLogin(t, srv.URL, "bob", "bob-password")

	room := alice.createEncryptedRoom(bob.cli.UserID)
	bob.eventually("the invite", func() string {
		if _, err := bob.cli.JoinRoomByID(context.Background(), room); err != nil {
			return err.Error()
		}
		return ""
	})
	alice.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)
	bob.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)

	first := alice.send(room, "hello bob, secretly")
	if got := bob.waitDecrypted(first); got != "hello bob, secretly" {
		t.Errorf("bob decrypted %q", got)
	}
	if got := bob2.waitDecrypted(first); got != "hello bob, secretly" {
		t.Errorf("bob's second device decrypted %q", got)
	}
	reply := bob.send(room, "hello alice")
	if got := alice.waitDecrypted(reply); got != "hello alice" {
		t.Errorf("alice decrypted %q", got)
	}
}

// TestE2EEMautrixFederation: the same across two Myelin servers.
func TestE2EEMautrixFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	alice := e2eeLogin(t, hs1.URL, "alice", "alice-password")
	bob := e2eeLogin(t, hs2.URL, "bob", "bob-password")

	room := alice.createEncryptedRoom(bob.cli.UserID)
	bob.eventually("the invite", func() string {
		if _, err := bob.cli.JoinRoom(context.Background(), room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
			return err.Error()
		}
		return ""
	})
	alice.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)
	bob.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)

	first := alice.send(room, "hello across servers")
	if got := bob.waitDecrypted(first); got != "hello across servers" {
		t.Errorf("bob decrypted %q", got)
	}
	reply := bob.send(room, "and back")
	if got := alice.waitDecrypted(reply); got != "and back" {
		t.Errorf("alice decrypted %q", got)
	}
	// bob logs in again: the new device's keys reach alice's server as a
	// device list update, and the next message is shared with it.
	bob2 := e2eeLogin(t, hs2.URL, "bob", "bob-password")
	alice.eventually("bob's new device", func() string {
		devs, err := alice.helper.Machine().CryptoStore.GetDevices(context.Background(), bob.cli.UserID)
		if err != nil {
			return err.Error()
		}
		if _, ok := devs[bob2.cli.DeviceID]; !ok {
			// mautrix refetches a user's keys when its sync lists them in
			// device_lists.changed.
			return fmt.Sprintf("alice knows %d of bob's devices, not %s", len(devs), bob2.cli.DeviceID)
		}
		return ""
	})
	second := alice.send(room, "to both of bob's devices")
	if got := bob2.waitDecrypted(second); got != "to both of bob's devices" {
		t.Errorf("bob's new device decrypted %q", got)
	}
}

// TestE2EEMautrixCrossSigningAndBackup is the "done when" of end-to-end
// encryption: two users chat in an encrypted room on a fresh server;
// alice bootstraps cross-signing (with User-Interactive Auth) and bob
// verifies her; alice backs up her room keys, and a third device, logged
// in later, restores them from the backup and reads the history.
func TestE2EEMautrixCrossSigningAndBackup(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t)
	testutil.NewClient(t, srv.URL).Register("alice", "alice-password")
	testutil.NewClient(t, srv.URL).Register("bob", "bob-password")
	alice := e2eeLogin(t, srv.URL, "alice", "alice-password")
	bob := e2eeLogin(t, srv.URL, "bob", "bob-password")

	// Cross-signing for both, uploaded through UIA with the password.
	for _, u := range []*e2eeUser{alice, bob} {
		password := map[id.UserID]string{alice.cli.UserID: "alice-password", bob.cli.UserID: "bob-password"}[u.cli.UserID]
		if _, _, err := u.helper.Machine().GenerateAndUploadCrossSigningKeysWithPassword(ctx, password, ""); err != nil {
			t.Fatalf("cross-signing bootstrap of %s: %v", u.cli.UserID, err)
		}
		if err := u.helper.Machine().SignOwnDevice(ctx, u.helper.Machine().OwnIdentity()); err != nil {
			t.Fatalf("%s signing its own device: %v", u.cli.UserID, err)
		}
		if err := u.helper.Machine().SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s signing its master key: %v", u.cli.UserID, err)
		}
	}
	room := alice.createEncryptedRoom(bob.cli.UserID)
	bob.eventually("the invite", func() string {
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			return err.Error()
		}
		return ""
	})
	alice.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)
	bob.waitEncryptedRoom(room, alice.cli.UserID, bob.cli.UserID)

	// bob verifies alice: he signs her master key with his user-signing
	// key, and her device is then cross-signed verified for him.
	var aliceKeys struct{ master id.Ed25519 }
	bob.eventually("alice's cross-signing keys", func() string {
		keys, err := bob.helper.Machine().GetCrossSigningPublicKeys(ctx, alice.cli.UserID)
		if err != nil || keys == nil {
			return fmt.Sprintf("not fetched (%v)", err)
		}
		aliceKeys.master = keys.MasterKey
		return ""
	})
	if err := bob.helper.Machine().SignUser(ctx, alice.cli.UserID, aliceKeys.master); err != nil {
		t.Fatalf("bob signing alice's master key: %v", err)
	}
	bob.eventually("alice's device verified", func() string {
		dev, err := bob.helper.Machine().GetOrFetchDevice(ctx, alice.cli.UserID, alice.cli.DeviceID)
		if err != nil {
			return err.Error()
		}
		if trust, err := bob.helper.Machine().ResolveTrustContext(ctx, dev); err != nil || trust != id.TrustStateCrossSignedVerified {
			return fmt.Sprintf("trust %s (%v)", trust, err)
		}
		return ""
	})

	history := []string{"first secret", "second secret"}
	var sent []id.EventID
	for _, body := range history {
		evID := alice.send(room, body)
		if got := bob.waitDecrypted(evID); got != body {
			t.Errorf("bob decrypted %q, want %q", got, body)
		}
		sent = append(sent, evID)
	}

	// alice backs up the room key she sent with.
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	authData := backup.MegolmAuthData{PublicKey: id.Ed25519(backupKeyPublic(backupKey))}
	version, err := alice.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData,
	})
	if err != nil {
		t.Fatalf("creating the backup: %v", err)
	}
	encrypted, err := alice.cli.GetEvent(ctx, room, sent[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := encrypted.Content.ParseRaw(encrypted.Type); err != nil {
		t.Fatal(err)
	}
	sessionID := encrypted.Content.AsEncrypted().SessionID
	igs, err := alice.helper.Machine().CryptoStore.GetGroupSession(ctx, room, sessionID)
	if err != nil || igs == nil {
		t.Fatalf("alice's own inbound session %s: %v", sessionID, err)
	}
	first := igs.Internal.FirstKnownIndex()
	exported, err := igs.Internal.Export(first)
	if err != nil {
		t.Fatal(err)
	}
	sessionData, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
		Algorithm:          id.AlgorithmMegolmV1,
		ForwardingKeyChain: []string{},
		SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: igs.SigningKey},
		SenderKey:          igs.SenderKey,
		SessionKey:         string(exported),
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(sessionData)
	if err != nil {
		t.Fatal(err)
	}
	up, err := alice.cli.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
		room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
			sessionID: {FirstMessageIndex: int(first), ForwardedCount: 0, IsVerified: true, SessionData: raw},
		}},
	}})
	if err != nil {
		t.Fatalf("uploading to the backup: %v", err)
	}
	if up.Count != 1 {
		t.Errorf("backup count after the upload is %d, want 1", up.Count)
	}

	// A new device of alice, logged in after the messages, has no key for
	// them until it restores the backup with the recovery key.
	alice3 := e2eeLogin(t, srv.URL, "alice", "alice-password")
	if got, err := alice3.helper.Machine().CryptoStore.GetGroupSession(ctx, room, sessionID); err == nil && got != nil {
		t.Fatal("the new device had the room key before restoring the backup")
	}
	restored, err := alice3.helper.Machine().DownloadAndStoreLatestKeyBackup(ctx, backupKey)
	if err != nil {
		t.Fatalf("restoring the backup: %v", err)
	}
	if restored != version.Version {
		t.Errorf("restored backup version %s, want %s", restored, version.Version)
	}
	for i, evID := range sent {
		evt, err := alice3.cli.GetEvent(ctx, room, evID)
		if err != nil {
			t.Fatal(err)
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			t.Fatal(err)
		}
		dec, err := alice3.helper.Machine().DecryptMegolmEvent(ctx, evt)
		if err != nil {
			t.Fatalf("the new device decrypting %s from the restored backup: %v", evID, err)
		}
		if body := dec.Content.AsMessage().Body; body != history[i] {
			t.Errorf("the new device read %q, want %q", body, history[i])
		}
	}
}

// backupKeyPublic is the unpadded base64 public key of a backup key, as
// auth_data.public_key.
func backupKeyPublic(k *backup.MegolmBackupKey) string {
	return base64.RawStdEncoding.EncodeToString(k.PublicKey().Bytes())
}
