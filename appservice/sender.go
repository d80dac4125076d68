package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	asapi "github.com/myelin-chat/myelin/appservice/api"
	"github.com/myelin-chat/myelin/appservice/storage"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Limits of one transaction, as Synapse's: at most 100 events, 100
// ephemeral events and 100 to-device messages.
const (
	maxEventsPerTxn    = 100
	maxEphemeralPerTxn = 100
	maxToDevicePerTxn  = 100
)

// The wait between attempts to send a transaction to a service that is
// down doubles from minBackoff up to maxBackoff (Synapse's doubles from
// 2 s up to 512 s).
const (
	minBackoff = time.Second
	maxBackoff = 5 * time.Minute
)

// sender sends one service its transactions, one at a time and in order.
type sender struct {
	a       *AppService
	svc     *asapi.Service
	log     *slog.Logger
	wake    chan struct{}
	pending atomic.Int64
}

func newSender(a *AppService, svc *asapi.Service) *sender {
	s := &sender{a: a, svc: svc, log: a.log.With("appservice", svc.ID), wake: make(chan struct{}, 1)}
	a.metrics.up.WithLabelValues(svc.ID).Set(1)
	a.metrics.txns.WithLabelValues(svc.ID, "ok")
	a.metrics.txns.WithLabelValues(svc.ID, "error")
	a.metrics.events.WithLabelValues(svc.ID)
	return s
}

func (s *sender) setPending(n int) {
	s.pending.Store(int64(n))
	s.a.metrics.pending.WithLabelValues(s.svc.ID).Set(float64(n))
}

// queued counts n new rows and wakes the sender.
func (s *sender) queued(n int) {
	s.a.metrics.pending.WithLabelValues(s.svc.ID).Set(float64(s.pending.Add(int64(n))))
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// start runs the sender until the returned function is called.
func (s *sender) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	return func() { cancel(); <-done }
}

// run sends transactions while there is something queued. A failed
// transaction is resent, same ID and body, after a backoff that doubles
// from minBackoff up to maxBackoff; new rows do not shorten it. The
// service going down is logged once, as is its coming back.
func (s *sender) run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		txn, err := s.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("appservice transaction not built: will retry", slog.String("error", err.Error()))
				s.sleep(ctx, time.Second)
			}
			continue
		}
		if txn == nil {
			select {
			case <-ctx.Done():
			case <-s.wake:
			}
			continue
		}
		err = s.send(ctx, txn)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.a.metrics.txns.WithLabelValues(s.svc.ID, "error").Inc()
			s.a.metrics.up.WithLabelValues(s.svc.ID).Set(0)
			delay := min(minBackoff<<min(failures, 20), maxBackoff)
			if failures == 0 {
				s.log.Warn("application service is down: retrying with backoff", slog.Int64("txn_id", txn.ID),
					slog.Int64("pending", s.pending.Load()), slog.String("error", err.Error()))
			} else {
				s.log.Debug("application service transaction failed", slog.Int64("txn_id", txn.ID),
					slog.Duration("retry_in", delay), slog.String("error", err.Error()))
			}
			failures++
			s.sleep(ctx, delay)
			continue
		}
		var n int
		err = s.a.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
			var err error
			n, err = storage.FinishTxn(ctx, tx, s.svc.ID, txn)
			return err
		})
		if err != nil {
			// Sent but not recorded: it is sent again, with the same ID,
			// which the service ignores.
			if ctx.Err() == nil {
				s.log.Error("appservice transaction sent but not recorded", slog.Int64("txn_id", txn.ID), slog.String("error", err.Error()))
				s.sleep(ctx, time.Second)
			}
			continue
		}
		s.a.metrics.txns.WithLabelValues(s.svc.ID, "ok").Inc()
		s.a.metrics.events.WithLabelValues(s.svc.ID).Add(float64(n))
		s.a.metrics.pending.WithLabelValues(s.svc.ID).Set(float64(s.pending.Add(-int64(n))))
		s.a.metrics.up.WithLabelValues(s.svc.ID).Set(1)
		if failures > 0 {
			s.log.Info("application service is back up", slog.Int("failed_attempts", failures))
			failures = 0
		}
	}
}

func (s *sender) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// txnBody is a transaction (application service API, PUT
// /_matrix/app/v1/transactions/{txnId}), with the fields of MSC2409 as
// Synapse sends them.
type txnBody struct {
	Events           []json.RawMessage `json:"events"`
	Ephemeral        []json.RawMessage `json:"ephemeral,omitempty"`
	MSC2409Ephemeral []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
	MSC2409ToDevice  []json.RawMessage `json:"de.sorunome.msc2409.to_device,omitempty"`
	// MSC3202 (see msc3202.go).
	DeviceLists      *deviceLists                         `json:"org.matrix.msc3202.device_lists,omitempty"`
	OTKCounts        map[string]map[string]map[string]int `json:"org.matrix.msc3202.device_one_time_keys_count,omitempty"`
	OTKCountsOld     map[string]map[string]map[string]int `json:"org.matrix.msc3202.device_one_time_key_counts,omitempty"`
	FallbackKeyTypes map[string]map[string][]string       `json:"org.matrix.msc3202.device_unused_fallback_key_types,omitempty"`
}

// next returns the service's unacknowledged transaction or, when there is
// none, builds the next one from its queue and stores it; nil when
// nothing is queued.
func (s *sender) next(ctx context.Context) (*storage.Txn, error) {
	if t, err := storage.PendingTxn(ctx, s.a.store.DB(), s.svc.ID); err != nil || t != nil {
		return t, err
	}
	rows, err := storage.SelectQueue(ctx, s.a.store.DB(), s.svc.ID, 0, maxEventsPerTxn+maxEphemeralPerTxn+maxToDevicePerTxn)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	body := txnBody{Events: []json.RawMessage{}}
	var last int64
	for _, r := range rows {
		full := false
		switch r.Kind {
		case storage.KindEvent:
			if full = len(body.Events) == maxEventsPerTxn; !full {
				body.Events = append(body.Events, r.Payload)
			}
		case storage.KindEphemeral:
			if full = len(body.Ephemeral) == maxEphemeralPerTxn; !full {
				body.Ephemeral = append(body.Ephemeral, r.Payload)
			}
		case storage.KindToDevice:
			if full = len(body.MSC2409ToDevice) == maxToDevicePerTxn; !full {
				body.MSC2409ToDevice = append(body.MSC2409ToDevice, r.Payload)
			}
		case storage.KindDeviceList:
			var u string
			if json.Unmarshal(r.Payload, &u) == nil && u != "" {
				if body.DeviceLists == nil {
					body.DeviceLists = &deviceLists{Changed: []string{}, Left: []string{}}
				}
				if !slices.Contains(body.DeviceLists.Changed, u) {
					body.DeviceLists.Changed = append(body.DeviceLists.Changed, u)
				}
			}
		}
		if full {
			break // the rest keeps its order for the next transaction
		}
		last = r.ID
	}
	if s.svc.MSC3202 {
		if err := s.a.keyCounts(ctx, s.svc, &body); err != nil {
			return nil, err
		}
	}
	if s.svc.EphemeralLegacy {
		body.MSC2409Ephemeral, body.Ephemeral = body.Ephemeral, nil
	}
	js, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var t *storage.Txn
	err = s.a.store.WithTx(ctx, func(tx *sqlutil.Tx) error {
		t, err = storage.BeginTxn(ctx, tx, s.svc.ID, js, last)
		return err
	})
	return t, err
}

// send PUTs the transaction to the service; a 2xx answer acknowledges it.
// The hs_token goes in the Authorization header only (Synapse no longer
// sends the access_token query parameter by default).
func (s *sender) send(ctx context.Context, t *storage.Txn) error {
	u := s.svc.URL + "/_matrix/app/v1/transactions/" + url.PathEscape(strconv.FormatInt(t.ID, 10))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(t.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.svc.HSToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
