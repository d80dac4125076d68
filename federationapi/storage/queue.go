package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// QueueItem is a PDU (EDUType "") or an EDU queued for a destination.
type QueueItem struct {
	Seq      int64
	EDUType  string
	Payload  json.RawMessage
	QueuedTS int64
}

// EnqueuePDU queues an event for destinations (its JSON stored once).
func EnqueuePDU(ctx context.Context, tx *sqlutil.Tx, dests []string, event json.RawMessage, ts int64) error {
	return enqueue(ctx, tx, dests, "", event, ts)
}

// EnqueueEDU queues an EDU for destinations.
func EnqueueEDU(ctx context.Context, tx *sqlutil.Tx, dests []string, eduType string, content json.RawMessage, ts int64) error {
	return enqueue(ctx, tx, dests, eduType, content, ts)
}

func enqueue(ctx context.Context, tx *sqlutil.Tx, dests []string, eduType string, payload json.RawMessage, ts int64) error {
	var nid int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO fed_queue_payloads (payload) VALUES (?) RETURNING payload_nid`, string(payload)).Scan(&nid); err != nil {
		return err
	}
	var et any
	if eduType != "" {
		et = eduType
	}
	for _, d := range dests {
		if _, err := tx.ExecContext(ctx, `INSERT INTO fed_queue (destination, edu_type, payload_nid, queued_ts) VALUES (?, ?, ?, ?)`,
			d, et, nid, ts); err != nil {
			return err
		}
	}
	return nil
}

// SelectQueue returns the oldest items queued for a destination: at most
// maxPDUs PDUs and maxEDUs EDUs, in order, stopping at the first item that
// would go over either limit.
func SelectQueue(ctx context.Context, q sqlutil.Querier, dest string, maxPDUs, maxEDUs int) ([]QueueItem, error) {
	rows, err := q.QueryContext(ctx, `SELECT q.seq, q.edu_type, p.payload, q.queued_ts FROM fed_queue q
		JOIN fed_queue_payloads p ON p.payload_nid = q.payload_nid WHERE q.destination = ? ORDER BY q.seq LIMIT ?`, dest, maxPDUs+maxEDUs)
	items, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (QueueItem, error) {
		var it QueueItem
		var et sql.NullString
		var p string
		err := rows.Scan(&it.Seq, &et, &p, &it.QueuedTS)
		it.EDUType, it.Payload = et.String, json.RawMessage(p)
		return it, err
	})
	if err != nil {
		return nil, err
	}
	pdus, edus := 0, 0
	for i, it := range items {
		if it.EDUType == "" {
			pdus++
		} else {
			edus++
		}
		if pdus > maxPDUs || edus > maxEDUs {
			return items[:i], nil
		}
	}
	return items, nil
}

// CountQueued is how many items wait for a destination.
func CountQueued(ctx context.Context, q sqlutil.Querier, dest string) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM fed_queue WHERE destination = ?`, dest).Scan(&n)
	return n, err
}

// QueueDepth is how much waits for the destinations with one number of
// failures in a row.
type QueueDepth struct {
	Failures            int
	Items, Destinations int64
}

// SelectQueueDepths counts the queued items and their destinations, grouped
// by the destinations' failures in a row (0 for one never failed).
func SelectQueueDepths(ctx context.Context, q sqlutil.Querier) ([]QueueDepth, error) {
	rows, err := q.QueryContext(ctx, `SELECT COALESCE(d.failures, 0), COUNT(*), COUNT(DISTINCT q.destination)
		FROM fed_queue q LEFT JOIN fed_destinations d ON d.server_name = q.destination
		GROUP BY COALESCE(d.failures, 0)`)
	return sqlutil.Collect(rows, err, func(r *sql.Rows) (QueueDepth, error) {
		var d QueueDepth
		err := r.Scan(&d.Failures, &d.Items, &d.Destinations)
		return d, err
	})
}

// SelectQueuedDestinations lists the destinations with items queued.
func SelectQueuedDestinations(ctx context.Context, q sqlutil.Querier) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT destination FROM fed_queue`)
	return sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
}

// DeleteQueued removes sent items, and the payloads nothing queued needs
// any more.
func DeleteQueued(ctx context.Context, db interface {
	WithTx(context.Context, func(*sqlutil.Tx) error) error
}, dest string, seqs []int64) error {
	return db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		return sqlutil.InBatches(seqs, 500, func(batch []int64) error {
			rows, err := tx.QueryContext(ctx, `DELETE FROM fed_queue WHERE destination = ? AND seq IN (`+sqlutil.InList(len(batch))+`)
				RETURNING payload_nid`, sqlutil.Args(batch, dest)...)
			nids, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[int64])
			if err != nil {
				return err
			}
			for _, nid := range nids {
				if _, err := tx.ExecContext(ctx, `DELETE FROM fed_queue_payloads WHERE payload_nid = ?
					AND NOT EXISTS (SELECT 1 FROM fed_queue WHERE payload_nid = ?)`, nid, nid); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// Destination is what is known of a server this one sends to.
type Destination struct {
	Failures int
	RetryAt  int64
}

// SelectDestination returns a destination's backoff, or ErrNotFound.
func SelectDestination(ctx context.Context, q sqlutil.Querier, dest string) (*Destination, error) {
	var d Destination
	err := q.QueryRowContext(ctx, `SELECT failures, retry_at FROM fed_destinations WHERE server_name = ?`, dest).Scan(&d.Failures, &d.RetryAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &d, err
}

// UpsertDestination records a destination's failures in a row and when
// to try it again (0 failures: it is up).
func UpsertDestination(ctx context.Context, q sqlutil.Querier, dest string, failures int, retryAt int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO fed_destinations (server_name, failures, retry_at, updated_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (server_name) DO UPDATE SET failures = excluded.failures, retry_at = excluded.retry_at, updated_ts = excluded.updated_ts`,
		dest, failures, retryAt, time.Now().UnixMilli())
	return err
}

// SelectTxnResponse returns the response given to a received transaction,
// or ErrNotFound.
func SelectTxnResponse(ctx context.Context, q sqlutil.Querier, origin, txnID string) ([]byte, error) {
	var resp string
	err := q.QueryRowContext(ctx, `SELECT response FROM fed_received_txns WHERE origin = ? AND txn_id = ?`, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(resp), err
}

// InsertTxnResponse records the response to a received transaction, and
// forgets those older than a day.
func InsertTxnResponse(ctx context.Context, q sqlutil.Querier, origin, txnID string, resp []byte) error {
	now := time.Now().UnixMilli()
	if _, err := q.ExecContext(ctx, `INSERT INTO fed_received_txns (origin, txn_id, response, received_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(resp), now); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `DELETE FROM fed_received_txns WHERE received_ts < ?`, now-24*time.Hour.Milliseconds())
	return err
}

// Outbox is fed_outbox: the FederationIn messages of received
// transactions, committed with their responses.
var Outbox = bus.OutboxTable("fed_outbox")

// consumers is fed_consumers: the last stream sequence each consumer
// applied.
var consumers = bus.PositionTable{Table: "fed_consumers", Key: "name", Seq: "seq"}

// ConsumerPosition returns the last stream sequence a consumer applied.
func ConsumerPosition(ctx context.Context, q sqlutil.Querier, name string) (uint64, error) {
	return consumers.Get(ctx, q, name)
}

// SetConsumerPosition records the last stream sequence a consumer applied.
func SetConsumerPosition(ctx context.Context, tx *sqlutil.Tx, name string, seq uint64) error {
	return consumers.Set(ctx, tx, name, seq)
}
