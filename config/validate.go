package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Validate reports every problem in c at once, each prefixed with its key
// path (errors.Join).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.ServerName == "" {
		bad("server_name", "must be set")
	} else if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(c.ServerName)); !ok {
		bad("server_name", "%q is not a valid server name (host or host:port)", c.ServerName)
	}
	if c.SigningKeyPath == "" {
		bad("signing_key_path", "must be set")
	}
	for i, k := range c.OldSigningKeys {
		key := fmt.Sprintf("old_signing_keys[%d]", i)
		if !strings.HasPrefix(k.KeyID, "ed25519:") {
			bad(key+".key_id", "must start with ed25519:")
		}
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.PublicKey, "=")); err != nil || len(b) != 32 {
			bad(key+".public_key", "must be a 32-byte ed25519 public key in unpadded base64")
		}
		if k.ExpiredTS <= 0 {
			bad(key+".expired_ts", "must be a positive timestamp in milliseconds")
		}
	}

	switch u := c.Database.URL; {
	case u == "":
		bad("database.url", "must be set")
	case strings.HasPrefix(u, "sqlite:"), strings.HasPrefix(u, "file:"):
		if strings.TrimPrefix(strings.TrimPrefix(u, "sqlite:"), "file:") == "" {
			bad("database.url", "sqlite: needs a file path")
		}
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		if _, err := url.Parse(u); err != nil {
			bad("database.url", "invalid PostgreSQL URL")
		}
	default:
		bad("database.url", "must start with sqlite: or postgres://")
	}
	if c.Database.MaxOpenConns < 1 {
		bad("database.max_open_conns", "must be at least 1")
	}
	if c.Database.SQLiteCacheSize < 64<<10 {
		bad("database.sqlite_cache_size", "must be at least 64K")
	}

	if len(c.NATS.URLs) == 0 && c.NATS.StoreDir == "" {
		bad("nats.store_dir", "must be set when nats.urls is empty (embedded NATS)")
	}
	for i, u := range c.NATS.URLs {
		if !strings.Contains(u, "://") {
			bad(fmt.Sprintf("nats.urls[%d]", i), "%q must be a URL such as nats://host:4222", u)
		}
	}
	if strings.ContainsAny(c.NATS.Prefix, " .*>") {
		bad("nats.prefix", "must not contain spaces, dots or wildcards")
	}
	if c.NATS.MaxMemory < 1<<20 {
		bad("nats.max_memory", "must be at least 1M")
	}
	if c.NATS.MaxStore != 0 && c.NATS.MaxStore < 1<<20 {
		bad("nats.max_store", "must be 0 (NATS chooses) or at least 1M")
	}

	checkAddr := func(key, addr string, required bool) {
		if addr == "" {
			if required {
				bad(key, "must be set")
			}
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port", addr)
		}
	}
	checkAddr("listeners.http.address", c.Listeners.HTTP.Address, true)
	if c.Listeners.HTTP.MaxRequestBytes < 1024 {
		bad("listeners.http.max_request_bytes", "must be at least 1K")
	}
	if t := c.Listeners.FederationTLS; t.Address != "" {
		checkAddr("listeners.federation_tls.address", t.Address, true)
		if t.CertPath == "" {
			bad("listeners.federation_tls.cert_path", "must be set when the TLS listener is enabled")
		}
		if t.KeyPath == "" {
			bad("listeners.federation_tls.key_path", "must be set when the TLS listener is enabled")
		}
	}

	if c.Auth.BcryptCost < 4 || c.Auth.BcryptCost > 31 {
		bad("auth.bcrypt_cost", "must be between 4 and 31")
	}
	if c.Auth.AccessTokenLifetime <= 0 {
		bad("auth.access_token_lifetime", "must be positive")
	}

	for _, r := range []struct {
		key  string
		rate Rate
	}{
		{"rate_limiting.login", c.RateLimiting.Login},
		{"rate_limiting.failed_login", c.RateLimiting.FailedLogin},
		{"rate_limiting.registration", c.RateLimiting.Registration},
		{"rate_limiting.registration_token_validity", c.RateLimiting.RegistrationTokenValidity},
		{"rate_limiting.message", c.RateLimiting.Message},
		{"rate_limiting.room_creation", c.RateLimiting.RoomCreation},
		{"rate_limiting.joins.local", c.RateLimiting.Joins.Local},
		{"rate_limiting.joins.remote", c.RateLimiting.Joins.Remote},
		{"rate_limiting.invites.per_room", c.RateLimiting.Invites.PerRoom},
		{"rate_limiting.invites.per_user", c.RateLimiting.Invites.PerUser},
		{"rate_limiting.invites.per_issuer", c.RateLimiting.Invites.PerIssuer},
	} {
		if r.rate.PerSecond <= 0 {
			bad(r.key+".per_second", "must be positive")
		}
		if r.rate.Burst < 1 {
			bad(r.key+".burst", "must be at least 1")
		}
	}
	for i, u := range c.RateLimiting.ExemptUserIDs {
		if _, err := spec.NewUserID(u, true); err != nil {
			bad(fmt.Sprintf("rate_limiting.exempt_user_ids[%d]", i), "%q is not a user ID", u)
		}
	}

	if c.Presence.IdleAfter <= 0 {
		bad("presence.idle_after", "must be positive")
	}
	if c.Presence.OfflineAfter <= 0 {
		bad("presence.offline_after", "must be positive")
	}
	for i, k := range c.Federation.TrustedKeyServers {
		key := fmt.Sprintf("federation.trusted_key_servers[%d]", i)
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(k.ServerName)); !ok {
			bad(key+".server_name", "%q is not a valid server name", k.ServerName)
		}
		if len(k.VerifyKeys) == 0 {
			bad(key+".verify_keys", "must list at least one key")
		}
		for id, pub := range k.VerifyKeys {
			if !strings.HasPrefix(id, "ed25519:") {
				bad(key+".verify_keys", "key ID %q must start with ed25519:", id)
			}
			if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "=")); err != nil || len(b) != 32 {
				bad(key+".verify_keys", "key %q must be a 32-byte ed25519 public key in unpadded base64", id)
			}
		}
	}
	if c.Federation.KeyValidity < Duration(time.Hour) {
		bad("federation.key_validity", "must be at least 1h")
	}
	for _, l := range []struct {
		key   string
		names []string
	}{{"federation.domain_allowlist", c.Federation.DomainAllowlist}, {"federation.domain_denylist", c.Federation.DomainDenylist}} {
		for i, n := range l.names {
			if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(n)); !ok {
				bad(fmt.Sprintf("%s[%d]", l.key, i), "%q is not a valid server name", n)
			}
		}
	}
	if _, err := c.LoadAppServices(); err != nil {
		bad("app_service_config_files", "%v", err)
	}
	if c.ASQueryTimeout <= 0 {
		bad("app_service_query_timeout", "must be positive")
	}
	if c.Media.StorePath == "" {
		bad("media.store_path", "must be set")
	}
	if c.Media.MaxUploadSize < 1 {
		bad("media.max_upload_size", "must be positive")
	}

	switch c.Logging.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("logging.level", "must be debug, info, warn or error")
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		bad("logging.format", "must be text or json")
	}
	if c.Metrics.Enabled {
		checkAddr("metrics.address", c.Metrics.Address, true)
	} else if c.Metrics.Pprof {
		bad("metrics.pprof", "needs metrics.enabled (profiles are served on the metrics listener)")
	}

	if c.MemoryLimit != 0 && c.MemoryLimit < 16<<20 {
		bad("memory_limit", "must be 0 (the runtime's GOMEMLIMIT or none) or at least 16M: below that the garbage collector would run without pause")
	}
	c.Caches.validate(bad)

	for _, kv := range [][2]string{
		{"well_known.client_base_url", c.WellKnown.ClientBaseURL},
		{"well_known.identity_server_url", c.WellKnown.IdentityServerURL},
		{"well_known.support.support_page", c.WellKnown.Support.SupportPage},
	} {
		key, v := kv[0], kv[1]
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(key, "%q must be an http(s) URL", v)
		}
	}
	for i, u := range c.VoIP.TURNURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			bad(fmt.Sprintf("voip.turn_uris[%d]", i), "%q must be a turn: or turns: URI", u)
		}
	}
	if len(c.VoIP.TURNURIs) > 0 && c.VoIP.TURNSharedSecret == "" && (c.VoIP.TURNUsername == "" || c.VoIP.TURNPassword == "") {
		bad("voip.turn_shared_secret", "turn_uris needs turn_shared_secret, or turn_username and turn_password")
	}
	if c.VoIP.TURNSharedSecret != "" && c.VoIP.TURNUserLifetime < Duration(time.Minute) {
		bad("voip.turn_user_lifetime", "must be at least 1m")
	}
	for i, ct := range c.WellKnown.Support.Contacts {
		key := fmt.Sprintf("well_known.support.contacts[%d]", i)
		if ct.Role == "" {
			bad(key+".role", "is required")
		}
		if ct.MatrixID == "" && ct.EmailAddress == "" {
			bad(key, "needs matrix_id or email_address")
		}
		if ct.MatrixID != "" {
			if _, err := spec.NewUserID(ct.MatrixID, false); err != nil {
				bad(key+".matrix_id", "%q is not a user ID", ct.MatrixID)
			}
		}
		if e := ct.EmailAddress; e != "" && (!strings.Contains(e, "@") || strings.ContainsAny(e, " \t\n")) {
			bad(key+".email_address", "%q is not an email address", e)
		}
	}
	if s := c.WellKnown.ServerDelegation; s != "" {
		if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s)); !ok {
			bad("well_known.server", "%q must be host or host:port", s)
		}
	}
	return errors.Join(errs...)
}

// validate reports cache sizes below one entry.
func (c Caches) validate(bad func(key, format string, args ...any)) {
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		if v.Field(i).Int() < 1 {
			bad("caches."+yamlKey(v.Type().Field(i)), "must be at least 1 (entries)")
		}
	}
}
