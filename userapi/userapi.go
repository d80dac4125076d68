// Package userapi owns users: accounts and passwords, devices with their
// access and refresh tokens, profiles, account data, push rules and
// pushers, end-to-end encryption keys (through userapi/keys), the cache of
// remote users' device lists, key backups and dehydrated devices. It implements userapi/api, announces changes on the UserOutput
// stream, and is the Authenticator of every client route.
package userapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/userapi/api"
	"github.com/myelin-chat/myelin/userapi/keys"
	"github.com/myelin-chat/myelin/userapi/storage"
)

// Config is what the user API needs from the configuration.
type Config struct {
	ServerName string
	BcryptCost int
	// AccessTokenLifetime is the lifetime of refreshable access tokens.
	AccessTokenLifetime time.Duration
	// Marks receives the UserOutput position of each user's changes,
	// for read-your-writes (nil: none).
	Marks *bus.WriteMarks
	// AppServices are the registered application services, whose as_tokens
	// authenticate requests and whose exclusive user namespaces generated
	// user IDs avoid (nil: none).
	AppServices *asapi.Registry
	// TokenCacheSize bounds the access tokens cached with their device
	// (entries, about 300 bytes each; 0: DefaultTokenCacheSize).
	TokenCacheSize int
}

// DefaultTokenCacheSize is the token cache size when Config leaves it at
// zero (the configuration's default).
const DefaultTokenCacheSize = 5000

// UserAPI implements api.AccountsAPI, api.SessionsAPI, api.ProfileAPI,
// api.AccountDataAPI, api.PushRulesAPI, api.PushersAPI and (through
// keys.Keys) api.KeysAPI.
type UserAPI struct {
	*keys.Keys

	cfg      Config
	store    *storage.Storage
	bus      *bus.Bus
	log      *slog.Logger
	tokens   *tokenCache
	lastSeen *lastSeen
	// pushLocks orders each user's push rule edits with their
	// announcements.
	pushLocks userLocks
	// remoteLocks orders the changes of each remote user's cached device
	// list (remotekeys.go).
	remoteLocks userLocks
	// dehydratedLocks orders each user's dehydrated device changes.
	dehydratedLocks userLocks
	// dummyHash is compared against for unknown users, so that a login
	// for a missing account costs as much as a wrong password.
	dummyHash string
	outbox    *bus.Outbox[bus.OutboxRow] // user_outbox (outbox.go)
	stopRelay func()
}

var (
	_ api.AccountsAPI    = (*UserAPI)(nil)
	_ api.SessionsAPI    = (*UserAPI)(nil)
	_ api.ProfileAPI     = (*UserAPI)(nil)
	_ api.AccountDataAPI = (*UserAPI)(nil)
	_ api.PushRulesAPI   = (*UserAPI)(nil)
	_ api.PushersAPI     = (*UserAPI)(nil)
	_ api.KeysAPI        = (*UserAPI)(nil)
)

// New migrates the user API's tables and returns the component.
func New(ctx context.Context, cfg Config, db *sqlutil.DB, b *bus.Bus, log *slog.Logger) (*UserAPI, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("userapi: %w", err)
	}
	dummy, err := hashPassword("dummy password for timing", cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	if cfg.TokenCacheSize <= 0 {
		cfg.TokenCacheSize = DefaultTokenCacheSize
	}
	u := &UserAPI{
		cfg:       cfg,
		store:     st,
		bus:       b,
		log:       log.With("component", "userapi"),
		tokens:    newTokenCache(cfg.TokenCacheSize, 2*time.Minute),
		lastSeen:  newLastSeen(time.Minute),
		dummyHash: dummy,
		outbox:    bus.TableOutbox(st.DB(), storage.SelectOutbox, storage.DeleteOutbox),
	}
	// Key changes concern everyone sharing a room with their user.
	u.Keys = keys.New(cfg.ServerName, st, func(ctx context.Context) error {
		if err := u.flushOutbox(ctx); err != nil {
			return err
		}
		u.cfg.Marks.Wrote(api.UserOutputStream.Name, u.outbox.Published(), bus.EveryReader)
		return nil
	}, u.log)
	// What a crash left in the outbox goes out now.
	u.Keys.Flush(ctx)
	return u, nil
}

// Start runs the outbox relay, which publishes what a failed publish left
// in the outbox; Close stops it.
func (u *UserAPI) Start() { u.stopRelay = u.outbox.Relay(u.bus, outboxRetry, u.log) }

// Close stops the outbox relay.
func (u *UserAPI) Close() {
	if u.stopRelay != nil {
		u.stopRelay()
		u.stopRelay = nil
	}
}

// outboxRetry is how often the outbox is retried after a publish failed.
const outboxRetry = 2 * time.Second

// flushOutbox publishes committed UserOutput messages of the outbox
// (user_outbox) in commit order and deletes them.
func (u *UserAPI) flushOutbox(ctx context.Context) error { return u.outbox.Flush(ctx, u.bus) }

// queue puts a UserOutput message in the outbox, in the transaction of
// the change it announces; announce publishes it after the commit. Its
// message ID makes publishing it again (a flush that failed after the
// publish, a relay after a crash) harmless.
func (u *UserAPI) queue(ctx context.Context, tx *sqlutil.Tx, subject string, msg any) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	var r [12]byte
	_, _ = rand.Read(r[:])
	return storage.InsertOutbox(ctx, tx, subject, subject+":"+hex.EncodeToString(r[:]), payload)
}

// announce publishes what committed transactions queued in the outbox and
// marks its position for the users it concerns, so that their next reads
// wait for it (bus.WriteMarks). The change is committed whatever happens
// here: a failed publish is logged and left to the relay.
func (u *UserAPI) announce(ctx context.Context, userIDs ...string) {
	if u.bus == nil {
		return
	}
	// A caller that hangs up after the commit does not hold the news up.
	if err := u.flushOutbox(context.WithoutCancel(ctx)); err != nil {
		u.log.Warn("publishing user output failed: the relay retries", slog.String("error", err.Error()))
		return
	}
	u.cfg.Marks.Wrote(api.UserOutputStream.Name, u.outbox.Published(), userIDs...)
}

func (u *UserAPI) queueDevices(ctx context.Context, tx *sqlutil.Tx, userID string, ids []string, deleted bool) error {
	if len(ids) == 0 {
		return nil
	}
	return u.queue(ctx, tx, api.SubjectDevices, api.DeviceUpdate{V: 1, UserID: userID, DeviceIDs: ids, Deleted: deleted})
}

func nowMS() int64 { return time.Now().UnixMilli() }
