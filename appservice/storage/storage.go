// Package storage is the application service component's tables (prefix
// as_): the queue of what each registered service is owed, the
// transaction each is being sent, and the positions of the component's
// consumers, on SQLite or PostgreSQL with one query text.
package storage

import (
	"context"
	"database/sql"
	"embed"
	"errors"

	"github.com/myelin-chat/myelin/internal/bus"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

//go:embed schema
var schema embed.FS

// Kinds of queued rows.
const (
	KindEvent     = "event"
	KindEphemeral = "ephemeral"
	KindToDevice  = "to_device"
	// KindDeviceList is a user whose device list changed (MSC3202).
	KindDeviceList = "device_list"
)

// Consumers is as_consumers: the last stream sequence each consumer
// applied, stored with its effect.
var Consumers = bus.PositionTable{Table: "as_consumers", Key: "consumer", Seq: "seq"}

// ConsumerKnown reports whether a consumer has a stored position (even 0).
func ConsumerKnown(ctx context.Context, q sqlutil.Querier, consumer string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM as_consumers WHERE consumer = ?`, consumer).Scan(&n)
	return n > 0, err
}

// Storage is the component's database.
type Storage struct {
	db *sqlutil.DB
}

// New migrates the component's tables and returns its storage.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, "as", schema); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// WithTx runs fn in a write transaction.
func (s *Storage) WithTx(ctx context.Context, fn func(tx *sqlutil.Tx) error) error {
	return s.db.WithTx(ctx, fn)
}

// DB is the handle for queries outside a transaction.
func (s *Storage) DB() sqlutil.Querier { return s.db }

// QueueRow is one thing a service is owed.
type QueueRow struct {
	ID        int64
	ServiceID string
	Kind      string
	Payload   []byte // JSON
}

// MaxQueueID returns the highest queue ID ever assigned that is still
// stored, or the one transactions remember (0: none).
func MaxQueueID(ctx context.Context, q sqlutil.Querier) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(m), 0) FROM (
		SELECT MAX(id) AS m FROM as_queue UNION ALL SELECT MAX(txn_last_id) AS m FROM as_services) AS t`).Scan(&id)
	return id, err
}

// InsertQueue queues rows, whose IDs the caller assigned.
func InsertQueue(ctx context.Context, tx *sqlutil.Tx, rows []QueueRow) error {
	for _, r := range rows {
		if _, err := tx.ExecContext(ctx, `INSERT INTO as_queue (id, service_id, kind, payload) VALUES (?, ?, ?, ?)`,
			r.ID, r.ServiceID, r.Kind, string(r.Payload)); err != nil {
			return err
		}
	}
	return nil
}

// SelectQueue returns the first limit rows queued for a service after
// afterID, in order.
func SelectQueue(ctx context.Context, q sqlutil.Querier, serviceID string, afterID int64, limit int) ([]QueueRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, service_id, kind, payload FROM as_queue
		WHERE service_id = ? AND id > ? ORDER BY id LIMIT ?`, serviceID, afterID, limit)
	return sqlutil.Collect(rows, err, func(rows *sql.Rows) (QueueRow, error) {
		var r QueueRow
		var p string
		err := rows.Scan(&r.ID, &r.ServiceID, &r.Kind, &p)
		r.Payload = []byte(p)
		return r, err
	})
}

// PendingCounts returns how many rows each service has queued.
func PendingCounts(ctx context.Context, q sqlutil.Querier) (map[string]int, error) {
	out := map[string]int{}
	rows, err := q.QueryContext(ctx, `SELECT service_id, COUNT(*) FROM as_queue GROUP BY service_id`)
	err = sqlutil.Each(rows, err, func(rows *sql.Rows) error {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return err
		}
		out[id] = n
		return nil
	})
	return out, err
}

// Txn is a transaction being sent to a service.
type Txn struct {
	ID     int64
	Body   []byte
	LastID int64 // the last queue row it carries
}

// PendingTxn returns the service's unacknowledged transaction, or nil.
func PendingTxn(ctx context.Context, q sqlutil.Querier, serviceID string) (*Txn, error) {
	var t Txn
	var body sql.NullString
	err := q.QueryRowContext(ctx, `SELECT last_txn_id, txn_body, txn_last_id FROM as_services WHERE service_id = ?`, serviceID).
		Scan(&t.ID, &body, &t.LastID)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !body.Valid) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t.Body = []byte(body.String)
	return &t, nil
}

// BeginTxn gives the service's next transaction ID to body, which carries
// the queue rows up to lastID, and stores it until FinishTxn.
func BeginTxn(ctx context.Context, tx *sqlutil.Tx, serviceID string, body []byte, lastID int64) (*Txn, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `INSERT INTO as_services (service_id, last_txn_id, txn_body, txn_last_id) VALUES (?, 1, ?, ?)
		ON CONFLICT (service_id) DO UPDATE SET last_txn_id = as_services.last_txn_id + 1, txn_body = excluded.txn_body,
			txn_last_id = excluded.txn_last_id
		RETURNING last_txn_id`, serviceID, string(body), lastID).Scan(&id)
	if err != nil {
		return nil, err
	}
	return &Txn{ID: id, Body: body, LastID: lastID}, nil
}

// FinishTxn records that the service acknowledged its transaction: the
// rows it carried are deleted; it returns how many.
func FinishTxn(ctx context.Context, tx *sqlutil.Tx, serviceID string, t *Txn) (int, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM as_queue WHERE service_id = ? AND id <= ?`, serviceID, t.LastID)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	_, err = tx.ExecContext(ctx, `UPDATE as_services SET txn_body = NULL WHERE service_id = ? AND last_txn_id = ?`, serviceID, t.ID)
	return int(n), err
}

// ForgetServicesExcept deletes what is queued for services that are no
// longer registered (their transaction counters stay, so that a service
// registered again does not reuse transaction IDs).
func ForgetServicesExcept(ctx context.Context, tx *sqlutil.Tx, ids []string) error {
	if len(ids) == 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM as_queue`); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE as_services SET txn_body = NULL`)
		return err
	}
	in := sqlutil.InList(len(ids))
	if _, err := tx.ExecContext(ctx, `DELETE FROM as_queue WHERE service_id NOT IN (`+in+`)`, sqlutil.Args(ids)...); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE as_services SET txn_body = NULL WHERE service_id NOT IN (`+in+`)`, sqlutil.Args(ids)...)
	return err
}
