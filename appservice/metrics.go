package appservice

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the component's metrics, labelled by service ID (bounded:
// the services are those of the configuration).
type metrics struct {
	txns    *prometheus.CounterVec
	events  *prometheus.CounterVec
	pending *prometheus.GaugeVec
	up      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "myelin_appservice_transactions_total",
			Help: "Attempts to send a transaction to an application service, by result (ok, error)."}, []string{"service", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "myelin_appservice_sent_total",
			Help: "Events, ephemeral events and to-device messages an application service acknowledged."}, []string{"service"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "myelin_appservice_pending_items",
			Help: "Events, ephemeral events and to-device messages queued for an application service and not yet acknowledged."}, []string{"service"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "myelin_appservice_up",
			Help: "1 while the last transaction to an application service succeeded (or none failed), 0 while it is down."}, []string{"service"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.txns, err = register(reg, m.txns); err != nil {
		return nil, err
	}
	if m.events, err = register(reg, m.events); err != nil {
		return nil, err
	}
	if m.pending, err = register(reg, m.pending); err != nil {
		return nil, err
	}
	if m.up, err = register(reg, m.up); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered in
// its place (a server started again on the same registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
