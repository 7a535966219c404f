package rabbitmq_test

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

func routed(dest, route, key string, seq int) outbox.Record {
	r := sinktest.Record(key, seq)
	r.Destination, r.Route = outbox.Destination(dest), route
	return r
}

// A message the exchange routes to no queue comes back: dead-lettered at once by default, its
// neighbours (its own key's later records included) delivered.
func TestUnroutableIsPermanentByDefault(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "bound")
	s := newRouted(t, url, map[string]rabbitmq.Destination{"d": {Exchange: ex}}, nil)
	batch := []outbox.Record{routed("d", "bound", "a", 0), routed("d", "unbound", "a", 1), routed("d", "bound", "a", 2)}
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), 3)
	if !outbox.IsPermanent(errs[1]) || !strings.Contains(errs[1].Error(), `routed it to no queue (routing key "unbound")`) {
		t.Errorf("unroutable: %v, want permanent naming the routing key", errs[1])
	}
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("neighbours: %v, %v; want delivered", errs[0], errs[2])
	}
	if got := ids(rabbitmqtest.OpenQueue(t, url, queues[0]).Drain()); got != batch[0].ID+","+batch[2].ID {
		t.Errorf("queue holds %s", got)
	}
}

// With Unroutable "unavailable" a returned message blocks instead, and the later records of its key
// wait behind it.
func TestUnroutableCanBlock(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex, _ := rabbitmqtest.Topology(t, url, "direct", "bound")
	s := newRouted(t, url, map[string]rabbitmq.Destination{"d": {Exchange: ex}}, func(c *rabbitmq.Config) { c.Unroutable = rabbitmq.UnroutableUnavailable })
	batch := []outbox.Record{routed("d", "unbound", "a", 0), routed("d", "bound", "a", 1), routed("d", "bound", "b", 0)}
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), 3)
	if !outbox.IsUnavailable(errs[0]) || !errors.Is(errs[1], outbox.ErrNotAttempted) || errs[2] != nil {
		t.Errorf("errors %v; want unavailable, not attempted, delivered", errs)
	}
}

// A configured exchange that does not exist blocks the destination (listed by Blocked) until it is
// declared; nothing is published meanwhile.
func TestMissingExchangeIsUnavailable(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex := rabbitmqtest.Name(t)
	s := newRouted(t, url, map[string]rabbitmq.Destination{"d": {Exchange: ex, RoutingKey: "rk"}}, nil)
	batch := []outbox.Record{routed("d", "", "a", 0)}
	err := s.Send(ctx(t), batch)
	if !outbox.IsUnavailable(err) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Send = %v, want unavailable naming the missing exchange", err)
	}
	if _, ok := s.Blocked()[ex]; !ok {
		t.Errorf("Blocked() = %v, want %s listed", s.Blocked(), ex)
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if err := ch.ExchangeDeclare(ex, "direct", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.ExchangeDelete(ex, false, false) })
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	_ = ch.QueueBind(q.Name, "rk", ex, false, nil)
	if err := s.Send(ctx(t), batch); err != nil {
		t.Fatalf("Send after the exchange exists: %v", err)
	}
	if len(s.Blocked()) != 0 {
		t.Errorf("Blocked() = %v after delivery", s.Blocked())
	}
}

// The connection is cut (TCP reset) with records in flight: they fail as unavailable, and the sink
// reconnects by itself and delivers them when they are sent again.
func TestConnectionLossIsUnavailableAndReconnects(t *testing.T) {
	raw := rabbitmqtest.URL(t)
	u, _ := url.Parse(raw)
	p, err := tcpproxy.New("127.0.0.1:0", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	ex, queues := rabbitmqtest.Topology(t, raw, "direct", "rk")
	s := newRouted(t, u.String(), map[string]rabbitmq.Destination{"d": {Exchange: ex, RoutingKey: "rk"}}, func(c *rabbitmq.Config) {
		c.ReconnectWait = 50 * time.Millisecond
		c.ConfirmTimeout = time.Minute // failures must come from the lost connection, not the timeout
	})
	batch := []outbox.Record{routed("d", "", "a", 0), routed("d", "", "b", 0)}
	if err := s.Send(ctx(t), batch); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	p.Reset()
	batch = []outbox.Record{routed("d", "", "a", 1), routed("d", "", "a", 2)}
	started := time.Now()
	// Whole-batch unavailable when the loss was noticed before the Send, else per record: the first
	// unavailable, the second of its key not attempted.
	if err := s.Send(ctx(t), batch); !outbox.IsUnavailable(err) {
		errs := sinktest.RecordErrors(t, err, 2)
		if !outbox.IsUnavailable(errs[0]) || !errors.Is(errs[1], outbox.ErrNotAttempted) {
			t.Fatalf("Send while cut: %v, want unavailable, then not attempted (its key waits)", errs)
		}
	}
	if d := time.Since(started); d > 30*time.Second {
		t.Errorf("Send took %s while cut", d)
	}
	p.Pass()
	deadline := time.Now().Add(30 * time.Second)
	for err = s.Send(ctx(t), batch); err != nil; err = s.Send(ctx(t), batch) {
		if time.Now().After(deadline) {
			t.Fatalf("Send 30s after the cut healed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	msgs := rabbitmqtest.OpenQueue(t, raw, queues[0]).Drain()
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.MessageId] = true
	}
	for _, id := range []string{"a-000000", "b-000000", "a-000001", "a-000002"} {
		if !seen[id] {
			t.Errorf("%s not in the queue (got %s)", id, ids(msgs))
		}
	}
	if p.Accepted() < 2 {
		t.Errorf("the sink connected %d times through the proxy, want a reconnect", p.Accepted())
	}
}

// A message cannot add routing keys (CC, BCC) nor set the sink's headers; its other headers arrive.
func TestHeadersCannotReroute(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex, queues := rabbitmqtest.Topology(t, url, "direct", "rk", "secret")
	s := newRouted(t, url, map[string]rabbitmq.Destination{"d": {Exchange: ex, RoutingKey: "rk"}}, nil)
	r := routed("d", "", "a", 0)
	r.Headers = map[string]string{"CC": "secret", "bcc": "secret", "pgoutbox-key": "forged", "traceparent": "00-1-2-01"}
	if err := s.Send(ctx(t), []outbox.Record{r}); err != nil {
		t.Fatal(err)
	}
	if got := rabbitmqtest.OpenQueue(t, url, queues[1]).Drain(); len(got) != 0 {
		t.Errorf("a message header routed %d messages to the secret queue", len(got))
	}
	got := rabbitmqtest.OpenQueue(t, url, queues[0]).Drain()
	if len(got) != 1 || got[0].Headers["traceparent"] != "00-1-2-01" || got[0].Headers[rabbitmq.HeaderKey] != "a" {
		t.Fatalf("queue holds %v", got)
	}
	if n := s.Stats().DroppedHeaders; n != 3 {
		t.Errorf("DroppedHeaders = %d, want 3", n)
	}
}

// A configured routing key wins over the Route; without one the Route must match the allow-list.
func TestRouteRules(t *testing.T) {
	url := rabbitmqtest.URL(t)
	ex, queues := rabbitmqtest.Topology(t, url, "topic", "#")
	s := newRouted(t, url, map[string]rabbitmq.Destination{"fixed": {Exchange: ex, RoutingKey: "fixed.key"},
		"routed": {Exchange: ex, AllowedRoutingKeys: []string{"orders.#"}}, "free": {Exchange: ex}}, nil)
	batch := []outbox.Record{routed("fixed", "orders.x", "k1", 0), routed("routed", "orders.eu.x", "k2", 0),
		routed("routed", "billing.x", "k3", 0), routed("free", "any.thing", "k4", 0), routed("nowhere", "x", "k5", 0)}
	errs := sinktest.RecordErrors(t, s.Send(ctx(t), batch), len(batch))
	for i, ok := range []bool{true, true, false, true, false} {
		if (errs[i] == nil) != ok || !ok && !outbox.IsPermanent(errs[i]) {
			t.Errorf("record %d (%s → %q): %v, want delivered %v (else permanent)", i, batch[i].Destination, batch[i].Route, errs[i], ok)
		}
	}
	keys := []string{}
	for _, m := range rabbitmqtest.OpenQueue(t, url, queues[0]).Drain() {
		keys = append(keys, m.RoutingKey)
	}
	slices.Sort(keys) // records of different keys may arrive in any order
	if strings.Join(keys, ",") != "any.thing,fixed.key,orders.eu.x" {
		t.Errorf("routing keys %v", keys)
	}
}

func newRouted(t *testing.T, url string, dests map[string]rabbitmq.Destination, edit func(*rabbitmq.Config)) *rabbitmq.Sink {
	t.Helper()
	cfg := rabbitmq.DefaultConfig()
	cfg.URL = url
	cfg.Destinations = dests
	if edit != nil {
		edit(&cfg)
	}
	s, err := rabbitmq.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ids(msgs []amqp.Delivery) string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.MessageId)
	}
	return strings.Join(out, ",")
}
