// Package rabbitmqtest gives tests the real RabbitMQ node scripts/rabbitmq.sh started ([URL], from
// PGOUTBOX_TEST_RABBITMQ_URL): uniquely named exchanges and queues, and a consumer that records every
// message in arrival order and survives broker restarts ([Consume]).
package rabbitmqtest

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/testenv"
)

// EnvURL names the environment variable that points tests at a running broker.
const EnvURL = "PGOUTBOX_TEST_RABBITMQ_URL"

// URL returns the broker URL for t, or skips t (fails it under CI=true) when PGOUTBOX_TEST_RABBITMQ_URL
// is unset.
func URL(t testing.TB) string {
	t.Helper()
	return testenv.Endpoint(t, EnvURL, "RabbitMQ", `svc=$(scripts/rabbitmq.sh up) && eval "$svc"`)
}

// Own starts a RabbitMQ node for t alone with scripts/rabbitmq.sh, in a state dir of its own (ports,
// epmd, Mnesia), for tests that kill, restart or alarm it; it is removed when t ends. It skips or fails
// t as URL does.
func Own(t testing.TB) *testenv.Script {
	t.Helper()
	URL(t)
	return testenv.StartScript(t, "rabbitmq.sh", "PGOUTBOX_RABBITMQ_DIR", EnvURL, "rabbitmq.pid")
}

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// Name returns a name unique to this test run, derived from t.Name().
func Name(t testing.TB) string { return testenv.Name(t, ".", unsafe) }

// Topology declares a durable exchange of kind, and for each binding key a durable queue bound to it
// (queue name = exchange name + "." + index); everything is deleted when t ends. It returns the
// exchange and the queues.
func Topology(t testing.TB, url, kind string, bindings ...string) (string, []string) {
	t.Helper()
	return TopologyWith(t, url, kind, nil, bindings...)
}

// TopologyWith is Topology with queue arguments (x-queue-type, x-queue-version, …) for every queue.
func TopologyWith(t testing.TB, url, kind string, args amqp.Table, bindings ...string) (string, []string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbitmqtest: dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ex := Name(t)
	if err := ch.ExchangeDeclare(ex, kind, true, false, false, false, nil); err != nil {
		t.Fatalf("rabbitmqtest: declare exchange: %v", err)
	}
	var queues []string
	for i, b := range bindings {
		q := fmt.Sprintf("%s.%d", ex, i)
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			t.Fatalf("rabbitmqtest: declare queue: %v", err)
		}
		if err := ch.QueueBind(q, b, ex, false, nil); err != nil {
			t.Fatalf("rabbitmqtest: bind: %v", err)
		}
		queues = append(queues, q)
	}
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(ex, false, false)
		}
	})
	return ex, queues
}

// Consumer records the messages of a queue in arrival order, acking each once recorded; it reconnects
// when the broker goes away (an unacked message then comes again, flagged redelivered). Safe for
// concurrent use.
type Consumer struct {
	mu   sync.Mutex
	msgs []amqp.Delivery
	seen map[string]bool
}

// Consume starts consuming queue until t ends.
func Consume(t testing.TB, url, queue string) *Consumer {
	c := &Consumer{seen: map[string]bool{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.run(url, queue, stop)
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return c
}

func (c *Consumer) run(url, queue string, stop chan struct{}) {
	conn, err := amqp.DialConfig(url, amqp.Config{Heartbeat: 2 * time.Second})
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	_ = ch.Qos(500, 0, false)
	deliveries, err := ch.Consume(queue, "", false, true, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-stop:
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, d)
			c.seen[d.MessageId] = true
			c.mu.Unlock()
			_ = d.Ack(false)
		}
	}
}

// Messages returns what arrived so far, in arrival order.
func (c *Consumer) Messages() []amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp.Delivery(nil), c.msgs...)
}

// Has reports whether a message with id arrived.
func (c *Consumer) Has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id]
}

// WaitFor waits until id arrived; it returns false after timeout.
func (c *Consumer) WaitFor(id string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !c.Has(id) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Source returns what arrived so far as the oracle's deliveries (message_id, the pgoutbox-key header,
// the body), in arrival order.
func (c *Consumer) Source() oracle.Source {
	return func(context.Context) ([]oracle.Delivery, error) {
		msgs := c.Messages()
		out := make([]oracle.Delivery, 0, len(msgs))
		for i, m := range msgs {
			key, _ := m.Headers["pgoutbox-key"].(string)
			out = append(out, oracle.Delivery{ID: m.MessageId, Key: key, Payload: m.Body,
				Pos: fmt.Sprintf("arrival %d (redelivered %v)", i, m.Redelivered)})
		}
		return out, nil
	}
}

// I4 returns the I4 watcher configuration for a slot whose sink publishes to the consumed queue: the
// consumer has caught up once the queue holds no ready message and what was on its way arrived.
func (c *Consumer) I4(url, queue, slot string) oracle.I4Config {
	caughtUp := func(ctx context.Context) bool {
		conn, err := amqp.Dial(url)
		if err != nil {
			return false
		}
		defer conn.Close()
		for ctx.Err() == nil {
			ch, err := conn.Channel()
			if err != nil {
				return false
			}
			q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			_ = ch.Close()
			if err != nil {
				return false
			}
			if q.Messages == 0 {
				time.Sleep(50 * time.Millisecond) // prefetched messages on their way to the consumer
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	return oracle.I4Config{Slot: slot, Delivered: c.Has, CaughtUp: caughtUp, Every: 150 * time.Millisecond}
}

// Queue reads a queue synchronously: each Drain takes every message ready in it (basic.get until the
// queue is empty) and returns all taken so far, in queue order. A message the broker confirmed is
// therefore in the result of the next Drain. Not safe for concurrent use.
type Queue struct {
	t     testing.TB
	ch    *amqp.Channel
	queue string
	msgs  []amqp.Delivery
}

// OpenQueue returns a Queue reading queue; its connection closes when t ends.
func OpenQueue(t testing.TB, url, queue string) *Queue {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("rabbitmqtest: dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return &Queue{t: t, ch: ch, queue: queue}
}

// Drain takes the ready messages and returns every message taken so far.
func (q *Queue) Drain() []amqp.Delivery {
	q.t.Helper()
	for {
		d, ok, err := q.ch.Get(q.queue, true)
		if err != nil {
			q.t.Fatalf("rabbitmqtest: get from %s: %v", q.queue, err)
		}
		if !ok {
			return append([]amqp.Delivery(nil), q.msgs...)
		}
		q.msgs = append(q.msgs, d)
	}
}
