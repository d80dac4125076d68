package invitefilter

import "testing"

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name             string
		stable, unstable string
		inviter          string
		want             Action
	}{
		{"nothing set", "", "", "@bob:hs2", Allow},
		{"malformed", "[", "{", "@bob:hs2", Allow},
		{"stable block", `{"default_action":"block"}`, "", "@bob:hs2", Block},
		{"stable block beats an allow list", `{"default_action":"block"}`, `{"allowed_users":["@bob:hs2"]}`, "@bob:hs2", Block},
		{"stable without default_action", `{}`, "", "@bob:hs2", Allow},
		{"blocked user", "", `{"blocked_users":["@bob:hs2"]}`, "@bob:hs2", Block},
		{"other user", "", `{"blocked_users":["@bob:hs2"]}`, "@carol:hs2", Allow},
		{"ignored user", "", `{"ignored_users":["@bob:hs2"]}`, "@bob:hs2", Ignore},
		{"blocked server", "", `{"blocked_servers":["hs2"]}`, "@carol:hs2", Block},
		{"ignored server", "", `{"ignored_servers":["hs2"]}`, "@carol:hs2", Ignore},
		{"server glob", "", `{"blocked_servers":["hs*"]}`, "@carol:hs1", Block},
		{"user glob ?*", "", `{"blocked_users":["@user-?*"]}`, "@user-1:hs1", Block},
		{"user glob needs one character", "", `{"blocked_users":["@user-?*"]}`, "@user-", Allow},
		{"glob metacharacters are literal", "", `{"blocked_users":["@a.b:hs1"]}`, "@aXb:hs1", Allow},
		{"allowed user beats blocked server", "", `{"allowed_users":["@bob:hs2"],"blocked_servers":["hs2"]}`, "@bob:hs2", Allow},
		{"blocked user beats allowed server", "", `{"blocked_users":["@evil:hs2"],"allowed_servers":["hs2"]}`, "@evil:hs2", Block},
		{"allowed beats ignored and blocked", "", `{"ignored_users":["@bob:hs2"],"blocked_users":["@bob:hs2"],"allowed_users":["@bob:hs2"]}`, "@bob:hs2", Allow},
		{"ignored beats blocked", "", `{"ignored_users":["@bob:hs2"],"blocked_users":["@bob:hs2"]}`, "@bob:hs2", Ignore},
		{"null lists", "", `{"allowed_users":null,"blocked_servers":null}`, "@bob:hs2", Allow},
		{"server with a port", "", `{"blocked_servers":["hs2:8448"]}`, "@bob:hs2:8448", Block},
	} {
		if got := Parse([]byte(tc.stable), []byte(tc.unstable)).Decide(tc.inviter); got != tc.want {
			t.Errorf("%s: Decide(%s) = %v, want %v", tc.name, tc.inviter, got, tc.want)
		}
	}
	if (*Config)(nil).Decide("@bob:hs2") != Allow {
		t.Error("a nil config must allow")
	}
}
