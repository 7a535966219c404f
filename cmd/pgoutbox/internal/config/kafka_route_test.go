package config_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

const kafkaBase = base + "kafka: {brokers: [\"k:9092\"]}\n"

func TestKafkaRouteAllowedTopics(t *testing.T) {
	t.Parallel()
	y := kafkaBase + `routes:
  orders: {kafka: {allowed_topics: [orders.*, audit]}}
  fixed:  {kafka: {topic: orders.v1}}
  open:   {kafka: {}}
`
	c, err := config.Parse(strings.NewReader(y), "routes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Routes["orders"].Kafka.AllowedTopics; !slices.Equal(got, []string{"orders.*", "audit"}) {
		t.Errorf("allowed_topics = %q", got)
	}
	if c.Routes["fixed"].Kafka.Topic != "orders.v1" || c.Routes["open"].Kafka.AllowedTopics != nil {
		t.Errorf("routes: %+v", c.Routes)
	}
	// From flags: a comma-separated list.
	c, err = config.Load(config.Source{Env: []string{"PGOUTBOX_DATABASE_URL=postgres://u@h/db", "PGOUTBOX_KAFKA_BROKERS=k:9092"},
		Set: []string{"routes.orders.kafka.allowed_topics=orders.*, audit"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Routes["orders"].Kafka.AllowedTopics; !slices.Equal(got, []string{"orders.*", "audit"}) {
		t.Errorf("allowed_topics from --set = %q", got)
	}
}

func TestKafkaRouteErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, routes string
		want         []string
	}{
		{"pattern with a star inside", "o: {kafka: {allowed_topics: [ok, \"ord*ers\"]}}", []string{"routes.o.kafka.allowed_topics[1]", "may only end a pattern"}},
		{"regular expression", "o: {kafka: {allowed_topics: [\"^orders$\"]}}", []string{"routes.o.kafka.allowed_topics[0]", "neither a topic name nor a prefix"}},
		{"star alone", "o: {kafka: {allowed_topics: [\"*\"]}}", []string{"routes.o.kafka.allowed_topics[0]", "every topic"}},
		{"dot star", "o: {kafka: {allowed_topics: [\".*\"]}}", []string{"routes.o.kafka.allowed_topics[0]", "regular expression"}},
		{"empty pattern", "o: {kafka: {allowed_topics: [\"\"]}}", []string{"routes.o.kafka.allowed_topics[0]", "empty pattern"}},
		{"empty list", "o: {kafka: {allowed_topics: []}}", []string{"routes.o.kafka.allowed_topics", "empty"}},
		{"topic and allow-list", "o: {kafka: {topic: t, allowed_topics: [t]}}", []string{"routes.o.kafka.allowed_topics", "only one of", "always wins"}},
		{"bad topic", "o: {kafka: {topic: \"orders/v1\"}}", []string{"routes.o.kafka.topic", "'/'"}},
		{"long topic", "o: {kafka: {topic: " + strings.Repeat("t", 250) + "}}", []string{"routes.o.kafka.topic", "250 bytes", "249"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(strings.NewReader(kafkaBase+"routes:\n  "+tt.routes+"\n"), "test.yaml")
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("Parse = %v, want a config error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
