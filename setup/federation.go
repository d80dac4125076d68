package setup

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/federationapi"
	"github.com/myelin-chat/myelin/federationapi/transport"
	"github.com/myelin-chat/myelin/internal/tlsutil"
	rsapi "github.com/myelin-chat/myelin/roomserver/api"
)

// newFederation builds and starts the federation API with its transport:
// the configured extra CAs, the private address guard, and the resolver
// (the system's, or the one tests give).
func newFederation(ctx, runCtx context.Context, s *Server, o Options, inputer *rsapi.Inputer) (*federationapi.FederationAPI, error) {
	cfg := s.Config
	roots, err := tlsutil.CertPool(cfg.Federation.CACertsPath)
	if err != nil {
		return nil, fmt.Errorf("federation.ca_certs_path: %w", err)
	}
	tr := transport.New(transport.Options{
		Resolver:     o.FederationResolver,
		RootCAs:      roots,
		AllowPrivate: cfg.Federation.AllowPrivateAddresses,
		Logger:       s.Log,
		UserAgent:    "Myelin",
		CacheSize:    cfg.Caches.ServerDiscovery,
	})
	fc := federationapi.Config{
		ServerName:   spec.ServerName(cfg.ServerName),
		KeyID:        gomatrixserverlib.KeyID(s.Key.ID),
		PrivateKey:   s.Key.Private,
		KeyValidity:  time.Duration(cfg.Federation.KeyValidity),
		Transport:    tr,
		Registry:     s.Registry,
		KeyCacheSize: cfg.Caches.ServerKeys,
		AppServices:  s.ASQueries,
	}
	fc.DomainAllowlist = append(fc.DomainAllowlist, cfg.Federation.DomainAllowlist...)
	fc.DomainDenylist = append(fc.DomainDenylist, cfg.Federation.DomainDenylist...)
	fc.AllowDeviceNameLookup = cfg.Federation.AllowDeviceNameLookup
	for _, k := range cfg.OldSigningKeys {
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.PublicKey, "="))
		if err != nil {
			return nil, fmt.Errorf("old_signing_keys: %w", err)
		}
		fc.OldKeys = append(fc.OldKeys, federationapi.OldKey{KeyID: gomatrixserverlib.KeyID(k.KeyID), PublicKey: pub,
			ExpiredTS: spec.Timestamp(k.ExpiredTS)})
	}
	for _, ts := range cfg.Federation.TrustedKeyServers {
		t := federationapi.TrustedKeyServer{ServerName: spec.ServerName(ts.ServerName), VerifyKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{}}
		for id, pub := range ts.VerifyKeys {
			b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "="))
			if err != nil {
				return nil, fmt.Errorf("federation.trusted_key_servers: %w", err)
			}
			t.VerifyKeys[gomatrixserverlib.KeyID(id)] = b
		}
		fc.TrustedKeyServers = append(fc.TrustedKeyServers, t)
	}
	f, err := federationapi.New(ctx, fc, s.DB, s.Bus, s.Rooms, inputer, s.Users, s.Log)
	if err != nil {
		return nil, err
	}
	if err := f.Start(runCtx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, f.Close, tr.CloseIdleConnections)
	return f, nil
}
