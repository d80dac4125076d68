package federationapi

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/federationapi/storage"
	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// metrics are the federation API's Prometheus metrics (bounded labels).
type metrics struct {
	pdusSent, edusSent prometheus.Counter
	sendFailures       prometheus.Counter
	pdusReceived       *prometheus.CounterVec // result: accepted, rejected, failed
	// sendDuration times transactions by the destination's class before the
	// attempt (see destClass) and result (ok, failed).
	sendDuration *prometheus.HistogramVec
}

// Destination classes, the bounded label that stands for a destination in
// the queue and send metrics: ok (its last transaction went through),
// backoff (failing, retried with a growing wait) and down (failing for so
// long that it is retried only every maxBackoff).
const (
	classOK      = "ok"
	classBackoff = "backoff"
	classDown    = "down"
)

var destClasses = []string{classOK, classBackoff, classDown}

// destClass is the class of a destination with failures in a row.
func destClass(failures int) string {
	switch {
	case failures <= 0:
		return classOK
	case minBackoff<<min(failures-1, 30) >= maxBackoff:
		return classDown
	default:
		return classBackoff
	}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pdusSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "myelin_federationapi_pdus_sent_total",
			Help: "PDUs sent to other servers (per destination)."}),
		edusSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "myelin_federationapi_edus_sent_total",
			Help: "EDUs sent to other servers (per destination)."}),
		sendFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "myelin_federationapi_send_failures_total",
			Help: "Transactions that could not be delivered (retried later)."}),
		pdusReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "myelin_federationapi_pdus_received_total",
			Help: "PDUs received in transactions, by result."}, []string{"result"}),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "myelin_federationapi_send_duration_seconds",
			Help:    "Time to send a transaction to another server, by the destination's class (ok, backoff, down) and result (ok, failed).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"class", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pdusSent, m.edusSent, m.sendFailures, m.pdusReceived, m.sendDuration} {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *metrics) sent(pdus, edus int) {
	m.pdusSent.Add(float64(pdus))
	m.edusSent.Add(float64(edus))
}

func (m *metrics) failed() { m.sendFailures.Inc() }

func (m *metrics) received(err error) {
	switch {
	case err == nil:
		m.pdusReceived.WithLabelValues("accepted").Inc()
	case errors.Is(err, errRejected):
		m.pdusReceived.WithLabelValues("rejected").Inc()
	default:
		m.pdusReceived.WithLabelValues("refused").Inc()
	}
}

// sendTook records one transaction sent to a destination that had failures
// in a row before it.
func (m *metrics) sendTook(failures int, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.sendDuration.WithLabelValues(destClass(failures), result).Observe(d.Seconds())
}

var (
	queueItemsDesc = prometheus.NewDesc("myelin_federationapi_queue_items",
		"PDUs and EDUs waiting to be sent to other servers (one per destination), by the destination's class (ok, backoff, down).",
		[]string{"class"}, nil)
	queueDestsDesc = prometheus.NewDesc("myelin_federationapi_queue_destinations",
		"Destinations with something waiting to be sent, by class (ok, backoff, down).", []string{"class"}, nil)
)

// queueCollector reads the queue's depth per destination class from the
// database when scraped (one grouped query).
type queueCollector struct{ db sqlutil.Querier }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueItemsDesc
	ch <- queueDestsDesc
}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	depths, err := storage.SelectQueueDepths(ctx, c.db)
	if err != nil {
		return // not reported rather than reported wrong
	}
	items, dests := map[string]int64{}, map[string]int64{}
	for _, d := range depths {
		class := destClass(d.Failures)
		items[class] += d.Items
		dests[class] += d.Destinations
	}
	for _, class := range destClasses {
		ch <- prometheus.MustNewConstMetric(queueItemsDesc, prometheus.GaugeValue, float64(items[class]), class)
		ch <- prometheus.MustNewConstMetric(queueDestsDesc, prometheus.GaugeValue, float64(dests[class]), class)
	}
}
