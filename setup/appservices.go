package setup

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/config"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
	userapi "github.com/myelin-chat/myelin/userapi/api"
)

// appServiceRegistry reads the registration files of app_service_config_files
// and compiles them into the registry the components share. A broken file
// fails the start, naming the file.
func appServiceRegistry(cfg *config.Config) (*asapi.Registry, error) {
	regs, err := cfg.LoadAppServices()
	if err != nil {
		return nil, err
	}
	services := make([]*asapi.Service, 0, len(regs))
	for i, r := range regs {
		s, err := appService(cfg.ServerName, r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.AppServiceConfigFiles[i], err)
		}
		services = append(services, s)
	}
	return asapi.NewRegistry(services)
}

// appService converts one registration into the component's form. Flags of
// the MSCs that bridges use are read from the registration's extra keys, as
// Synapse reads them.
func appService(serverName string, r *config.AppService) (*asapi.Service, error) {
	flag := func(keys ...string) bool {
		for _, k := range keys {
			if b, ok := r.Extra[k].(bool); ok && b {
				return true
			}
		}
		return false
	}
	s := &asapi.Service{
		ID:               r.ID,
		ASToken:          r.ASToken,
		HSToken:          r.HSToken,
		SenderLocalpart:  r.SenderLocalpart,
		SenderID:         "@" + r.SenderLocalpart + ":" + serverName,
		RateLimited:      r.RateLimited == nil || *r.RateLimited,
		Protocols:        r.Protocols,
		ReceiveEphemeral: r.ReceiveEphemeral || flag("de.sorunome.msc2409.push_ephemeral", "push_ephemeral"),
		EphemeralLegacy:  !r.ReceiveEphemeral && flag("de.sorunome.msc2409.push_ephemeral", "push_ephemeral"),
		MSC3202:          flag("org.matrix.msc3202"),
		MSC4190:          flag("io.element.msc4190"),
	}
	if r.URL != nil {
		s.URL = *r.URL
	}
	if v, ok := r.Extra["ip_range_whitelist"]; ok && v != nil {
		ranges, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("ip_range_whitelist must be a list of addresses and CIDR ranges")
		}
		for _, x := range ranges {
			str, _ := x.(string)
			p, err := netip.ParsePrefix(str)
			if err != nil {
				addr, aerr := netip.ParseAddr(str)
				if aerr != nil {
					return nil, fmt.Errorf("ip_range_whitelist: %q is not an address or CIDR range", str)
				}
				p = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
			}
			s.IPRanges = append(s.IPRanges, p.Masked())
		}
	}
	for _, group := range []struct {
		in  []config.AppServiceNamespace
		out *[]asapi.Namespace
	}{{r.Namespaces.Users, &s.Users}, {r.Namespaces.Aliases, &s.Aliases}, {r.Namespaces.Rooms, &s.Rooms}} {
		for _, n := range group.in {
			ns, err := asapi.NewNamespace(n.Regex, n.Exclusive)
			if err != nil {
				return nil, err
			}
			*group.out = append(*group.out, ns)
		}
	}
	return s, nil
}

// ensureAppServiceSenders creates the account of each service's sender
// (its sender_localpart) that does not exist yet, without a password: a
// service acts as its sender when it asserts no user_id, and that user
// must exist like every user it acts as.
func ensureAppServiceSenders(ctx context.Context, users userapi.AccountsAPI, reg *asapi.Registry) error {
	for _, s := range reg.Services() {
		_, err := users.QueryAccount(ctx, s.SenderID)
		if err == nil {
			continue
		}
		if !errors.Is(err, userapi.ErrNotFound) {
			return fmt.Errorf("application service %s: %w", s.ID, err)
		}
		if _, err := users.CreateAccount(ctx, userapi.CreateAccount{Localpart: s.SenderLocalpart}); err != nil && !errors.Is(err, userapi.ErrUserInUse) {
			return fmt.Errorf("application service %s: creating its sender %s: %w", s.ID, s.SenderID, err)
		}
	}
	return nil
}

// syncOutput is what the sync API publishes for the application services:
// typing, receipts and presence when a service receives ephemeral events,
// and the to-device messages of those services' users.
func syncOutput(reg *asapi.Registry) syncout.Output {
	var eph []*asapi.Service
	for _, s := range reg.Services() {
		if s.URL != "" && s.ReceiveEphemeral {
			eph = append(eph, s)
		}
	}
	if len(eph) == 0 {
		return syncout.Output{}
	}
	return syncout.Output{Ephemeral: true, ToDevice: func(userID string) bool {
		for _, s := range eph {
			if s.IsInterestedInUser(userID) {
				return true
			}
		}
		return false
	}}
}
