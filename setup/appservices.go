package setup

import (
	"fmt"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/config"
	syncout "github.com/myelin-chat/myelin/syncapi/api"
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
