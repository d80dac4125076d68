package bus

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// consumerSet holds the consumers running in this process, for the lag
// metric. Keys are bounded: the streams and durable names the components
// define (such as one per roomserver partition).
type consumerSet struct {
	mu   sync.Mutex
	byID map[consumerKey]jetstream.Consumer
}

type consumerKey struct{ stream, durable string }

func (s *consumerSet) add(stream, durable string, c jetstream.Consumer) (remove func()) {
	k := consumerKey{stream, durable}
	s.mu.Lock()
	if s.byID == nil {
		s.byID = map[consumerKey]jetstream.Consumer{}
	}
	s.byID[k] = c
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.byID[k] == c {
			delete(s.byID, k)
		}
		s.mu.Unlock()
	}
}

var lagDesc = prometheus.NewDesc("myelin_bus_consumer_lag_messages",
	"Messages of a stream that a consumer has not acknowledged yet (not delivered plus in flight), read from JetStream when scraped.",
	[]string{"stream", "consumer"}, nil)

// RegisterMetrics registers the bus's metrics with reg: each running
// consumer's lag.
func (b *Bus) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(lagCollector{b})
}

type lagCollector struct{ b *Bus }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	s := &c.b.consumers
	s.mu.Lock()
	keys := make([]consumerKey, 0, len(s.byID))
	cons := make([]jetstream.Consumer, 0, len(s.byID))
	for k, v := range s.byID {
		keys = append(keys, k)
		cons = append(cons, v)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for i, cn := range cons {
		info, err := cn.Info(ctx)
		if err != nil {
			continue // not reported rather than reported wrong
		}
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue,
			float64(info.NumPending)+float64(info.NumAckPending), keys[i].stream, keys[i].durable)
	}
}
