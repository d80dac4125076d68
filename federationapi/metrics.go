package federationapi

import (
	"errors"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the federation API's Prometheus metrics (bounded labels).
type metrics struct {
	pdusSent, edusSent prometheus.Counter
	sendFailures       prometheus.Counter
	pdusReceived       *prometheus.CounterVec // result: accepted, rejected, failed
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pdusSent, m.edusSent, m.sendFailures, m.pdusReceived} {
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
