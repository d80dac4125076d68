package sqlutil_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

// Statements are timed by op once metrics are registered, and the pools'
// statistics appear beside them.
func TestQueryDurationMetrics(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		reg := prometheus.NewRegistry()
		if err := db.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `CREATE TABLE m (x INTEGER)`); err != nil {
			t.Fatal(err)
		}
		if err := db.WithTx(ctx, func(tx *sqlutil.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO m (x) VALUES (?)`, 1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM m`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("count %d, %v", n, err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]uint64{}
		var pools bool
		for _, mf := range mfs {
			if mf.GetName() == "go_sql_open_connections" {
				pools = true
			}
			if mf.GetName() != "myelin_db_query_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if h := m.GetHistogram(); h.GetSampleSum() <= 0 || h.GetSampleSum() > 10 {
					t.Errorf("implausible total time %v", h.GetSampleSum())
				}
				counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
			}
		}
		if counts["exec"] != 2 || counts["query"] != 1 || counts["transaction"] != 1 {
			t.Errorf("statement counts by op: %v, want exec 2, query 1, transaction 1", counts)
		}
		if !pools {
			t.Error("no go_sql_* pool statistics")
		}
	})
}
