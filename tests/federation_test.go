package tests

import (
	"encoding/json"
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
