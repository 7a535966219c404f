package main_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// TestRunToNATSAndRabbitMQ: the daemon delivers one destination to a NATS subject and one to a RabbitMQ
// exchange (credentials from the environment); a nats route whose subject no stream takes, and a
// rabbitmq route to a missing exchange, block and show in /readyz.
func TestRunToNATSAndRabbitMQ(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	natsURL, amqpURL := natstest.URL(t), rabbitmqtest.URL(t)
	subj := "pgoutbox.daemon." + natstest.Name(t)
	stream := natstest.CreateStream(t, natsURL, jetstream.StreamConfig{}, subj)
	ex, queues := rabbitmqtest.Topology(t, amqpURL, "direct", "billing.created")
	migrate(t, db)
	// The broker URL without its credentials: they come from PGOUTBOX_RABBITMQ_USER/PASSWORD.
	bare := strings.Replace(amqpURL, "guest:guest@", "", 1)
	env := append(baseEnv(db), "PGOUTBOX_NATS_URLS="+natsURL, "PGOUTBOX_RABBITMQ_URL="+bare,
		"PGOUTBOX_RABBITMQ_USER=guest", "PGOUTBOX_RABBITMQ_PASSWORD=guest")
	d := start(t, "nats-rabbitmq", env, "--instance-id", "natsrmq",
		"--set", "routes.orders.nats.subject="+subj, "--set", "routes.billing.rabbitmq.exchange="+ex,
		"--set", "routes.billing.rabbitmq.routing_key=billing.created", "--set", "routes.billing.rabbitmq.format=cloudevents-structured",
		"--set", "routes.orders.nats.format=cloudevents-binary", "--set", "routes.orders.nats.cloudevents_source=urn:shop",
		"--set", "routes.lost.nats.subject="+subj+".nostream", "--set", "routes.gone.rabbitmq.exchange="+ex+".missing",
		"--set", "routes.gone.rabbitmq.routing_key=x")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	orders := enqueue(t, db, "orders", 50, 10)
	billing := enqueue(t, db, "billing", 50, 10)

	_, js := natstest.Connect(t, natsURL)
	q := rabbitmqtest.OpenQueue(t, amqpURL, queues[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, err := natstest.ReadAll(ctx, js, stream)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, m := range msgs {
			got[m.Headers().Get("Nats-Msg-Id")] = true
			if h := m.Headers(); h.Get("ce-specversion") != "1.0" || h.Get("ce-source") != "urn:shop" || h.Get("ce-id") != h.Get("Nats-Msg-Id") {
				t.Fatalf("nats message without its CloudEvents headers (format cloudevents-binary): %v", h)
			}
		}
		for _, m := range q.Drain() {
			got[m.MessageId] = true
			if !strings.HasPrefix(m.ContentType, "application/cloudevents+json") || !strings.Contains(string(m.Body), `"id":"`+m.MessageId+`"`) {
				t.Fatalf("rabbitmq message not a structured CloudEvent: %s %s", m.ContentType, m.Body)
			}
		}
		all := true
		for _, id := range append(append([]string(nil), orders...), billing...) {
			all = all && got[id]
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: %d of %d messages in the stream and the queue", len(got), len(orders)+len(billing))
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Different keys: a blocked destination holds back the later records of its keys.
	for _, m := range []outbox.Message{{Destination: "lost", Key: "lost-key", Payload: []byte("{}")}, {Destination: "gone", Key: "gone-key", Payload: []byte("{}")}} {
		if err := outbox.Enqueue(context.Background(), schema, db.Pool, m); err != nil {
			t.Fatal(err)
		}
	}
	_, body := d.waitHTTP("/readyz", 30*time.Second, func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "nats subject "+subj+".nostream") && strings.Contains(body, "rabbitmq exchange "+ex+".missing")
	})
	t.Logf("readyz while blocked:\n%s", body)
	d.waitHTTP("/metrics", 10*time.Second, func(_ int, body string) bool {
		return metric(body, `pgoutbox_destination_blocked{destination="lost"}`) == "1" &&
			metric(body, `pgoutbox_destination_blocked{destination="gone"}`) == "1"
	})
	if code, out, _ := cli(t, env, "--set", "routes.orders.nats.subject="+subj, "--set", "routes.billing.rabbitmq.exchange="+ex, "status"); code != 0 ||
		!strings.Contains(out, "nats subject "+subj) || !strings.Contains(out, "rabbitmq exchange") {
		t.Errorf("status: exit %d, routes not described:\n%s", code, out)
	}
}
