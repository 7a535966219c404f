package config_test

import (
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

func TestKafkaRouteFormats(t *testing.T) {
	t.Parallel()
	y := base + `kafka: {brokers: ["k:9092"]}
routes:
  orders:  {kafka: {topic: orders.v1, format: debezium-outbox}}
  typed:   {kafka: {topic: typed.v1, format: debezium-outbox, debezium_type_header: type}}
  events:  {kafka: {allowed_topics: ["events.*"], format: cloudevents-binary, cloudevents_source: "urn:shop", cloudevents_type: shop.event}}
  billing: {kafka: {topic: billing.v1, format: cloudevents-structured}}
  audit:   {kafka: {topic: audit.v1}}
`
	c, err := config.Parse(strings.NewReader(y), "kafka.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for dest, want := range map[string]recordformat.Format{
		"orders":  {Name: recordformat.DebeziumOutbox},
		"typed":   {Name: recordformat.DebeziumOutbox, TypeHeader: "type"},
		"events":  {Name: recordformat.CloudEventsBinary, Source: "urn:shop", Type: "shop.event"},
		"billing": {Name: recordformat.CloudEventsStructured},
		"audit":   {Name: recordformat.Raw},
	} {
		if got := c.Routes[dest].Kafka.RecordFormat(); got != want {
			t.Errorf("routes.%s: format %+v, want %+v", dest, got, want)
		}
	}
	c, err = config.Load(config.Source{Env: []string{"PGOUTBOX_DATABASE_URL=postgres://u@h/db", "PGOUTBOX_KAFKA_BROKERS=k:9092"},
		Set: []string{"routes.o.kafka.topic=o", "routes.o.kafka.format=cloudevents-structured"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Routes["o"].Kafka.RecordFormat().Name; got != recordformat.CloudEventsStructured {
		t.Errorf("--set routes.o.kafka.format: %q", got)
	}
}

func TestKafkaFormatErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const brokers = "kafka: {brokers: [\"k:9092\"]}\n"
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown format", "routes: {o: {kafka: {topic: o, format: avro}}}",
			[]string{"routes.o.kafka.format", `"avro"`, "raw, cloudevents-binary, cloudevents-structured or debezium-outbox"}},
		{"unknown format with allow-list", "routes: {o: {kafka: {allowed_topics: [o], format: debezium}}}", []string{"routes.o.kafka.format", `"debezium"`}},
		{"source", "routes: {o: {kafka: {topic: o, format: cloudevents-binary, cloudevents_source: \"a b\"}}}",
			[]string{"routes.o.kafka.cloudevents_source", "URI-reference"}},
		{"type header without debezium", "routes: {o: {kafka: {topic: o, format: cloudevents-binary, debezium_type_header: t}}}",
			[]string{"routes.o.kafka.debezium_type_header", "applies only to routes.o.kafka.format: debezium-outbox"}},
		{"type header id", "routes: {o: {kafka: {topic: o, format: debezium-outbox, debezium_type_header: id}}}",
			[]string{"routes.o.kafka.debezium_type_header", "message id's header"}},
		{"type header pgoutbox", "routes: {o: {kafka: {topic: o, format: debezium-outbox, debezium_type_header: pgoutbox-type}}}",
			[]string{"routes.o.kafka.debezium_type_header", "sink's own headers"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(strings.NewReader(base+brokers+tt.yaml+"\n"), "test.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
