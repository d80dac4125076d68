// Package invitefilter decides whether a user accepts an invite, from
// their invite permission account data: the stable
// m.invite_permission_config (invite_permission.md, v1.18: default_action
// "block" refuses every invite) and MSC4155's
// org.matrix.msc4155.invite_permission_config, whose lists of user and
// server globs allow, ignore (accept but hide) or block invites.
//
// MSC4155's precedence, as Synapse applies it: the user lists before the
// server lists, and in each allowed before ignored before blocked.
package invitefilter

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
)

// The account data types of the configuration.
const (
	Type         = "m.invite_permission_config"
	UnstableType = "org.matrix.msc4155.invite_permission_config"
)

// Action is what happens to an invite.
type Action int

const (
	// Allow: the invite is made and shown.
	Allow Action = iota
	// Ignore: the invite is made but not shown to the invitee.
	Ignore
	// Block: the invite is refused (403 M_INVITE_BLOCKED).
	Block
)

// maxPatterns bounds the globs of one list that are honoured; account data
// is at most 64 KiB anyway.
const maxPatterns = 1000

// Config is a user's parsed invite permission. The zero Config (and nil)
// allows every invite.
type Config struct {
	blockAll bool
	users    [3][]*regexp.Regexp // by Action: allowed, ignored, blocked
	servers  [3][]*regexp.Regexp
}

// Parse reads the stable and the unstable content (either may be empty or
// malformed, which allows everything it would have said).
func Parse(stable, unstable []byte) *Config {
	c := &Config{}
	var s struct {
		DefaultAction string `json:"default_action"`
	}
	if len(stable) > 0 && json.Unmarshal(stable, &s) == nil && s.DefaultAction == "block" {
		c.blockAll = true
	}
	var u struct {
		AllowedUsers   []string `json:"allowed_users"`
		IgnoredUsers   []string `json:"ignored_users"`
		BlockedUsers   []string `json:"blocked_users"`
		AllowedServers []string `json:"allowed_servers"`
		IgnoredServers []string `json:"ignored_servers"`
		BlockedServers []string `json:"blocked_servers"`
	}
	if len(unstable) > 0 && json.Unmarshal(unstable, &u) == nil {
		for a, list := range [3][]string{u.AllowedUsers, u.IgnoredUsers, u.BlockedUsers} {
			c.users[a] = globs(list)
		}
		for a, list := range [3][]string{u.AllowedServers, u.IgnoredServers, u.BlockedServers} {
			c.servers[a] = globs(list)
		}
	}
	return c
}

// Load parses the configuration of a user, with get reading their global
// account data of a type (nil content for none).
func Load(ctx context.Context, get func(ctx context.Context, typ string) ([]byte, error)) (*Config, error) {
	var contents [2][]byte
	for i, typ := range []string{Type, UnstableType} {
		b, err := get(ctx, typ)
		if err != nil {
			return nil, err
		}
		contents[i] = b
	}
	return Parse(contents[0], contents[1]), nil
}

// globs compiles glob patterns ("*" any run, "?" one character) into
// anchored regular expressions.
func globs(list []string) []*regexp.Regexp {
	if len(list) > maxPatterns {
		list = list[:maxPatterns]
	}
	out := make([]*regexp.Regexp, 0, len(list))
	for _, p := range list {
		q := regexp.QuoteMeta(p)
		q = strings.NewReplacer(`\*`, `.*`, `\?`, `.`).Replace(q)
		if re, err := regexp.Compile("^" + q + "$"); err == nil {
			out = append(out, re)
		}
	}
	return out
}

// Decide returns what happens to an invite that inviter sends.
func (c *Config) Decide(inviter string) Action {
	if c == nil {
		return Allow
	}
	if c.blockAll {
		return Block
	}
	for a := Allow; a <= Block; a++ {
		if matchAny(c.users[a], inviter) {
			return a
		}
	}
	server := inviter
	if i := strings.IndexByte(inviter, ':'); i >= 0 {
		server = inviter[i+1:]
	}
	for a := Allow; a <= Block; a++ {
		if matchAny(c.servers[a], server) {
			return a
		}
	}
	return Allow
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}
