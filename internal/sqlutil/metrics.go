package sqlutil

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// dbMetrics time statements by kind: exec (a write), query (a read, until
// its first row is ready) and transaction (WithTx, from begin to commit).
type dbMetrics struct {
	exec, query, tx prometheus.Observer
}

// RegisterMetrics registers the handle's metrics with reg and starts
// timing statements: myelin_db_query_duration_seconds by op, and the
// connection pools' statistics (go_sql_*, db_name writer and reader; on
// PostgreSQL one pool, named writer).
func (db *DB) RegisterMetrics(reg prometheus.Registerer) error {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "myelin_db_query_duration_seconds",
		Help:    "Time spent in database statements, by op: exec, query (until the first row) and transaction (begin to commit).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"op"})
	if err := reg.Register(h); err != nil {
		return err
	}
	if err := reg.Register(collectors.NewDBStatsCollector(db.writer, "writer")); err != nil {
		return err
	}
	if db.reader != db.writer {
		if err := reg.Register(collectors.NewDBStatsCollector(db.reader, "reader")); err != nil {
			return err
		}
	}
	db.metrics.Store(&dbMetrics{exec: h.WithLabelValues("exec"), query: h.WithLabelValues("query"), tx: h.WithLabelValues("transaction")})
	return nil
}

// observe records a statement that started at start, when metrics are on.
func (db *DB) observe(o func(*dbMetrics) prometheus.Observer, start time.Time) {
	if m := db.metrics.Load(); m != nil {
		o(m).Observe(time.Since(start).Seconds())
	}
}

func opExec(m *dbMetrics) prometheus.Observer  { return m.exec }
func opQuery(m *dbMetrics) prometheus.Observer { return m.query }
func opTx(m *dbMetrics) prometheus.Observer    { return m.tx }
