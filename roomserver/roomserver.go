// Package roomserver is the single writer of room state: it builds and
// signs local users' events, checks every event against the auth rules of
// its room version, stores events with their state as shared snapshots,
// tracks forward extremities and resolves state across forks (state
// resolution v2, v2.1 for room version 12), and announces what it stored on
// RoomOutput. It also answers queries about rooms, aliases and the
// published room directory.
package roomserver

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/lru"
	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/roomserver/api"
	"github.com/myelin-chat/myelin/roomserver/state"
	"github.com/myelin-chat/myelin/roomserver/storage"
)

// Config is what the roomserver needs from the configuration.
type Config struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// Registry receives the roomserver's metrics (nil: none).
	Registry prometheus.Registerer
	// Marks receives the RoomOutput position of each input's output, by
	// room and local writer, for read-your-writes (nil: none).
	Marks *bus.WriteMarks
	// Caches bounds the in-memory caches (zero fields: DefaultCacheSizes).
	Caches CacheSizes
}

// CacheSizes bounds the roomserver's caches, in entries.
type CacheSizes struct {
	// Events are parsed events (about 2 KB each for a message).
	Events int
	// SnapshotEntries and BlockEntries are state entries summed over the
	// cached snapshots and blocks (about 30 bytes each).
	SnapshotEntries, BlockEntries int
	// BlockIDs maps block content hashes to stored block IDs.
	BlockIDs int
	// StateKeys maps state keys to numeric IDs and back (each direction).
	StateKeys int
}

// DefaultCacheSizes are the sizes of fields left at zero: those of the
// configuration's defaults, for a small machine.
var DefaultCacheSizes = CacheSizes{Events: 2000, SnapshotEntries: 1 << 17, BlockEntries: 1 << 16, BlockIDs: 10000, StateKeys: 10000}

// orDefault fills the zero sizes from DefaultCacheSizes.
func (c CacheSizes) orDefault() CacheSizes {
	d := DefaultCacheSizes
	pick := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&c.Events, d.Events)
	pick(&c.SnapshotEntries, d.SnapshotEntries)
	pick(&c.BlockEntries, d.BlockEntries)
	pick(&c.BlockIDs, d.BlockIDs)
	pick(&c.StateKeys, d.StateKeys)
	return c
}

// Roomserver is the roomserver component.
type Roomserver struct {
	cfg     Config
	store   *storage.Storage
	bus     *bus.Bus
	log     *slog.Logger
	metrics *metrics

	// heads holds the committed head (current state, extremities) of each
	// room the roomserver has touched: room ID -> *roomHead.
	heads sync.Map

	snapshots     *lru.Cache[int64, state.Snapshot]
	blocks        *lru.Cache[int64, state.Snapshot]
	blockNIDs     *lru.Cache[string, int64] // block content hash -> numeric ID
	events        *lru.Cache[int64, *event]
	typeNIDs      sync.Map // event type -> int64
	typeNames     sync.Map // int64 -> event type
	stateKeyNIDs  *lru.Cache[string, int64]
	stateKeyNames *lru.Cache[int64, string]

	outbox *bus.Outbox[bus.OutboxRow] // rs_outbox, RoomOutput in commit order
	// committer stores the inputs of all partitions (commit.go).
	committer *committer
	stopMu    sync.Mutex
	stops     []func()
}

var (
	_ api.QueryAPI = (*Roomserver)(nil)
	_ api.AliasAPI = (*Roomserver)(nil)
)

// roomHead is the committed state of a room's DAG head. It is immutable:
// input replaces it after each commit.
type roomHead struct {
	nid      int64
	id       string
	version  gomatrixserverlib.RoomVersion
	snapshot int64   // current state
	latest   []int64 // forward extremities
	joined   int64
}

func (h *roomHead) clone() *roomHead {
	c := *h
	c.latest = append([]int64(nil), h.latest...)
	return &c
}

// event is a stored event with its parsed form.
type event struct {
	storage.Event
	pdu gomatrixserverlib.PDU
}

// New migrates the roomserver's tables and returns the component.
func New(ctx context.Context, cfg Config, db *sqlutil.DB, b *bus.Bus, log *slog.Logger) (*Roomserver, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("roomserver: %w", err)
	}
	entries := func(s state.Snapshot) int { return len(s) }
	sizes := cfg.Caches.orDefault()
	cfg.Caches = sizes
	return &Roomserver{
		cfg:           cfg,
		store:         st,
		bus:           b,
		log:           log.With("component", "roomserver"),
		metrics:       newMetrics(cfg.Registry),
		snapshots:     lru.New[int64, state.Snapshot](sizes.SnapshotEntries, entries),
		blocks:        lru.New[int64, state.Snapshot](sizes.BlockEntries, entries),
		blockNIDs:     lru.New[string, int64](sizes.BlockIDs, nil),
		events:        lru.New[int64, *event](sizes.Events, nil),
		stateKeyNIDs:  lru.New[string, int64](sizes.StateKeys, nil),
		stateKeyNames: lru.New[int64, string](sizes.StateKeys, nil),
		outbox:        bus.TableOutbox(st.DB(), storage.SelectOutbox, storage.DeleteOutbox),
		committer:     newCommitter(),
	}, nil
}

// Close stops the input consumers, waiting for the input in flight, then
// the committer.
func (r *Roomserver) Close() {
	defer r.stopCommitter()
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	// The partitions drain at once, not one after another.
	var wg sync.WaitGroup
	for _, stop := range r.stops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop()
		}()
	}
	wg.Wait()
	r.stops = nil
}

// userIDForSender maps sender IDs to user IDs (they are the same in every
// room version Myelin supports).
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}
