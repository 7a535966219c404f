package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

func TestNATSAndRabbitMQRoutes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := base + `nats:
  urls: [nats://n1:4222, nats://n2:4222]
  user: relay
  password_file: ` + pw + `
  ack_timeout: 5s
rabbitmq:
  url: amqp://mq:5672/prod
  user: relay
  password_file: ` + pw + `
  unroutable: unavailable
routes:
  orders: {nats: {subject: orders.created}}
  audit:  {nats: {allowed_subjects: ["audit.>"]}}
  billing: {rabbitmq: {exchange: billing, routing_key: invoice.created}}
  events: {rabbitmq: {exchange: events, allowed_routing_keys: ["events.#"]}}
`
	c, err := config.Parse(strings.NewReader(y), "routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.Password != "s3cret" || c.RabbitMQ.Password != "s3cret" || c.NATS.AckTimeout.D().String() != "5s" {
		t.Errorf("secrets or settings not resolved: %+v %+v", c.NATS, c.RabbitMQ)
	}
	if c.Routes["orders"].NATS.Subject != "orders.created" || !slices.Equal(c.Routes["audit"].NATS.AllowedSubjects, []string{"audit.>"}) ||
		c.Routes["billing"].RabbitMQ.RoutingKey != "invoice.created" || c.Routes["events"].Kind() != "rabbitmq" {
		t.Errorf("routes: %+v", c.Routes)
	}
	// From the environment: comma-separated URLs and the password.
	c, err = config.Load(config.Source{Env: []string{"PGOUTBOX_DATABASE_URL=postgres://u@h/db", "PGOUTBOX_NATS_URLS=nats://a:1, nats://b:2",
		"PGOUTBOX_NATS_TOKEN=tok"}, Set: []string{"routes.o.nats.subject=o.x"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.NATS.URLs, []string{"nats://a:1", "nats://b:2"}) || c.NATS.Token != "tok" {
		t.Errorf("nats from env: %+v", c.NATS)
	}
}

func TestNATSAndRabbitMQErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const servers = "nats: {urls: [\"nats://n:4222\"]}\nrabbitmq: {url: \"amqp://u:hunter2@mq:5672/\"}\n"
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"no nats urls", "routes: {o: {nats: {subject: o}}}", []string{"nats.urls", "required by route routes.o"}},
		{"no rabbitmq url", "routes: {o: {rabbitmq: {exchange: e}}}", []string{"rabbitmq.url", "required by route routes.o"}},
		{"wildcard subject", servers + "routes: {o: {nats: {subject: \"o.*\"}}}", []string{"routes.o.nats.subject", "wildcard"}},
		{"server subject", servers + "routes: {o: {nats: {subject: \"$JS.API.X\"}}}", []string{"routes.o.nats.subject", "reserved"}},
		{"subject and allow-list", servers + "routes: {o: {nats: {subject: o, allowed_subjects: [o]}}}", []string{"routes.o.nats.allowed_subjects", "only one of"}},
		{"bad subject pattern", servers + "routes: {o: {nats: {allowed_subjects: [\"a.>.b\"]}}}", []string{"routes.o.nats.allowed_subjects[0]"}},
		{"key and allow-list", servers + "routes: {o: {rabbitmq: {exchange: e, routing_key: k, allowed_routing_keys: [k]}}}", []string{"routes.o.rabbitmq.allowed_routing_keys", "only one of"}},
		{"bad key pattern", servers + "routes: {o: {rabbitmq: {exchange: e, allowed_routing_keys: [\"#\"]}}}", []string{"routes.o.rabbitmq.allowed_routing_keys[0]", "every routing key"}},
		{"unroutable", "rabbitmq: {url: \"amqp://mq/\", unroutable: drop}", []string{"rabbitmq.unroutable", "drop"}},
		{"nats format", servers + "routes: {o: {nats: {subject: o, format: cloudevents}}}", []string{"routes.o.nats.format", "cloudevents-binary"}},
		{"rabbitmq source", servers + "routes: {o: {rabbitmq: {exchange: e, format: cloudevents-binary, cloudevents_source: \"a b\"}}}", []string{"routes.o.rabbitmq.cloudevents_source", "URI-reference"}},
		{"webhook format", "routes: {o: {webhook: {url: \"http://h/x\", format: json}}}", []string{"routes.o.webhook.format"}},
		{"two kinds", servers + "routes: {o: {nats: {subject: o}, rabbitmq: {exchange: e}}}", []string{"routes.o", "exactly one of", "found 2"}},
		{"nats url", "nats: {urls: [\"http://n\"]}", []string{"nats.urls[0]", "nats://host:port"}},
		{"two nats credentials", "nats: {urls: [\"nats://n:1\"], user: u, token: t}", []string{"nats", "at most one of"}},
		{"password without user", "rabbitmq: {url: \"amqp://mq/\", password: p}", []string{"rabbitmq.user", "required with rabbitmq.password"}},
		{"rabbitmq url", "rabbitmq: {url: \"http://u:hunter2@mq/\"}", []string{"rabbitmq.url", "amqp://"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(strings.NewReader(base+tt.yaml+"\n"), "test.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// An outbox entry that changes a nats or rabbitmq route changes its own copy: the top level's route and
// the other outboxes' stay as they were.
func TestOutboxesDoNotShareNATSAndRabbitMQRoutes(t *testing.T) {
	t.Parallel()
	y := base + `nats: {urls: ["nats://n:4222"]}
rabbitmq: {url: "amqp://mq:5672/"}
routes:
  orders: {nats: {subject: orders.created}}
  billing: {rabbitmq: {exchange: billing, routing_key: invoice}}
outboxes:
  - {name: a, schema: a}
  - {name: c, schema: c}
  - name: b
    schema: b
    routes:
      orders: {nats: {subject: b.orders}}
      billing: {rabbitmq: {exchange: billing, routing_key: b.invoice}}
`
	p := filepath.Join(t.TempDir(), "multi.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	// --set on one outbox's inherited route must not reach the others.
	c, err := config.Load(config.Source{File: p, Set: []string{"outboxes.c.routes.billing.rabbitmq.exchange=c.billing"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Outboxes) != 3 || c.Outboxes[1].Routes["billing"].RabbitMQ.Exchange != "c.billing" {
		t.Fatalf("outboxes %+v", c.Outboxes)
	}
	a, b := c.Outboxes[0], c.Outboxes[2]
	if a.Routes["billing"].RabbitMQ.Exchange != "billing" {
		t.Errorf("outbox c's --set leaked into a: %+v", a.Routes["billing"].RabbitMQ)
	}
	if a.Routes["orders"].NATS.Subject != "orders.created" || a.Routes["billing"].RabbitMQ.RoutingKey != "invoice" {
		t.Errorf("outbox b's routes leaked into a: %+v %+v", a.Routes["orders"].NATS, a.Routes["billing"].RabbitMQ)
	}
	if b.Routes["orders"].NATS.Subject != "b.orders" || b.Routes["billing"].RabbitMQ.RoutingKey != "b.invoice" {
		t.Errorf("outbox b: %+v %+v", b.Routes["orders"].NATS, b.Routes["billing"].RabbitMQ)
	}
}
