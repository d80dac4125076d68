package tests

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	fedapi "github.com/myelin-chat/myelin/federationapi/api"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// dlSyncResponse is what the device-list tests read of /sync.
type dlSyncResponse struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists *struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts map[string]int `json:"device_one_time_keys_count"`
	Fallback  []string       `json:"device_unused_fallback_key_types"`
}

func (s *dlSyncResponse) changed() []string {
	if s.DeviceLists == nil {
		return nil
	}
	return s.DeviceLists.Changed
}

func (s *dlSyncResponse) left() []string {
	if s.DeviceLists == nil {
		return nil
	}
	return s.DeviceLists.Left
}

func dlSync(c *testutil.Client, since string) *dlSyncResponse {
	c.T.Helper()
	q := "?timeout=0"
	if since != "" {
		q += "&since=" + since
	}
	r := c.Do("GET", "/_matrix/client/v3/sync"+q, nil)
	if r.Status != http.StatusOK {
		c.T.Fatalf("sync: %d %s", r.Status, r.Body)
	}
	var s dlSyncResponse
	r.Decode(c.T, &s)
	return &s
}

// dlWaitChanged polls incremental syncs from since until device_lists
// names user in section ("changed" or "left"); it returns that response.
func dlWaitChanged(t testing.TB, c *testutil.Client, since, section, user string) *dlSyncResponse {
	t.Helper()
	var got *dlSyncResponse
	fedTEventually(t, fmt.Sprintf("%s sees %s in device_lists.%s", c.UserID, user, section), func() string {
		got = dlSync(c, since)
		list := got.changed()
		if section == "left" {
			list = got.left()
		}
		if !slices.Contains(list, user) {
			return fmt.Sprintf("device_lists = %+v", got.DeviceLists)
		}
		return ""
	})
	return got
}

// dlKeys is a device's ed25519 identity, which signs its keys.
type dlKeys struct {
	c    *testutil.Client
	pub  string
	priv ed25519.PrivateKey
}

func dlNewKeys(t testing.TB, c *testutil.Client) *dlKeys {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dlKeys{c: c, pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (k *dlKeys) sign(obj map[string]any) json.RawMessage {
	k.c.T.Helper()
	raw, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(k.c.UserID, gomatrixserverlib.KeyID("ed25519:"+k.c.DeviceID), k.priv, raw)
	if err != nil {
		k.c.T.Fatal(err)
	}
	return signed
}

// deviceKeys is the device's signed DeviceKeys object, with a curve25519
// key that changes with curve.
func (k *dlKeys) deviceKeys(curve string) json.RawMessage {
	c := k.c
	return k.sign(map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + c.DeviceID: k.pub, "curve25519:" + c.DeviceID: curve},
	})
}

// upload uploads the device keys (with curve as the curve25519 key) and
// n signed one-time keys, and a fallback key when fallback is set.
func (k *dlKeys) upload(curve string, n int, fallback bool) map[string]any {
	k.c.T.Helper()
	body := map[string]any{"device_keys": k.deviceKeys(curve)}
	if n > 0 {
		otks := map[string]any{}
		for i := range n {
			id := fmt.Sprintf("signed_curve25519:%s%d", curve[:4], i)
			otks[id] = k.sign(map[string]any{"key": base64.RawStdEncoding.EncodeToString([]byte(fmt.Sprintf("otk-%s-%02d-padding-to-32-bytes", curve[:4], i)))})
		}
		body["one_time_keys"] = otks
	}
	if fallback {
		body["fallback_keys"] = map[string]any{"signed_curve25519:FB" + curve[:4]: k.sign(map[string]any{
			"key": base64.RawStdEncoding.EncodeToString([]byte("fallback-key-padding-to-32-bytes")), "fallback": true})}
	}
	return k.c.MustDo("POST", "/_matrix/client/v3/keys/upload", body, http.StatusOK)
}

func dlCurve(tag string) string {
	b := make([]byte, 32)
	copy(b, tag)
	return base64.RawStdEncoding.EncodeToString(b)
}

// dlQueryKeys returns the device keys /keys/query gives c of user.
func dlQueryKeys(c *testutil.Client, user string) map[string]json.RawMessage {
	c.T.Helper()
	var res struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	}
	r := c.Do("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}})
	if r.Status != http.StatusOK {
		c.T.Fatalf("keys/query: %d %s", r.Status, r.Body)
	}
	r.Decode(c.T, &res)
	return res.DeviceKeys[user]
}

func dlCurveOf(raw json.RawMessage, deviceID string) string {
	var dk struct {
		Keys map[string]string `json:"keys"`
	}
	_ = json.Unmarshal(raw, &dk)
	return dk.Keys["curve25519:"+deviceID]
}

func TestDeviceListsLocal(t *testing.T) {
	srv := syncTStart(t)
	c := srv.Client()
	alice := c.Register("alice", "alice-pw")
	bob := c.Register("bob", "bob-pw")
	carol := c.Register("carol", "carol-pw")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	aliceSince := dlSync(alice, "").NextBatch
	bobSince := dlSync(bob, "").NextBatch
	carolSince := dlSync(carol, "").NextBatch

	// New device keys: those sharing a room and bob himself see it,
	// carol does not.
	bobKeys := dlNewKeys(t, bob)
	bobKeys.upload(dlCurve("one"), 0, false)
	s := dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID)
	if !slices.Equal(s.changed(), []string{bob.UserID}) || len(s.left()) != 0 {
		t.Fatalf("alice's device_lists = %+v", s.DeviceLists)
	}
	aliceSince = s.NextBatch
	bobSince = dlWaitChanged(t, bob, bobSince, "changed", bob.UserID).NextBatch
	if got := dlSync(carol, carolSince); got.DeviceLists != nil {
		t.Fatalf("carol, who shares no room with bob, sees %+v", got.DeviceLists)
	}
	if got := dlQueryKeys(alice, bob.UserID); dlCurveOf(got[bob.DeviceID], bob.DeviceID) != dlCurve("one") {
		t.Fatalf("alice's query of bob's keys: %v", got)
	}

	// Re-keyed device.
	bobKeys.upload(dlCurve("two"), 0, false)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch

	// A new device with keys, then its deletion.
	phone := c.Login("bob", "bob-pw")
	dlNewKeys(t, phone).upload(dlCurve("phone"), 0, false)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	if got := dlQueryKeys(alice, bob.UserID); len(got) != 2 {
		t.Fatalf("bob's devices after a login: %v", got)
	}
	r := acctDoUIA(bob, "DELETE", acctDevicePath(phone.DeviceID), map[string]any{}, bob.UserID, "bob-pw")
	if r.Status != http.StatusOK {
		t.Fatalf("delete device: %d %s", r.Status, r.Body)
	}
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	if got := dlQueryKeys(alice, bob.UserID); len(got) != 1 {
		t.Fatalf("bob's devices after a deletion: %v", got)
	}

	// Cross-signing keys.
	master := dlNewKeys(t, bob)
	r = bob.Do("POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
		"master_key": map[string]any{"user_id": bob.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + master.pub: master.pub}},
	})
	if r.Status != http.StatusOK {
		t.Fatalf("cross-signing upload: %d %s", r.Status, r.Body)
	}
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	if got := dlSync(carol, carolSince); got.DeviceLists != nil {
		t.Fatalf("carol sees %+v", got.DeviceLists)
	}

	// A join: alice sees dave, dave sees every member of the room.
	dave := c.Register("dave", "dave-pw")
	daveSince := dlSync(dave, "").NextBatch
	dave.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", dave.UserID).NextBatch
	s = dlWaitChanged(t, dave, daveSince, "changed", dave.UserID)
	if want := []string{alice.UserID, bob.UserID, dave.UserID}; !slices.Equal(s.changed(), want) {
		t.Fatalf("dave's changed after joining = %v, want %v", s.changed(), want)
	}
	daveSince = s.NextBatch

	// The last shared room left: bob is in left, no longer in changed.
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/rooms/%s/leave", roomID), map[string]any{}, http.StatusOK)
	s = dlWaitChanged(t, alice, aliceSince, "left", bob.UserID)
	if slices.Contains(s.changed(), bob.UserID) {
		t.Fatalf("bob is both changed and left: %+v", s.DeviceLists)
	}
	aliceSince = s.NextBatch
	s = dlWaitChanged(t, bob, bobSince, "left", alice.UserID)
	if !slices.Contains(s.left(), dave.UserID) {
		t.Fatalf("bob, who left, does not see dave in left: %+v", s.DeviceLists)
	}
	// ...and bob's later changes no longer reach alice.
	bobKeys.upload(dlCurve("three"), 0, false)
	dlWaitChanged(t, bob, s.NextBatch, "changed", bob.UserID)
	if got := dlSync(alice, aliceSince); slices.Contains(got.changed(), bob.UserID) {
		t.Fatalf("alice sees bob's change after he left: %+v", got.DeviceLists)
	}
	_ = daveSince
}

func TestDeviceListsKeyCountsInSync(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "alice-pw")
	s := dlSync(alice, "")
	if s.OTKCounts == nil || s.OTKCounts["signed_curve25519"] != 0 || s.Fallback == nil || len(s.Fallback) != 0 {
		t.Fatalf("initial sync counts = %v, fallback %v", s.OTKCounts, s.Fallback)
	}
	if s.DeviceLists != nil {
		t.Fatalf("an initial sync has device_lists: %+v", s.DeviceLists)
	}
	dlNewKeys(t, alice).upload(dlCurve("counts"), 3, true)
	s = dlSync(alice, s.NextBatch)
	if s.OTKCounts["signed_curve25519"] != 3 || !slices.Equal(s.Fallback, []string{"signed_curve25519"}) {
		t.Fatalf("counts after an upload = %v, fallback %v", s.OTKCounts, s.Fallback)
	}
	if !slices.Contains(s.changed(), alice.UserID) {
		t.Fatalf("alice does not see her own new keys: %+v", s.DeviceLists)
	}
}

func TestKeysChanges(t *testing.T) {
	srv := syncTStart(t)
	c := srv.Client()
	alice := c.Register("alice", "alice-pw")
	bob := c.Register("bob", "bob-pw")
	carol := c.Register("carol", "carol-pw")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	from := dlSync(alice, "").NextBatch
	dlNewKeys(t, bob).upload(dlCurve("bob"), 0, false)
	dlNewKeys(t, carol).upload(dlCurve("carol"), 0, false)
	to := dlWaitChanged(t, alice, from, "changed", bob.UserID).NextBatch

	m := alice.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+from+"&to="+to, nil, http.StatusOK)
	if fmt.Sprint(m["changed"]) != fmt.Sprint([]any{bob.UserID}) || fmt.Sprint(m["left"]) != "[]" {
		t.Fatalf("keys/changes = %v", m)
	}
	// Nothing between a token and itself.
	m = alice.MustDo("GET", "/_matrix/client/v3/keys/changes?from="+to+"&to="+to, nil, http.StatusOK)
	if fmt.Sprint(m["changed"]) != "[]" {
		t.Fatalf("empty range: %v", m)
	}
	alice.MustFail("GET", "/_matrix/client/v3/keys/changes?to="+to, nil, http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("GET", "/_matrix/client/v3/keys/changes?from=nonsense&to="+to, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", "/_matrix/client/v3/keys/changes?from="+from+"&to=s1_x", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	c.As("", "", "").MustFail("GET", "/_matrix/client/v3/keys/changes?from="+from, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestDeviceListsLongPollWokenByKeyChange(t *testing.T) {
	srv := syncTStart(t)
	c := srv.Client()
	alice := c.Register("alice", "alice-pw")
	bob := c.Register("bob", "bob-pw")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	since := dlSync(alice, "").NextBatch
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	since = dlWaitChanged(t, alice, since, "changed", bob.UserID).NextBatch

	type result struct {
		s       dlSyncResponse
		elapsed time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r := alice.Do("GET", "/_matrix/client/v3/sync?timeout=20000&since="+since, nil)
		var s dlSyncResponse
		_ = json.Unmarshal(r.Body, &s)
		done <- result{s, time.Since(start)}
	}()
	// The long-poll is waiting when nothing has changed yet.
	select {
	case r := <-done:
		t.Fatalf("the long-poll returned before any change: %+v", r.s.DeviceLists)
	case <-time.After(300 * time.Millisecond):
	}
	dlNewKeys(t, bob).upload(dlCurve("wake"), 0, false)
	select {
	case r := <-done:
		if !slices.Contains(r.s.changed(), bob.UserID) || r.elapsed > 10*time.Second {
			t.Fatalf("long-poll after %v: %+v", r.elapsed, r.s.DeviceLists)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the key change did not wake the long-poll")
	}
}

func TestDeviceListsOverFederation(t *testing.T) {
	p := fedTStart(t, "public_chat")
	alice, bob := p.alice, p.bob
	aliceSince := dlSync(alice, "").NextBatch

	// bob's new keys reach alice's device_lists and her /keys/query.
	bobKeys := dlNewKeys(t, bob)
	bobKeys.upload(dlCurve("fed-one"), 0, false)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	fedTEventually(t, "alice reads bob's keys", func() string {
		if got := dlCurveOf(dlQueryKeys(alice, bob.UserID)[bob.DeviceID], bob.DeviceID); got != dlCurve("fed-one") {
			return "curve25519 key " + got
		}
		return ""
	})
	bobKeys.upload(dlCurve("fed-two"), 0, false)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	if got := dlCurveOf(dlQueryKeys(alice, bob.UserID)[bob.DeviceID], bob.DeviceID); got != dlCurve("fed-two") {
		t.Fatalf("after a re-key alice reads %s", got)
	}

	// A gap in the chain (an update following one hs1 never got) makes
	// hs1 fetch bob's whole list again: the made-up device is not in it.
	ghost, _ := json.Marshal(map[string]any{"user_id": bob.UserID, "device_id": "GHOST", "stream_id": 1 << 40, "prev_id": []int64{1<<40 - 1},
		"keys": map[string]any{"user_id": bob.UserID, "device_id": "GHOST", "keys": map[string]string{"ed25519:GHOST": "x"}}})
	if _, err := p.hs1.Bus.Publish(context.Background(), fedapi.InSubject(fedapi.EDUDeviceList),
		&fedapi.InboundEDU{V: 1, Origin: "hs2.test", Type: fedapi.EDUDeviceList, Content: ghost}, "", nil); err != nil {
		t.Fatal(err)
	}
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	fedTEventually(t, "the resync", func() string {
		got := dlQueryKeys(alice, bob.UserID)
		if _, ok := got["GHOST"]; ok || dlCurveOf(got[bob.DeviceID], bob.DeviceID) != dlCurve("fed-two") {
			return fmt.Sprintf("bob's devices %v", got)
		}
		return ""
	})
	// A device deleted on hs2 goes from what alice reads.
	phone := testutil.NewClient(t, p.hs2.URL).Login("bob", "bob-password")
	dlNewKeys(t, phone).upload(dlCurve("fed-phone"), 0, false)
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	fedTEventually(t, "bob's phone", func() string {
		if got := dlQueryKeys(alice, bob.UserID); len(got) != 2 {
			return fmt.Sprintf("bob's devices %v", got)
		}
		return ""
	})
	if r := acctDoUIA(bob, "DELETE", acctDevicePath(phone.DeviceID), map[string]any{}, bob.UserID, "bob-password"); r.Status != http.StatusOK {
		t.Fatalf("delete device: %d %s", r.Status, r.Body)
	}
	aliceSince = dlWaitChanged(t, alice, aliceSince, "changed", bob.UserID).NextBatch
	if got := dlQueryKeys(alice, bob.UserID); len(got) != 1 {
		t.Fatalf("bob's devices after the deletion: %v", got)
	}
	// hs1's cache of bob's list is up to date: it answers with hs2 away.
	p.n.Partition("hs1.test", "hs2.test")
	r := alice.Do("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	m := r.JSON(t)
	if fails, _ := m["failures"].(map[string]any); r.Status != http.StatusOK || len(fails) != 0 ||
		dlCurveOf(dlQueryKeys(alice, bob.UserID)[bob.DeviceID], bob.DeviceID) != dlCurve("fed-two") {
		t.Fatalf("keys/query of a cached user with hs2 away: %d %s", r.Status, r.Body)
	}
	p.n.Heal()

	// A join over federation: alice sees carol; carol (on hs2) can read
	// alice's keys.
	aliceKeys := dlNewKeys(t, alice)
	aliceKeys.upload(dlCurve("alice"), 0, false)
	carol := testutil.NewClient(t, p.hs2.URL).Register("carol", "carol-password")
	carolSince := dlSync(carol, "").NextBatch
	carol.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", p.roomID), map[string]any{}, http.StatusOK)
	dlWaitChanged(t, alice, aliceSince, "changed", carol.UserID)
	s := dlWaitChanged(t, carol, carolSince, "changed", alice.UserID)
	if !slices.Contains(s.changed(), bob.UserID) || !slices.Contains(s.changed(), carol.UserID) {
		t.Fatalf("carol's changed after joining = %v", s.changed())
	}
	if got := dlCurveOf(dlQueryKeys(carol, alice.UserID)[alice.DeviceID], alice.DeviceID); got != dlCurve("alice") {
		t.Fatalf("carol reads alice's key %q", got)
	}
}

// TestDeviceListsSentOnJoinOverFederation: a local user joining a room of
// another server tells it about their devices, keys or not.
func TestDeviceListsSentOnJoinOverFederation(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(bob, map[string]any{"preset": "public_chat"})
	bobSince := dlSync(bob, "").NextBatch
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs2.test", roomID), map[string]any{}, http.StatusOK)
	joined := dlWaitChanged(t, bob, bobSince, "changed", alice.UserID)
	// ...once: the device list update that follows the join (hs2 had no
	// list of alice's) does not list her again (Complement's
	// TestDeviceListsUpdateOverFederation wants exactly the users that
	// changed).
	tok := joined.NextBatch
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		s := dlSync(bob, tok)
		if slices.Contains(s.changed(), alice.UserID) {
			t.Fatalf("alice is in bob's device_lists.changed again after her join: %+v", s.DeviceLists)
		}
		tok = s.NextBatch
	}
	// hs2 learnt of alice's device from the join's device list update
	// (it has no keys, so it is absent from /keys/query but the list is
	// tracked): her first keys then reach bob as a change that follows.
	since := dlSync(bob, "").NextBatch
	dlNewKeys(t, alice).upload(dlCurve("joined"), 0, false)
	dlWaitChanged(t, bob, since, "changed", alice.UserID)
	fedTEventually(t, "bob reads alice's keys", func() string {
		if got := dlCurveOf(dlQueryKeys(bob, alice.UserID)[alice.DeviceID], alice.DeviceID); got != dlCurve("joined") {
			return "curve25519 key " + got
		}
		return ""
	})
}

// TestDeviceListsRemoteUserNotCachedYet: alice joins a room of barry's
// server; hs1 has no list of barry's yet (nobody told it: barry did not
// join anything). barry's next key change, which follows his earlier ones,
// reaches alice's device_lists.changed, and /keys/query gives the new keys
// (Complement's TestDeviceListUpdates barrier).
func TestDeviceListsRemoteUserNotCachedYet(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	barry := testutil.NewClient(t, hs2.URL).Register("barry", "barry-password")
	keys := dlNewKeys(t, barry)
	keys.upload(dlCurve("before"), 0, false)
	roomID := roomTCreate(barry, map[string]any{"preset": "public_chat"})
	since := dlSync(alice, "").NextBatch
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs2.test", roomID), map[string]any{}, http.StatusOK)
	since = dlWaitChanged(t, alice, since, "changed", barry.UserID).NextBatch
	keys.upload(dlCurve("after"), 0, false)
	dlWaitChanged(t, alice, since, "changed", barry.UserID)
	fedTEventually(t, "alice reads barry's new keys", func() string {
		if got := dlCurveOf(dlQueryKeys(alice, barry.UserID)[barry.DeviceID], barry.DeviceID); got != dlCurve("after") {
			return "curve25519 key " + got
		}
		return ""
	})
}

// TestDeviceListsFirstKeysAfterRemoteJoin: bob (hs2) joins alice's room
// on hs1; alice's first keys, a change that follows nothing of a user hs2
// has no list of, reach bob's device_lists.changed (Complement's
// TestFederationKeyUploadQuery), unlike the restatement of a join.
func TestDeviceListsFirstKeysAfterRemoteJoin(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "alice-password")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "bob-password")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	since := dlSync(bob, "").NextBatch
	bob.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", roomID), map[string]any{}, http.StatusOK)
	since = dlWaitChanged(t, bob, since, "changed", alice.UserID).NextBatch
	dlNewKeys(t, alice).upload(dlCurve("first"), 0, false)
	dlWaitChanged(t, bob, since, "changed", alice.UserID)
	fedTEventually(t, "bob reads alice's keys", func() string {
		if got := dlCurveOf(dlQueryKeys(bob, alice.UserID)[alice.DeviceID], alice.DeviceID); got != dlCurve("first") {
			return "curve25519 key " + got
		}
		return ""
	})
}
