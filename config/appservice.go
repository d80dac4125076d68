package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"

	"gopkg.in/yaml.v3"
)

// AppService is an application service registration file (the
// application service API's "Registration" section), as Synapse reads it.
type AppService struct {
	ID               string               `yaml:"id"`
	URL              *string              `yaml:"url"`
	ASToken          string               `yaml:"as_token"`
	HSToken          string               `yaml:"hs_token"`
	SenderLocalpart  string               `yaml:"sender_localpart"`
	RateLimited      *bool                `yaml:"rate_limited"`
	Protocols        []string             `yaml:"protocols"`
	ReceiveEphemeral bool                 `yaml:"receive_ephemeral"`
	Namespaces       AppServiceNamespaces `yaml:"namespaces"`
	Extra            map[string]any       `yaml:",inline"`
}

// AppServiceNamespaces are the users, aliases and rooms a bridge claims.
type AppServiceNamespaces struct {
	Users   []AppServiceNamespace `yaml:"users"`
	Aliases []AppServiceNamespace `yaml:"aliases"`
	Rooms   []AppServiceNamespace `yaml:"rooms"`
}

// AppServiceNamespace is one namespace: a regular expression and whether
// it is exclusive to the application service.
type AppServiceNamespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
}

// LoadAppService reads and checks a registration file: the required
// fields are there and every namespace regex compiles.
func LoadAppService(path string) (*AppService, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var as AppService
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&as); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var keys map[string]any
	_ = yaml.Unmarshal(data, &keys)
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if as.ID == "" {
		bad("id must be set")
	}
	if _, ok := keys["url"]; !ok {
		bad("url must be set (null when the service receives no transactions)")
	}
	if as.ASToken == "" || as.HSToken == "" {
		bad("as_token and hs_token must be set")
	}
	if as.SenderLocalpart == "" {
		bad("sender_localpart must be set")
	}
	for kind, ns := range map[string][]AppServiceNamespace{"users": as.Namespaces.Users, "aliases": as.Namespaces.Aliases, "rooms": as.Namespaces.Rooms} {
		for i, n := range ns {
			if _, err := regexp.Compile(n.Regex); err != nil {
				bad("namespaces.%s[%d].regex: %v", kind, i, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &as, nil
}

// LoadAppServices reads every registration file of the configuration and
// checks that IDs and tokens are not shared.
func (c *Config) LoadAppServices() ([]*AppService, error) {
	var out []*AppService
	var errs []error
	ids, tokens := map[string]string{}, map[string]string{}
	for _, path := range c.AppServiceConfigFiles {
		as, err := LoadAppService(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, ok := ids[as.ID]; ok {
			errs = append(errs, fmt.Errorf("%s: id %q is also used by %s", path, as.ID, other))
		}
		for _, t := range []string{as.ASToken, as.HSToken} {
			if other, ok := tokens[t]; ok {
				errs = append(errs, fmt.Errorf("%s: a token is also used by %s", path, other))
			}
			tokens[t] = path
		}
		ids[as.ID] = path
		out = append(out, as)
	}
	return out, errors.Join(errs...)
}
