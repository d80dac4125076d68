package userapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/pushrules"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
	"github.com/myelin-chat/myelin/userapi/api"
)

// outputLog records what the user API announces on UserOutput.
type outputLog struct {
	mu   sync.Mutex
	msgs []*bus.Msg
}

func watchOutput(t *testing.T, b *bus.Bus) *outputLog {
	t.Helper()
	l := &outputLog{}
	stop, err := b.Consume(context.Background(), bus.ConsumerSpec{Stream: api.UserOutputStream.Name, Durable: "pushtest"}, func(_ context.Context, m *bus.Msg) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.msgs = append(l.msgs, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return l
}

// waitFor polls until cond holds on the messages of subject seen so far.
func (l *outputLog) waitFor(t *testing.T, subject, what string, cond func(data [][]byte) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		var data [][]byte
		for _, m := range l.msgs {
			if m.Subject == subject {
				data = append(data, m.Data)
			}
		}
		l.mu.Unlock()
		if cond(data) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; got %d %s messages", what, len(data), subject)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pushersUpdated waits for a PushersUpdate of each user.
func (l *outputLog) pushersUpdated(t *testing.T, userIDs ...string) {
	t.Helper()
	l.waitFor(t, api.SubjectPushers, fmt.Sprintf("pushers updates of %v", userIDs), func(data [][]byte) bool {
		seen := map[string]bool{}
		for _, d := range data {
			var u api.PushersUpdate
			if json.Unmarshal(d, &u) == nil && u.V == 1 {
				seen[u.UserID] = true
			}
		}
		for _, id := range userIDs {
			if !seen[id] {
				return false
			}
		}
		return true
	})
}

// lastAccountData returns the content of the last announcement of a
// user's global account data type (nil when there was none yet).
func (l *outputLog) lastAccountData(userID, typ string) json.RawMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last json.RawMessage
	for _, m := range l.msgs {
		var u api.AccountDataUpdate
		if m.Subject == api.SubjectAccountData && json.Unmarshal(m.Data, &u) == nil && u.UserID == userID && u.RoomID == "" && u.Type == typ {
			last = u.Content
		}
	}
	return last
}

func ruleIDs(rules []pushrules.Rule) []string {
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.RuleID)
	}
	return ids
}

// The stored rules survive, edits are announced as m.push_rules with the
// whole effective ruleset, and concurrent edits lose nothing.
func TestPushRulesStoredAndAnnounced(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, b := newTestAPI(t, db)
		out := watchOutput(t, b)
		const alice = "@alice:test.org"

		rs, err := u.QueryPushRules(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		defaults := pushrules.Defaults(alice)
		if !slices.Equal(ruleIDs(rs.Override), ruleIDs(defaults.Override)) || !slices.Equal(ruleIDs(rs.Underride), ruleIDs(defaults.Underride)) {
			t.Fatalf("a new user's rules are not the defaults:\n%v\n%v", ruleIDs(rs.Override), ruleIDs(defaults.Override))
		}
		if rs.Room == nil || rs.Sender == nil || rs.Content == nil {
			t.Fatalf("empty kinds must be empty lists: %+v", rs)
		}

		room := "!r:test.org"
		if err := u.PutPushRule(ctx, alice, pushrules.KindRoom, room, json.RawMessage(`{"actions":["dont_notify"]}`), "", ""); err != nil {
			t.Fatal(err)
		}
		if err := u.SetPushRuleEnabled(ctx, alice, pushrules.KindOverride, ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		rs, _ = u.QueryPushRules(ctx, alice)
		if !slices.Equal(ruleIDs(rs.Room), []string{room}) || !rs.Override[0].Enabled || rs.Override[0].RuleID != ".m.rule.master" {
			t.Fatalf("after the edits: room %v, first override %+v", ruleIDs(rs.Room), rs.Override[0])
		}

		// The announcement is the effective ruleset, as GET
		// /user/{userId}/account_data/m.push_rules shows it.
		stored, err := u.QueryAccountData(ctx, alice, "", PushRulesType)
		if err != nil {
			t.Fatal(err)
		}
		var content struct {
			Global pushrules.Ruleset `json:"global"`
		}
		if err := json.Unmarshal(stored, &content); err != nil || !slices.Equal(ruleIDs(content.Global.Room), []string{room}) {
			t.Fatalf("m.push_rules account data = %s (%v)", stored, err)
		}
		out.waitFor(t, api.SubjectAccountData, "the m.push_rules announcement", func([][]byte) bool {
			return string(out.lastAccountData(alice, PushRulesType)) == string(stored)
		})

		// Refused edits change nothing and are the engine's errors.
		err = u.DeletePushRule(ctx, alice, pushrules.KindRoom, "!unknown:test.org")
		if !errors.Is(err, pushrules.ErrNotFound) {
			t.Fatalf("deleting an unknown rule: %v", err)
		}
		err = u.PutPushRule(ctx, alice, pushrules.KindOverride, "bad", json.RawMessage(`{"actions":["notify"],"conditions":[{"kind":"event_match"}]}`), "", "")
		if err == nil || !(errors.Is(err, pushrules.ErrInvalid) || errors.Is(err, pushrules.ErrBadJSON)) {
			t.Fatalf("an invalid rule: %v", err)
		}

		// Concurrent edits of one user's rules all land, and the last
		// announcement is the final state.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- u.PutPushRule(ctx, alice, pushrules.KindSender, fmt.Sprintf("@user%02d:test.org", i), json.RawMessage(`{"actions":[]}`), "", "")
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		rs, _ = u.QueryPushRules(ctx, alice)
		if len(rs.Sender) != 20 || len(rs.Room) != 1 {
			t.Fatalf("after concurrent edits: %d sender rules, %d room rules", len(rs.Sender), len(rs.Room))
		}
		final, _ := u.QueryAccountData(ctx, alice, "", PushRulesType)
		out.waitFor(t, api.SubjectAccountData, "the final ruleset announced last", func([][]byte) bool {
			return string(out.lastAccountData(alice, PushRulesType)) == string(final)
		})

		// Other users are untouched.
		if rs, _ := u.QueryPushRules(ctx, "@bob:test.org"); len(rs.Room) != 0 || len(rs.Sender) != 0 {
			t.Fatalf("bob has alice's rules: %+v", rs)
		}
	})
}

// A room upgrade copies the room's rules; without rules nothing is
// written or announced.
func TestCopyRoomPushRules(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, b := newTestAPI(t, db)
		out := watchOutput(t, b)
		const alice, bob = "@alice:test.org", "@bob:test.org"
		oldRoom, newRoom := "!old:test.org", "!new:test.org"
		if err := u.PutPushRule(ctx, alice, pushrules.KindRoom, oldRoom, json.RawMessage(`{"actions":["dont_notify"]}`), "", ""); err != nil {
			t.Fatal(err)
		}
		if err := u.CopyRoomPushRules(ctx, alice, oldRoom, newRoom); err != nil {
			t.Fatal(err)
		}
		rs, _ := u.QueryPushRules(ctx, alice)
		if ids := ruleIDs(rs.Room); !slices.Contains(ids, oldRoom) || !slices.Contains(ids, newRoom) {
			t.Fatalf("room rules after the copy: %v", ids)
		}
		for _, r := range rs.Room {
			if r.RuleID == newRoom && (len(r.Actions) != 1 || string(r.Actions[0]) != `"dont_notify"`) {
				t.Fatalf("copied rule %+v", r)
			}
		}
		if err := u.CopyRoomPushRules(ctx, bob, oldRoom, newRoom); err != nil {
			t.Fatal(err)
		}
		// A marker after bob's copy: once it is seen, any announcement
		// of bob's rules would have been too.
		if err := u.PutAccountData(ctx, bob, "", "com.example.marker", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
		out.waitFor(t, api.SubjectAccountData, "the marker", func([][]byte) bool { return out.lastAccountData(bob, "com.example.marker") != nil })
		if c := out.lastAccountData(bob, PushRulesType); c != nil {
			t.Fatalf("a copy without rules was announced: %s", c)
		}
	})
}

// Pushers: replace keeps the creating device, other users' pushers with
// the same key go unless appended, deletion of unknown pushers is fine,
// and every change is announced for each user concerned.
func TestPushers(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, b := newTestAPI(t, db)
		out := watchOutput(t, b)
		const alice, bob, carol = "@alice:test.org", "@bob:test.org", "@carol:test.org"
		pusher := func(user, device, key, name string) api.Pusher {
			return api.Pusher{UserID: user, DeviceID: device, Kind: "http", AppID: "com.example.app", AppDisplayName: name,
				DeviceDisplayName: "phone", Lang: "en", PushKey: key, Data: json.RawMessage(`{"url":"https://push.example/_matrix/push/v1/notify"}`)}
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(u.SetPusher(ctx, pusher(alice, "A1", "k1", "App"), false))
		must(u.SetPusher(ctx, pusher(alice, "A1", "k2", "App"), false))
		// Another device of alice edits k1: the pusher stays A1's.
		must(u.SetPusher(ctx, pusher(alice, "A2", "k1", "App renamed"), false))
		got, err := u.QueryPushers(ctx, []string{alice, bob})
		must(err)
		if len(got[alice]) != 2 || got[bob] != nil {
			t.Fatalf("pushers %+v", got)
		}
		k1 := got[alice][0]
		if k1.PushKey != "k1" || k1.DeviceID != "A1" || k1.AppDisplayName != "App renamed" || k1.CreatedTS == 0 || k1.Kind != "http" ||
			string(k1.Data) != `{"url":"https://push.example/_matrix/push/v1/notify"}` {
			t.Fatalf("replaced pusher %+v", k1)
		}

		// Appending keeps alice's k1; setting without append removes the
		// pushers of k1 of everyone else.
		must(u.SetPusher(ctx, pusher(bob, "B1", "k1", "App"), true))
		must(u.SetPusher(ctx, pusher(carol, "C1", "k1", "App"), true))
		got, _ = u.QueryPushers(ctx, []string{alice, bob, carol})
		if len(got[alice]) != 2 || len(got[bob]) != 1 || len(got[carol]) != 1 {
			t.Fatalf("after appends: %+v", got)
		}
		must(u.SetPusher(ctx, pusher(bob, "B1", "k1", "App"), false))
		got, _ = u.QueryPushers(ctx, []string{alice, bob, carol})
		if len(got[alice]) != 1 || got[alice][0].PushKey != "k2" || len(got[bob]) != 1 || got[carol] != nil {
			t.Fatalf("after a non-append set: %+v", got)
		}
		out.pushersUpdated(t, alice, bob, carol)

		must(u.DeletePusher(ctx, bob, "com.example.app", "k1"))
		must(u.DeletePusher(ctx, bob, "com.example.app", "unknown"))
		if got, _ := u.QueryPushers(ctx, []string{bob}); len(got) != 0 {
			t.Fatalf("bob's pushers after delete: %+v", got)
		}
		if got, _ := u.QueryPushers(ctx, nil); len(got) != 0 {
			t.Fatalf("no users: %+v", got)
		}
		if err := u.SetPusher(ctx, api.Pusher{UserID: alice, Kind: "http"}, false); err == nil {
			t.Fatal("a pusher without app ID and push key was accepted")
		}
	})
}

// Deleting a device deletes its pushers and its local notification
// settings, whichever way the device goes.
func TestDeviceDeletionTakesPushers(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u, b := newTestAPI(t, db)
		out := watchOutput(t, b)
		const user = "@dora:test.org"
		if _, err := u.CreateAccount(ctx, api.CreateAccount{Localpart: "dora", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		login := func(device string) {
			t.Helper()
			if _, err := u.Login(ctx, api.NewSession{UserID: user, DeviceID: device}); err != nil {
				t.Fatal(err)
			}
			p := api.Pusher{UserID: user, DeviceID: device, Kind: "http", AppID: "app", PushKey: "key-" + device, Lang: "en",
				Data: json.RawMessage(`{"url":"https://push.example/_matrix/push/v1/notify"}`)}
			if err := u.SetPusher(ctx, p, false); err != nil {
				t.Fatal(err)
			}
			for _, typ := range []string{"org.matrix.msc3890.local_notification_settings." + device, "m.local_notification_settings." + device} {
				if err := u.PutAccountData(ctx, user, "", typ, json.RawMessage(`{"is_silenced":true}`)); err != nil {
					t.Fatal(err)
				}
			}
		}
		pushKeys := func() []string {
			t.Helper()
			got, err := u.QueryPushers(ctx, []string{user})
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, p := range got[user] {
				keys = append(keys, p.PushKey)
			}
			slices.Sort(keys)
			return keys
		}
		settingsGone := func(device string) {
			t.Helper()
			for _, typ := range []string{"org.matrix.msc3890.local_notification_settings." + device, "m.local_notification_settings." + device} {
				if _, err := u.QueryAccountData(ctx, user, "", typ); !errors.Is(err, api.ErrNotFound) {
					t.Fatalf("%s after the device went: %v", typ, err)
				}
				out.waitFor(t, api.SubjectAccountData, "the deletion of "+typ, func([][]byte) bool {
					return string(out.lastAccountData(user, typ)) == `{}`
				})
			}
		}
		for _, d := range []string{"D1", "D2", "D3", "D4", "D5"} {
			login(d)
		}
		if err := u.PutAccountData(ctx, user, "", "com.example.keep", json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}

		if err := u.DeleteDevices(ctx, user, []string{"D1", "nope"}); err != nil {
			t.Fatal(err)
		}
		if k := pushKeys(); !slices.Equal(k, []string{"key-D2", "key-D3", "key-D4", "key-D5"}) {
			t.Fatalf("after deleting D1: %v", k)
		}
		settingsGone("D1")
		if _, err := u.QueryAccountData(ctx, user, "", "org.matrix.msc3890.local_notification_settings.D2"); err != nil {
			t.Fatalf("D2's settings went with D1: %v", err)
		}

		// A password change that logs out the other devices keeps the
		// pushers of the device that changed it.
		if err := u.SetPassword(ctx, user, "pw2", false, "D2"); err != nil {
			t.Fatal(err)
		}
		if k := pushKeys(); len(k) != 4 {
			t.Fatalf("a password change without logout took pushers: %v", k)
		}
		if err := u.SetPassword(ctx, user, "pw3", true, "D2"); err != nil {
			t.Fatal(err)
		}
		if k := pushKeys(); !slices.Equal(k, []string{"key-D2"}) {
			t.Fatalf("after the password change: %v", k)
		}
		settingsGone("D3")
		settingsGone("D5")

		login("D6")
		if err := u.DeleteAllDevices(ctx, user, "D6"); err != nil {
			t.Fatal(err)
		}
		if k := pushKeys(); !slices.Equal(k, []string{"key-D6"}) {
			t.Fatalf("after deleting all but D6: %v", k)
		}
		settingsGone("D2")

		// Deactivation takes every pusher, even one of no device.
		if err := u.SetPusher(ctx, api.Pusher{UserID: user, Kind: "http", AppID: "app", PushKey: "orphan", Data: json.RawMessage(`{}`)}, true); err != nil {
			t.Fatal(err)
		}
		if err := u.Deactivate(ctx, user, false); err != nil {
			t.Fatal(err)
		}
		if k := pushKeys(); len(k) != 0 {
			t.Fatalf("after deactivation: %v", k)
		}
		settingsGone("D6")
		if _, err := u.QueryAccountData(ctx, user, "", "com.example.keep"); err != nil {
			t.Fatalf("other account data went with the devices: %v", err)
		}
		out.pushersUpdated(t, user)
	})
}
