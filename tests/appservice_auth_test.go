package tests

// Application services (bridges) on the client API, as Synapse serves them:
// as_token authentication with identity assertion (user_id) and device
// masquerading (device_id), registration and login of a service's users,
// M_EXCLUSIVE namespaces of users and aliases, rate-limit exemption,
// timestamp massaging and devices managed by the service (MSC4190). The
// registration files are written by mautrix-go's appservice package, and
// some cases drive the server through its IntentAPI, as a bridge does.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// asTRegistration is a registration whose service holds the users
// @<prefix>... exclusively, with sender <prefix>bot (in its namespace, as
// bridges have it).
func asTRegistration(id, prefix string) *appservice.Registration {
	reg := appservice.CreateRegistration()
	reg.ID = id
	reg.SenderLocalpart = prefix + "bot"
	reg.Namespaces.UserIDs = appservice.NamespaceList{{Regex: "@" + prefix + ".*", Exclusive: true}}
	return reg
}

// asTServer starts a server with the given registrations (written as
// files, as app_service_config_files reads them).
func asTServer(t *testing.T, configure func(*config.Config), regs ...*appservice.Registration) *testserver.Server {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for i, reg := range regs {
		p := filepath.Join(dir, fmt.Sprintf("reg%d.yaml", i))
		if err := reg.Save(p); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return testserver.Start(t, testserver.Options{Configure: func(c *config.Config) {
		c.AppServiceConfigFiles = files
		if configure != nil {
			configure(c)
		}
	}})
}

// asTClient is a client authenticated with the service's as_token.
func asTClient(srv *testserver.Server, reg *appservice.Registration) *testutil.Client {
	return srv.Client().As("@"+reg.SenderLocalpart+":"+srv.Name, "", reg.AppToken)
}

// asTQuery appends query parameters (key, value, ...) to path.
func asTQuery(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Add(kv[i], kv[i+1])
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + q.Encode()
}

// asTRegister registers localpart as a user of the service; it returns
// the response body.
func asTRegister(c *testutil.Client, localpart string, extra map[string]any) map[string]any {
	c.T.Helper()
	body := map[string]any{"type": "m.login.application_service", "username": localpart}
	for k, v := range extra {
		body[k] = v
	}
	return c.MustDo("POST", "/_matrix/client/v3/register", body, http.StatusOK)
}

const asTWhoami = "/_matrix/client/v3/account/whoami"

// The as_token authenticates as the sender (which exists as an account
// from the start), or as the user_id asserted in the query when that user
// is registered and in the service's namespaces; device_id (and MSC3202's
// name for it) selects an existing device of that user. Each refusal is
// Synapse's.
func TestAppServiceIdentityAssertion(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	srv := asTServer(t, nil, bridge)
	as := asTClient(srv, bridge)
	sender := "@_bridge_bot:" + srv.Name

	who := as.MustDo("GET", asTWhoami, nil, http.StatusOK)
	if who["user_id"] != sender || who["is_guest"] != false {
		t.Fatalf("whoami as the service = %v, want %s", who, sender)
	}
	if _, ok := who["device_id"]; ok {
		t.Fatalf("whoami of a service acting as no device has a device_id: %v", who)
	}
	// The deprecated access_token query parameter works too.
	anon := srv.Client()
	if who := anon.MustDo("GET", asTQuery(asTWhoami, "access_token", bridge.AppToken), nil, http.StatusOK); who["user_id"] != sender {
		t.Fatalf("whoami with access_token = %v", who)
	}
	// The sender's account exists (created at start, without a password).
	anon.MustDo("GET", testutil.Path("/_matrix/client/v3/profile/%s", sender), nil, http.StatusOK)
	anon.MustFail("POST", "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": sender}, "password": "",
	}, http.StatusForbidden, "M_FORBIDDEN")

	ghost := "@_bridge_alice:" + srv.Name
	// Not registered yet.
	as.MustFail("GET", asTQuery(asTWhoami, "user_id", ghost), nil, http.StatusForbidden, "M_FORBIDDEN")
	asTRegister(as, "_bridge_alice", map[string]any{"inhibit_login": true})
	if who := as.MustDo("GET", asTQuery(asTWhoami, "user_id", ghost), nil, http.StatusOK); who["user_id"] != ghost {
		t.Fatalf("whoami asserting %s = %v", ghost, who)
	}
	// Outside the namespaces: a local user, a remote one in the namespace's
	// shape, and the sender asserted explicitly (allowed).
	roomTUser(t, srv, "carol")
	as.MustFail("GET", asTQuery(asTWhoami, "user_id", "@carol.1:"+srv.Name), nil, http.StatusForbidden, "M_FORBIDDEN")
	as.MustFail("GET", asTQuery(asTWhoami, "user_id", "@_bridge_alice:other.example"), nil, http.StatusForbidden, "M_FORBIDDEN")
	if who := as.MustDo("GET", asTQuery(asTWhoami, "user_id", sender), nil, http.StatusOK); who["user_id"] != sender {
		t.Fatalf("whoami asserting the sender = %v", who)
	}
	// An unknown as_token is an unknown token.
	srv.Client().As("", "", "not-a-token").MustFail("GET", asTWhoami, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Device masquerading: the device must exist.
	for _, param := range []string{"device_id", "org.matrix.msc3202.device_id"} {
		as.MustFail("GET", asTQuery(asTWhoami, "user_id", ghost, param, "GHOSTDEV"), nil, http.StatusBadRequest, "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE")
	}
	if r := as.Do("PUT", asTQuery("/_matrix/client/v3/devices/GHOSTDEV", "user_id", ghost), map[string]any{"display_name": "bridge device"}); r.Status != http.StatusCreated {
		t.Fatalf("creating a device of a ghost: %d %s", r.Status, r.Body)
	}
	for _, param := range []string{"device_id", "org.matrix.msc3202.device_id"} {
		who := as.MustDo("GET", asTQuery(asTWhoami, "user_id", ghost, param, "GHOSTDEV"), nil, http.StatusOK)
		if who["user_id"] != ghost || who["device_id"] != "GHOSTDEV" {
			t.Fatalf("whoami with %s = %v", param, who)
		}
	}
	// A device of another user is not the ghost's.
	as.MustFail("GET", asTQuery(asTWhoami, "device_id", "GHOSTDEV"), nil, http.StatusBadRequest, "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE")
	// Keys need a device.
	keysBody := map[string]any{"one_time_keys": map[string]any{}}
	as.MustFail("POST", asTQuery("/_matrix/client/v3/keys/upload", "user_id", ghost), keysBody, http.StatusBadRequest, "M_INVALID_PARAM")
	as.MustDo("POST", asTQuery("/_matrix/client/v3/keys/upload", "user_id", ghost, "device_id", "GHOSTDEV"), keysBody, http.StatusOK)

	// Acting as the ghost: its room, its message.
	actAs := func(path string) string { return asTQuery(path, "user_id", ghost) }
	roomID := as.MustDo("POST", actAs("/_matrix/client/v3/createRoom"), map[string]any{}, http.StatusOK)["room_id"].(string)
	ev := as.MustDo("PUT", actAs(testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/t1", roomID)), map[string]any{"msgtype": "m.text", "body": "hi"}, http.StatusOK)
	got := as.MustDo("GET", actAs(testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, ev["event_id"].(string))), nil, http.StatusOK)
	if got["sender"] != ghost {
		t.Fatalf("event sent asserting %s has sender %v", ghost, got["sender"])
	}
}

// Registration of a service's users: no User-Interactive Auth and no
// open registration needed, inhibit_login honoured, the user in the
// service's namespaces and in no other service's exclusive ones. Other
// registrations of exclusive IDs are 400 M_EXCLUSIVE, and generated IDs
// (guests) skip them.
func TestAppServiceRegistration(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	// A non-exclusive claim that another service holds exclusively.
	bridge.Namespaces.UserIDs = append(bridge.Namespaces.UserIDs, appservice.Namespace{Regex: "@shared", Exclusive: false})
	other := asTRegistration("other", "telegram")
	other.Namespaces.UserIDs = append(other.Namespaces.UserIDs,
		appservice.Namespace{Regex: "@shared", Exclusive: true},
		// The first generated (guest) IDs.
		appservice.Namespace{Regex: "@(1|2):", Exclusive: true})
	msc4190 := asTRegistration("msc4190", "_dev_")
	msc4190.MSC4190 = true
	srv := asTServer(t, func(c *config.Config) {
		c.Registration.Enabled = false
		c.Registration.GuestAccess = true
	}, bridge, other, msc4190)
	as := asTClient(srv, bridge)
	const reg = "/_matrix/client/v3/register"

	// Registration is closed to others, not to the service; the user ID
	// keeps its case, as Synapse gives services.
	srv.Client().MustFail("POST", reg, map[string]any{"username": "someone", "password": "pw"}, http.StatusForbidden, "M_FORBIDDEN")
	m := asTRegister(as, "_bridge_Bob", map[string]any{"inhibit_login": true})
	if m["user_id"] != "@_bridge_Bob:"+srv.Name || m["access_token"] != nil || m["device_id"] != nil {
		t.Fatalf("inhibited registration = %v", m)
	}
	m = asTRegister(as, "_bridge_carol", map[string]any{"device_id": "CAROLDEV"})
	carol := srv.Client().As(m["user_id"].(string), "", m["access_token"].(string))
	if who := carol.MustDo("GET", asTWhoami, nil, http.StatusOK); who["user_id"] != "@_bridge_carol:"+srv.Name || who["device_id"] != "CAROLDEV" {
		t.Fatalf("whoami of a registered ghost = %v", who)
	}

	asType := func(username string) map[string]any {
		return map[string]any{"type": "m.login.application_service", "username": username}
	}
	as.MustFail("POST", reg, asType("_bridge_Bob"), http.StatusBadRequest, "M_USER_IN_USE")
	as.MustFail("POST", reg, asType("outside"), http.StatusBadRequest, "M_EXCLUSIVE")
	as.MustFail("POST", reg, asType("telegram1"), http.StatusBadRequest, "M_EXCLUSIVE")
	as.MustFail("POST", reg, asType("shared1"), http.StatusBadRequest, "M_EXCLUSIVE")
	as.MustFail("POST", reg, map[string]any{"type": "m.login.application_service"}, http.StatusBadRequest, "M_MISSING_PARAM")
	as.MustFail("POST", reg, asType("_bridge_a:b"), http.StatusBadRequest, "M_INVALID_USERNAME")
	srv.Client().MustFail("POST", reg, asType("_bridge_x"), http.StatusUnauthorized, "M_MISSING_TOKEN")
	srv.Client().As("", "", "wrong").MustFail("POST", reg, asType("_bridge_x"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	// The other service registers what it holds.
	asTRegister(asTClient(srv, other), "shared1", map[string]any{"inhibit_login": true})
	// A service that manages its devices itself (MSC4190) registers
	// without logging in.
	dev := asTClient(srv, msc4190)
	dev.MustFail("POST", reg, asType("_dev_a"), http.StatusBadRequest, "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED")
	asTRegister(dev, "_dev_a", map[string]any{"inhibit_login": true})

	// Everyone else: M_EXCLUSIVE, from /register (with registration open),
	// /register/available and shared-secret registration.
	open := asTServer(t, func(c *config.Config) { c.Registration.GuestAccess = true }, bridge, other)
	anon := open.Client()
	anon.MustFail("POST", reg, map[string]any{"username": "telegram2", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}},
		http.StatusBadRequest, "M_EXCLUSIVE")
	anon.MustFail("POST", reg, map[string]any{"username": "telegrambot", "password": "pw"}, http.StatusBadRequest, "M_EXCLUSIVE")
	anon.MustFail("GET", "/_matrix/client/v3/register/available?username=Telegram3", nil, http.StatusBadRequest, "M_EXCLUSIVE")
	anon.MustDo("GET", "/_matrix/client/v3/register/available?username=free", nil, http.StatusOK)
	anon.MustFail("POST", sharedSecretRegisterPath, sharedSecretBody(sharedSecretNonce(anon), "telegram4", "pw", false), http.StatusBadRequest, "M_EXCLUSIVE")
	// Guests get generated IDs, skipping those held exclusively.
	g := anon.MustDo("POST", reg+"?kind=guest", map[string]any{}, http.StatusOK)
	if g["user_id"] != "@3:"+open.Name {
		t.Fatalf("first guest = %v, want @3 (1 and 2 are held by a service)", g["user_id"])
	}
}

// m.login.application_service: listed in the login flows, it logs a user
// of the service in with the as_token, and only those.
func TestAppServiceLogin(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	msc4190 := asTRegistration("msc4190", "_dev_")
	msc4190.MSC4190 = true
	srv := asTServer(t, nil, bridge, msc4190)
	as := asTClient(srv, bridge)
	anon := srv.Client()

	flows := anon.MustDo("GET", "/_matrix/client/v3/login", nil, http.StatusOK)["flows"].([]any)
	found := false
	for _, f := range flows {
		found = found || f.(map[string]any)["type"] == "m.login.application_service"
	}
	if !found {
		t.Fatalf("login flows %v lack m.login.application_service", flows)
	}
	asTRegister(as, "_bridge_dave", map[string]any{"inhibit_login": true})
	login := func(user string) map[string]any {
		return map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": user}}
	}
	const path = "/_matrix/client/v3/login"
	for _, user := range []string{"_bridge_dave", "@_bridge_dave:" + srv.Name} {
		m := as.MustDo("POST", path, login(user), http.StatusOK)
		c := anon.As("", "", m["access_token"].(string))
		if who := c.MustDo("GET", asTWhoami, nil, http.StatusOK); who["user_id"] != "@_bridge_dave:"+srv.Name || who["device_id"] != m["device_id"] {
			t.Fatalf("whoami after appservice login = %v (login %v)", who, m)
		}
	}
	as.MustFail("POST", path, login("_bridge_nobody"), http.StatusForbidden, "M_FORBIDDEN")
	user := roomTUser(t, srv, "erin")
	as.MustFail("POST", path, login(user.UserID), http.StatusForbidden, "M_FORBIDDEN")
	as.MustFail("POST", path, map[string]any{"type": "m.login.application_service", "user": "_bridge_dave"}, http.StatusBadRequest, "M_INVALID_PARAM")
	as.MustFail("POST", path, map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.thirdparty"}},
		http.StatusBadRequest, "M_INVALID_PARAM")
	anon.MustFail("POST", path, login("_bridge_dave"), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// A user's own token is no service's.
	user.MustFail("POST", path, login("_bridge_dave"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	// An MSC4190 service creates devices instead.
	dev := asTClient(srv, msc4190)
	asTRegister(dev, "_dev_a", map[string]any{"inhibit_login": true})
	dev.MustFail("POST", path, login("_dev_a"), http.StatusBadRequest, "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED")
}

// Aliases in a service's exclusive namespace: only that service creates or
// deletes them (400 M_EXCLUSIVE for users, createRoom's alias included); a
// service may only touch the aliases of its namespaces, in any room.
func TestAppServiceAliases(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	bridge.Namespaces.RoomAliases = appservice.NamespaceList{{Regex: "#_bridge_.*", Exclusive: true}, {Regex: "#open_.*", Exclusive: false}}
	srv := asTServer(t, nil, bridge)
	as := asTClient(srv, bridge)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{})
	aliasPath := func(local string) string {
		return testutil.Path("/_matrix/client/v3/directory/room/%s", "#"+local+":"+srv.Name)
	}
	body := map[string]any{"room_id": roomID}

	alice.MustFail("PUT", aliasPath("_bridge_a"), body, http.StatusBadRequest, "M_EXCLUSIVE")
	alice.MustFail("POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "_bridge_b"}, http.StatusBadRequest, "M_EXCLUSIVE")
	as.MustFail("PUT", aliasPath("elsewhere"), body, http.StatusBadRequest, "M_EXCLUSIVE")
	// The service is not in the room and needs not be.
	as.MustDo("PUT", aliasPath("_bridge_a"), body, http.StatusOK)
	alice.MustDo("GET", aliasPath("_bridge_a"), nil, http.StatusOK)
	// A non-exclusive namespace is open to all.
	alice.MustDo("PUT", aliasPath("open_1"), body, http.StatusOK)
	as.MustDo("PUT", aliasPath("open_2"), body, http.StatusOK)
	alice.MustDo("PUT", aliasPath("mine"), body, http.StatusOK)

	// Alice may edit the room's directory but not the service's alias.
	alice.MustFail("DELETE", aliasPath("_bridge_a"), nil, http.StatusBadRequest, "M_EXCLUSIVE")
	as.MustFail("DELETE", aliasPath("mine"), nil, http.StatusBadRequest, "M_EXCLUSIVE")
	// The service deletes its namespace's aliases, whoever made them.
	as.MustDo("DELETE", aliasPath("open_1"), nil, http.StatusOK)
	as.MustDo("DELETE", aliasPath("_bridge_a"), nil, http.StatusOK)
	alice.MustFail("GET", aliasPath("_bridge_a"), nil, http.StatusNotFound, "M_NOT_FOUND")
}

// Requests made with the as_token of a service registered with
// rate_limited: false are never limited (Synapse exempts the requester,
// not the user: a ghost's own access token is limited); a service with
// rate_limited: true is.
func TestAppServiceRateLimitExemption(t *testing.T) {
	free := asTRegistration("free", "_free_")
	no := false
	free.RateLimited = &no
	limited := asTRegistration("limited", "_lim_")
	srv := asTServer(t, func(c *config.Config) {
		generous := config.Rate{PerSecond: 100, Burst: 1000}
		rl := &c.RateLimiting
		rl.Enabled = true
		rl.Login, rl.FailedLogin, rl.Registration, rl.RegistrationTokenValidity = generous, generous, generous, generous
		rl.RoomCreation = generous
		rl.Joins = config.JoinRates{Local: generous, Remote: generous}
		rl.Invites = config.InviteRates{PerRoom: generous, PerUser: generous, PerIssuer: generous}
		rl.Message = slow(2)
	}, free, limited)
	send := func(c *testutil.Client, roomID string, n int) *testutil.Response {
		return c.Do("PUT", asTQuery(testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/%s", roomID, fmt.Sprint(n)), "user_id", c.UserID),
			map[string]any{"msgtype": "m.text", "body": "x"})
	}
	for _, tc := range []struct {
		reg    *appservice.Registration
		exempt bool
	}{{free, true}, {limited, false}} {
		as := asTClient(srv, tc.reg)
		ghost := "@" + tc.reg.SenderLocalpart[:len(tc.reg.SenderLocalpart)-3] + "g:" + srv.Name
		m := asTRegister(as, strings.TrimSuffix(strings.TrimPrefix(ghost, "@"), ":"+srv.Name), nil)
		own := srv.Client().As(ghost, "", m["access_token"].(string))
		asGhost := as.As(ghost, "", tc.reg.AppToken)
		roomID := as.MustDo("POST", asTQuery("/_matrix/client/v3/createRoom", "user_id", ghost), map[string]any{}, http.StatusOK)["room_id"].(string)
		for i := range 5 {
			r := send(asGhost, roomID, i)
			if tc.exempt && r.Status != http.StatusOK {
				t.Fatalf("%s: message %d through the service: %d %s", tc.reg.ID, i, r.Status, r.Body)
			}
			if !tc.exempt && i >= 2 {
				acctCheckLimited(t, r)
			}
		}
		if tc.exempt {
			// The ghost's own token counts in its own bucket.
			for i := range 2 {
				if r := send(own, roomID, 100+i); r.Status != http.StatusOK {
					t.Fatalf("ghost's own message %d: %d %s", i, r.Status, r.Body)
				}
			}
			acctCheckLimited(t, send(own, roomID, 200))
		}
	}
}

// ts sets the origin_server_ts of the messages and state events a service
// sends (history it bridges); others' ts is ignored, as in Synapse.
func TestAppServiceTimestampMassaging(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	srv := asTServer(t, nil, bridge)
	as := asTClient(srv, bridge)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(as, map[string]any{"preset": "public_chat"})
	alice.MustDo("POST", testutil.Path("/_matrix/client/v3/join/%s", roomID), map[string]any{}, http.StatusOK)
	originTS := func(eventID string) int64 {
		ev := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, eventID), nil, http.StatusOK)
		return int64(ev["origin_server_ts"].(float64))
	}
	const past = 1500000000000
	ev := as.MustDo("PUT", asTQuery(testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/ts1", roomID), "ts", fmt.Sprint(past)),
		map[string]any{"msgtype": "m.text", "body": "old"}, http.StatusOK)
	if got := originTS(ev["event_id"].(string)); got != past {
		t.Fatalf("massaged message origin_server_ts = %d, want %d", got, past)
	}
	ev = as.MustDo("PUT", asTQuery(testutil.Path("/_matrix/client/v3/rooms/%s/state/m.bridge/x", roomID), "ts", fmt.Sprint(past+1)),
		map[string]any{"v": 1}, http.StatusOK)
	if got := originTS(ev["event_id"].(string)); got != past+1 {
		t.Fatalf("massaged state origin_server_ts = %d, want %d", got, past+1)
	}
	as.MustFail("PUT", asTQuery(testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/ts2", roomID), "ts", "yesterday"),
		map[string]any{"msgtype": "m.text", "body": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")
	ev = alice.MustDo("PUT", asTQuery(testutil.Path("/_matrix/client/v3/rooms/%s/send/m.room.message/ts3", roomID), "ts", fmt.Sprint(past)),
		map[string]any{"msgtype": "m.text", "body": "now"}, http.StatusOK)
	if got := originTS(ev["event_id"].(string)); got == past {
		t.Fatalf("a user's ts was honoured")
	}
}

// A service creates devices for its users (201, then 200) and deletes
// them without User-Interactive Auth (MSC4190); users still need UIA.
func TestAppServiceDevices(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	bridge.MSC4190 = true
	srv := asTServer(t, nil, bridge)
	as := asTClient(srv, bridge)
	asTRegister(as, "_bridge_frank", map[string]any{"inhibit_login": true})
	ghost := "@_bridge_frank:" + srv.Name
	devPath := func(id string) string {
		return asTQuery(testutil.Path("/_matrix/client/v3/devices/%s", id), "user_id", ghost)
	}
	if r := as.Do("PUT", devPath("FRANKDEV"), map[string]any{"display_name": "Frank's bridge"}); r.Status != http.StatusCreated {
		t.Fatalf("creating a device: %d %s", r.Status, r.Body)
	}
	as.MustDo("PUT", devPath("FRANKDEV"), map[string]any{"display_name": "renamed"}, http.StatusOK)
	d := as.MustDo("GET", devPath("FRANKDEV"), nil, http.StatusOK)
	if d["display_name"] != "renamed" {
		t.Fatalf("device after upsert = %v", d)
	}
	as.MustFail("PUT", devPath("FRANKDEV"), map[string]any{"display_name": strings.Repeat("x", 101)}, http.StatusBadRequest, "M_INVALID_PARAM")
	as.MustDo("DELETE", devPath("FRANKDEV"), nil, http.StatusOK)
	as.MustFail("GET", devPath("FRANKDEV"), nil, http.StatusNotFound, "M_NOT_FOUND")
	as.MustFail("GET", asTQuery(asTWhoami, "user_id", ghost, "device_id", "FRANKDEV"), nil, http.StatusBadRequest, "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE")
	// POST /delete_devices too.
	if r := as.Do("PUT", devPath("SECOND"), map[string]any{}); r.Status != http.StatusCreated {
		t.Fatalf("creating a device: %d %s", r.Status, r.Body)
	}
	as.MustDo("POST", asTQuery("/_matrix/client/v3/delete_devices", "user_id", ghost), map[string]any{"devices": []string{"SECOND"}}, http.StatusOK)
	if ds := as.MustDo("GET", asTQuery("/_matrix/client/v3/devices", "user_id", ghost), nil, http.StatusOK)["devices"].([]any); len(ds) != 0 {
		t.Fatalf("devices left: %v", ds)
	}
	// A user creates no device with PUT and deletes with UIA.
	alice := roomTUser(t, srv, "alice")
	alice.MustFail("PUT", testutil.Path("/_matrix/client/v3/devices/%s", "NEWDEV"), map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
	if r := alice.Do("DELETE", testutil.Path("/_matrix/client/v3/devices/%s", alice.DeviceID), nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("a user's device deletion without UIA: %d %s", r.Status, r.Body)
	}
}

// A service publishes rooms in the directories of its networks, which
// /publicRooms lists for third_party_instance_id "<service>|<network>",
// and with the server's own for include_all_networks; only services may.
func TestAppServiceRoomDirectory(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	srv := asTServer(t, nil, bridge)
	as := asTClient(srv, bridge)
	alice := roomTUser(t, srv, "alice")
	bridged := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	own := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	alice.MustDo("PUT", testutil.Path("/_matrix/client/v3/directory/list/room/%s", own), map[string]any{"visibility": "public"}, http.StatusOK)
	listPath := func(network, roomID string) string {
		return testutil.Path("/_matrix/client/v3/directory/list/appservice/%s/%s", network, roomID)
	}

	alice.MustFail("PUT", listPath("irc", bridged), map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
	as.MustFail("PUT", listPath("irc", bridged), map[string]any{"visibility": "hidden"}, http.StatusBadRequest, "M_INVALID_PARAM")
	as.MustFail("PUT", listPath("irc", "!nowhere:"+srv.Name), map[string]any{"visibility": "public"}, http.StatusNotFound, "M_NOT_FOUND")
	as.MustDo("PUT", listPath("irc", bridged), map[string]any{"visibility": "public"}, http.StatusOK)

	rooms := func(query string, post map[string]any) []string {
		t.Helper()
		var m map[string]any
		if post != nil {
			m = alice.MustDo("POST", "/_matrix/client/v3/publicRooms", post, http.StatusOK)
		} else {
			m = alice.MustDo("GET", "/_matrix/client/v3/publicRooms"+query, nil, http.StatusOK)
		}
		var ids []string
		for _, r := range m["chunk"].([]any) {
			ids = append(ids, r.(map[string]any)["room_id"].(string))
		}
		slices.Sort(ids)
		return ids
	}
	both := []string{bridged, own}
	slices.Sort(both)
	for _, tc := range []struct {
		query string
		post  map[string]any
		want  []string
	}{
		{"", nil, []string{own}},
		{"?third_party_instance_id=" + url.QueryEscape("bridge|irc"), nil, []string{bridged}},
		{"", map[string]any{"third_party_instance_id": "bridge|irc"}, []string{bridged}},
		{"?third_party_instance_id=" + url.QueryEscape("bridge|other"), nil, nil},
		{"?include_all_networks=true", nil, both},
		{"", map[string]any{"include_all_networks": true}, both},
	} {
		if got := rooms(tc.query, tc.post); !slices.Equal(got, tc.want) {
			t.Fatalf("publicRooms %q %v = %v, want %v", tc.query, tc.post, got, tc.want)
		}
	}
	alice.MustFail("POST", "/_matrix/client/v3/publicRooms", map[string]any{"third_party_instance_id": "bridge|irc", "include_all_networks": true},
		http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("GET", "/_matrix/client/v3/publicRooms?third_party_instance_id=nopipe", nil, http.StatusBadRequest, "M_INVALID_PARAM")

	as.MustDo("DELETE", listPath("irc", bridged), nil, http.StatusOK)
	if got := rooms("?third_party_instance_id="+url.QueryEscape("bridge|irc"), nil); len(got) != 0 {
		t.Fatalf("bridged rooms after removal: %v", got)
	}
}

// mautrix-go's IntentAPI, as bridges use it, against the server: ghosts
// registered with m.login.application_service (again after a bridge
// restart: M_USER_IN_USE is fine), joining, sending backfilled messages
// with ts, a device created with MSC4190 and then masqueraded as.
func TestAppServiceMautrixIntent(t *testing.T) {
	bridge := asTRegistration("bridge", "_bridge_")
	bridge.MSC4190 = true
	srv := asTServer(t, nil, bridge)
	alice := roomTUser(t, srv, "alice")
	roomID := roomTCreate(alice, map[string]any{"preset": "public_chat"})
	ctx := context.Background()
	newBridge := func() *appservice.AppService {
		as, err := appservice.CreateFull(appservice.CreateOpts{Registration: bridge, HomeserverDomain: srv.Name, HomeserverURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	as := newBridge()
	ghostID := id.NewUserID("_bridge_ghost", srv.Name)
	ghost := as.Intent(ghostID)
	if err := ghost.EnsureJoined(ctx, id.RoomID(roomID)); err != nil {
		t.Fatalf("ghost joining: %v", err)
	}
	const past = 1600000000000
	resp, err := ghost.SendMessageEvent(ctx, id.RoomID(roomID), event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: "from the other network"}, mautrix.ReqSendEvent{Timestamp: past})
	if err != nil {
		t.Fatalf("ghost sending: %v", err)
	}
	ev := alice.MustDo("GET", testutil.Path("/_matrix/client/v3/rooms/%s/event/%s", roomID, resp.EventID.String()), nil, http.StatusOK)
	if ev["sender"] != ghostID.String() || int64(ev["origin_server_ts"].(float64)) != past {
		t.Fatalf("bridged message = %v", ev)
	}
	if who, err := as.BotIntent().Whoami(ctx); err != nil || who.UserID != as.BotMXID() {
		t.Fatalf("bot whoami: %+v %v", who, err)
	}
	if err := ghost.Client.CreateDeviceMSC4190(ctx, "GHOSTDEV", "bridge"); err != nil {
		t.Fatalf("creating the ghost's device: %v", err)
	}
	if who, err := ghost.Whoami(ctx); err != nil || who.UserID != ghostID || who.DeviceID != "GHOSTDEV" {
		t.Fatalf("ghost whoami with its device: %+v %v", who, err)
	}
	// A restarted bridge has forgotten whom it registered.
	again := newBridge().Intent(ghostID)
	if err := again.EnsureRegistered(ctx); err != nil {
		t.Fatalf("registering the ghost again: %v", err)
	}
	// A user outside the namespaces cannot be acted as.
	if _, err := newBridge().Intent(id.UserID(alice.UserID)).Client.Whoami(ctx); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("acting as a user outside the namespaces: %v", err)
	}
}

// ip_range_whitelist limits where a service's as_token is accepted from;
// from elsewhere it is an unknown token (as Synapse), for registration and
// the ping too.
func TestAppServiceIPRangeWhitelist(t *testing.T) {
	dir := t.TempDir()
	var files []string
	regs := map[string]*appservice.Registration{}
	for _, tc := range []struct{ id, ranges string }{{"local", `["127.0.0.0/8", "::1"]`}, {"remote", `["10.0.0.0/8"]`}} {
		reg := asTRegistration(tc.id, "_"+tc.id+"_")
		y, err := reg.YAML()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, tc.id+".yaml")
		if err := os.WriteFile(p, []byte(y+"ip_range_whitelist: "+tc.ranges+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
		regs[tc.id] = reg
	}
	srv := testserver.Start(t, testserver.Options{Configure: func(c *config.Config) { c.AppServiceConfigFiles = files }})
	asTClient(srv, regs["local"]).MustDo("GET", asTWhoami, nil, http.StatusOK)
	remote := asTClient(srv, regs["remote"])
	remote.MustFail("GET", asTWhoami, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	remote.MustFail("POST", "/_matrix/client/v3/register", map[string]any{"type": "m.login.application_service", "username": "_remote_a"},
		http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	remote.MustFail("POST", "/_matrix/client/v1/appservice/remote/ping", map[string]any{}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}
