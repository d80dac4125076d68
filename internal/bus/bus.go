// Package bus is Myelin's message bus: NATS JetStream, either embedded
// in-process (no listening port, the default for one machine) or an external
// NATS cluster (for running components as separate processes).
//
// Producers declare their streams (StreamSpec) in their api packages; setup
// creates or updates them at boot with EnsureStreams. Consumers use Consume,
// which acks handled messages, naks transient failures with a backoff,
// terminates undecodable ones, and skips messages at or below the sequence a
// consumer has already applied (the last-applied-sequence pattern: the
// consumer stores the stream sequence in the same transaction as its effect,
// so redeliveries after a crash are harmless). A consumer starting again
// redelivers at once what an instance that died left unacked, and stopping
// one finishes the message in flight (see Consume).
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says which NATS to use.
type Config struct {
	// URLs of an external NATS cluster. Empty means embedded.
	URLs []string
	// StoreDir is the JetStream directory of the embedded server.
	StoreDir string
	// Prefix is prepended to every stream name and subject, so that several
	// homeservers can share one NATS cluster.
	Prefix string
	// MaxMemory and MaxStore bound the embedded JetStream (bytes; 0 = default).
	MaxMemory int64
	MaxStore  int64
}

// Bus is a connection to NATS JetStream.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	srv    *server.Server
	prefix string
	log    *slog.Logger
	// consumers are the running consumers, for the lag metric.
	consumers consumerSet
}

// Open starts the embedded server (when cfg.URLs is empty) and connects.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{prefix: cfg.Prefix, log: log}
	var opts []nats.Option
	url := strings.Join(cfg.URLs, ",")
	if len(cfg.URLs) == 0 {
		if cfg.StoreDir == "" {
			return nil, errors.New("bus: embedded NATS needs a store directory")
		}
		sopts := &server.Options{
			ServerName:         "myelin-embedded",
			DontListen:         true,
			JetStream:          true,
			StoreDir:           cfg.StoreDir,
			NoSigs:             true,
			NoLog:              true,
			JetStreamMaxMemory: cfg.MaxMemory,
			// Room output carries state deltas, which can be large.
			MaxPayload:        8 << 20,
			JetStreamMaxStore: cfg.MaxStore,
		}
		if sopts.JetStreamMaxMemory == 0 {
			sopts.JetStreamMaxMemory = 64 << 20
		}
		srv, err := server.NewServer(sopts)
		if err != nil {
			return nil, fmt.Errorf("bus: embedded NATS: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("bus: embedded NATS did not start")
		}
		b.srv = srv
		url = srv.ClientURL()
		opts = append(opts, nats.InProcessServer(srv))
	}
	opts = append(opts,
		nats.Name("myelin"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", slog.String("error", err.Error()))
			}
		}),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("bus: JetStream: %w", err)
	}
	b.NC, b.JS = nc, js
	return b, nil
}

// Close flushes what was published and closes the connection, then stops
// the embedded server. Consumers must have been stopped first.
func (b *Bus) Close() {
	if b.NC != nil {
		_ = b.NC.FlushTimeout(5 * time.Second)
		b.NC.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Name returns the prefixed form of a stream name or subject.
func (b *Bus) Name(s string) string { return b.prefix + s }

// StreamSpec declares a stream. Subjects are relative to the bus prefix.
type StreamSpec struct {
	Name        string
	Description string
	Subjects    []string
	// MaxAge drops messages older than this (0 = keep until the limits).
	MaxAge time.Duration
	// Memory keeps the stream in memory only (for ephemeral data).
	Memory bool
	// DuplicateWindow is how long publish message IDs are remembered.
	DuplicateWindow time.Duration
}

// EnsureStreams creates the streams or updates their configuration.
func (b *Bus) EnsureStreams(ctx context.Context, specs ...StreamSpec) error {
	for _, s := range specs {
		cfg := jetstream.StreamConfig{
			Name:        b.Name(s.Name),
			Description: s.Description,
			MaxAge:      s.MaxAge,
			Duplicates:  s.DuplicateWindow,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
		}
		if s.Memory {
			cfg.Storage = jetstream.MemoryStorage
		}
		for _, subj := range s.Subjects {
			cfg.Subjects = append(cfg.Subjects, b.Name(subj))
		}
		if _, err := b.JS.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// Publish sends v as JSON on subject (relative to the prefix). msgID, when
// set, makes the publish idempotent within the stream's duplicate window.
// It returns the stream sequence the message was stored at.
func (b *Bus) Publish(ctx context.Context, subject string, v any, msgID string, header map[string]string) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("bus: encode %s: %w", subject, err)
	}
	m := nats.NewMsg(b.Name(subject))
	m.Data = data
	for k, val := range header {
		m.Header.Set(k, val)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := b.JS.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, fmt.Errorf("bus: publish %s: %w", subject, err)
	}
	return ack.Sequence, nil
}
