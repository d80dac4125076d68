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
