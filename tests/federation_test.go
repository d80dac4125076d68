package tests

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/setup/testserver"
)

// Two servers of a test network reach each other over federation: hs1's
// notary answers with hs2's keys, which it fetched from hs2 over TLS.
func TestFederationNetworkReachesOtherServers(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test")
	n.Start("hs2.test")
	r := hs1.Client().Do("GET", "/_matrix/key/v2/query/hs2.test", nil)
	if r.Status != 200 {
		t.Fatalf("notary query: %d %s", r.Status, r.Body)
	}
	var body struct {
		ServerKeys []struct {
			ServerName string `json:"server_name"`
		} `json:"server_keys"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || len(body.ServerKeys) != 1 || body.ServerKeys[0].ServerName != "hs2.test" {
		t.Fatalf("notary answer %s", r.Body)
	}
	// Cut hs2 off: hs1 can no longer fetch from it (a new name, nothing cached).
	n.Partition("hs2.test")
	hs3 := n.Start("hs3.test")
	n.Partition("hs3.test")
	if r := hs1.Client().Do("GET", "/_matrix/key/v2/query/hs3.test", nil); r.Status != 200 || string(r.Body) == "" {
		t.Fatalf("notary query for an unreachable server: %d %s", r.Status, r.Body)
	} else if err := json.Unmarshal(r.Body, &body); err != nil || len(body.ServerKeys) != 0 {
		t.Fatalf("keys of an unreachable server: %s", r.Body)
	}
	_ = hs3
}

// A fake remote server of the network talks to Myelin with signed
// requests, and unsigned ones are refused.
func TestFederationFakeRemote(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test")
	rm := n.StartRemote("fake.test")
	status, body, err := rm.Do("GET", "hs1.test", "/_matrix/federation/v1/version", nil)
	if err != nil || status != 200 {
		t.Fatalf("version: %d %s %v", status, body, err)
	}
	res, err := rm.Send("hs1.test", "t1", nil, nil)
	if err != nil || len(res.PDUs) != 0 {
		t.Fatalf("empty transaction: %+v %v", res, err)
	}
	status, body, _ = rm.Do("PUT", "hs1.test", "/_matrix/federation/v1/send/t2", map[string]any{"pdus": []any{}}, true)
	if status != 401 || !strings.Contains(string(body), "M_UNAUTHORIZED") {
		t.Fatalf("unsigned transaction: %d %s", status, body)
	}
	_ = hs1
}

// OpenID: a user's token identifies them to another server, which asks
// their server through /openid/userinfo.
func TestFederationOpenID(t *testing.T) {
	n := testserver.NewNetwork(t)
	hs1 := n.Start("hs1.test")
	rm := n.StartRemote("fake.test")
	alice := hs1.Client().Register("alice", "alice-password")
	tok := alice.MustDo("POST", "/_matrix/client/v3/user/@alice:hs1.test/openid/request_token", map[string]any{}, 200)
	if tok["token_type"] != "Bearer" || tok["matrix_server_name"] != "hs1.test" || tok["expires_in"] != float64(3600) {
		t.Fatalf("token response %v", tok)
	}
	alice.MustDo("POST", "/_matrix/client/v3/user/@bob:hs1.test/openid/request_token", map[string]any{}, 403)
	status, body, err := rm.Do("GET", "hs1.test", "/_matrix/federation/v1/openid/userinfo?access_token="+tok["access_token"].(string), nil, true)
	if err != nil || status != 200 || !strings.Contains(string(body), `"sub":"@alice:hs1.test"`) {
		t.Fatalf("userinfo: %d %s %v", status, body, err)
	}
	status, body, _ = rm.Do("GET", "hs1.test", "/_matrix/federation/v1/openid/userinfo?access_token=nope", nil, true)
	if status != 401 || !strings.Contains(string(body), "M_UNKNOWN_TOKEN") {
		t.Fatalf("userinfo with an unknown token: %d %s", status, body)
	}
}
