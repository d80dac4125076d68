package config

import (
	"crypto/rand"
	"encoding/base64"
	"time"
)

// Defaults returns the configuration every loaded file starts from, for a
// server named serverName. Registration is off; the first-run and sample
// configurations change what they need on top of it.
func Defaults(serverName string) *Config {
	return &Config{
		ServerName:     serverName,
		SigningKeyPath: "data/signing.key",
		OldSigningKeys: []OldSigningKey{},
		Database:       Database{URL: "sqlite:data/myelin.db", MaxOpenConns: 10, SQLiteCacheSize: 2 << 20},
		NATS:           NATS{URLs: []string{}, StoreDir: "data/jetstream", MaxMemory: 16 << 20},
		Listeners: Listeners{
			HTTP: HTTPListener{Address: "127.0.0.1:8008", MaxRequestBytes: 1 << 20},
		},
		Auth: Auth{BcryptCost: 12, AccessTokenLifetime: Duration(5 * time.Minute)},
		RateLimiting: RateLimiting{
			Enabled:       true,
			ExemptUserIDs: []string{},
			// Synapse's defaults (synapse/config/ratelimiting.py).
			Login:                     Rate{PerSecond: 0.003, Burst: 5},
			FailedLogin:               Rate{PerSecond: 0.17, Burst: 3},
			Registration:              Rate{PerSecond: 0.17, Burst: 3},
			RegistrationTokenValidity: Rate{PerSecond: 0.1, Burst: 5},
			Message:                   Rate{PerSecond: 0.2, Burst: 10},
			RoomCreation:              Rate{PerSecond: 0.016, Burst: 10},
			Joins: JoinRates{
				Local:  Rate{PerSecond: 0.1, Burst: 10},
				Remote: Rate{PerSecond: 0.01, Burst: 10},
			},
			Invites: InviteRates{
				PerRoom:   Rate{PerSecond: 0.3, Burst: 10},
				PerUser:   Rate{PerSecond: 0.003, Burst: 5},
				PerIssuer: Rate{PerSecond: 0.3, Burst: 10},
			},
		},
		Media:    Media{StorePath: "data/media", MaxUploadSize: 50 << 20},
		VoIP:     VoIP{TURNURIs: []string{}, TURNUserLifetime: Duration(time.Hour), TURNAllowGuests: true},
		Presence: Presence{Enabled: true, IdleAfter: Duration(5 * time.Minute), OfflineAfter: Duration(30 * time.Second)},
		Federation: Federation{
			Enabled: true,
			TrustedKeyServers: []TrustedKeyServer{{ServerName: "matrix.org",
				VerifyKeys: map[string]string{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}},
			KeyValidity:     Duration(24 * time.Hour),
			DomainAllowlist: []string{},
			DomainDenylist:  []string{},
		},
		AppServiceConfigFiles: []string{},
		ASQueryTimeout:        Duration(30 * time.Second),
		Logging:               Logging{Level: "info", Format: "text"},
		Metrics:               Metrics{Address: "127.0.0.1:9092"},
		WellKnown:             WellKnown{Support: Support{Contacts: []SupportContact{}}},
		Caches:                DefaultCaches(),
	}
}

// DefaultCaches are cache sizes for a small machine (a few hundred users,
// rooms of a few thousand members): together at most about 25 MB.
func DefaultCaches() Caches {
	return Caches{
		RoomEvents:      2000,
		StateSnapshots:  1 << 17,
		StateBlocks:     1 << 16,
		StateBlockIDs:   10000,
		StateKeys:       10000,
		AccessTokens:    5000,
		LazyMembers:     1000,
		PushRules:       2000,
		PushRooms:       200,
		ServerKeys:      2000,
		ServerDiscovery: 1000,
	}
}

// FirstRun is the configuration `myelin` writes when started without one: a
// loopback-only server named localhost:8008 with open registration, since
// nobody but the local machine can reach it.
func FirstRun() *Config {
	c := Defaults("localhost:8008")
	c.Registration.Enabled = true
	c.Registration.SharedSecret = RandomSecret()
	return c
}

// Production is the configuration `myelin generate-config` writes for a
// public server: registration off, a random shared secret, listening on all
// interfaces.
func Production(serverName string) *Config {
	c := Defaults(serverName)
	c.Registration.SharedSecret = RandomSecret()
	c.Listeners.HTTP.Address = "0.0.0.0:8008"
	c.Listeners.HTTP.XForwardedFor = false
	c.WellKnown.ClientBaseURL = "https://" + serverName
	return c
}

// RandomSecret returns 32 random bytes, URL-safe base64.
func RandomSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
