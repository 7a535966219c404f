package kafka_test

import (
	"log"

	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// Routing: "orders" always goes to topic orders.v1, whatever a message's Route says; "events" takes
// its topic from each message's Route, but only events.* or audit (any other Route is dead-lettered).
func ExampleConfig_routing() {
	cfg := kafka.DefaultConfig()
	cfg.Brokers = []string{"kafka-0:9092"}
	cfg.Topics = map[string]string{"orders": "orders.v1"}
	cfg.AllowedTopics = map[string][]string{"events": {"events.*", "audit"}}
	if err := cfg.Validate(); err != nil {
		log.Fatal(err)
	}
	sink, err := kafka.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()
	// relay, err := outbox.Start(ctx, pool, "app", nil, outbox.WithSink("orders", sink), outbox.WithSink("events", sink))
}
