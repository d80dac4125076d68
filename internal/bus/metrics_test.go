package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/bus"
)

// The lag metric reports, per stream and consumer, the messages not yet
// acknowledged: all of them while the handler is stuck, none once it caught
// up, and the consumer disappears from it when stopped.
func TestConsumerLagMetric(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	reg := prometheus.NewRegistry()
	if err := b.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	release := make(chan struct{})
	handled := make(chan struct{}, 10)
	stop, err := b.Consume(ctx, bus.ConsumerSpec{Stream: "Test", Durable: "lagged"}, func(ctx context.Context, m *bus.Msg) error {
		if time.Since(m.Published) > time.Minute || m.Published.IsZero() {
			t.Errorf("message published at %v", m.Published)
		}
		<-release
		handled <- struct{}{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := b.Publish(ctx, "Test.a", i, fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	lag := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if mf.GetName() == "myelin_bus_consumer_lag_messages" && labels["stream"] == "Test" && labels["consumer"] == "lagged" {
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	waitFor(t, "lag 5 while the handler is stuck", func() bool { return lag() == 5 })
	close(release)
	for range 5 {
		<-handled
	}
	waitFor(t, "lag 0 once handled", func() bool { return lag() == 0 })
	stop()
	if v := lag(); v != -1 {
		t.Errorf("the stopped consumer still has a lag series (%v)", v)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
