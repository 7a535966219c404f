package kafka_test

import (
	"fmt"

	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

// Formats: "orders" is laid out as Debezium's outbox event router emits it (id and eventType headers),
// "billing" as binary-mode CloudEvents with its own source; other destinations stay raw. A format name
// outside the four is refused with the allowed ones.
func ExampleConfig_formats() {
	cfg := kafka.DefaultConfig()
	cfg.Brokers = []string{"kafka-0:9092"}
	cfg.Topics = map[string]string{"orders": "outbox.event.order", "billing": "billing.v1"}
	cfg.Formats = map[string]recordformat.Format{
		"orders":  {Name: kafka.FormatDebeziumOutbox},
		"billing": {Name: kafka.FormatCloudEventsBinary, Source: "urn:shop:billing"},
	}
	fmt.Println(cfg.Validate())
	cfg.Formats["audit"] = recordformat.Format{Name: "avro"}
	fmt.Println(cfg.Validate())
	// Output:
	// <nil>
	// kafka: config: Formats["audit"]: format "avro" is not raw, cloudevents-binary, cloudevents-structured or debezium-outbox
}
