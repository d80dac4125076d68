package tests

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

func membAliasPath(alias string) string {
	return testutil.Path(membCS+"/directory/room/%s", alias)
}

func membVisibilityPath(roomID string) string {
	return testutil.Path(membCS+"/directory/list/room/%s", roomID)
}

// membPublicRooms fetches /publicRooms: GET with the query when body is
// nil, else POST with body.
func membPublicRooms(c *testutil.Client, query url.Values, body map[string]any) map[string]any {
	c.T.Helper()
	if body == nil {
		p := membCS + "/publicRooms"
		if len(query) > 0 {
			p += "?" + query.Encode()
		}
		return c.MustDo("GET", p, nil, http.StatusOK)
	}
	return c.MustDo("POST", membCS+"/publicRooms", body, http.StatusOK)
}

// membChunkIDs lists the room IDs of a /publicRooms chunk.
func membChunkIDs(t *testing.T, resp map[string]any) []string {
	t.Helper()
	chunk, ok := resp["chunk"].([]any)
	if !ok {
		t.Fatalf("publicRooms response without a chunk array: %v", resp)
	}
	ids := []string{}
	for _, e := range chunk {
		ids = append(ids, e.(map[string]any)["room_id"].(string))
	}
	return ids
}

// membChunkEntry returns the chunk entry of roomID, or nil.
func membChunkEntry(resp map[string]any, roomID string) map[string]any {
	chunk, _ := resp["chunk"].([]any)
	for _, e := range chunk {
		if m := e.(map[string]any); m["room_id"] == roomID {
			return m
		}
	}
	return nil
}

// Creating, resolving and deleting room aliases.
func TestDirectoryAliases(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	carol := membRegister(t, srv, "carol")
	anon := srv.Client()
	room := membPublicRoom(alice, "11")
	other := membPublicRoom(alice, "11")
	membJoin(bob, room)

	alias := "#lobby:" + server
	alice.MustDo("PUT", membAliasPath(alias), map[string]any{"room_id": room}, http.StatusOK)
	// Resolving needs no access token.
	m := anon.MustDo("GET", membAliasPath(alias), nil, http.StatusOK)
	if m["room_id"] != room {
		t.Fatalf("alias resolves to %v, want %s", m, room)
	}
	if servers, _ := m["servers"].([]any); !slices.Contains(servers, any(server)) {
		t.Fatalf("servers %v do not include %s", m["servers"], server)
	}
	// And it can be used to join.
	membJoin(carol, room)

	// Errors on creation.
	alice.MustFail("PUT", membAliasPath(alias), map[string]any{"room_id": room}, http.StatusConflict, "M_UNKNOWN")
	alice.MustFail("PUT", membAliasPath(alias), map[string]any{"room_id": other}, http.StatusConflict, "M_UNKNOWN")
	alice.MustFail("PUT", membAliasPath("#lobby:other.example"), map[string]any{"room_id": room}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("PUT", membAliasPath("#noroom:"+server), map[string]any{"room_id": "!nosuchroom:" + server}, http.StatusNotFound, "M_NOT_FOUND")
	r := alice.Do("PUT", membAliasPath("#noid:"+server), map[string]any{})
	if e := r.JSON(t)["errcode"]; r.Status != http.StatusBadRequest || (e != "M_MISSING_PARAM" && e != "M_BAD_JSON") {
		t.Fatalf("PUT alias without room_id: %d %s, want 400 M_MISSING_PARAM (or Synapse's M_BAD_JSON)", r.Status, r.Body)
	}
	alice.MustFail("PUT", membAliasPath("no-hash:"+server), map[string]any{"room_id": room}, http.StatusBadRequest, "M_INVALID_PARAM")
	anon.MustFail("PUT", membAliasPath("#anon:"+server), map[string]any{"room_id": room}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// Only members may alias a room.
	dave := membRegister(t, srv, "dave")
	dave.MustFail("PUT", membAliasPath("#daves:"+server), map[string]any{"room_id": room}, http.StatusForbidden, "M_FORBIDDEN")
	anon.MustFail("GET", membAliasPath("#daves:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	anon.MustFail("GET", membAliasPath("#nosuchalias:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	anon.MustFail("GET", membAliasPath("nohash"), nil, http.StatusBadRequest, "M_INVALID_PARAM")

	// Any member may add an alias (Synapse needs no power level for it).
	bob.MustDo("PUT", membAliasPath("#bobs:"+server), map[string]any{"room_id": room}, http.StatusOK)
	carol.MustDo("PUT", membAliasPath("#carols:"+server), map[string]any{"room_id": room}, http.StatusOK)

	// The local aliases of the room, for members only.
	list := bob.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", room), nil, http.StatusOK)["aliases"].([]any)
	got := []string{}
	for _, a := range list {
		got = append(got, a.(string))
	}
	slices.Sort(got)
	want := []string{"#bobs:" + server, "#carols:" + server, alias}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("aliases = %v, want %v", got, want)
	}
	dave.MustFail("GET", testutil.Path(membCS+"/rooms/%s/aliases", room), nil, http.StatusForbidden, "M_FORBIDDEN")
	anon.MustFail("GET", testutil.Path(membCS+"/rooms/%s/aliases", room), nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	if l := alice.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", other), nil, http.StatusOK)["aliases"].([]any); len(l) != 0 {
		t.Fatalf("room without aliases lists %v", l)
	}

	// Deleting: the creator of an alias may, a power-0 member who did not
	// create it may not, the room admin may.
	bob.MustFail("DELETE", membAliasPath("#carols:"+server), nil, http.StatusForbidden, "M_FORBIDDEN")
	dave.MustFail("DELETE", membAliasPath("#carols:"+server), nil, http.StatusForbidden, "M_FORBIDDEN")
	anon.MustDo("GET", membAliasPath("#carols:"+server), nil, http.StatusOK)
	carol.MustDo("DELETE", membAliasPath("#carols:"+server), nil, http.StatusOK)
	anon.MustFail("GET", membAliasPath("#carols:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("DELETE", membAliasPath("#bobs:"+server), nil, http.StatusOK)
	anon.MustFail("GET", membAliasPath("#bobs:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("DELETE", membAliasPath("#bobs:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("DELETE", membAliasPath("#nosuchalias:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	// A member with the canonical alias power level may delete others'
	// aliases.
	bob.MustDo("PUT", membAliasPath("#bobs2:"+server), map[string]any{"room_id": room}, http.StatusOK)
	membSetPower(alice, room, carol.UserID, 50)
	carol.MustDo("DELETE", membAliasPath("#bobs2:"+server), nil, http.StatusOK)
	anon.MustFail("GET", membAliasPath("#bobs2:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
	// Server admins need neither membership nor power: they may alias a
	// room they are not in, delete any alias and list a room's aliases
	// (as in Synapse).
	admin := registerWithSharedSecret(t, srv, "admin", "pw", true)
	admin.MustDo("PUT", membAliasPath("#byadmin:"+server), map[string]any{"room_id": room}, http.StatusOK)
	if m := anon.MustDo("GET", membAliasPath("#byadmin:"+server), nil, http.StatusOK); m["room_id"] != room {
		t.Fatalf("admin-created alias resolves to %v", m)
	}
	bob.MustDo("PUT", membAliasPath("#bobs3:"+server), map[string]any{"room_id": room}, http.StatusOK)
	admin.MustDo("DELETE", membAliasPath("#bobs3:"+server), nil, http.StatusOK)
	anon.MustFail("GET", membAliasPath("#bobs3:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")

	// The alias name is free again.
	alice.MustDo("PUT", membAliasPath("#bobs:"+server), map[string]any{"room_id": other}, http.StatusOK)
	if m := anon.MustDo("GET", membAliasPath("#bobs:"+server), nil, http.StatusOK); m["room_id"] != other {
		t.Fatalf("re-created alias resolves to %v", m)
	}
	// Synapse lets server admins list the aliases of any room.
	admin.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", room), nil, http.StatusOK)
}

// Deleting the canonical alias (or an alt alias) removes it from the
// room's m.room.canonical_alias event.
func TestDirectoryDeleteCanonicalAlias(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	room := membCreate(alice, map[string]any{"preset": "public_chat", "room_alias_name": "main"})
	main := "#main:" + server
	if ca := membContent(alice, room, "m.room.canonical_alias", ""); ca["alias"] != main {
		t.Fatalf("canonical alias = %v", ca)
	}
	alt := "#alt:" + server
	alice.MustDo("PUT", membAliasPath(alt), map[string]any{"room_id": room}, http.StatusOK)
	alice.MustDo("PUT", membStatePath(room, "m.room.canonical_alias", ""), map[string]any{"alias": main, "alt_aliases": []string{alt}}, http.StatusOK)

	alice.MustDo("DELETE", membAliasPath(main), nil, http.StatusOK)
	ca := membContent(alice, room, "m.room.canonical_alias", "")
	if _, ok := ca["alias"]; ok {
		t.Fatalf("canonical alias still names the deleted alias: %v", ca)
	}
	if alts, _ := ca["alt_aliases"].([]any); len(alts) != 1 || alts[0] != alt {
		t.Fatalf("alt_aliases = %v, want [%s]", ca["alt_aliases"], alt)
	}
	alice.MustDo("DELETE", membAliasPath(alt), nil, http.StatusOK)
	ca = membContent(alice, room, "m.room.canonical_alias", "")
	if alts, _ := ca["alt_aliases"].([]any); len(alts) != 0 || ca["alias"] != nil {
		t.Fatalf("canonical alias after deleting the alt alias = %v", ca)
	}
	// The directory entry no longer shows a canonical alias.
	alice.MustDo("PUT", membVisibilityPath(room), map[string]any{"visibility": "public"}, http.StatusOK)
	e := membChunkEntry(membPublicRooms(alice, nil, nil), room)
	if e == nil {
		t.Fatalf("published room is not listed")
	}
	if _, ok := e["canonical_alias"]; ok {
		t.Fatalf("directory entry still has canonical_alias: %v", e)
	}
}

// Directory visibility of rooms.
func TestDirectoryVisibility(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	carol := membRegister(t, srv, "carol")
	anon := srv.Client()

	pub := membCreate(alice, map[string]any{"visibility": "public", "name": "Published"})
	priv := membCreate(alice, map[string]any{"visibility": "private", "preset": "public_chat", "name": "Unlisted"})
	dflt := membCreate(alice, map[string]any{"preset": "public_chat"})
	for room, want := range map[string]string{pub: "public", priv: "private", dflt: "private"} {
		if m := anon.MustDo("GET", membVisibilityPath(room), nil, http.StatusOK); m["visibility"] != want {
			t.Fatalf("visibility of %s = %v, want %s", room, m, want)
		}
	}
	ids := membChunkIDs(t, membPublicRooms(anon, nil, nil))
	if !slices.Equal(ids, []string{pub}) {
		t.Fatalf("published rooms = %v, want only %s", ids, pub)
	}
	anon.MustFail("GET", membVisibilityPath("!nosuchroom:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")

	membJoin(bob, priv)
	// A power-0 member may not publish; a non-member neither.
	bob.MustFail("PUT", membVisibilityPath(priv), map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
	carol.MustFail("PUT", membVisibilityPath(priv), map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
	anon.MustFail("PUT", membVisibilityPath(priv), map[string]any{"visibility": "public"}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	alice.MustFail("PUT", membVisibilityPath(priv), map[string]any{"visibility": "secret"}, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("PUT", membVisibilityPath("!nosuchroom:"+server), map[string]any{"visibility": "public"}, http.StatusNotFound, "M_NOT_FOUND")
	if m := anon.MustDo("GET", membVisibilityPath(priv), nil, http.StatusOK); m["visibility"] != "private" {
		t.Fatalf("refused changes published the room: %v", m)
	}

	alice.MustDo("PUT", membVisibilityPath(priv), map[string]any{"visibility": "public"}, http.StatusOK)
	if m := anon.MustDo("GET", membVisibilityPath(priv), nil, http.StatusOK); m["visibility"] != "public" {
		t.Fatalf("visibility after publishing = %v", m)
	}
	ids = membChunkIDs(t, membPublicRooms(anon, nil, nil))
	slices.Sort(ids)
	want := []string{pub, priv}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("published rooms = %v, want %v", ids, want)
	}
	// A member with the power level (the canonical alias level, 50) may
	// unpublish.
	membSetPower(alice, priv, bob.UserID, 50)
	bob.MustDo("PUT", membVisibilityPath(priv), map[string]any{"visibility": "private"}, http.StatusOK)
	if m := anon.MustDo("GET", membVisibilityPath(priv), nil, http.StatusOK); m["visibility"] != "private" {
		t.Fatalf("visibility after unpublishing = %v", m)
	}
	if ids := membChunkIDs(t, membPublicRooms(anon, nil, nil)); !slices.Equal(ids, []string{pub}) {
		t.Fatalf("published rooms after unpublishing = %v", ids)
	}
}

// The public room list: the fields of each entry, the order, the search
// filter and the access rules.
func TestDirectoryPublicRooms(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	carol := membRegister(t, srv, "carol")
	anon := srv.Client()

	// big: 3 members, full metadata.
	big := membCreate(alice, map[string]any{
		"visibility": "public", "name": "Big Room", "topic": "Everything about gardening", "room_alias_name": "bigroom",
		"initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
			map[string]any{"type": "m.room.guest_access", "state_key": "", "content": map[string]any{"guest_access": "can_join"}},
		},
	})
	membJoin(bob, big)
	membJoin(carol, big)
	// small: 1 member, a name only; a knock room (published rooms need
	// not have a public join rule; invite-only ones are left out, since
	// servers MAY hide them as Synapse does).
	small := membCreate(alice, map[string]any{
		"visibility": "public", "preset": "private_chat", "name": "Tiny Corner",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}},
	})
	// middle: 2 members, a topic only.
	middle := membCreate(bob, map[string]any{"visibility": "public", "topic": "The Knitting circle"})
	membJoin(alice, middle)
	// Not published.
	membCreate(alice, map[string]any{"preset": "public_chat", "name": "Hidden garden"})

	resp := membPublicRooms(anon, nil, nil)
	if ids := membChunkIDs(t, resp); !slices.Equal(ids, []string{big, middle, small}) {
		t.Fatalf("order = %v, want big, middle, small (most joined members first): %v", ids, resp)
	}
	if n, _ := resp["total_room_count_estimate"].(float64); n != 3 {
		t.Fatalf("total_room_count_estimate = %v, want 3", resp["total_room_count_estimate"])
	}
	if _, ok := resp["next_batch"]; ok {
		t.Fatalf("unpaginated list has next_batch: %v", resp)
	}
	e := membChunkEntry(resp, big)
	for k, want := range map[string]any{
		"name": "Big Room", "topic": "Everything about gardening", "canonical_alias": "#bigroom:" + server,
		"num_joined_members": float64(3), "world_readable": true, "guest_can_join": true, "join_rule": "public",
	} {
		if e[k] != want {
			t.Fatalf("entry of big room: %s = %v, want %v (%v)", k, e[k], want, e)
		}
	}
	e = membChunkEntry(resp, small)
	for k, want := range map[string]any{
		"name": "Tiny Corner", "num_joined_members": float64(1), "world_readable": false, "guest_can_join": true, "join_rule": "knock",
	} {
		if e[k] != want {
			t.Fatalf("entry of small room: %s = %v, want %v (%v)", k, e[k], want, e)
		}
	}
	for _, k := range []string{"topic", "canonical_alias"} {
		if _, ok := e[k]; ok {
			t.Fatalf("entry of small room has %s: %v", k, e)
		}
	}
	e = membChunkEntry(resp, middle)
	if e["topic"] != "The Knitting circle" || e["num_joined_members"] != float64(2) || e["guest_can_join"] != false || e["world_readable"] != false {
		t.Fatalf("entry of middle room: %v", e)
	}
	// Member counts follow leaves.
	membPost(bob, big, "leave", map[string]any{}, http.StatusOK)
	membPost(carol, big, "leave", map[string]any{}, http.StatusOK)
	resp = membPublicRooms(anon, nil, nil)
	if ids := membChunkIDs(t, resp); !slices.Equal(ids, []string{middle, big, small}) && !slices.Equal(ids, []string{middle, small, big}) {
		t.Fatalf("order after leaves = %v, want middle first", ids)
	}
	if e := membChunkEntry(resp, big); e["num_joined_members"] != float64(1) {
		t.Fatalf("big room after leaves: %v", e)
	}
	membJoin(bob, big)
	membJoin(carol, big)

	// POST needs authentication; it returns the same list.
	anon.MustFail("POST", membCS+"/publicRooms", map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	post := membPublicRooms(alice, nil, map[string]any{})
	if ids := membChunkIDs(t, post); !slices.Equal(ids, []string{big, middle, small}) {
		t.Fatalf("POST order = %v", ids)
	}
	// GET also accepts an access token.
	if ids := membChunkIDs(t, membPublicRooms(alice, nil, nil)); !slices.Equal(ids, []string{big, middle, small}) {
		t.Fatalf("authenticated GET order = %v", ids)
	}

	// The search term matches name, topic and alias, case-insensitively.
	for term, want := range map[string][]string{
		"big room":  {big},
		"GARDENING": {big},
		"BIGROOM":   {big},
		"knitting":  {middle},
		"tiny":      {small},
		"R":         {big, middle, small},
		"nothing":   {},
		"hidden":    {},
	} {
		res := membPublicRooms(alice, nil, map[string]any{"filter": map[string]any{"generic_search_term": term}})
		ids := membChunkIDs(t, res)
		if !slices.Equal(ids, want) {
			t.Fatalf("search %q = %v, want %v", term, ids, want)
		}
	}

	// Invalid limits and since tokens.
	anon.MustFail("GET", membCS+"/publicRooms?limit=lots", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	anon.MustFail("GET", membCS+"/publicRooms?since=garbage", nil, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("POST", membCS+"/publicRooms", map[string]any{"since": "garbage"}, http.StatusBadRequest, "M_INVALID_PARAM")
}

// Paginating through five rooms two at a time, forwards and backwards,
// with GET and POST.
func TestDirectoryPublicRoomsPagination(t *testing.T) {
	srv := testserver.Start(t)
	alice := membRegister(t, srv, "alice")
	anon := srv.Client()
	var users []*testutil.Client
	for _, n := range []string{"u1", "u2", "u3", "u4"} {
		users = append(users, membRegister(t, srv, n))
	}
	// Room i has i+1 members, so the order is known: rooms[4] first.
	rooms := make([]string, 5)
	for i := range rooms {
		rooms[i] = membCreate(alice, map[string]any{"visibility": "public", "name": "Room " + string(rune('A'+i))})
		for _, u := range users[:i] {
			membJoin(u, rooms[i])
		}
	}
	wantOrder := []string{rooms[4], rooms[3], rooms[2], rooms[1], rooms[0]}
	if all := membChunkIDs(t, membPublicRooms(anon, nil, nil)); !slices.Equal(all, wantOrder) {
		t.Fatalf("full list = %v, want %v", all, wantOrder)
	}

	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			anon := testutil.NewClient(t, srv.URL)
			alice := testutil.NewClient(t, srv.URL).Login("alice", "pw")
			page := func(since string) map[string]any {
				if method == "GET" {
					q := url.Values{"limit": {"2"}}
					if since != "" {
						q.Set("since", since)
					}
					return membPublicRooms(anon, q, nil)
				}
				body := map[string]any{"limit": 2}
				if since != "" {
					body["since"] = since
				}
				return membPublicRooms(alice, nil, body)
			}
			var pages [][]string
			var tokens []string // the since token of each page
			since := ""
			for i := 0; ; i++ {
				if i > 5 {
					t.Fatalf("pagination does not end: %v", pages)
				}
				resp := page(since)
				if n, _ := resp["total_room_count_estimate"].(float64); n != 5 {
					t.Fatalf("total_room_count_estimate = %v, want 5", resp["total_room_count_estimate"])
				}
				ids := membChunkIDs(t, resp)
				if len(ids) > 2 {
					t.Fatalf("page of %d rooms with limit 2", len(ids))
				}
				_, hasPrev := resp["prev_batch"]
				if (i == 0) == hasPrev {
					t.Fatalf("page %d: prev_batch present = %v: %v", i, hasPrev, resp)
				}
				pages = append(pages, ids)
				tokens = append(tokens, since)
				next, _ := resp["next_batch"].(string)
				if next == "" {
					break
				}
				since = next
			}
			var seen []string
			for _, p := range pages {
				seen = append(seen, p...)
			}
			if !slices.Equal(seen, wantOrder) || len(pages) != 3 {
				t.Fatalf("pages %v, want %v in pages of 2", pages, wantOrder)
			}
			// Backwards from the last page: prev_batch leads to the page
			// before.
			for i := len(pages) - 1; i > 0; i-- {
				resp := page(tokens[i])
				prev, _ := resp["prev_batch"].(string)
				if prev == "" {
					t.Fatalf("page %d lacks prev_batch: %v", i, resp)
				}
				if back := membChunkIDs(t, page(prev)); !slices.Equal(back, pages[i-1]) {
					t.Fatalf("prev_batch of page %d gives %v, want %v", i, back, pages[i-1])
				}
			}
		})
	}
}

// filter.room_types selects rooms by their m.room.create type; null stands
// for rooms without one. Entries carry room_type.
func TestDirectoryPublicRoomsRoomTypes(t *testing.T) {
	srv := testserver.Start(t)
	alice := membRegister(t, srv, "alice")
	space := membCreate(alice, map[string]any{"visibility": "public", "name": "A space", "creation_content": map[string]any{"type": "m.space"}})
	room := membCreate(alice, map[string]any{"visibility": "public", "name": "A room"})
	for _, tc := range []struct {
		name  string
		types any
		want  []string
	}{
		{"spaces", []any{"m.space"}, []string{space}},
		{"untyped", []any{nil}, []string{room}},
		{"both", []any{nil, "m.space"}, []string{room, space}},
		{"other type", []any{"org.example.type"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alice := testutil.NewClient(t, srv.URL).Login("alice", "pw")
			ids := membChunkIDs(t, membPublicRooms(alice, nil, map[string]any{"filter": map[string]any{"room_types": tc.types}}))
			slices.Sort(ids)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Fatalf("room_types %v = %v, want %v", tc.types, ids, want)
			}
		})
	}
	resp := membPublicRooms(alice, nil, nil)
	if e := membChunkEntry(resp, space); e["room_type"] != "m.space" {
		t.Fatalf("space entry = %v, want room_type m.space", e)
	}
	if e := membChunkEntry(resp, room); e == nil || e["room_type"] != nil {
		t.Fatalf("room entry = %v, want no room_type", e)
	}
}

// The alias list of a world-readable room is readable by any user, as in
// Synapse (check_user_in_room_or_world_readable); a departed member of a
// room with shared history may no longer read it.
func TestDirectoryRoomAliasesVisibility(t *testing.T) {
	srv := testserver.Start(t)
	server := srv.Config.ServerName
	alice := membRegister(t, srv, "alice")
	bob := membRegister(t, srv, "bob")
	open := membCreate(alice, map[string]any{
		"preset": "public_chat", "room_alias_name": "open",
		"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}},
	})
	l := bob.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", open), nil, http.StatusOK)["aliases"].([]any)
	if !slices.Equal(l, []any{"#open:" + server}) {
		t.Fatalf("aliases of the world-readable room = %v", l)
	}
	shared := membCreate(alice, map[string]any{"preset": "public_chat", "room_alias_name": "shared"})
	membJoin(bob, shared)
	bob.MustDo("GET", testutil.Path(membCS+"/rooms/%s/aliases", shared), nil, http.StatusOK)
	membPost(bob, shared, "leave", map[string]any{}, http.StatusOK)
	bob.MustFail("GET", testutil.Path(membCS+"/rooms/%s/aliases", shared), nil, http.StatusForbidden, "M_FORBIDDEN")
	bob.MustFail("GET", testutil.Path(membCS+"/rooms/%s/aliases", "!nosuchroom:"+server), nil, http.StatusNotFound, "M_NOT_FOUND")
}
