package roomserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/roomserver/api"
)

// metrics are the roomserver's Prometheus metrics. Labels are bounded:
// kind is local, federation or out_of_band; result is ok, refused or error.
type metrics struct {
	// latency runs from publication on the input stream to the result, so
	// that it includes the wait behind earlier inputs of the partition.
	latency *prometheus.HistogramVec
	// duration is the processing alone (its transaction and the output).
	duration *prometheus.HistogramVec
	// batch is how many inputs each committed transaction stored.
	batch prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "myelin_roomserver_input_latency_seconds",
			Help: "Time from an input's publication to its result, by kind and result.", Buckets: buckets}, []string{"kind", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "myelin_roomserver_input_duration_seconds",
			Help: "Time spent processing an input, by kind and result.", Buckets: buckets}, []string{"kind", "result"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "myelin_roomserver_input_batch_inputs",
			Help: "Inputs stored by each roomserver transaction (group commit).", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}}),
	}
	if reg != nil {
		_ = reg.Register(m.latency)
		_ = reg.Register(m.duration)
		_ = reg.Register(m.batch)
	}
	return m
}

// input records one input's outcome.
func (m *metrics) input(msg *api.InputMessage, published, started time.Time, res *api.InputResult, err error) {
	kind := "federation"
	switch {
	case msg.Local != nil:
		kind = "local"
	case msg.OutOfBand != nil:
		kind = "out_of_band"
	}
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case res != nil && res.Error != nil:
		result = "refused"
	}
	now := time.Now()
	m.duration.WithLabelValues(kind, result).Observe(now.Sub(started).Seconds())
	if !published.IsZero() {
		m.latency.WithLabelValues(kind, result).Observe(max(now.Sub(published), 0).Seconds())
	}
}
