package tests

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// pushRulePath is /pushrules/global/ followed by the escaped segments
// (kind, rule ID, attribute).
func pushRulePath(segments ...string) string {
	p := "/_matrix/client/v3/pushrules/global/"
	for i, s := range segments {
		if i > 0 {
			p += "/"
		}
		p += testutil.Path("%s", s)
	}
	return p
}

// pushRuleIDs lists the rule IDs of one kind of GET /pushrules/global/.
func pushRuleIDs(c *testutil.Client, kind string) []string {
	c.T.Helper()
	list, ok := c.MustDo("GET", pushRulePath(), nil, http.StatusOK)[kind].([]any)
	if !ok {
		c.T.Fatalf("no %s list in the ruleset", kind)
	}
	var ids []string
	for _, r := range list {
		ids = append(ids, r.(map[string]any)["rule_id"].(string))
	}
	return ids
}

// inOrder reports whether want appear in ids in this order.
func inOrder(ids, want []string) bool {
	i := 0
	for _, id := range ids {
		if i < len(want) && id == want[i] {
			i++
		}
	}
	return i == len(want)
}

var (
	defaultOverrideRules = []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
		".m.rule.suppress_edits"}
	defaultUnderrideRules = []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.message", ".m.rule.encrypted"}
)

func TestPushRulesDefaults(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")

	all := alice.MustDo("GET", "/_matrix/client/v3/pushrules/", nil, http.StatusOK)
	global, _ := all["global"].(map[string]any)
	for _, kind := range []string{"override", "content", "room", "sender", "underride"} {
		if _, ok := global[kind].([]any); !ok {
			t.Fatalf("ruleset without a %s list: %v", kind, global)
		}
	}
	// The variants without the trailing slash, and the account data.
	for _, p := range []string{"/_matrix/client/v3/pushrules", "/_matrix/client/r0/pushrules/"} {
		if m := alice.MustDo("GET", p, nil, http.StatusOK); !sameJSON(t, m, all) {
			t.Fatalf("GET %s differs from GET /pushrules/", p)
		}
	}
	for _, p := range []string{pushRulePath(), "/_matrix/client/v3/pushrules/global"} {
		if m := alice.MustDo("GET", p, nil, http.StatusOK); !sameJSON(t, m, global) {
			t.Fatalf("GET %s differs from the global ruleset", p)
		}
	}
	if m := alice.MustDo("GET", accountDataPath(alice.UserID, "m.push_rules"), nil, http.StatusOK); !sameJSON(t, m, all) {
		t.Fatalf("m.push_rules account data differs from GET /pushrules/: %v", m)
	}

	// The server-default rules in the spec's order: .m.rule.master first.
	if ids := pushRuleIDs(alice, "override"); !inOrder(ids, defaultOverrideRules) || ids[0] != ".m.rule.master" {
		t.Fatalf("default override rules %v", ids)
	}
	if ids := pushRuleIDs(alice, "underride"); !inOrder(ids, defaultUnderrideRules) {
		t.Fatalf("default underride rules %v", ids)
	}
	for _, kind := range []string{"override", "underride"} {
		for _, r := range alice.MustDo("GET", pushRulePath(), nil, http.StatusOK)[kind].([]any) {
			rule := r.(map[string]any)
			id := rule["rule_id"].(string)
			if !strings.HasPrefix(id, ".") || rule["default"] != true {
				t.Errorf("rule %s: not a server default: %v", id, rule)
			}
			if _, ok := rule["enabled"].(bool); !ok {
				t.Errorf("rule %s without enabled: %v", id, rule)
			}
			if _, ok := rule["actions"].([]any); !ok {
				t.Errorf("rule %s without actions: %v", id, rule)
			}
			if _, ok := rule["conditions"].([]any); !ok {
				t.Errorf("rule %s without conditions: %v", id, rule)
			}
		}
	}
	master := alice.MustDo("GET", pushRulePath("override", ".m.rule.master"), nil, http.StatusOK)
	if master["rule_id"] != ".m.rule.master" || master["enabled"] != false || master["default"] != true {
		t.Fatalf(".m.rule.master = %v", master)
	}
	// Synapse's listing of one kind.
	list := alice.Do("GET", pushRulePath("underride")+"/", nil)
	var rules []map[string]any
	list.Decode(t, &rules)
	if list.Status != http.StatusOK || len(rules) != len(global["underride"].([]any)) {
		t.Fatalf("GET /pushrules/global/underride/: %d %s", list.Status, list.Body)
	}
}

func TestPushRulesPutGetDelete(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	server := srv.Config.ServerName
	room, user := "!room:"+server, "@bob:"+server
	rules := []struct {
		kind, id string
		body     map[string]any
	}{
		{"override", "com.example.override", map[string]any{"actions": []any{"notify"},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "type", "pattern": "m.room.message"}}}},
		{"content", "com.example.content", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}, "pattern": "cake*"}},
		{"room", room, map[string]any{"actions": []any{"dont_notify"}}},
		{"sender", user, map[string]any{"actions": []any{}}},
		{"underride", "com.example.underride", map[string]any{"actions": []any{"notify"},
			"conditions": []any{map[string]any{"kind": "room_member_count", "is": "2"}}}},
	}
	for _, r := range rules {
		alice.MustDo("PUT", pushRulePath(r.kind, r.id), r.body, http.StatusOK)
		got := alice.MustDo("GET", pushRulePath(r.kind, r.id), nil, http.StatusOK)
		if got["rule_id"] != r.id || got["default"] != false || got["enabled"] != true || !sameJSON(t, got["actions"], r.body["actions"]) {
			t.Fatalf("%s rule %s = %v", r.kind, r.id, got)
		}
		if r.kind == "content" && got["pattern"] != "cake*" {
			t.Fatalf("content rule without its pattern: %v", got)
		}
		if (r.kind == "override" || r.kind == "underride") && !sameJSON(t, got["conditions"], r.body["conditions"]) {
			t.Fatalf("%s rule conditions %v", r.kind, got["conditions"])
		}
		if ids := pushRuleIDs(alice, r.kind); !slices.Contains(ids, r.id) {
			t.Fatalf("%s rule %s not in the ruleset: %v", r.kind, r.id, ids)
		}
	}
	// Putting the same rule again replaces it.
	alice.MustDo("PUT", pushRulePath("room", room), map[string]any{"actions": []any{"notify"}}, http.StatusOK)
	if ids := pushRuleIDs(alice, "room"); !slices.Equal(ids, []string{room}) {
		t.Fatalf("room rules after a second PUT: %v", ids)
	}
	if a := alice.MustDo("GET", pushRulePath("room", room, "actions"), nil, http.StatusOK); !sameJSON(t, a, map[string]any{"actions": []any{"notify"}}) {
		t.Fatalf("replaced actions %v", a)
	}

	// Rule IDs that are room and user IDs, with every character escaped.
	escaped := "/_matrix/client/v3/pushrules/global/room/" + strings.NewReplacer("!", "%21", ":", "%3A", ".", "%2E").Replace(room)
	if got := alice.MustDo("GET", escaped, nil, http.StatusOK); got["rule_id"] != room {
		t.Fatalf("escaped room rule %v", got)
	}
	alias := "#alias:" + server
	alice.MustDo("PUT", pushRulePath("content", alias), map[string]any{"actions": []any{"notify"}, "pattern": "x"}, http.StatusOK)
	if got := alice.MustDo("GET", "/_matrix/client/v3/pushrules/global/content/%23alias%3A"+server, nil, http.StatusOK); got["rule_id"] != alias {
		t.Fatalf("rule with a # in its ID: %v", got)
	}
	escapedUser := "/_matrix/client/v3/pushrules/global/sender/" + strings.NewReplacer("@", "%40", ":", "%3A").Replace(user)
	alice.MustDo("DELETE", escapedUser, nil, http.StatusOK)
	alice.MustFail("GET", pushRulePath("sender", user), nil, http.StatusNotFound, "M_NOT_FOUND")

	for _, r := range rules[:3] {
		alice.MustDo("DELETE", pushRulePath(r.kind, r.id), nil, http.StatusOK)
		alice.MustFail("GET", pushRulePath(r.kind, r.id), nil, http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("DELETE", pushRulePath(r.kind, r.id), nil, http.StatusNotFound, "M_NOT_FOUND")
	}
	// Rules are per user.
	bob := srv.Client().Register("bob", "pw")
	bob.MustFail("GET", pushRulePath("underride", "com.example.underride"), nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("DELETE", pushRulePath("underride", "com.example.underride"), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("GET", pushRulePath("underride", "com.example.underride"), nil, http.StatusOK)
}

// New rules go first unless before or after place them; .m.rule.master
// stays ahead of the user's override rules.
func TestPushRulesOrdering(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	put := func(id, query string) {
		t.Helper()
		alice.MustDo("PUT", pushRulePath("override", id)+query, map[string]any{"actions": []any{"notify"},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": id}}}, http.StatusOK)
	}
	put("a", "")
	put("b", "")
	put("c", "?after=a")
	put("d", "?before=b")
	put("e", "?after=b")
	ids := pushRuleIDs(alice, "override")
	if ids[0] != ".m.rule.master" || !slices.Equal(ids[1:6], []string{"d", "b", "e", "a", "c"}) || !inOrder(ids, defaultOverrideRules) {
		t.Fatalf("override rules %v", ids)
	}
	// Content rules keep their own order.
	for _, id := range []string{"x", "y"} {
		alice.MustDo("PUT", pushRulePath("content", id), map[string]any{"actions": []any{"notify"}, "pattern": id}, http.StatusOK)
	}
	if ids := pushRuleIDs(alice, "content"); len(ids) < 2 || !slices.Equal(ids[:2], []string{"y", "x"}) {
		t.Fatalf("content rules %v", ids)
	}
	alice.MustDo("PUT", pushRulePath("content", "z")+"?after=x", map[string]any{"actions": []any{"notify"}, "pattern": "z"}, http.StatusOK)
	if ids := pushRuleIDs(alice, "content"); len(ids) < 3 || !slices.Equal(ids[:3], []string{"y", "x", "z"}) {
		t.Fatalf("content rules %v", ids)
	}
	// before/after name a rule of the same kind.
	r := alice.Do("PUT", pushRulePath("override", "f")+"?before=nope", map[string]any{"actions": []any{"notify"}, "conditions": []any{}})
	if r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
		t.Fatalf("before an unknown rule: %d %s", r.Status, r.Body)
	}
	if ids := pushRuleIDs(alice, "override"); slices.Contains(ids, "f") {
		t.Fatalf("a refused rule was added: %v", ids)
	}
}

func TestPushRulesEnabledAndActions(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	alice.MustDo("PUT", pushRulePath("override", "mine"), map[string]any{"actions": []any{"notify"}, "conditions": []any{}}, http.StatusOK)
	for _, rule := range [][2]string{{"override", ".m.rule.master"}, {"underride", ".m.rule.message"}, {"override", "mine"}} {
		kind, id := rule[0], rule[1]
		enabled := pushRulePath(kind, id, "enabled")
		actions := pushRulePath(kind, id, "actions")
		for _, v := range []bool{false, true, false} {
			alice.MustDo("PUT", enabled, map[string]any{"enabled": v}, http.StatusOK)
			if m := alice.MustDo("GET", enabled, nil, http.StatusOK); m["enabled"] != v {
				t.Fatalf("%s enabled = %v, want %v", id, m, v)
			}
			if m := alice.MustDo("GET", pushRulePath(kind, id), nil, http.StatusOK); m["enabled"] != v {
				t.Fatalf("%s rule %v, want enabled %v", id, m, v)
			}
		}
		// The bare boolean of older clients.
		alice.MustDo("PUT", enabled, testutil.Raw(`true`), http.StatusOK)
		if m := alice.MustDo("GET", enabled, nil, http.StatusOK); m["enabled"] != true {
			t.Fatalf("%s after a bare true: %v", id, m)
		}
		want := []any{"notify", map[string]any{"set_tweak": "sound", "value": "default"}, map[string]any{"set_tweak": "highlight", "value": false}}
		alice.MustDo("PUT", actions, map[string]any{"actions": want}, http.StatusOK)
		if m := alice.MustDo("GET", actions, nil, http.StatusOK); !sameJSON(t, m, map[string]any{"actions": want}) {
			t.Fatalf("%s actions = %v", id, m)
		}
		if m := alice.MustDo("GET", pushRulePath(kind, id), nil, http.StatusOK); !sameJSON(t, m["actions"], want) {
			t.Fatalf("%s rule %v, want actions %v", id, m, want)
		}

		alice.MustFail("PUT", enabled, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		alice.MustFail("PUT", enabled, map[string]any{"enabled": "yes"}, http.StatusBadRequest, "M_BAD_JSON")
		alice.MustFail("PUT", enabled, map[string]any{"enabled": nil}, http.StatusBadRequest, "M_BAD_JSON")
		alice.MustFail("PUT", enabled, testutil.Raw(`{"enabled":`), http.StatusBadRequest, "M_NOT_JSON")
		alice.MustFail("PUT", actions, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		alice.MustFail("PUT", actions, map[string]any{"actions": "notify"}, http.StatusBadRequest, "M_BAD_JSON")
		alice.MustFail("PUT", actions, testutil.Raw(`["notify"]`), http.StatusBadRequest, "M_BAD_JSON")
		if r := alice.Do("PUT", actions, map[string]any{"actions": []any{"explode"}}); r.Status != http.StatusBadRequest {
			t.Fatalf("an unknown action: %d %s", r.Status, r.Body)
		}
		if m := alice.MustDo("GET", actions, nil, http.StatusOK); !sameJSON(t, m, map[string]any{"actions": want}) {
			t.Fatalf("%s actions after refused changes = %v", id, m)
		}
	}
	for _, rule := range [][2]string{{"override", ".m.rule.nope"}, {"override", "unknown"}, {"room", "!nope:x"}, {"nokind", "mine"}} {
		for _, attr := range []string{"enabled", "actions"} {
			p := pushRulePath(rule[0], rule[1], attr)
			alice.MustFail("PUT", p, map[string]any{"enabled": true, "actions": []any{"notify"}}, http.StatusNotFound, "M_NOT_FOUND")
			if rule[0] != "nokind" {
				alice.MustFail("GET", p, nil, http.StatusNotFound, "M_NOT_FOUND")
			}
		}
	}
}

func TestPushRulesErrors(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	ok := map[string]any{"actions": []any{"notify"}, "conditions": []any{}}
	fail := func(method, path string, body any, status int, errcode string) {
		t.Helper()
		alice.MustFail(method, path, body, status, errcode)
	}

	// Scopes other than global, and unknown kinds, as Synapse.
	for _, p := range []string{"/_matrix/client/v3/pushrules/device/", "/_matrix/client/v3/pushrules/device/override/x",
		"/_matrix/client/v3/pushrules/device/override/x/enabled"} {
		fail("GET", p, nil, http.StatusBadRequest, "M_UNRECOGNIZED")
	}
	fail("PUT", "/_matrix/client/v3/pushrules/device/override/x", ok, http.StatusBadRequest, "M_UNRECOGNIZED")
	fail("DELETE", "/_matrix/client/v3/pushrules/device/override/x", nil, http.StatusBadRequest, "M_UNRECOGNIZED")
	// A rule of an unknown kind does not exist (clients probe for MSC4306's
	// postcontent rules and expect a 404 when the server has none).
	fail("GET", pushRulePath("nokind", "x"), nil, http.StatusNotFound, "M_NOT_FOUND")
	fail("GET", pushRulePath("postcontent", ".io.element.msc4306.rule.subscribed_thread"), nil, http.StatusNotFound, "M_NOT_FOUND")
	fail("GET", pushRulePath("nokind")+"/", nil, http.StatusBadRequest, "M_UNRECOGNIZED")
	fail("PUT", pushRulePath("nokind", "x"), ok, http.StatusBadRequest, "M_INVALID_PARAM")
	fail("DELETE", pushRulePath("nokind", "x"), nil, http.StatusNotFound, "M_NOT_FOUND")
	fail("GET", pushRulePath("override", "x", "pattern"), nil, http.StatusNotFound, "M_UNRECOGNIZED")

	// Unknown rules; server-default rules cannot be deleted or replaced.
	fail("GET", pushRulePath("override", "nope"), nil, http.StatusNotFound, "M_NOT_FOUND")
	fail("DELETE", pushRulePath("override", "nope"), nil, http.StatusNotFound, "M_NOT_FOUND")
	for _, id := range []string{".m.rule.master", ".m.rule.message"} {
		kind := "override"
		if id == ".m.rule.message" {
			kind = "underride"
		}
		if r := alice.Do("DELETE", pushRulePath(kind, id), nil); r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
			t.Fatalf("deleting %s: %d %s", id, r.Status, r.Body)
		}
		fail("PUT", pushRulePath(kind, id), ok, http.StatusBadRequest, "M_INVALID_PARAM")
		alice.MustDo("GET", pushRulePath(kind, id), nil, http.StatusOK)
	}
	fail("PUT", pushRulePath("override", ".mine"), ok, http.StatusBadRequest, "M_INVALID_PARAM")
	fail("PUT", "/_matrix/client/v3/pushrules/global/override/a%2Fb", ok, http.StatusBadRequest, "M_INVALID_PARAM")

	// Bodies the engine refuses: bad conditions, patterns and actions.
	refused := []struct {
		kind string
		body any
	}{
		{"override", map[string]any{"actions": []any{"notify"}}},
		{"override", map[string]any{"actions": []any{"notify"}, "conditions": "all"}},
		{"override", map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{"key": "type", "pattern": "x"}}}},
		{"override", map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}}},
		{"override", map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{"kind": "room_member_count", "is": "lots"}}}},
		{"override", map[string]any{"conditions": []any{}}},
		{"override", map[string]any{"actions": []any{"explode"}, "conditions": []any{}}},
		{"override", map[string]any{"actions": "notify", "conditions": []any{}}},
		{"content", map[string]any{"actions": []any{"notify"}}},
		{"content", map[string]any{"actions": []any{"notify"}, "pattern": 42}},
		{"room", map[string]any{"actions": []any{map[string]any{"no_tweak": 1}}}},
	}
	for i, r := range refused {
		id := "refused"
		if r.kind == "room" {
			id = "!refused:" + srv.Config.ServerName
		}
		resp := alice.Do("PUT", pushRulePath(r.kind, id), r.body)
		m := resp.JSON(t)
		if resp.Status != http.StatusBadRequest || (m["errcode"] != "M_INVALID_PARAM" && m["errcode"] != "M_BAD_JSON") {
			t.Errorf("refused body %d (%v): %d %s", i, r.body, resp.Status, resp.Body)
		}
		alice.MustFail("GET", pushRulePath(r.kind, id), nil, http.StatusNotFound, "M_NOT_FOUND")
	}
	fail("PUT", pushRulePath("override", "x"), testutil.Raw(`{"actions":`), http.StatusBadRequest, "M_NOT_JSON")
	fail("PUT", pushRulePath("override", "x"), testutil.Raw(`["notify"]`), http.StatusBadRequest, "M_BAD_JSON")

	anon := srv.Client()
	anon.MustFail("GET", pushRulePath(), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.MustFail("PUT", pushRulePath("override", "x"), ok, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// A rule change reaches /sync as the m.push_rules account data, and wakes
// a waiting /sync (Complement's TestPushSync).
func TestPushRulesSync(t *testing.T) {
	srv := syncTStart(t)
	alice := srv.Client().Register("alice", "pw")
	room := "!foo:example.com"
	since := syncTInitial(alice).NextBatch
	changes := []struct {
		path string
		body map[string]any
		ok   func(rule map[string]any) bool
	}{
		{pushRulePath("room", room), map[string]any{"actions": []any{"notify"}}, func(r map[string]any) bool { return r != nil }},
		{pushRulePath("room", room, "enabled"), map[string]any{"enabled": false}, func(r map[string]any) bool { return r["enabled"] == false }},
		{pushRulePath("room", room, "enabled"), map[string]any{"enabled": true}, func(r map[string]any) bool { return r["enabled"] == true }},
		{pushRulePath("room", room, "actions"), map[string]any{"actions": []any{"dont_notify"}},
			func(r map[string]any) bool { return sameJSON(t, r["actions"], []any{"dont_notify"}) }},
	}
	for _, ch := range changes {
		done := make(chan *syncTResponse, 1)
		go func() {
			r := alice.Do("GET", "/_matrix/client/v3/sync?"+syncTQuery("since", since, "timeout", "10000"), nil)
			if r.Status != http.StatusOK {
				done <- nil
				return
			}
			done <- syncTDecode(t, r)
		}()
		time.Sleep(300 * time.Millisecond) // let the sync start waiting: it must be woken, not answered at once
		start := time.Now()
		alice.MustDo("PUT", ch.path, ch.body, http.StatusOK)
		var s *syncTResponse
		select {
		case s = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: /sync did not return", ch.path)
		}
		if s == nil {
			t.Fatalf("%s: /sync failed", ch.path)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Fatalf("%s: /sync returned after %v, not woken", ch.path, waited)
		}
		var rule map[string]any
		found := false
		for _, e := range syncTList(s.AccountData) {
			if e["type"] != "m.push_rules" {
				continue
			}
			found = true
			global, _ := e["content"].(map[string]any)["global"].(map[string]any)
			for _, r := range global["room"].([]any) {
				if r.(map[string]any)["rule_id"] == room {
					rule = r.(map[string]any)
				}
			}
		}
		if !found || !ch.ok(rule) {
			t.Fatalf("%s: m.push_rules in /sync: found %v, rule %v: %s", ch.path, found, rule, syncTShort(s.Body))
		}
		since = s.NextBatch
	}
}

// pushRoomRuleActions returns the actions of the user's room rule of roomID
// (nil when there is none).
func pushRoomRuleActions(c *testutil.Client, roomID string) []any {
	c.T.Helper()
	r := c.Do("GET", pushRulePath("room", roomID), nil)
	if r.Status == http.StatusNotFound {
		return nil
	}
	if r.Status != http.StatusOK {
		c.T.Fatalf("GET room rule %s: %d %s", roomID, r.Status, r.Body)
	}
	a, _ := r.JSON(c.T)["actions"].([]any)
	return a
}

// A room upgrade, by /upgrade or by hand (createRoom with a predecessor,
// then a tombstone), carries the room's push rules over for the upgrader
// and for a local user who joins the new room later (Complement's
// TestPushRuleRoomUpgrade).
func TestPushRulesRoomUpgrade(t *testing.T) {
	srv := testserver.Start(t)
	for _, manual := range []bool{false, true} {
		name := "upgrade"
		if manual {
			name = "manual"
		}
		t.Run(name, func(t *testing.T) {
			alice := membRegister(t, srv, "alice."+name)
			alice2 := membRegister(t, srv, "alice2."+name)
			carol := membRegister(t, srv, "carol."+name)
			oldRoom := membCreate(alice, map[string]any{"preset": "public_chat", "room_version": "10"})
			membJoin(alice2, oldRoom)
			membJoin(carol, oldRoom)
			for _, c := range []*testutil.Client{alice, alice2} {
				c.MustDo("PUT", pushRulePath("room", oldRoom), map[string]any{"actions": []any{"dont_notify"}}, http.StatusOK)
			}
			since := syncTInitial(alice2).NextBatch

			var newRoom string
			if manual {
				newRoom = membCreate(alice, map[string]any{"preset": "public_chat", "room_version": "11",
					"creation_content": map[string]any{"predecessor": map[string]any{"room_id": oldRoom}}})
				alice.MustDo("PUT", membStatePath(oldRoom, "m.room.tombstone", ""),
					map[string]any{"body": "This room has been replaced", "replacement_room": newRoom}, http.StatusOK)
			} else {
				newRoom = membUpgrade(alice, oldRoom, map[string]any{"new_version": "11"})
			}
			if a := pushRoomRuleActions(alice, newRoom); !sameJSON(t, a, []any{"dont_notify"}) {
				t.Fatalf("the upgrader's rule for the new room: %v", a)
			}
			if a := pushRoomRuleActions(alice, oldRoom); !sameJSON(t, a, []any{"dont_notify"}) {
				t.Fatalf("the upgrader's rule for the old room: %v", a)
			}
			if a := pushRoomRuleActions(alice2, newRoom); a != nil {
				t.Fatalf("alice2 has a rule for a room she has not joined: %v", a)
			}

			membJoin(alice2, newRoom)
			if a := pushRoomRuleActions(alice2, newRoom); !sameJSON(t, a, []any{"dont_notify"}) {
				t.Fatalf("the joiner's rule for the new room: %v", a)
			}
			// ... announced to her /sync.
			testutil.Eventually(t, 10*time.Second, "the copied rule in /sync", func() bool {
				for _, e := range syncTList(syncTSince(alice2, since).AccountData) {
					if e["type"] != "m.push_rules" {
						continue
					}
					global, _ := e["content"].(map[string]any)["global"].(map[string]any)
					for _, r := range global["room"].([]any) {
						if r.(map[string]any)["rule_id"] == newRoom {
							return true
						}
					}
				}
				return false
			})
			// A user without rules for the old room gets none.
			membJoin(carol, newRoom)
			if ids := pushRuleIDs(carol, "room"); len(ids) != 0 {
				t.Fatalf("carol's room rules: %v", ids)
			}
		})
	}
}

// Users of another server who join an upgraded room over federation get
// their rules of the old room too, whether their join goes over
// federation or, once their server is in the room, locally.
func TestPushRulesRoomUpgradeRemoteJoin(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1, hs2 := n.Start("hs1.test"), n.Start("hs2.test")
	alice := testutil.NewClient(t, hs1.URL).Register("alice", "pw")
	bob := testutil.NewClient(t, hs2.URL).Register("bob", "pw")
	bob2 := testutil.NewClient(t, hs2.URL).Register("bob2", "pw")
	oldRoom := membCreate(alice, map[string]any{"preset": "public_chat", "room_version": "10"})
	for _, c := range []*testutil.Client{bob, bob2} {
		c.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", oldRoom), map[string]any{}, http.StatusOK)
		c.MustDo("PUT", pushRulePath("room", oldRoom), map[string]any{"actions": []any{"dont_notify"}}, http.StatusOK)
	}
	fedTWaitMembers(t, alice, oldRoom, "@alice:hs1.test", "@bob:hs2.test", "@bob2:hs2.test")

	newRoom := membUpgrade(alice, oldRoom, map[string]any{"new_version": "11"})
	fedTEventually(t, "the tombstone on hs2", func() string {
		if r := bob.Do("GET", membStatePath(oldRoom, "m.room.tombstone", ""), nil); r.Status != http.StatusOK {
			return string(r.Body)
		}
		return ""
	})
	for _, c := range []*testutil.Client{bob, bob2} {
		c.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s?server_name=hs1.test", newRoom), map[string]any{}, http.StatusOK)
		if a := pushRoomRuleActions(c, newRoom); !sameJSON(t, a, []any{"dont_notify"}) {
			t.Fatalf("%s's rule for the new room: %v", c.UserID, a)
		}
	}
}
