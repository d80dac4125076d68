// Package api is the application service component's interface to the rest
// of the server: the registered application services (bridges) and the
// namespaces of users, room aliases and room IDs each of them claims
// (the application service API's "Registration" section), and the
// homeserver's queries to them (Client, Querier): user and alias queries,
// third-party protocol lookups and pings.
package api

import (
	"crypto/subtle"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Namespace is one namespace of a registration: a regular expression,
// matched from the start of a user ID, alias or room ID, and whether the
// application service holds it exclusively.
type Namespace struct {
	Exclusive bool
	Regex     *regexp.Regexp
}

// Service is one registered application service.
type Service struct {
	ID string
	// URL is the base URL of the service's HTTP API; empty when it
	// receives no transactions (url: null in the registration).
	URL     string
	ASToken string
	HSToken string
	// SenderLocalpart is the localpart of the service's own user, whose
	// full ID is SenderID.
	SenderLocalpart string
	SenderID        string
	// RateLimited is false when the service's users are exempt from rate
	// limits.
	RateLimited bool
	Protocols   []string
	// ReceiveEphemeral is receive_ephemeral (or MSC2409's
	// de.sorunome.msc2409.push_ephemeral): typing, receipts and presence
	// in transactions.
	ReceiveEphemeral bool
	// EphemeralLegacy: ReceiveEphemeral comes from MSC2409's unstable
	// flag alone, so transactions carry the ephemeral events under the
	// unstable key de.sorunome.msc2409.ephemeral (as Synapse's
	// supports_ephemeral_legacy).
	EphemeralLegacy bool
	// MSC3202 is org.matrix.msc3202: device masquerading, and device list
	// changes and one-time key counts in transactions.
	MSC3202 bool
	// MSC4190 is io.element.msc4190: the service manages its users'
	// devices itself (PUT /devices/{deviceId}, DELETE /devices/{deviceId})
	// instead of logging them in.
	MSC4190 bool

	Users   []Namespace
	Aliases []Namespace
	Rooms   []Namespace

	// IPRanges, when set (ip_range_whitelist), are the only client
	// addresses the service's as_token authenticates from.
	IPRanges []netip.Prefix
}

// AllowsIP reports whether the service's as_token is accepted from the
// client address ip (any when the service sets no IPRanges).
func (s *Service) AllowsIP(ip string) bool {
	if len(s.IPRanges) == 0 {
		return true
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, p := range s.IPRanges {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// anchored compiles a namespace regex so that it must match at the start
// of the string, as Synapse's re.match does (the end is not anchored).
func anchored(re string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + re + `)`)
}

// NewNamespace compiles one namespace of a registration.
func NewNamespace(regex string, exclusive bool) (Namespace, error) {
	re, err := anchored(regex)
	if err != nil {
		return Namespace{}, err
	}
	return Namespace{Exclusive: exclusive, Regex: re}, nil
}

func match(ns []Namespace, s string) (matched, exclusive bool) {
	for _, n := range ns {
		if n.Regex.MatchString(s) {
			matched = true
			if n.Exclusive {
				return true, true
			}
		}
	}
	return matched, false
}

// UserInNamespace reports whether userID is in one of the service's user
// namespaces (its sender is not: see IsInterestedInUser), and whether that
// namespace is exclusive.
func (s *Service) UserInNamespace(userID string) (matched, exclusive bool) {
	return match(s.Users, userID)
}

// IsInterestedInUser reports whether the service wants events concerning
// userID: its own sender or a user in its namespaces.
func (s *Service) IsInterestedInUser(userID string) bool {
	if userID == s.SenderID {
		return true
	}
	m, _ := match(s.Users, userID)
	return m
}

// OwnsUser reports whether the service may act as userID: its sender or a
// user in its user namespaces (exclusive or not).
func (s *Service) OwnsUser(userID string) bool { return s.IsInterestedInUser(userID) }

// AliasInNamespace reports whether alias is in one of the service's alias
// namespaces, and whether that namespace is exclusive.
func (s *Service) AliasInNamespace(alias string) (matched, exclusive bool) {
	return match(s.Aliases, alias)
}

// RoomInNamespace reports whether roomID is in one of the service's room
// namespaces.
func (s *Service) RoomInNamespace(roomID string) bool {
	m, _ := match(s.Rooms, roomID)
	return m
}

// Registry is the set of registered application services. It is built
// once at start and never changes, so it is safe for concurrent use.
type Registry struct {
	services []*Service
	byID     map[string]*Service
}

// NewRegistry checks that IDs, tokens and senders are not shared and
// returns the registry of services.
func NewRegistry(services []*Service) (*Registry, error) {
	r := &Registry{byID: map[string]*Service{}}
	tokens := map[string]string{}
	senders := map[string]string{}
	for _, s := range services {
		if s.ID == "" || s.ASToken == "" || s.HSToken == "" || s.SenderID == "" {
			return nil, fmt.Errorf("application service %q: id, as_token, hs_token and sender_localpart must be set", s.ID)
		}
		if _, dup := r.byID[s.ID]; dup {
			return nil, fmt.Errorf("application service id %q is registered twice", s.ID)
		}
		for _, t := range []string{s.ASToken, s.HSToken} {
			if other, dup := tokens[t]; dup {
				return nil, fmt.Errorf("application services %q and %q share a token", other, s.ID)
			}
			tokens[t] = s.ID
		}
		if other, dup := senders[s.SenderID]; dup {
			return nil, fmt.Errorf("application services %q and %q have the same sender %s", other, s.ID, s.SenderID)
		}
		senders[s.SenderID] = s.ID
		s.URL = strings.TrimSuffix(s.URL, "/")
		r.byID[s.ID] = s
		r.services = append(r.services, s)
	}
	return r, nil
}

// Services returns every registered service, in registration order. The
// slice must not be changed.
func (r *Registry) Services() []*Service {
	if r == nil {
		return nil
	}
	return r.services
}

// ByID returns the service registered with id, or nil.
func (r *Registry) ByID(id string) *Service {
	if r == nil {
		return nil
	}
	return r.byID[id]
}

// ByASToken returns the service whose as_token is token, or nil. Every
// token is compared in constant time.
func (r *Registry) ByASToken(token string) *Service {
	if r == nil || token == "" {
		return nil
	}
	var found *Service
	for _, s := range r.services {
		if subtle.ConstantTimeCompare([]byte(s.ASToken), []byte(token)) == 1 {
			found = s
		}
	}
	return found
}

// ExclusiveUserOwner returns the service that holds userID exclusively
// (its sender, or a user in one of its exclusive user namespaces), or nil.
func (r *Registry) ExclusiveUserOwner(userID string) *Service {
	for _, s := range r.Services() {
		if userID == s.SenderID {
			return s
		}
		if _, excl := s.UserInNamespace(userID); excl {
			return s
		}
	}
	return nil
}

// ExclusiveAliasOwner returns the service that holds alias in an
// exclusive namespace, or nil.
func (r *Registry) ExclusiveAliasOwner(alias string) *Service {
	for _, s := range r.Services() {
		if _, excl := s.AliasInNamespace(alias); excl {
			return s
		}
	}
	return nil
}

// UserOwners returns the services with userID in a user namespace (or as
// their sender).
func (r *Registry) UserOwners(userID string) []*Service {
	var out []*Service
	for _, s := range r.Services() {
		if s.IsInterestedInUser(userID) {
			out = append(out, s)
		}
	}
	return out
}
