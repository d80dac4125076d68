package tests

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/testutil"
	"github.com/myelin-chat/myelin/setup/testserver"
)

// Server-side key backups: /room_keys/version and /room_keys/keys.

const (
	backupVersionPath = "/_matrix/client/v3/room_keys/version"
	backupAlgorithm   = "m.megolm_backup.v1.curve25519-aes-sha2"
)

// backupAuthData is a valid auth_data of the spec's algorithm.
func backupAuthData(publicKey string) map[string]any {
	return map[string]any{"public_key": publicKey, "signatures": map[string]any{"@alice:x": map[string]any{"ed25519:DEV": "sig"}}}
}

// createKeyBackup creates a backup version and returns it.
func createKeyBackup(c *testutil.Client) string {
	c.T.Helper()
	m := c.MustDo("POST", backupVersionPath, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk")}, http.StatusOK)
	v, ok := m["version"].(string)
	if !ok || v == "" {
		c.T.Fatalf("POST /room_keys/version: %v", m)
	}
	return v
}

// roomKeysPath is /room_keys/keys[/{roomId}[/{sessionId}]]?version=v (no
// version when v is "").
func roomKeysPath(v string, ids ...string) string {
	p := "/_matrix/client/v3/room_keys/keys"
	for _, id := range ids {
		p += "/" + url.PathEscape(id)
	}
	if v != "" {
		p += "?version=" + url.QueryEscape(v)
	}
	return p
}

// backupKeyData is a KeyBackupData; data tells copies apart.
func backupKeyData(verified bool, index, forwarded int, data string) map[string]any {
	return map[string]any{"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
		"session_data": map[string]any{"ephemeral": "eph", "ciphertext": data, "mac": "mac"}}
}

// putBackupKeys uploads and returns the etag and count of the answer.
func putBackupKeys(c *testutil.Client, path string, body any) (etag string, count int) {
	c.T.Helper()
	return backupKeysCounts(c, "PUT", path, body)
}

// deleteBackupKeys deletes and returns the etag and count of the answer.
func deleteBackupKeys(c *testutil.Client, path string) (etag string, count int) {
	c.T.Helper()
	return backupKeysCounts(c, "DELETE", path, nil)
}

func backupKeysCounts(c *testutil.Client, method, path string, body any) (etag string, count int) {
	c.T.Helper()
	m := c.MustDo(method, path, body, http.StatusOK)
	etag, ok := m["etag"].(string)
	n, ok2 := m["count"].(float64)
	if !ok || !ok2 || len(m) != 2 {
		c.T.Fatalf("%s %s answered %v, want etag and count", method, path, m)
	}
	return etag, int(n)
}

// backupInfo returns GET /room_keys/version[/{v}].
func backupInfo(c *testutil.Client, v string) map[string]any {
	c.T.Helper()
	p := backupVersionPath
	if v != "" {
		p += "/" + url.PathEscape(v)
	}
	return c.MustDo("GET", p, nil, http.StatusOK)
}

func TestKeyBackupVersions(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	alice.MustFail("GET", backupVersionPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	srv.Client().MustFail("GET", backupVersionPath, nil, http.StatusUnauthorized, "M_MISSING_TOKEN")

	v1 := createKeyBackup(alice)
	want := map[string]any{"version": v1, "algorithm": backupAlgorithm, "auth_data": backupAuthData("pk"), "count": 0.0}
	for _, info := range []map[string]any{backupInfo(alice, ""), backupInfo(alice, v1)} {
		etag, ok := info["etag"].(string)
		delete(info, "etag")
		if !ok || !sameJSON(t, info, want) {
			t.Fatalf("backup info %v (etag %q), want %v", info, etag, want)
		}
	}
	// Also under r0.
	alice.MustDo("GET", "/_matrix/client/r0/room_keys/version", nil, http.StatusOK)

	// A new version becomes current; the old one can still be read and
	// updated.
	v2 := createKeyBackup(alice)
	if v2 == v1 || backupInfo(alice, "")["version"] != v2 {
		t.Fatalf("versions %s %s, current %v", v1, v2, backupInfo(alice, ""))
	}
	alice.MustDo("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk2")}, http.StatusOK)
	if info := backupInfo(alice, v1); !sameJSON(t, info["auth_data"], backupAuthData("pk2")) {
		t.Fatalf("auth_data after update: %v", info)
	}
	alice.MustDo("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk3"), "version": v1},
		http.StatusOK)
	if info := backupInfo(alice, v1); !sameJSON(t, info["auth_data"], backupAuthData("pk3")) || info["algorithm"] != backupAlgorithm {
		t.Fatalf("auth_data after update with version: %v", info)
	}
	alice.MustFail("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk"), "version": v2},
		http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk"), "version": 1},
		http.StatusBadRequest, "M_BAD_JSON")
	alice.MustFail("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{}},
		http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustFail("PUT", backupVersionPath+"/"+v1, map[string]any{"algorithm": backupAlgorithm, "auth_data": map[string]any{}},
		http.StatusBadRequest, "M_MISSING_PARAM")
	alice.MustFail("PUT", backupVersionPath+"/999", map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk")},
		http.StatusNotFound, "M_NOT_FOUND")
	if info := backupInfo(alice, v1); !sameJSON(t, info["auth_data"], backupAuthData("pk3")) {
		t.Fatalf("auth_data after refused updates: %v", info)
	}

	// Deleting the current version makes the previous one current; a
	// second delete succeeds; an unknown version is 404.
	alice.MustDo("DELETE", backupVersionPath+"/"+v2, nil, http.StatusOK)
	if cur := backupInfo(alice, ""); cur["version"] != v1 {
		t.Fatalf("current after deleting %s: %v", v2, cur)
	}
	alice.MustFail("GET", backupVersionPath+"/"+v2, nil, http.StatusNotFound, "M_NOT_FOUND")
	alice.MustFail("PUT", backupVersionPath+"/"+v2, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk")},
		http.StatusNotFound, "M_NOT_FOUND")
	alice.MustDo("DELETE", backupVersionPath+"/"+v2, nil, http.StatusOK)
	for _, v := range []string{"999", "abc", "0" + v1, "-1"} {
		alice.MustFail("DELETE", backupVersionPath+"/"+url.PathEscape(v), nil, http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("GET", backupVersionPath+"/"+url.PathEscape(v), nil, http.StatusNotFound, "M_NOT_FOUND")
	}
	// Version numbers are not reused.
	if v3 := createKeyBackup(alice); v3 == v1 || v3 == v2 {
		t.Fatalf("new version %s reuses one of %s %s", v3, v1, v2)
	}
	alice.MustDo("DELETE", backupVersionPath+"/"+v1, nil, http.StatusOK)

}

// Guests have no backups (as Synapse).
func TestKeyBackupGuests(t *testing.T) {
	srv := startGuestServer(t, true)
	guest := registerGuest(t, srv, map[string]any{})
	guest.MustFail("POST", backupVersionPath, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("pk")},
		http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	guest.MustFail("GET", roomKeysPath("1"), nil, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}

// The bodies of POST and PUT /room_keys/version are checked.
func TestKeyBackupVersionBodies(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	for _, tc := range []struct {
		body    any
		errcode string
	}{
		{testutil.Raw(`{"algorithm":`), "M_NOT_JSON"},
		{testutil.Raw(`[]`), "M_BAD_JSON"},
		{map[string]any{"auth_data": backupAuthData("pk")}, "M_MISSING_PARAM"},
		{map[string]any{"algorithm": 5, "auth_data": backupAuthData("pk")}, "M_BAD_JSON"},
		{map[string]any{"algorithm": "", "auth_data": backupAuthData("pk")}, "M_INVALID_PARAM"},
		{map[string]any{"algorithm": strings.Repeat("a", 256), "auth_data": map[string]any{}}, "M_INVALID_PARAM"},
		{map[string]any{"algorithm": backupAlgorithm}, "M_MISSING_PARAM"},
		{map[string]any{"algorithm": backupAlgorithm, "auth_data": "c2VjcmV0"}, "M_BAD_JSON"},
		{map[string]any{"algorithm": backupAlgorithm, "auth_data": map[string]any{"signatures": map[string]any{}}}, "M_MISSING_PARAM"},
		{map[string]any{"algorithm": backupAlgorithm, "auth_data": map[string]any{"public_key": 5}}, "M_BAD_JSON"},
		{map[string]any{"algorithm": backupAlgorithm, "auth_data": map[string]any{"public_key": ""}}, "M_INVALID_PARAM"},
		{map[string]any{"algorithm": backupAlgorithm, "auth_data": map[string]any{"public_key": "pk", "signatures": "x"}}, "M_BAD_JSON"},
	} {
		alice.MustFail("POST", backupVersionPath, tc.body, http.StatusBadRequest, tc.errcode)
	}
	alice.MustFail("GET", backupVersionPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	// Another algorithm is stored as given, whatever its auth_data (as
	// Synapse, and Complement's tests, do).
	m := alice.MustDo("POST", backupVersionPath, map[string]any{"algorithm": "m.megolm_backup.v1", "auth_data": map[string]any{"foo": "bar"}},
		http.StatusOK)
	info := backupInfo(alice, m["version"].(string))
	if info["algorithm"] != "m.megolm_backup.v1" || !sameJSON(t, info["auth_data"], map[string]any{"foo": "bar"}) {
		t.Fatalf("backup of another algorithm: %v", info)
	}
	// signatures is optional, and null is its absence (mautrix-go sends
	// that for an auth_data it did not sign).
	alice.MustDo("POST", backupVersionPath, map[string]any{"algorithm": backupAlgorithm,
		"auth_data": map[string]any{"public_key": "pk", "signatures": nil}}, http.StatusOK)
}

func TestKeyBackupKeys(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv := testserver.Start(t, o)
		alice := srv.Client().Register("alice", "pw")
		v := createKeyBackup(alice)
		const room1, room2 = "!room1:example.org", "!room2:example.org"

		// An empty backup.
		if m := alice.MustDo("GET", roomKeysPath(v), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"rooms": map[string]any{}}) {
			t.Fatalf("keys of an empty backup: %v", m)
		}
		if m := alice.MustDo("GET", roomKeysPath(v, room1), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"sessions": map[string]any{}}) {
			t.Fatalf("keys of a room without keys: %v", m)
		}
		alice.MustFail("GET", roomKeysPath(v, room1, "s1"), nil, http.StatusNotFound, "M_NOT_FOUND")
		etag0 := backupInfo(alice, v)["etag"].(string)

		// One session, one room, several rooms.
		etag1, n := putBackupKeys(alice, roomKeysPath(v, room1, "s1"), backupKeyData(false, 3, 1, "a"))
		if n != 1 || etag1 == etag0 {
			t.Fatalf("after one session: etag %s (was %s), count %d", etag1, etag0, n)
		}
		if m := alice.MustDo("GET", roomKeysPath(v, room1, "s1"), nil, http.StatusOK); !sameJSON(t, m, backupKeyData(false, 3, 1, "a")) {
			t.Fatalf("GET session: %v", m)
		}
		etag2, n := putBackupKeys(alice, roomKeysPath(v, room1), map[string]any{"sessions": map[string]any{
			"s2": backupKeyData(true, 0, 0, "b"), "s3": backupKeyData(false, 1, 0, "c"),
		}})
		if n != 3 || etag2 == etag1 {
			t.Fatalf("after a room: etag %s, count %d", etag2, n)
		}
		etag3, n := putBackupKeys(alice, roomKeysPath(v), map[string]any{"rooms": map[string]any{
			room1: map[string]any{"sessions": map[string]any{"s4": backupKeyData(false, 0, 0, "d")}},
			room2: map[string]any{"sessions": map[string]any{"t1": backupKeyData(true, 2, 2, "e")}},
		}})
		if n != 5 || etag3 == etag2 {
			t.Fatalf("after several rooms: etag %s, count %d", etag3, n)
		}
		// An upload that changes nothing leaves the etag.
		if etag, n := putBackupKeys(alice, roomKeysPath(v), map[string]any{"rooms": map[string]any{}}); etag != etag3 || n != 5 {
			t.Fatalf("empty upload: etag %s (was %s), count %d", etag, etag3, n)
		}
		if info := backupInfo(alice, ""); info["etag"] != etag3 || info["count"] != 5.0 {
			t.Fatalf("backup info %v, want etag %s and count 5", info, etag3)
		}
		wantRoom1 := map[string]any{"sessions": map[string]any{
			"s1": backupKeyData(false, 3, 1, "a"), "s2": backupKeyData(true, 0, 0, "b"), "s3": backupKeyData(false, 1, 0, "c"), "s4": backupKeyData(false, 0, 0, "d"),
		}}
		wantRoom2 := map[string]any{"sessions": map[string]any{"t1": backupKeyData(true, 2, 2, "e")}}
		if m := alice.MustDo("GET", roomKeysPath(v, room1), nil, http.StatusOK); !sameJSON(t, m, wantRoom1) {
			t.Fatalf("GET room: %v", m)
		}
		if m := alice.MustDo("GET", roomKeysPath(v), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"rooms": map[string]any{room1: wantRoom1, room2: wantRoom2}}) {
			t.Fatalf("GET all: %v", m)
		}
		if m := alice.MustDo("GET", "/_matrix/client/r0/room_keys/keys?version="+v, nil, http.StatusOK); len(m["rooms"].(map[string]any)) != 2 {
			t.Fatalf("GET all under r0: %v", m)
		}

		// The version query parameter is required; an unknown version is
		// 404.
		for _, p := range []string{roomKeysPath(""), roomKeysPath("", room1), roomKeysPath("", room1, "s1")} {
			alice.MustFail("GET", p, nil, http.StatusBadRequest, "M_MISSING_PARAM")
			alice.MustFail("DELETE", p, nil, http.StatusBadRequest, "M_MISSING_PARAM")
			alice.MustFail("PUT", p, map[string]any{"rooms": map[string]any{}}, http.StatusBadRequest, "M_MISSING_PARAM")
		}
		for _, bad := range []string{"999", "x"} {
			alice.MustFail("GET", roomKeysPath(bad), nil, http.StatusNotFound, "M_NOT_FOUND")
			alice.MustFail("GET", roomKeysPath(bad, room1), nil, http.StatusNotFound, "M_NOT_FOUND")
			alice.MustFail("GET", roomKeysPath(bad, room1, "s1"), nil, http.StatusNotFound, "M_NOT_FOUND")
			alice.MustFail("DELETE", roomKeysPath(bad), nil, http.StatusNotFound, "M_NOT_FOUND")
			alice.MustFail("DELETE", roomKeysPath(bad, room1, "s1"), nil, http.StatusNotFound, "M_NOT_FOUND")
			alice.MustFail("PUT", roomKeysPath(bad, room1, "s1"), backupKeyData(true, 0, 0, "z"), http.StatusNotFound, "M_NOT_FOUND")
		}

		// Deletes: a session, a room, nothing, everything.
		etag4, n := deleteBackupKeys(alice, roomKeysPath(v, room1, "s1"))
		if n != 4 || etag4 == etag3 {
			t.Fatalf("after deleting a session: etag %s, count %d", etag4, n)
		}
		alice.MustFail("GET", roomKeysPath(v, room1, "s1"), nil, http.StatusNotFound, "M_NOT_FOUND")
		if etag, n := deleteBackupKeys(alice, roomKeysPath(v, room1, "s1")); etag != etag4 || n != 4 {
			t.Fatalf("deleting a missing session: etag %s (was %s), count %d", etag, etag4, n)
		}
		etag5, n := deleteBackupKeys(alice, roomKeysPath(v, room1))
		if n != 1 || etag5 == etag4 {
			t.Fatalf("after deleting a room: etag %s, count %d", etag5, n)
		}
		if m := alice.MustDo("GET", roomKeysPath(v), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"rooms": map[string]any{room2: wantRoom2}}) {
			t.Fatalf("GET all after deleting a room: %v", m)
		}
		etag6, n := deleteBackupKeys(alice, roomKeysPath(v))
		if n != 0 || etag6 == etag5 {
			t.Fatalf("after deleting all: etag %s, count %d", etag6, n)
		}
		if info := backupInfo(alice, v); info["etag"] != etag6 || info["count"] != 0.0 {
			t.Fatalf("backup info after deleting all: %v", info)
		}
		// A deleted session can be stored again.
		if _, n := putBackupKeys(alice, roomKeysPath(v, room1, "s1"), backupKeyData(false, 9, 9, "again")); n != 1 {
			t.Fatalf("count after storing again: %d", n)
		}
	})
}

// The replacement rules of the spec (and Complement's
// TestE2EKeyBackupReplaceRoomKeyRules): a verified key beats an unverified
// one; then the lower first_message_index wins; then the lower
// forwarded_count. A key that does not replace leaves the etag.
func TestKeyBackupReplaceRules(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv := testserver.Start(t, o)
		alice := srv.Client().Register("alice", "pw")
		v := createKeyBackup(alice)
		const room = "!foo:hs1"
		type k struct {
			verified         bool
			index, forwarded int
		}
		for i, tc := range []struct {
			stored   k
			keep     []k // uploads that leave the stored key
			replaces k   // an upload that replaces it
		}{
			{k{false, 10, 5}, []k{{false, 11, 5}, {false, 10, 6}, {false, 11, 6}, {false, 10, 5}}, k{false, 9, 50}},
			{k{false, 10, 5}, []k{{false, 11, 0}}, k{false, 10, 4}},
			{k{true, 10, 5}, []k{{false, 11, 5}, {false, 10, 6}, {false, 11, 6}, {true, 11, 5}, {true, 10, 6}, {true, 11, 6}, {false, 0, 0}}, k{true, 10, 4}},
			{k{false, 0, 0}, nil, k{true, 10, 5}},
		} {
			session := fmt.Sprintf("session%d", i)
			path := roomKeysPath(v, room, session)
			etag, count := putBackupKeys(alice, path, backupKeyData(tc.stored.verified, tc.stored.index, tc.stored.forwarded, "stored"))
			check := func(want k, data string) {
				t.Helper()
				m := alice.MustDo("GET", path, nil, http.StatusOK)
				if !sameJSON(t, m, backupKeyData(want.verified, want.index, want.forwarded, data)) {
					t.Fatalf("case %d: stored %v, want %+v (%s)", i, m, want, data)
				}
			}
			for _, up := range tc.keep {
				e, n := putBackupKeys(alice, path, backupKeyData(up.verified, up.index, up.forwarded, "upload"))
				if e != etag || n != count {
					t.Fatalf("case %d: %+v did not replace %+v but etag %s -> %s, count %d -> %d", i, up, tc.stored, etag, e, count, n)
				}
				check(tc.stored, "stored")
			}
			e, n := putBackupKeys(alice, path, backupKeyData(tc.replaces.verified, tc.replaces.index, tc.replaces.forwarded, "better"))
			if e == etag || n != count {
				t.Fatalf("case %d: %+v replaced %+v: etag %s -> %s, count %d -> %d", i, tc.replaces, tc.stored, etag, e, count, n)
			}
			check(tc.replaces, "better")
		}

		// The rules apply per session within one bulk upload too.
		etag, count := putBackupKeys(alice, roomKeysPath(v), map[string]any{"rooms": map[string]any{room: map[string]any{"sessions": map[string]any{
			"session0": backupKeyData(false, 100, 0, "worse"),   // stored {false, 9, 50}: kept
			"session1": backupKeyData(false, 10, 3, "better"),   // stored {false, 10, 4}: replaced
			"fresh":    backupKeyData(false, 100, 0, "new one"), // added
		}}}})
		if count != 5 {
			t.Fatalf("count after the bulk upload: %d (etag %s)", count, etag)
		}
		m := alice.MustDo("GET", roomKeysPath(v, room), nil, http.StatusOK)
		sessions := m["sessions"].(map[string]any)
		if !sameJSON(t, sessions["session0"], backupKeyData(false, 9, 50, "better")) || !sameJSON(t, sessions["session1"], backupKeyData(false, 10, 3, "better")) ||
			!sameJSON(t, sessions["fresh"], backupKeyData(false, 100, 0, "new one")) {
			t.Fatalf("after the bulk upload: %v", sessions)
		}
	})
}

// Keys can only be written to the current version (403
// M_WRONG_ROOM_KEYS_VERSION naming it); an older one can be read and
// emptied; deleting a version deletes its keys.
func TestKeyBackupWrongAndDeletedVersion(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv := testserver.Start(t, o)
		alice := srv.Client().Register("alice", "pw")
		alice.MustFail("PUT", roomKeysPath("1", "!r:x", "s"), backupKeyData(true, 0, 0, "a"), http.StatusNotFound, "M_NOT_FOUND")
		v1 := createKeyBackup(alice)
		putBackupKeys(alice, roomKeysPath(v1, "!r:x", "s"), backupKeyData(true, 0, 0, "a"))
		putBackupKeys(alice, roomKeysPath(v1, "!r:x", "t"), backupKeyData(true, 0, 0, "b"))
		v2 := createKeyBackup(alice)
		for _, p := range []string{roomKeysPath(v1, "!r:x", "s"), roomKeysPath(v1, "!r:x"), roomKeysPath(v1)} {
			var body any = backupKeyData(true, 0, 0, "c")
			if strings.HasSuffix(p, "keys?version="+v1) {
				body = map[string]any{"rooms": map[string]any{}}
			} else if !strings.Contains(p, "/s?") {
				body = map[string]any{"sessions": map[string]any{}}
			}
			m := alice.MustFail("PUT", p, body, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
			if m["current_version"] != v2 {
				t.Fatalf("PUT %s: %v, want current_version %s", p, m, v2)
			}
		}
		if m := alice.MustDo("GET", roomKeysPath(v1, "!r:x", "s"), nil, http.StatusOK); !sameJSON(t, m, backupKeyData(true, 0, 0, "a")) {
			t.Fatalf("key of the old version: %v", m)
		}
		if m := alice.MustDo("GET", roomKeysPath(v2), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"rooms": map[string]any{}}) {
			t.Fatalf("keys of the new version: %v", m)
		}
		if _, n := deleteBackupKeys(alice, roomKeysPath(v1, "!r:x", "t")); n != 1 {
			t.Fatalf("count of the old version after a delete: %d", n)
		}

		// Deleting the current version: the old one is current again;
		// the deleted one and its keys are gone.
		putBackupKeys(alice, roomKeysPath(v2, "!r:x", "u"), backupKeyData(true, 0, 0, "d"))
		alice.MustDo("DELETE", backupVersionPath+"/"+v2, nil, http.StatusOK)
		alice.MustFail("GET", roomKeysPath(v2), nil, http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("GET", roomKeysPath(v2, "!r:x", "u"), nil, http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("PUT", roomKeysPath(v2, "!r:x", "u"), backupKeyData(true, 0, 0, "d"), http.StatusNotFound, "M_NOT_FOUND")
		alice.MustFail("DELETE", roomKeysPath(v2), nil, http.StatusNotFound, "M_NOT_FOUND")
		if _, n := putBackupKeys(alice, roomKeysPath(v1, "!r:x", "v"), backupKeyData(true, 0, 0, "e")); n != 2 {
			t.Fatalf("count after writing to the version current again: %d", n)
		}
		alice.MustDo("DELETE", backupVersionPath+"/"+v1, nil, http.StatusOK)
		alice.MustFail("PUT", roomKeysPath(v1, "!r:x", "v"), backupKeyData(true, 0, 0, "e"), http.StatusNotFound, "M_NOT_FOUND")
		v3 := createKeyBackup(alice)
		if info := backupInfo(alice, ""); info["version"] != v3 || info["count"] != 0.0 {
			t.Fatalf("a new version after deletions: %v", info)
		}
	})
}

// Another user's versions do not exist for a user, and numbers are per
// user.
func TestKeyBackupOtherUser(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	bob := srv.Client().Register("bob", "pw")
	v := createKeyBackup(alice)
	putBackupKeys(alice, roomKeysPath(v, "!r:x", "s"), backupKeyData(true, 0, 0, "alice's"))

	bob.MustFail("GET", backupVersionPath, nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("GET", backupVersionPath+"/"+v, nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("PUT", backupVersionPath+"/"+v, map[string]any{"algorithm": backupAlgorithm, "auth_data": backupAuthData("bob")},
		http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("DELETE", backupVersionPath+"/"+v, nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("GET", roomKeysPath(v), nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("GET", roomKeysPath(v, "!r:x", "s"), nil, http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("PUT", roomKeysPath(v, "!r:x", "s"), backupKeyData(true, 0, 0, "bob's"), http.StatusNotFound, "M_NOT_FOUND")
	bob.MustFail("DELETE", roomKeysPath(v), nil, http.StatusNotFound, "M_NOT_FOUND")

	// Bob's own backup may have the same number: it is his.
	bv := createKeyBackup(bob)
	if m := bob.MustDo("GET", roomKeysPath(bv), nil, http.StatusOK); !sameJSON(t, m, map[string]any{"rooms": map[string]any{}}) {
		t.Fatalf("bob's keys: %v", m)
	}
	deleteBackupKeys(bob, roomKeysPath(bv))
	bob.MustDo("DELETE", backupVersionPath+"/"+bv, nil, http.StatusOK)
	if m := alice.MustDo("GET", roomKeysPath(v, "!r:x", "s"), nil, http.StatusOK); !sameJSON(t, m, backupKeyData(true, 0, 0, "alice's")) {
		t.Fatalf("alice's key after bob's deletes: %v", m)
	}
	if info := backupInfo(alice, ""); info["version"] != v || info["count"] != 1.0 {
		t.Fatalf("alice's backup after bob's deletes: %v", info)
	}
}

// The bodies of PUT /room_keys/keys are checked, and a refused upload
// stores nothing.
func TestKeyBackupKeyBodies(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Client().Register("alice", "pw")
	v := createKeyBackup(alice)
	with := func(key, value any) map[string]any {
		b := backupKeyData(false, 0, 0, "x")
		if value == nil {
			delete(b, key.(string))
		} else {
			b[key.(string)] = value
		}
		return b
	}
	session := roomKeysPath(v, "!r:x", "s")
	for _, tc := range []struct {
		path    string
		body    any
		errcode string
	}{
		{session, testutil.Raw(`{"first_message_index"`), "M_NOT_JSON"},
		{session, testutil.Raw(`"key"`), "M_BAD_JSON"},
		{session, with("first_message_index", nil), "M_MISSING_PARAM"},
		{session, with("forwarded_count", nil), "M_MISSING_PARAM"},
		{session, with("is_verified", nil), "M_MISSING_PARAM"},
		{session, with("session_data", nil), "M_MISSING_PARAM"},
		{session, with("first_message_index", "1"), "M_BAD_JSON"},
		{session, with("forwarded_count", true), "M_BAD_JSON"},
		{session, with("first_message_index", -1), "M_INVALID_PARAM"},
		{session, with("forwarded_count", 1.5), "M_INVALID_PARAM"},
		{session, with("first_message_index", 1<<60), "M_INVALID_PARAM"},
		{session, with("is_verified", "yes"), "M_INVALID_PARAM"},
		{session, with("session_data", "c2VjcmV0"), "M_BAD_JSON"},
		{roomKeysPath(v, "not-a-room", "s"), backupKeyData(false, 0, 0, "x"), "M_INVALID_PARAM"},
		{roomKeysPath(v, "!r:x", strings.Repeat("s", 256)), backupKeyData(false, 0, 0, "x"), "M_INVALID_PARAM"},
		{roomKeysPath(v, "!r:x"), map[string]any{}, "M_MISSING_PARAM"},
		{roomKeysPath(v, "!r:x"), map[string]any{"sessions": []any{}}, "M_BAD_JSON"},
		{roomKeysPath(v, "!r:x"), map[string]any{"sessions": map[string]any{"s": "key"}}, "M_BAD_JSON"},
		{roomKeysPath(v, "#alias:x"), map[string]any{"sessions": map[string]any{}}, "M_INVALID_PARAM"},
		{roomKeysPath(v), map[string]any{}, "M_MISSING_PARAM"},
		{roomKeysPath(v), map[string]any{"rooms": []any{}}, "M_BAD_JSON"},
		{roomKeysPath(v), map[string]any{"rooms": map[string]any{"!r:x": []any{}}}, "M_BAD_JSON"},
		{roomKeysPath(v), map[string]any{"rooms": map[string]any{"!r:x": map[string]any{}}}, "M_MISSING_PARAM"},
		{roomKeysPath(v), map[string]any{"rooms": map[string]any{"r": map[string]any{"sessions": map[string]any{}}}}, "M_INVALID_PARAM"},
		// One bad session among good ones: nothing is stored.
		{roomKeysPath(v), map[string]any{"rooms": map[string]any{
			"!a:x": map[string]any{"sessions": map[string]any{"good": backupKeyData(true, 0, 0, "x")}},
			"!b:x": map[string]any{"sessions": map[string]any{"good": backupKeyData(true, 0, 0, "x"), "bad": with("is_verified", 1)}},
		}}, "M_INVALID_PARAM"},
	} {
		alice.MustFail("PUT", tc.path, tc.body, http.StatusBadRequest, tc.errcode)
	}
	if info := backupInfo(alice, v); info["count"] != 0.0 {
		t.Fatalf("refused uploads stored keys: %v", info)
	}
	// 10.0 is an integer; null is absent.
	putBackupKeys(alice, session, testutil.Raw(`{"first_message_index":10.0,"forwarded_count":0,"is_verified":false,"session_data":{}}`))
	alice.MustFail("PUT", session, testutil.Raw(`{"first_message_index":null,"forwarded_count":0,"is_verified":false,"session_data":{}}`),
		http.StatusBadRequest, "M_MISSING_PARAM")
}

// backupSessionData is a realistic session_data: an m.megolm_backup.v1 key is
// about 1 KiB once encrypted.
func backupSessionData(i int) map[string]any {
	return map[string]any{
		"ephemeral":  fmt.Sprintf("%043d", i),
		"ciphertext": strings.Repeat(fmt.Sprintf("%08d", i), 100),
		"mac":        "QzKV/fgAs4U",
	}
}

// bulkBackupKeys is a PUT /room_keys/keys body of n sessions in 10 rooms, with
// session IDs prefixed by prefix.
func bulkBackupKeys(n int, prefix string) map[string]any {
	rooms := map[string]any{}
	for i := range n {
		room := fmt.Sprintf("!room%d:example.org", i%10)
		r, ok := rooms[room].(map[string]any)
		if !ok {
			r = map[string]any{"sessions": map[string]any{}}
			rooms[room] = r
		}
		r["sessions"].(map[string]any)[fmt.Sprintf("%s%039d", prefix, i)] = map[string]any{
			"first_message_index": i % 7, "forwarded_count": i % 3, "is_verified": i%2 == 0, "session_data": backupSessionData(i),
		}
	}
	return map[string]any{"rooms": rooms}
}

// An upload of 1,000 sessions (over 1 MiB, past the default body cap) is
// one request; a body over the key upload cap is 413.
func TestKeyBackupLargeUpload(t *testing.T) {
	regForEachDB(t, func(t *testing.T, o testserver.Options) {
		srv := testserver.Start(t, o)
		alice := srv.Client().Register("alice", "pw")
		v := createKeyBackup(alice)
		start := time.Now()
		if _, n := putBackupKeys(alice, roomKeysPath(v), bulkBackupKeys(1000, "a")); n != 1000 {
			t.Fatalf("count after 1000 sessions: %d", n)
		}
		t.Logf("PUT /room_keys/keys of 1000 sessions: %v", time.Since(start))
		m := alice.MustDo("GET", roomKeysPath(v), nil, http.StatusOK)
		total := 0
		for _, r := range m["rooms"].(map[string]any) {
			total += len(r.(map[string]any)["sessions"].(map[string]any))
		}
		if total != 1000 {
			t.Fatalf("GET all: %d sessions", total)
		}
		got := m["rooms"].(map[string]any)["!room7:example.org"].(map[string]any)["sessions"].(map[string]any)[fmt.Sprintf("a%039d", 17)]
		if !sameJSON(t, got, map[string]any{"first_message_index": 3, "forwarded_count": 2, "is_verified": false, "session_data": backupSessionData(17)}) {
			t.Fatalf("session 17: %v", got)
		}
		big := testutil.Raw(`{"rooms":{"!r:x":{"sessions":{"s":{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"c":"` +
			strings.Repeat("x", 33<<20) + `"}}}}}}`)
		alice.MustFail("PUT", roomKeysPath(v), big, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	})
}

// BenchmarkKeyBackupUpload1000 uploads 1,000 new sessions (about 1 MiB)
// in one PUT /room_keys/keys per operation.
func BenchmarkKeyBackupUpload1000(b *testing.B) {
	for _, db := range []struct {
		name string
		o    testserver.Options
	}{{"sqlite", testserver.Options{}}, {"postgres", testserver.Options{Postgres: true}}} {
		b.Run(db.name, func(b *testing.B) {
			srv := testserver.Start(b, db.o)
			alice := srv.Client().Register("alice", "pw")
			v := createKeyBackup(alice)
			bodies := make([]map[string]any, b.N)
			for i := range bodies {
				bodies[i] = bulkBackupKeys(1000, fmt.Sprintf("b%d-", i))
			}
			b.ResetTimer()
			for i := range b.N {
				if _, n := putBackupKeys(alice, roomKeysPath(v), bodies[i]); n != 1000*(i+1) {
					b.Fatalf("count %d after %d uploads", n, i+1)
				}
			}
		})
	}
}
