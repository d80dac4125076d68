package federationapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestEDUBounds(t *testing.T) {
	edu := func(typ string, content any) gomatrixserverlib.EDU {
		c, _ := json.Marshal(content)
		return gomatrixserverlib.EDU{Type: typ, Content: c}
	}
	users := func(n int) []map[string]any {
		out := make([]map[string]any, n)
		for i := range out {
			out[i] = map[string]any{"user_id": fmt.Sprintf("@u%d:o", i), "presence": "online"}
		}
		return out
	}
	receipts := func(rooms, usersPerRoom, ids int) map[string]any {
		c := map[string]any{}
		for r := range rooms {
			us := map[string]any{}
			for u := range usersPerRoom {
				evs := make([]string, ids)
				for i := range evs {
					evs[i] = fmt.Sprintf("$e%d", i)
				}
				us[fmt.Sprintf("@u%d:o", u)] = map[string]any{"event_ids": evs, "data": map[string]any{"ts": 1}}
			}
			c[fmt.Sprintf("!r%d:o", r)] = map[string]any{"m.read": us}
		}
		return c
	}
	toDevice := func(nUsers, nDevices int) map[string]any {
		msgs := map[string]any{}
		for u := range nUsers {
			ds := map[string]any{}
			for d := range nDevices {
				ds[fmt.Sprintf("D%d", d)] = map[string]any{}
			}
			msgs[fmt.Sprintf("@u%d:hs", u)] = ds
		}
		return map[string]any{"sender": "@s:o", "type": "m.x", "message_id": "m1", "messages": msgs}
	}
	long := "@" + strings.Repeat("a", 260) + ":o"
	for _, c := range []struct {
		name string
		edu  gomatrixserverlib.EDU
		ok   bool
	}{
		{"typing", edu("m.typing", map[string]any{"room_id": "!r:o", "user_id": "@u:o", "typing": true}), true},
		{"typing, long user ID", edu("m.typing", map[string]any{"room_id": "!r:o", "user_id": long, "typing": true}), false},
		{"presence of 100", edu("m.presence", map[string]any{"push": users(100)}), true},
		{"presence of 101", edu("m.presence", map[string]any{"push": users(101)}), false},
		{"presence of 20,000", edu("m.presence", map[string]any{"push": users(20000)}), false},
		{"receipts", edu("m.receipt", receipts(100, 10, 1)), true},
		{"receipts in 101 rooms", edu("m.receipt", receipts(101, 1, 1)), false},
		{"1,001 receipts", edu("m.receipt", receipts(7, 143, 1)), false},
		{"a receipt of 11 events", edu("m.receipt", receipts(1, 1, 11)), false},
		{"device list", edu("m.device_list_update", map[string]any{"user_id": "@u:o", "device_id": "D", "stream_id": 2, "prev_id": []int{1}}), true},
		{"device list, 101 prev_id", edu("m.device_list_update", map[string]any{"user_id": "@u:o", "device_id": "D", "stream_id": 2, "prev_id": make([]int, 101)}), false},
		{"device list, long device ID", edu("m.device_list_update", map[string]any{"user_id": "@u:o", "device_id": strings.Repeat("D", 256), "stream_id": 2}), false},
		{"to-device", edu("m.direct_to_device", toDevice(100, 100)), true},
		{"to-device of 10,001", edu("m.direct_to_device", toDevice(10001, 1)), false},
		{"content over 2 MiB", edu("m.signing_key_update", map[string]any{"user_id": "@u:o", "master_key": map[string]any{"x": strings.Repeat("k", 2<<20)}}), false},
	} {
		err := newEDUBudget().checkBounds(c.edu)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// The transaction's budget of presence states.
	b := newEDUBudget()
	for i := range 5 {
		if err := b.checkBounds(edu("m.presence", map[string]any{"push": users(100)})); err != nil {
			t.Fatalf("presence EDU %d: %v", i, err)
		}
	}
	if err := b.checkBounds(edu("m.presence", map[string]any{"push": users(1)})); err == nil {
		t.Fatal("a 501st presence state in a transaction was taken")
	}
}
