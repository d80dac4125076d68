package syncapi

import "github.com/prometheus/client_golang/prometheus"

// metrics are the sync API's own Prometheus metrics (the push pool has
// its own).
type metrics struct {
	// longPolls counts the /sync requests waiting for something new.
	longPolls prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{Name: "myelin_syncapi_long_polls",
			Help: "/sync requests waiting (long-polling) for something new to return."}),
	}
	if reg != nil {
		_ = reg.Register(m.longPolls)
	}
	return m
}
