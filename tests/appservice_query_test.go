package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// The homeserver's queries to application services (user and alias
// queries, third-party lookups, the ping), against bridges run in the test:
// mautrix-go's appservice package (its query and ping handlers, and the
// third-party handlers it lacks added to its router) and plain fake ones
// for the answers a real bridge does not give.

// asRequest is a request a bridge received.
type asRequest struct {
	Method, Path, Auth string
	Query              url.Values
	Body               string
}

// asRecorder records the requests a bridge receives.
type asRecorder struct {
	mu   sync.Mutex
	reqs []asRequest
}

func (rec *asRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, asRequest{Method: r.Method, Path: r.URL.EscapedPath(), Auth: r.Header.Get("Authorization"), Query: r.URL.Query(), Body: string(body)})
		rec.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// requests returns the recorded requests whose path starts with prefix.
func (rec *asRecorder) requests(prefix string) []asRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []asRequest
	for _, r := range rec.reqs {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// queryHandler answers mautrix's user and alias queries with functions the
// test sets once the homeserver runs.
type queryHandler struct {
	mu    sync.Mutex
	alias func(id.RoomAlias) bool
	user  func(id.UserID) bool
}

func (q *queryHandler) QueryAlias(a id.RoomAlias) bool {
	q.mu.Lock()
	f := q.alias
	q.mu.Unlock()
	return f != nil && f(a)
}

func (q *queryHandler) QueryUser(u id.UserID) bool {
	q.mu.Lock()
	f := q.user
	q.mu.Unlock()
	return f != nil && f(u)
}

// mautrixBridge is a bridge built on mautrix-go's appservice package,
// serving on 127.0.0.1.
type mautrixBridge struct {
	reg     *appservice.Registration
	as      *appservice.AppService
	queries *queryHandler
	rec     *asRecorder
	srv     *httptest.Server
}

// newMautrixBridge starts a bridge whose registration (written to dir)
// claims users @<prefix>_* and aliases #<prefix>_* (not exclusively) and
// the given protocols. The bridge checks bridgeHSToken; when it differs
// from the registration's hs_token, the bridge refuses the homeserver.
func newMautrixBridge(t *testing.T, dir, svcID, prefix, bridgeHSToken string, protocols ...string) *mautrixBridge {
	t.Helper()
	reg := appservice.CreateRegistration()
	reg.ID = svcID
	reg.SenderLocalpart = svcID + "bot"
	reg.Protocols = protocols
	reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@" + prefix + "_.*", Exclusive: false}}
	reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#" + prefix + "_.*", Exclusive: false}}
	b := &mautrixBridge{reg: reg, as: appservice.Create(), queries: &queryHandler{}, rec: &asRecorder{}}
	bridgeReg := *reg
	if bridgeHSToken != "" {
		bridgeReg.ServerToken = bridgeHSToken
	}
	b.as.Registration = &bridgeReg
	b.as.QueryHandler = b.queries
	b.srv = httptest.NewServer(b.rec.wrap(b.as.Router))
	t.Cleanup(b.srv.Close)
	reg.URL = b.srv.URL
	if err := reg.Save(filepath.Join(dir, svcID+".yaml")); err != nil {
		t.Fatal(err)
	}
	return b
}

// handleThirdParty adds a third-party endpoint to the bridge's router
// (mautrix-go has none), behind its hs_token check.
func (b *mautrixBridge) handleThirdParty(pattern string, answer func(r *http.Request) any) {
	b.as.Router.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if !b.as.CheckServerToken(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(r))
	})
}

// fakeAnswer is what a fake bridge answers on one path.
type fakeAnswer struct {
	status int
	body   string
	delay  time.Duration
}

// fakeBridge is a plain HTTP bridge answering each path as the test says
// (404 for others), for bad statuses, bad JSON and slow answers.
type fakeBridge struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer
	rec     *asRecorder
	srv     *httptest.Server
	reg     *appservice.Registration
}

func newFakeBridge(t *testing.T, dir, svcID, prefix string, protocols ...string) *fakeBridge {
	t.Helper()
	f := &fakeBridge{answers: map[string]fakeAnswer{}, rec: &asRecorder{}}
	f.srv = httptest.NewServer(f.rec.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		a, ok := f.answers[r.URL.EscapedPath()]
		f.mu.Unlock()
		if !ok {
			a = fakeAnswer{status: 404, body: `{"errcode":"M_NOT_FOUND","error":"no"}`}
		}
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	})))
	t.Cleanup(f.srv.Close)
	reg := appservice.CreateRegistration()
	reg.ID, reg.SenderLocalpart, reg.Protocols, reg.URL = svcID, svcID+"bot", protocols, f.srv.URL
	reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@" + prefix + "_.*"}}
	reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#" + prefix + "_.*"}}
	if err := reg.Save(filepath.Join(dir, svcID+".yaml")); err != nil {
		t.Fatal(err)
	}
	f.reg = reg
	return f
}

func (f *fakeBridge) answer(path string, a fakeAnswer) {
	f.mu.Lock()
	f.answers[path] = a
	f.mu.Unlock()
}

// closedURL is a loopback URL nothing listens on: a bridge that is down.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// saveRegistration writes a registration without a bridge behind it.
func saveRegistration(t *testing.T, dir, svcID, prefix, u string, protocols ...string) *appservice.Registration {
	t.Helper()
	reg := appservice.CreateRegistration()
	reg.ID, reg.SenderLocalpart, reg.Protocols, reg.URL = svcID, svcID+"bot", protocols, u
	reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@" + prefix + "_.*"}}
	reg.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#" + prefix + "_.*"}}
	if err := reg.Save(filepath.Join(dir, svcID+".yaml")); err != nil {
		t.Fatal(err)
	}
	return reg
}

// startWithRegistrations starts a server reading every registration in dir,
// with a short query timeout.
func startWithRegistrations(t *testing.T, dir string, timeout time.Duration) *testserver.Server {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.AppServiceConfigFiles = files
		c.ASQueryTimeout = config.Duration(timeout)
	}})
}

// mautrixClient is a mautrix-go client of the server with token.
func mautrixClient(t *testing.T, srv *testserver.Server, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(srv.URL, "", token)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// queryFixture is a server with five registered services, in this order
// (the registration files' names): afake, a plain fake bridge for the
// prefixes fake and shared; bridge, a mautrix-go bridge for bridge and
// shared; down, whose URL nothing listens on; nourl, without a URL; wrong,
// a mautrix-go bridge that expects another hs_token. afake, bridge, down,
// nourl and wrong all declare the protocol irc; afake also slack.
type queryFixture struct {
	srv    *testserver.Server
	fake   *fakeBridge
	bridge *mautrixBridge
	wrong  *mautrixBridge
	down   *appservice.Registration
	nourl  *appservice.Registration
	alice  *testutil.Client
}

func newQueryFixture(t *testing.T, timeout time.Duration) *queryFixture {
	t.Helper()
	dir := t.TempDir()
	f := &queryFixture{
		fake:   newFakeBridge(t, dir, "afake", "(fake|shared)", "irc", "slack"),
		bridge: newMautrixBridge(t, dir, "bridge", "(bridge|shared)", "", "irc"),
		down:   saveRegistration(t, dir, "down", "down", closedURL(t), "irc"),
		nourl:  saveRegistration(t, dir, "nourl", "nourl", "", "irc"),
		wrong:  newMautrixBridge(t, dir, "wrong", "wrong", "not-the-hs-token", "irc"),
	}
	// The bridge that refuses the homeserver's token must never get to
	// answer a query.
	f.wrong.queries.alias = func(id.RoomAlias) bool { t.Error("wrong bridge answered an alias query"); return true }
	f.wrong.queries.user = func(id.UserID) bool { t.Error("wrong bridge answered a user query"); return true }
	f.srv = startWithRegistrations(t, dir, timeout)
	f.alice = f.srv.Client().Register("alice", "pw")
	return f
}

// A local alias in a service's namespace that does not exist is asked of
// the services (in registration order, with the hs_token); the mautrix
// bridge creates the room and the alias while answering, and the lookup
// and the join by alias succeed. Anything else (no service, the service
// says no, says yes without creating it, is down, answers an error or bad
// JSON, refuses the token) is 404 M_NOT_FOUND.
func TestAppServiceAliasQuery(t *testing.T) {
	f := newQueryFixture(t, 2*time.Second)
	ctx := context.Background()
	bot := mautrixClient(t, f.srv, f.srv.Client().Register("portalbot", "pw").AccessToken)
	f.bridge.queries.mu.Lock()
	f.bridge.queries.alias = func(a id.RoomAlias) bool {
		local := strings.TrimPrefix(strings.SplitN(string(a), ":", 2)[0], "#")
		switch {
		case strings.Contains(local, "none"):
			return false
		case strings.Contains(local, "lie"):
			return true
		}
		_, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: local, Preset: "public_chat"})
		if err != nil {
			t.Errorf("bridge: create room %s: %v", a, err)
		}
		return err == nil
	}
	f.bridge.queries.mu.Unlock()
	alias := func(local string) string { return "#" + local + ":" + f.srv.Name }
	lookup := func(a string) *testutil.Response {
		return f.alice.Do("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", a), nil)
	}
	queried := func(rec *asRecorder, a string) int {
		return len(rec.requests(testutil.Path("/_matrix/app/v1/rooms/%s", a)))
	}

	one := alias("bridge_one")
	r := lookup(one)
	if r.Status != http.StatusOK {
		t.Fatalf("lookup of %s: %d %s", one, r.Status, r.Body)
	}
	roomID, _ := r.JSON(t)["room_id"].(string)
	if !strings.HasPrefix(roomID, "!") {
		t.Fatalf("lookup of %s: no room_id: %s", one, r.Body)
	}
	reqs := f.bridge.rec.requests(testutil.Path("/_matrix/app/v1/rooms/%s", one))
	if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Auth != "Bearer "+f.bridge.reg.ServerToken {
		t.Fatalf("bridge got %+v, want one GET with the hs_token", reqs)
	}
	if _, ok := reqs[0].Query["access_token"]; ok {
		t.Errorf("the hs_token was also sent as access_token: %v", reqs[0].Query)
	}
	// Now it exists: no second query.
	f.alice.MustDo("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", one), nil, http.StatusOK)
	if n := queried(f.bridge.rec, one); n != 1 {
		t.Errorf("bridge queried %d times for an alias that exists, want 1", n)
	}

	// Joining by an alias the bridge creates on demand.
	two := alias("bridge_two")
	j := f.alice.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", two), map[string]any{}, http.StatusOK)
	joined := f.alice.MustDo("GET", "/_matrix/client/v3/joined_rooms", nil, http.StatusOK)
	if rooms, _ := joined["joined_rooms"].([]any); len(rooms) != 1 || rooms[0] != j["room_id"] {
		t.Fatalf("joined_rooms = %v, want [%v]", joined, j["room_id"])
	}

	// The first service of the shared namespace fails (500); the next one
	// in registration order is asked and creates it.
	f.fake.answer(testutil.Path("/_matrix/app/v1/rooms/%s", alias("shared_x")), fakeAnswer{status: 500, body: `{"errcode":"M_UNKNOWN"}`})
	if r := lookup(alias("shared_x")); r.Status != http.StatusOK {
		t.Fatalf("shared alias: %d %s", r.Status, r.Body)
	}
	if queried(f.fake.rec, alias("shared_x")) != 1 || queried(f.bridge.rec, alias("shared_x")) != 1 {
		t.Errorf("shared alias: fake asked %d times, bridge %d, want 1 each", queried(f.fake.rec, alias("shared_x")), queried(f.bridge.rec, alias("shared_x")))
	}

	f.fake.answer(testutil.Path("/_matrix/app/v1/rooms/%s", alias("fake_badjson")), fakeAnswer{status: 200, body: `{"oops"`})
	f.fake.answer(testutil.Path("/_matrix/app/v1/rooms/%s", alias("fake_null")), fakeAnswer{status: 200, body: `null`})
	for _, c := range []struct {
		name, alias string
		rec         *asRecorder
	}{
		{"the bridge says no", alias("bridge_none"), f.bridge.rec},
		{"the bridge says yes but creates nothing", alias("bridge_lie"), f.bridge.rec},
		{"bad JSON", alias("fake_badjson"), f.fake.rec},
		{"null", alias("fake_null"), f.fake.rec},
		{"404 from the fake", alias("fake_404"), f.fake.rec},
		{"wrong hs_token", alias("wrong_x"), f.wrong.rec},
	} {
		r := lookup(c.alias)
		if m := r.JSON(t); r.Status != http.StatusNotFound || m["errcode"] != "M_NOT_FOUND" {
			t.Errorf("%s: %d %s, want 404 M_NOT_FOUND", c.name, r.Status, r.Body)
		}
		if n := queried(c.rec, c.alias); n != 1 {
			t.Errorf("%s: the service was queried %d times, want 1", c.name, n)
		}
	}
	start := time.Now()
	f.alice.MustFail("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", alias("down_x")), nil, http.StatusNotFound, "M_NOT_FOUND")
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a bridge that is down took %v", d)
	}
	f.alice.MustFail("POST", testutil.Path("/_matrix/client/v3/join/%s", alias("bridge_none2")), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")

	// Outside every namespace, or another server's: nobody is asked.
	before := len(f.bridge.rec.requests("/")) + len(f.fake.rec.requests("/"))
	f.alice.MustFail("GET", testutil.Path("/_matrix/client/v3/directory/room/%s", alias("other")), nil, http.StatusNotFound, "M_NOT_FOUND")
	if after := len(f.bridge.rec.requests("/")) + len(f.fake.rec.requests("/")); after != before {
		t.Errorf("an alias outside the namespaces was asked of a service")
	}
}

// An invite of, or a profile lookup of, a local user in a service's
// namespace who has no account asks the services; the mautrix bridge
// registers the user while answering, and the invite or lookup succeeds.
// Otherwise (no service, the service says no, is down, answers bad JSON,
// refuses the token) it is 404 M_NOT_FOUND.
func TestAppServiceUserQuery(t *testing.T) {
	f := newQueryFixture(t, 2*time.Second)
	ctx := context.Background()
	f.bridge.queries.mu.Lock()
	f.bridge.queries.user = func(u id.UserID) bool {
		local, _, _ := u.Parse()
		if strings.Contains(local, "none") {
			return false
		}
		cli := mautrixClient(t, f.srv, "")
		_, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: local, Password: "pw"})
		if err != nil {
			t.Errorf("bridge: register %s: %v", u, err)
		}
		return err == nil
	}
	f.bridge.queries.mu.Unlock()
	user := func(local string) string { return "@" + local + ":" + f.srv.Name }
	queried := func(rec *asRecorder, u string) []asRequest {
		return rec.requests(testutil.Path("/_matrix/app/v1/users/%s", u))
	}
	room := f.alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{}, http.StatusOK)["room_id"].(string)
	invite := func(u string) *testutil.Response {
		return f.alice.Do("POST", testutil.Path("/_matrix/client/v3/rooms/%s/invite", room), map[string]any{"user_id": u})
	}

	bob := user("bridge_bob")
	if r := invite(bob); r.Status != http.StatusOK {
		t.Fatalf("invite of %s: %d %s", bob, r.Status, r.Body)
	}
	reqs := queried(f.bridge.rec, bob)
	if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Auth != "Bearer "+f.bridge.reg.ServerToken {
		t.Fatalf("bridge got %+v, want one GET with the hs_token", reqs)
	}
	m := f.alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", room, bob), nil, http.StatusOK)
	if m["membership"] != "invite" {
		t.Fatalf("member event of %s: %v", bob, m)
	}
	// Bob exists now: looking him up asks nobody.
	f.alice.MustDo("GET", profilePath(bob), nil, http.StatusOK)
	if n := len(queried(f.bridge.rec, bob)); n != 1 {
		t.Errorf("bridge queried %d times for a user who exists, want 1", n)
	}

	carol := user("bridge_carol")
	p := f.srv.Client().MustDo("GET", profilePath(carol, "displayname"), nil, http.StatusOK)
	if p["displayname"] != "bridge_carol" {
		t.Fatalf("profile of %s: %v", carol, p)
	}
	f.srv.Client().MustDo("GET", profilePath(user("bridge_dave")), nil, http.StatusOK)

	f.fake.answer(testutil.Path("/_matrix/app/v1/users/%s", user("fake_bad")), fakeAnswer{status: 200, body: `[1,`})
	for _, c := range []struct {
		name, user string
		rec        *asRecorder
	}{
		{"the bridge says no", user("bridge_none"), f.bridge.rec},
		{"bad JSON", user("fake_bad"), f.fake.rec},
		{"wrong hs_token", user("wrong_x"), f.wrong.rec},
	} {
		r := invite(c.user)
		if m := r.JSON(t); r.Status != http.StatusNotFound || m["errcode"] != "M_NOT_FOUND" {
			t.Errorf("%s: invite: %d %s, want 404 M_NOT_FOUND", c.name, r.Status, r.Body)
		}
		f.srv.Client().MustFail("GET", profilePath(c.user), nil, http.StatusNotFound, "M_NOT_FOUND")
		if n := len(queried(c.rec, c.user)); n != 2 {
			t.Errorf("%s: the service was queried %d times, want 2", c.name, n)
		}
	}
	if r := invite(user("down_x")); r.Status != http.StatusNotFound {
		t.Errorf("invite of a user of a service that is down: %d %s", r.Status, r.Body)
	}

	// Outside every namespace, and a service's own sender: nobody is asked.
	before := len(f.bridge.rec.requests("/")) + len(f.fake.rec.requests("/"))
	f.srv.Client().MustFail("GET", profilePath(user("other")), nil, http.StatusNotFound, "M_NOT_FOUND")
	if after := len(f.bridge.rec.requests("/")) + len(f.fake.rec.requests("/")); after != before {
		t.Errorf("a user outside the namespaces was asked of a service")
	}
}

// Third-party lookups are answered by the services that declare the
// protocol: their metadata merged (the first service's fields, every
// service's instances with instance_id "<service id>|<network_id>"), their
// valid results together, the query's fields passed on without the access
// token; a service that fails, answers bad JSON or invalid results adds
// nothing. Reverse lookups go to the services with the alias or user in a
// namespace.
func TestAppServiceThirdPartyLookups(t *testing.T) {
	f := newQueryFixture(t, 2*time.Second)
	b := f.bridge
	b.handleThirdParty("GET /_matrix/app/v1/thirdparty/protocol/{protocol}", func(r *http.Request) any {
		return map[string]any{
			"user_fields": []string{"network", "nickname"}, "location_fields": []string{"network", "channel"},
			"icon": "mxc://example.org/irc", "field_types": map[string]any{"network": map[string]any{"regexp": "[a-z.]+", "placeholder": "irc.example.org"}},
			"instances": []any{
				map[string]any{"network_id": "libera", "desc": "Libera.Chat", "fields": map[string]any{"network": "libera.chat"}},
				map[string]any{"desc": "No network ID", "fields": map[string]any{}},
			},
		}
	})
	b.handleThirdParty("GET /_matrix/app/v1/thirdparty/location/{protocol}", func(r *http.Request) any {
		q := r.URL.Query()
		return []any{
			map[string]any{"alias": "#bridge_" + strings.TrimPrefix(q.Get("channel"), "#") + ":" + f.srv.Name, "protocol": r.PathValue("protocol"),
				"fields": map[string]any{"network": q.Get("network"), "channel": q.Get("channel")}},
			map[string]any{"protocol": "irc", "fields": map[string]any{}}, // no alias: dropped
		}
	})
	b.handleThirdParty("GET /_matrix/app/v1/thirdparty/user/{protocol}", func(r *http.Request) any {
		return []any{map[string]any{"userid": "@bridge_" + r.URL.Query().Get("nickname") + ":" + f.srv.Name, "protocol": "irc",
			"fields": map[string]any{"nickname": r.URL.Query().Get("nickname")}}}
	})
	b.handleThirdParty("GET /_matrix/app/v1/thirdparty/location", func(r *http.Request) any {
		return []any{map[string]any{"alias": r.URL.Query().Get("alias"), "protocol": "irc", "fields": map[string]any{"channel": "#matrix"}}}
	})
	b.handleThirdParty("GET /_matrix/app/v1/thirdparty/user", func(r *http.Request) any {
		return []any{map[string]any{"userid": r.URL.Query().Get("userid"), "protocol": "irc", "fields": map[string]any{"nickname": "bob"}}}
	})
	f.fake.answer("/_matrix/app/v1/thirdparty/protocol/irc", fakeAnswer{status: 200,
		body: `{"user_fields":["other"],"location_fields":[],"instances":[{"network_id":"oftc","desc":"OFTC","fields":{}}]}`})
	f.fake.answer("/_matrix/app/v1/thirdparty/protocol/slack", fakeAnswer{status: 200, body: `{"user_fields":[]}`}) // no instances: invalid
	f.fake.answer("/_matrix/app/v1/thirdparty/location/irc", fakeAnswer{status: 500, body: `{}`})
	f.fake.answer("/_matrix/app/v1/thirdparty/user/irc", fakeAnswer{status: 200, body: `{"not":"a list"}`})
	c := f.alice

	protocols := c.MustDo("GET", "/_matrix/client/v3/thirdparty/protocols", nil, http.StatusOK)
	// afake is registered first: its fields, then every instance.
	wantIRC := map[string]any{
		"user_fields": []any{"other"}, "location_fields": []any{},
		"instances": []any{
			map[string]any{"network_id": "oftc", "desc": "OFTC", "fields": map[string]any{}, "instance_id": "afake|oftc"},
			map[string]any{"network_id": "libera", "desc": "Libera.Chat", "fields": map[string]any{"network": "libera.chat"}, "instance_id": "bridge|libera"},
			map[string]any{"desc": "No network ID", "fields": map[string]any{}},
		},
	}
	if !sameJSON(t, protocols, map[string]any{"irc": wantIRC}) {
		t.Fatalf("protocols = %v\nwant irc = %v (and no slack: no service described it)", protocols, wantIRC)
	}
	if irc := c.MustDo("GET", "/_matrix/client/v3/thirdparty/protocol/irc", nil, http.StatusOK); !sameJSON(t, irc, wantIRC) {
		t.Fatalf("protocol irc = %v\nwant %v", irc, wantIRC)
	}
	c.MustFail("GET", "/_matrix/client/v3/thirdparty/protocol/slack", nil, http.StatusNotFound, "M_NOT_FOUND")
	c.MustFail("GET", "/_matrix/client/v3/thirdparty/protocol/xmpp", nil, http.StatusNotFound, "M_NOT_FOUND")
	// Metadata is cached: three lookups, one request to each bridge.
	if n := len(b.rec.requests("/_matrix/app/v1/thirdparty/protocol/irc")); n != 1 {
		t.Errorf("bridge asked %d times for its protocol, want 1 (cached)", n)
	}
	if reqs := f.wrong.rec.requests("/_matrix/app/v1/thirdparty/protocol/irc"); len(reqs) != 1 {
		t.Errorf("wrong bridge asked %d times, want 1", len(reqs))
	}

	// Forward lookups, with the access token in the query: it is not
	// passed on.
	var locs []map[string]any
	r := c.Do("GET", "/_matrix/client/v3/thirdparty/location/irc?network=libera.chat&channel=%23matrix&access_token="+url.QueryEscape(c.AccessToken), nil)
	r.Decode(t, &locs)
	wantLoc := []any{map[string]any{"alias": "#bridge_matrix:" + f.srv.Name, "protocol": "irc", "fields": map[string]any{"network": "libera.chat", "channel": "#matrix"}}}
	if r.Status != http.StatusOK || !sameJSON(t, locs, wantLoc) {
		t.Fatalf("locations: %d %s, want %v", r.Status, r.Body, wantLoc)
	}
	reqs := b.rec.requests("/_matrix/app/v1/thirdparty/location/irc")
	if len(reqs) != 1 || reqs[0].Query.Get("channel") != "#matrix" || reqs[0].Query.Get("network") != "libera.chat" ||
		reqs[0].Query.Has("access_token") || reqs[0].Auth != "Bearer "+b.reg.ServerToken {
		t.Fatalf("bridge got %+v, want the fields without access_token, with the hs_token", reqs)
	}
	if n := len(f.fake.rec.requests("/_matrix/app/v1/thirdparty/location/irc")); n != 1 {
		t.Errorf("fake asked %d times for locations, want 1", n)
	}
	var ulist []any
	c.Do("GET", "/_matrix/client/v3/thirdparty/user/irc?nickname=bob", nil).Decode(t, &ulist)
	wantUser := []any{map[string]any{"userid": "@bridge_bob:" + f.srv.Name, "protocol": "irc", "fields": map[string]any{"nickname": "bob"}}}
	if !sameJSON(t, ulist, wantUser) {
		t.Fatalf("users = %v, want %v", ulist, wantUser)
	}
	for _, p := range []string{"/_matrix/client/v3/thirdparty/location/xmpp", "/_matrix/client/v3/thirdparty/user/xmpp?x=y"} {
		if r := c.Do("GET", p, nil); r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != "[]" {
			t.Errorf("%s: %d %s, want 200 []", p, r.Status, r.Body)
		}
	}

	// Reverse lookups: only the services with the alias or user in a
	// namespace are asked.
	alias := "#bridge_matrix:" + f.srv.Name
	var rev []any
	c.Do("GET", "/_matrix/client/v3/thirdparty/location?alias="+url.QueryEscape(alias), nil).Decode(t, &rev)
	if !sameJSON(t, rev, []any{map[string]any{"alias": alias, "protocol": "irc", "fields": map[string]any{"channel": "#matrix"}}}) {
		t.Fatalf("reverse location lookup = %v", rev)
	}
	bob := "@bridge_bob:" + f.srv.Name
	c.Do("GET", "/_matrix/client/v3/thirdparty/user?userid="+url.QueryEscape(bob), nil).Decode(t, &rev)
	if !sameJSON(t, rev, []any{map[string]any{"userid": bob, "protocol": "irc", "fields": map[string]any{"nickname": "bob"}}}) {
		t.Fatalf("reverse user lookup = %v", rev)
	}
	if n := len(f.fake.rec.requests("/_matrix/app/v1/thirdparty/location")) + len(f.fake.rec.requests("/_matrix/app/v1/thirdparty/user")); n != 2 {
		t.Errorf("fake asked %d third-party lookups, want the 2 forward ones only", n)
	}
	c.MustFail("GET", "/_matrix/client/v3/thirdparty/location", nil, http.StatusBadRequest, "M_MISSING_PARAM")
	c.MustFail("GET", "/_matrix/client/v3/thirdparty/user", nil, http.StatusBadRequest, "M_MISSING_PARAM")

	// The lookups need an access token.
	f.srv.Client().MustFail("GET", "/_matrix/client/v3/thirdparty/protocols", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// POST /_matrix/client/v1/appservice/{appserviceId}/ping with the
// service's as_token pings the bridge with the transaction ID and answers
// duration_ms; the token, the path, the URL and the bridge's failures map
// to the spec's errors.
func TestAppServicePing(t *testing.T) {
	f := newQueryFixture(t, time.Second)
	ctx := context.Background()
	ping := func(svc string) string { return "/_matrix/client/v1/appservice/" + svc + "/ping" }

	// mautrix-go's client pings its own bridge.
	resp, err := mautrixClient(t, f.srv, f.bridge.reg.AppToken).AppservicePing(ctx, "bridge", "mautrix-go_1_1")
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if resp.DurationMS < 0 {
		t.Fatalf("duration_ms = %d", resp.DurationMS)
	}
	reqs := f.bridge.rec.requests("/_matrix/app/v1/ping")
	if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Auth != "Bearer "+f.bridge.reg.ServerToken || !sameJSONText(t, reqs[0].Body, `{"transaction_id":"mautrix-go_1_1"}`) {
		t.Fatalf("bridge got %+v", reqs)
	}
	// Without a transaction ID, null is passed on.
	asBridge := f.srv.Client().As("", "", f.bridge.reg.AppToken)
	m := asBridge.MustDo("POST", ping("bridge"), map[string]any{}, http.StatusOK)
	if _, ok := m["duration_ms"].(float64); !ok || len(m) != 1 {
		t.Fatalf("ping answered %v", m)
	}
	if reqs := f.bridge.rec.requests("/_matrix/app/v1/ping"); len(reqs) != 2 || !sameJSONText(t, reqs[1].Body, `{"transaction_id":null}`) {
		t.Fatalf("bridge got %+v", reqs)
	}
	// The token as access_token also works.
	anon := f.srv.Client()
	anon.MustDo("POST", ping("bridge")+"?access_token="+url.QueryEscape(f.bridge.reg.AppToken), map[string]any{"transaction_id": "t"}, http.StatusOK)

	// Who may ping.
	asBridge.MustFail("POST", ping("afake"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	f.alice.MustFail("POST", ping("bridge"), map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	anon.MustFail("POST", ping("bridge"), map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	anon.As("", "", "not-a-token").MustFail("POST", ping("bridge"), map[string]any{}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	asBridge.MustFail("POST", ping("bridge"), testutil.Raw("{"), http.StatusBadRequest, "M_NOT_JSON")
	asBridge.MustFail("POST", ping("bridge"), map[string]any{"transaction_id": 5}, http.StatusBadRequest, "M_BAD_JSON")
	anon.As("", "", f.nourl.AppToken).MustFail("POST", ping("nourl"), map[string]any{}, http.StatusBadRequest, "M_URL_NOT_SET")

	// The bridge's failures.
	anon.As("", "", f.down.AppToken).MustFail("POST", ping("down"), map[string]any{}, http.StatusBadGateway, "M_CONNECTION_FAILED")
	e := anon.As("", "", f.wrong.reg.AppToken).MustFail("POST", ping("wrong"), map[string]any{}, http.StatusBadGateway, "M_BAD_STATUS")
	if e["status"] != float64(401) || !strings.Contains(e["body"].(string), "M_UNKNOWN_TOKEN") {
		t.Errorf("bridge refusing the hs_token: %v, want status 401 and its body", e)
	}
	asFake := anon.As("", "", f.fake.reg.AppToken)
	f.fake.answer("/_matrix/app/v1/ping", fakeAnswer{status: 500, body: "oops"})
	if e := asFake.MustFail("POST", ping("afake"), map[string]any{}, http.StatusBadGateway, "M_BAD_STATUS"); e["status"] != float64(500) || e["body"] != "oops" {
		t.Errorf("bridge answering 500: %v", e)
	}
	f.fake.answer("/_matrix/app/v1/ping", fakeAnswer{status: 200, body: "not json"})
	asFake.MustFail("POST", ping("afake"), map[string]any{}, http.StatusBadGateway, "M_CONNECTION_FAILED")
	f.fake.answer("/_matrix/app/v1/ping", fakeAnswer{status: 200, body: "{}", delay: 3 * time.Second})
	start := time.Now()
	asFake.MustFail("POST", ping("afake"), map[string]any{}, http.StatusGatewayTimeout, "M_CONNECTION_TIMEOUT")
	if d := time.Since(start); d < time.Second || d > 2500*time.Millisecond {
		t.Errorf("timed out after %v, want the 1s query timeout", d)
	}
	f.fake.answer("/_matrix/app/v1/ping", fakeAnswer{status: 200, body: "{}"})
	asFake.MustDo("POST", ping("afake"), map[string]any{}, http.StatusOK)
}

// sameJSONText reports whether two JSON texts are the same value.
func sameJSONText(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return sameJSON(t, x, y)
}

// Another server's directory query for an unknown alias in a service's
// namespace asks the service too (as Synapse's on_directory_query), and
// answers the room the bridge created; otherwise 404 M_NOT_FOUND.
func TestAppServiceAliasQueryOverFederation(t *testing.T) {
	dir := t.TempDir()
	bridge := newMautrixBridge(t, dir, "bridge", "bridge", "")
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test", testserver.Options{Configure: func(c *config.Config) {
		c.AppServiceConfigFiles = []string{filepath.Join(dir, "bridge.yaml")}
	}})
	remote := n.StartRemote("remote.test")
	bot := mautrixClient(t, hs1, hs1.Client().Register("portalbot", "pw").AccessToken)
	var createdMu sync.Mutex
	var created id.RoomID
	bridge.queries.mu.Lock()
	bridge.queries.alias = func(a id.RoomAlias) bool {
		local := strings.TrimPrefix(strings.SplitN(string(a), ":", 2)[0], "#")
		if strings.Contains(local, "none") {
			return false
		}
		resp, err := bot.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{RoomAliasName: local, Preset: "public_chat"})
		if err != nil {
			t.Errorf("bridge: create room %s: %v", a, err)
			return false
		}
		createdMu.Lock()
		created = resp.RoomID
		createdMu.Unlock()
		return true
	}
	bridge.queries.mu.Unlock()

	query := func(alias string) (int, map[string]any) {
		t.Helper()
		status, body, err := remote.Do("GET", "hs1.test", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("query of %s: %d %s", alias, status, body)
		}
		return status, m
	}
	status, m := query("#bridge_fed:hs1.test")
	createdMu.Lock()
	defer createdMu.Unlock()
	if status != http.StatusOK || m["room_id"] != string(created) || created == "" {
		t.Fatalf("directory query: %d %v, want the room the bridge created (%s)", status, m, created)
	}
	if status, m := query("#bridge_none:hs1.test"); status != http.StatusNotFound || m["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("alias the bridge does not know: %d %v", status, m)
	}
	if n := len(bridge.rec.requests("/_matrix/app/v1/rooms/")); n != 2 {
		t.Fatalf("bridge queried %d times, want 2", n)
	}
}
