package rabbitmq_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// queueReader reads a queue back as the suite's deliveries.
type queueReader struct{ q *rabbitmqtest.Queue }

func (r *queueReader) Read(t testing.TB) []sinktest.Delivery {
	t.Helper()
	var out []sinktest.Delivery
	for _, m := range r.q.Drain() {
		own := map[string]string{}
		for k, v := range m.Headers {
			if s, ok := v.(string); ok {
				own[k] = s
			}
		}
		if m.MessageId != own[rabbitmq.HeaderID] || m.DeliveryMode != 2 {
			t.Fatalf("message %s: message_id %q, delivery mode %d; want the id and persistent (2)", own[rabbitmq.HeaderID], m.MessageId, m.DeliveryMode)
		}
		out = append(out, sinktest.Delivery{ID: m.MessageId, Key: own[rabbitmq.HeaderKey], Type: m.Type,
			Destination: own[rabbitmq.HeaderDestination], Payload: m.Body, Headers: own})
	}
	return out
}

// Poison makes the record larger than MaxMessageBytes (64 KiB in these tests).
func (r *queueReader) Poison(rec *outbox.Record) { rec.Payload = bytes.Repeat([]byte{'x'}, 100_000) }

// newSink returns a sink publishing the suite's destination to a fresh direct exchange with one queue
// bound for routing key "rk" on the real broker.
func newSink(t *testing.T, edit func(*rabbitmq.Config)) (*rabbitmq.Sink, *queueReader, string) {
	t.Helper()
	url := rabbitmqtest.URL(t)
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "rk")
	cfg := rabbitmq.DefaultConfig()
	cfg.URL = url
	cfg.MaxMessageBytes = 64 << 10
	cfg.Destinations = map[string]rabbitmq.Destination{string(sinktest.Destination): {Exchange: ex, RoutingKey: "rk"}}
	if edit != nil {
		edit(&cfg)
	}
	s, err := rabbitmq.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, &queueReader{q: rabbitmqtest.OpenQueue(t, url, queues[0])}, ex
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (outbox.Sink, sinktest.Reader) {
		s, r, _ := newSink(t, nil)
		return s, r
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}
