// Package config is Myelin's whole YAML configuration as plain structs:
// Defaults, strict loading (unknown keys are errors), MYELIN_<PATH>
// environment overrides, Validate (every problem at once, by key path) and
// the commented sample that generate-config writes.
//
// Every field carries a `doc` tag; the sample's comments come from it, so the
// sample cannot drift from the structs.
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	ServerName            string          `yaml:"server_name" doc:"The server name: the domain part of user IDs (@alice:<server_name>) and room aliases. It can never change once users exist."`
	SigningKeyPath        string          `yaml:"signing_key_path" doc:"The ed25519 key that signs events and federation requests (Synapse format; generate one with 'myelin generate-keys')."`
	OldSigningKeys        []OldSigningKey `yaml:"old_signing_keys" doc:"Public halves of keys this server signed with before, so that other servers can still verify old events."`
	Database              Database        `yaml:"database" doc:"Where data is kept."`
	NATS                  NATS            `yaml:"nats" doc:"The message bus between components."`
	Listeners             Listeners       `yaml:"listeners" doc:"Where the server listens."`
	Registration          Registration    `yaml:"registration" doc:"Who may create accounts."`
	Auth                  Auth            `yaml:"auth" doc:"Passwords and access tokens."`
	RateLimiting          RateLimiting    `yaml:"rate_limiting" doc:"Request rate limits (token buckets)."`
	Media                 Media           `yaml:"media" doc:"The media repository."`
	Presence              Presence        `yaml:"presence" doc:"Online/offline status of users."`
	VoIP                  VoIP            `yaml:"voip" doc:"The TURN servers offered to clients for calls (GET /voip/turnServer)."`
	Federation            Federation      `yaml:"federation" doc:"Talking to other homeservers."`
	Push                  Push            `yaml:"push" doc:"Push notifications, sent to the push gateways of users' HTTP pushers (POST /_matrix/push/v1/notify)."`
	AppServiceConfigFiles []string        `yaml:"app_service_config_files" doc:"Application service (bridge) registration files, as Synapse's app_service_config_files. They are read and checked at start (a broken file stops it, named); their as_tokens authenticate on the client API (identity assertion with user_id, device masquerading with device_id), they register and log in their users and hold their exclusive namespaces. Events, ephemeral events, to-device messages and key counts are sent to them in persisted transactions."`
	Logging               Logging         `yaml:"logging" doc:"Log output."`
	Metrics               Metrics         `yaml:"metrics" doc:"Prometheus metrics."`
	WellKnown             WellKnown       `yaml:"well_known" doc:"What /.well-known/matrix/client and /.well-known/matrix/server return. Empty values mean 404."`
	ASQueryTimeout        Duration        `yaml:"app_service_query_timeout" doc:"How long the server waits for an application service to answer a query (does a user or room alias in its namespaces exist, third-party protocol lookups, pings) before giving up."`
	MemoryLimit           ByteSize        `yaml:"memory_limit" doc:"A soft limit on the memory the Go runtime holds (heap, goroutine stacks, its own structures), as the GOMEMLIMIT environment variable: near it, the garbage collector runs more often to stay under it (it never fails an allocation). SQLite's page caches (database.sqlite_cache_size) and the binary's code are outside it. 0 leaves the runtime's setting: GOMEMLIMIT when set, else no limit. Env: MYELIN_MEMORY_LIMIT."`
	Caches                Caches          `yaml:"caches" doc:"Sizes of the in-memory caches, in entries (each bounded; the approximate bytes per entry are given). The defaults suit a small machine; raise them for many users or big rooms."`
}

// Caches bounds the in-memory caches. Every size is in entries and must be
// at least 1; what an entry costs is approximate.
type Caches struct {
	RoomEvents      int `yaml:"room_events" doc:"Parsed events the roomserver keeps for auth checks and event building (about 2 KB each for a message, more for big state events)."`
	StateSnapshots  int `yaml:"state_snapshot_entries" doc:"State entries, summed over the room state snapshots the roomserver keeps (about 30 bytes per entry: a snapshot of a room of 10,000 members is 10,000 entries, 300 KB)."`
	StateBlocks     int `yaml:"state_block_entries" doc:"State entries, summed over the stored blocks snapshots are made of (about 30 bytes per entry)."`
	StateBlockIDs   int `yaml:"state_block_ids" doc:"Block content hashes mapped to their stored IDs, so that storing a snapshot reuses blocks without a query (about 150 bytes each)."`
	StateKeys       int `yaml:"state_keys" doc:"(event type, state key) pairs mapped to and from their numeric IDs (about 300 bytes each, both directions)."`
	AccessTokens    int `yaml:"access_tokens" doc:"Access tokens mapped to their device, so that most requests cost no query (about 300 bytes each; an entry lives at most two minutes)."`
	LazyMembers     int `yaml:"lazy_loading_devices" doc:"Devices whose lazy-loaded members the sync API remembers, to leave out of later syncs members already sent (about 200 bytes per device plus 100 per member sent); a device past it is sent its members again."`
	PushRules       int `yaml:"push_rules" doc:"Users whose compiled push rules are kept, so that an event is evaluated for every member without a query (about 2 KB each)."`
	PushRooms       int `yaml:"push_rooms" doc:"Rooms whose push evaluation context (local members' display names, power levels) is kept (about 100 bytes per local member)."`
	ServerKeys      int `yaml:"server_keys" doc:"Other servers' signing keys kept in memory in front of the database (about 300 bytes each)."`
	ServerDiscovery int `yaml:"server_discovery" doc:"Server names whose resolution (.well-known, SRV, addresses) is kept, and separately well-known answers (about 500 bytes each)."`
}

// OldSigningKey is a retired verify key.
type OldSigningKey struct {
	KeyID     string `yaml:"key_id" doc:"The key ID, such as ed25519:a_Bcde."`
	PublicKey string `yaml:"public_key" doc:"The public key, unpadded base64."`
	ExpiredTS int64  `yaml:"expired_ts" doc:"When the key stopped being used, in milliseconds since the epoch."`
}

// Database selects the database engine.
type Database struct {
	URL          string `yaml:"url" doc:"sqlite:<path> for an embedded SQLite file (relative paths are relative to this file), or postgres://user:pass@host/db?sslmode=... for PostgreSQL. Env: MYELIN_DATABASE_URL."`
	MaxOpenConns int    `yaml:"max_open_conns" doc:"Maximum open connections (PostgreSQL) or read connections (SQLite)."`
	// SQLiteCacheSize is per connection: the writer and each reader.
	SQLiteCacheSize ByteSize `yaml:"sqlite_cache_size" doc:"SQLite's page cache per connection (such as 2M): the writer and each open reader have one, so SQLite's cache holds at most (1 + max_open_conns) times this. Ignored for PostgreSQL."`
}

// NATS selects the embedded or an external NATS JetStream.
type NATS struct {
	URLs      []string `yaml:"urls" doc:"External NATS servers (nats://host:4222). Empty runs NATS JetStream inside this process, with no port. Env: MYELIN_NATS_URLS (comma-separated)."`
	StoreDir  string   `yaml:"store_dir" doc:"The JetStream store of the embedded NATS server."`
	Prefix    string   `yaml:"prefix" doc:"Prefix of stream names and subjects, so that several homeservers can share one NATS cluster."`
	MaxMemory ByteSize `yaml:"max_memory" doc:"The most the embedded JetStream may hold in memory-backed streams (Myelin's streams are all on disk, so this is only a ceiling). What it holds for the disk streams, the write cache of each stream's newest block (up to 8M each, dropped after 10 seconds without writes) and the message IDs of the duplicate window, is outside it. Ignored with nats.urls."`
	MaxStore  ByteSize `yaml:"max_store" doc:"The most the embedded JetStream may store on disk under store_dir; 0 lets NATS choose from the free space. Ignored with nats.urls."`
}

// Listeners are the HTTP endpoints.
type Listeners struct {
	HTTP          HTTPListener `yaml:"http" doc:"Plain HTTP: the client API and the federation API on one port (put TLS in front of it, or use federation_tls)."`
	FederationTLS TLSListener  `yaml:"federation_tls" doc:"An optional HTTPS listener for federation (usually :8448)."`
}

// HTTPListener is a plain HTTP listener.
type HTTPListener struct {
	Address         string   `yaml:"address" doc:"host:port to listen on."`
	XForwardedFor   bool     `yaml:"x_forwarded_for" doc:"Take the client address from X-Forwarded-For (only behind a reverse proxy you control)."`
	MaxRequestBytes ByteSize `yaml:"max_request_bytes" doc:"Largest JSON request body accepted; larger ones are refused with 413 M_TOO_LARGE."`
}

// TLSListener is an HTTPS listener.
type TLSListener struct {
	Address  string `yaml:"address" doc:"host:port to listen on; empty disables the listener."`
	CertPath string `yaml:"cert_path" doc:"PEM certificate chain."`
	KeyPath  string `yaml:"key_path" doc:"PEM private key."`
}

// Registration controls account creation.
type Registration struct {
	Enabled      bool   `yaml:"enabled" doc:"Allow anyone to register through /register. Env: MYELIN_REGISTRATION_ENABLED."`
	SharedSecret string `yaml:"shared_secret" doc:"Secret for the Synapse-compatible /_synapse/admin/v1/register endpoint, which works even when registration is off. Empty disables it. Env: MYELIN_REGISTRATION_SHARED_SECRET."`
	RequireToken bool   `yaml:"require_token" doc:"Require a registration token (m.login.registration_token). Tokens are managed with the admin API /_synapse/admin/v1/registration_tokens."`
	GuestAccess  bool   `yaml:"guest_access" doc:"Allow guest accounts (/register?kind=guest)."`
}

// Auth configures passwords and tokens.
type Auth struct {
	BcryptCost          int      `yaml:"bcrypt_cost" doc:"bcrypt cost of password hashes (4-31; each step doubles the work)."`
	AccessTokenLifetime Duration `yaml:"access_token_lifetime" doc:"Lifetime of access tokens issued to clients that support refresh tokens (such as 5m). Other clients get tokens that do not expire."`
}

// RateLimiting configures rate limits. The defaults are Synapse's (its
// rc_* settings); a 429 M_LIMIT_EXCEEDED carries retry_after_ms and a
// Retry-After header.
type RateLimiting struct {
	Enabled                   bool        `yaml:"enabled" doc:"Turn rate limiting on. Env: MYELIN_RATE_LIMITING_ENABLED."`
	ExemptUserIDs             []string    `yaml:"exempt_user_ids" doc:"Users that are never rate limited."`
	Login                     Rate        `yaml:"login" doc:"Login attempts per client address (Synapse's rc_login.address)."`
	FailedLogin               Rate        `yaml:"failed_login" doc:"Failed login attempts per account (rc_login.failed_attempts)."`
	Registration              Rate        `yaml:"registration" doc:"Completed registrations per client address (rc_registration); the rounds of interactive authentication before one do not count."`
	RegistrationTokenValidity Rate        `yaml:"registration_token_validity" doc:"Registration token validity checks per client address (rc_registration_token_validity)."`
	Message                   Rate        `yaml:"message" doc:"Events sent per user (rc_message)."`
	RoomCreation              Rate        `yaml:"room_creation" doc:"Rooms created per user (rc_room_creation)."`
	Joins                     JoinRates   `yaml:"joins" doc:"Room joins per user (rc_joins)."`
	Invites                   InviteRates `yaml:"invites" doc:"Invites (rc_invites)."`
}

// JoinRates limit joins per user.
type JoinRates struct {
	Local  Rate `yaml:"local" doc:"Joins to rooms this server is in."`
	Remote Rate `yaml:"remote" doc:"Joins through other servers (over federation)."`
}

// InviteRates limit invites.
type InviteRates struct {
	PerRoom   Rate `yaml:"per_room" doc:"Invites sent into one room."`
	PerUser   Rate `yaml:"per_user" doc:"Invites one user receives."`
	PerIssuer Rate `yaml:"per_issuer" doc:"Invites one user sends."`
}

// Rate is a token bucket.
type Rate struct {
	PerSecond float64 `yaml:"per_second" doc:"Sustained requests per second."`
	Burst     int     `yaml:"burst" doc:"Requests allowed at once before the sustained rate applies."`
}

// Media configures the media repository.
type Media struct {
	StorePath     string   `yaml:"store_path" doc:"Directory for uploaded and cached remote media."`
	MaxUploadSize ByteSize `yaml:"max_upload_size" doc:"Largest upload accepted (such as 50M)."`
}

// Presence configures presence.
type Presence struct {
	Enabled      bool     `yaml:"enabled" doc:"Track and share whether users are online (as Synapse's presence.enabled). Off: clients see everyone offline."`
	IdleAfter    Duration `yaml:"idle_after" doc:"An online user without activity for this long becomes unavailable."`
	OfflineAfter Duration `yaml:"offline_after" doc:"A user whose clients stopped syncing for this long becomes offline."`
}

// VoIP configures the TURN credentials of /voip/turnServer, as Synapse's
// turn_* options.
type VoIP struct {
	TURNURIs         []string `yaml:"turn_uris" doc:"TURN server URIs (turn: or turns:), such as turn:turn.example.org:3478?transport=udp. Empty: no TURN servers are offered."`
	TURNSharedSecret string   `yaml:"turn_shared_secret" doc:"The shared secret of the TURN server's REST API (coturn's static-auth-secret): each user gets a username <expiry>:<user_id> and its HMAC-SHA1 password. Env: MYELIN_VOIP_TURN_SHARED_SECRET."`
	TURNUsername     string   `yaml:"turn_username" doc:"A fixed TURN username, when the TURN server has no shared secret."`
	TURNPassword     string   `yaml:"turn_password" doc:"The password of turn_username."`
	TURNUserLifetime Duration `yaml:"turn_user_lifetime" doc:"How long a shared-secret credential is valid."`
	TURNAllowGuests  bool     `yaml:"turn_allow_guests" doc:"Whether guest accounts get TURN credentials."`
}

// Federation configures the server-server API.
type Federation struct {
	Enabled               bool               `yaml:"enabled" doc:"Federate with other homeservers. Off: remote users, rooms and servers are refused and the federation API answers 404."`
	TrustedKeyServers     []TrustedKeyServer `yaml:"trusted_key_servers" doc:"Notary servers asked for other servers' signing keys when a server cannot be asked directly (as Synapse's trusted_key_servers)."`
	KeyValidity           Duration           `yaml:"key_validity" doc:"How long other servers may cache this server's signing key (valid_until_ts of /_matrix/key/v2/server)."`
	CACertsPath           string             `yaml:"ca_certs_path" doc:"A PEM file of certificate authorities trusted for outgoing federation requests in addition to the system's."`
	AllowPrivateAddresses bool               `yaml:"allow_private_addresses" doc:"Allow outgoing federation requests to loopback, private and link-local addresses. Leave off on a public server: a remote server name could otherwise point this server at your internal network."`
	DomainAllowlist       []string           `yaml:"domain_allowlist" doc:"If not empty, the only server names this server federates with."`
	DomainDenylist        []string           `yaml:"domain_denylist" doc:"Server names this server never federates with."`
	AllowDeviceNameLookup bool               `yaml:"allow_device_name_lookup" doc:"Give other servers the display names of local users' devices (in /user/devices, /user/keys/query and device list updates), as Synapse's allow_device_name_lookup_over_federation. Off by default: a device's name often tells who uses it, and on what."`
}

// Push configures delivery to push gateways.
type Push struct {
	AllowPrivateAddresses bool `yaml:"allow_private_addresses" doc:"Allow push gateways on loopback, private and link-local addresses, such as a Sygnal on this machine or network. Leave off on a public server: any user can choose a pusher's URL, which could otherwise point this server at your internal network. Env: MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES."`
}

// TrustedKeyServer is a notary for other servers' keys.
type TrustedKeyServer struct {
	ServerName string            `yaml:"server_name" doc:"The notary's server name."`
	VerifyKeys map[string]string `yaml:"verify_keys" doc:"Its keys (key ID: unpadded base64 public key); its answers must be signed by one of them."`
}

// Logging configures log output.
type Logging struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error."`
	Format string `yaml:"format" doc:"text or json."`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool   `yaml:"enabled" doc:"Serve Prometheus metrics at /metrics on address."`
	Address string `yaml:"address" doc:"host:port of the metrics listener (keep it private)."`
	Pprof   bool   `yaml:"pprof" doc:"Also serve Go's profiles (heap, CPU, goroutines: net/http/pprof) at /debug/pprof/ on the metrics listener. Off by default: profiles reveal internals and a CPU profile costs CPU while it runs."`
}

// WellKnown holds the discovery documents.
type WellKnown struct {
	ClientBaseURL     string  `yaml:"client_base_url" doc:"m.homeserver base_url of /.well-known/matrix/client, such as https://matrix.example.org."`
	IdentityServerURL string  `yaml:"identity_server_url" doc:"m.identity_server base_url of /.well-known/matrix/client (optional)."`
	ServerDelegation  string  `yaml:"server" doc:"m.server of /.well-known/matrix/server, such as matrix.example.org:443."`
	Support           Support `yaml:"support" doc:"What /.well-known/matrix/support returns: how to reach the server's administrators. Empty means 404."`
}

// Support is the support discovery document (support.yaml).
type Support struct {
	Contacts    []SupportContact `yaml:"contacts" doc:"Ways to contact the administrators."`
	SupportPage string           `yaml:"support_page" doc:"An http(s) URL of a page with help for this server's users (optional)."`
}

// SupportContact is one way to reach an administrator.
type SupportContact struct {
	MatrixID     string `yaml:"matrix_id" doc:"A Matrix user ID of the administrator (possibly on another server, to be reachable when this one is down)."`
	EmailAddress string `yaml:"email_address" doc:"An email address of the administrator. A contact needs this or matrix_id."`
	Role         string `yaml:"role" doc:"m.role.admin (any question), m.role.security (sensitive reports) or a namespaced role of your own."`
}

// Duration is a time.Duration written as "5m", "30s", "1h".
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as Go duration text.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses Go duration text.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 1h)", b)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size in bytes, written as a number or with a K, M or G
// suffix (powers of 1024).
type ByteSize int64

// MarshalText writes the size with the largest exact suffix.
func (s ByteSize) MarshalText() ([]byte, error) {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if s != 0 && int64(s)%u.n == 0 {
			return []byte(strconv.FormatInt(int64(s)/u.n, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// UnmarshalText parses "1048576", "1024K", "1M", "2G".
func (s *ByteSize) UnmarshalText(b []byte) error {
	t := strings.ToUpper(strings.TrimSpace(string(b)))
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid size %q (want e.g. 1048576, 512K, 50M)", b)
	}
	*s = ByteSize(v * mult)
	return nil
}
