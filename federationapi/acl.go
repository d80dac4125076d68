package federationapi

import (
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/internal/lru"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// serverACL is a room's m.room.server_acl.
type serverACL struct {
	allowIPLiterals bool
	allow, deny     []*regexp.Regexp
}

// aclAllows applies a room's server ACL to a server (no ACL: allowed).
func (f *FederationAPI) aclAllows(ctx context.Context, roomID string, server spec.ServerName) (bool, error) {
	evs, err := f.rooms.QueryCurrentState(ctx, roomID, rsapi.StateKeyTuple{EventType: "m.room.server_acl", StateKey: ""})
	if err != nil || len(evs) == 0 {
		return true, err
	}
	acl := parseACL(evs[0].Content())
	return acl.allows(server), nil
}

func parseACL(content []byte) *serverACL {
	var c struct {
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
		AllowIPLiterals *bool `json:"allow_ip_literals"`
	}
	_ = json.Unmarshal(content, &c)
	acl := &serverACL{allowIPLiterals: c.AllowIPLiterals == nil || *c.AllowIPLiterals}
	for _, g := range c.Allow {
		if s, ok := g.(string); ok {
			acl.allow = append(acl.allow, globRegexp(s))
		}
	}
	for _, g := range c.Deny {
		if s, ok := g.(string); ok {
			acl.deny = append(acl.deny, globRegexp(s))
		}
	}
	return acl
}

// allows reports whether the ACL lets server take part: ports are ignored,
// IP literals need allow_ip_literals, deny beats allow, and a server must
// match some allow entry.
func (a *serverACL) allows(server spec.ServerName) bool {
	host := string(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil && !a.allowIPLiterals {
		return false
	}
	for _, d := range a.deny {
		if d.MatchString(host) {
			return false
		}
	}
	for _, al := range a.allow {
		if al.MatchString(host) {
			return true
		}
	}
	return false
}

// globCache holds compiled ACL globs. Rooms' ACLs (which any server in a
// room can send) choose the globs, so it is bounded: a few KB per regexp.
var globCache = lru.New[string, *regexp.Regexp](1000, nil)

// globRegexp compiles an ACL glob (* any run of characters, ? one) into a
// case-insensitive regexp of the whole name.
func globRegexp(glob string) *regexp.Regexp {
	if re, ok := globCache.Get(glob); ok {
		return re
	}
	var b strings.Builder
	b.WriteString("(?is)^")
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re := regexp.MustCompile(b.String())
	globCache.Put(glob, re)
	return re
}
