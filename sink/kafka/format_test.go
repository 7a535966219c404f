package kafka

import (
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

func TestConfigValidateFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		want    string
		formats map[string]recordformat.Format
	}{
		{`Formats["d"]: format "avro" is not raw, cloudevents-binary, cloudevents-structured or debezium-outbox`,
			map[string]recordformat.Format{"d": {Name: "avro"}}},
		{`Formats: empty destination`, map[string]recordformat.Format{"": {Name: FormatRaw}}},
		{`Formats["d"]: TypeHeader "t" applies only to format debezium-outbox`,
			map[string]recordformat.Format{"d": {Name: FormatCloudEventsBinary, TypeHeader: "t"}}},
		{`Formats["d"]: type header name "id"`, map[string]recordformat.Format{"d": {Name: FormatDebeziumOutbox, TypeHeader: "id"}}},
		{`Formats["d"]: Source: cloudevents source "a b"`, map[string]recordformat.Format{"d": {Name: FormatCloudEventsStructured, Source: "a b"}}},
	} {
		c := DefaultConfig().withBrokers()
		c.Formats = tc.formats
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want an error with %q", err, tc.want)
		}
	}
	c := DefaultConfig().withBrokers()
	c.Formats = map[string]recordformat.Format{"a": {}, "b": {Name: FormatDebeziumOutbox, TypeHeader: "type"},
		"c": {Name: FormatCloudEventsBinary, Source: "urn:x"}, "d": {Name: FormatCloudEventsStructured}}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid formats: %v", err)
	}
}

// The size pre-check and the too-large re-send see the record as it is sent: a structured record's
// envelope, not its payload.
func TestFormattedSize(t *testing.T) {
	t.Parallel()
	r := outbox.Record{Message: outbox.Message{ID: "m1", Destination: "d", Key: "k", Type: "t", Payload: make([]byte, 3000)}}
	s := &Sink{cfg: Config{Formats: map[string]recordformat.Format{"d": {Name: FormatCloudEventsStructured}}}}
	raw := newMessage(&r, "topic")
	rawSize := batchSize(raw)
	s.applyFormats([]outbox.Record{r}, []*sarama.ProducerMessage{raw})
	if got := batchSize(raw); got < rawSize+1000 { // base64 of 3000 bytes is 4000
		t.Fatalf("structured record of a 3000-byte binary payload is %d bytes as a batch (raw %d)", got, rawSize)
	}
}
