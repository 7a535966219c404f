package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cekafka "github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/cloudevents"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// sdkMessage is the CloudEvents Go SDK's Kafka binding message of a record read back with franz-go: the
// reader shares no code with the sarama producer that wrote it, and the SDK alone maps the headers
// (ce_…, content-type) and the value to an event.
func sdkMessage(r *kgo.Record) binding.Message {
	cm := &sarama.ConsumerMessage{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	return cekafka.NewMessageFromConsumerMessage(cm)
}

// formatBatch returns records of the destinations dests, every second one with a payload that is not
// JSON and message headers that try to set what the formats own.
func formatBatch(dests ...string) []outbox.Record {
	var batch []outbox.Record
	for i, dest := range dests {
		r := sinktest.Record("k-"+dest, i)
		r.Destination, r.CreatedAt = outbox.Destination(dest), time.Date(2026, 11, 30, 12, 0, i, 123456000, time.UTC)
		if i%2 == 1 {
			r.Payload = []byte{0x00, 0xff, '\r', '\n', '"'}
			r.Headers = map[string]string{"Content-Type": "application/x-thing", "ce_id": "forged", "CE_type": "forged",
				"id": "forged", "eventType": "forged", "traceparent": "00-1-2-01"}
		}
		batch = append(batch, r)
	}
	return batch
}

// Records produced as CloudEvents (binary and structured mode) to the real broker, read back with
// franz-go and parsed by the CloudEvents Go SDK's Kafka protocol binding: valid 1.0 events with the
// message's id, type, key as subject, creation time and content type, the payload byte-exact, the
// message Key as the Kafka key, the pgoutbox headers kept and a message's ce_…/content-type headers
// unable to override the attributes.
func TestCloudEventsFormats(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 3, nil)
	s := newRealSink(t, brokers, map[string]string{"bin": topic, "struct": topic, "raw": topic}, func(c *kafka.Config) {
		c.Formats = map[string]recordformat.Format{
			"bin":    {Name: kafka.FormatCloudEventsBinary, Source: "urn:pgoutbox:test"},
			"struct": {Name: kafka.FormatCloudEventsStructured, Type: "unused.when.the.message.has.one"},
			"raw":    {Name: kafka.FormatRaw},
		}
	})
	batch := formatBatch("bin", "bin", "struct", "struct", "raw", "raw")
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	recs := kafkatest.ReadAll(t, brokers, topic)
	if len(recs) != len(batch) {
		t.Fatalf("read %d records, want %d", len(recs), len(batch))
	}
	byID := map[string]int{}
	for i, r := range batch {
		byID[r.ID] = i
	}
	for _, rec := range recs {
		id, _ := kafkatest.Header(rec, kafka.HeaderID)
		i, ok := byID[id]
		if !ok {
			t.Fatalf("record without a known %s: %v", kafka.HeaderID, rec.Headers)
		}
		r := batch[i]
		if string(rec.Key) != r.Key {
			t.Errorf("record %d: key %q, want the message Key %q", i, rec.Key, r.Key)
		}
		if r.Destination == "raw" {
			if _, ce := kafkatest.Header(rec, "ce_specversion"); ce || !bytes.Equal(rec.Value, r.Payload) {
				t.Errorf("raw record %d: headers %v value %q", i, rec.Headers, rec.Value)
			}
			continue
		}
		checkEvent(t, i, r, rec)
	}
}

// checkEvent checks the CloudEvent the SDK reads from rec, the record of r.
func checkEvent(t *testing.T, i int, r outbox.Record, rec *kgo.Record) {
	t.Helper()
	msg := sdkMessage(rec)
	wantEnc := binding.EncodingBinary
	if r.Destination == "struct" {
		wantEnc = binding.EncodingStructured
	}
	if enc := msg.ReadEncoding(); enc != wantEnc {
		t.Errorf("record %d (%s): the SDK reads it as %v, want %v", i, r.Destination, enc, wantEnc)
	}
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		t.Fatalf("record %d (%s): the SDK cannot read it: %v", i, r.Destination, err)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("record %d: invalid event: %v", i, err)
	}
	wantSource, wantCT := "/pgoutbox/"+string(r.Destination), "application/json"
	if r.Destination == "bin" {
		wantSource = "urn:pgoutbox:test"
	}
	if i%2 == 1 {
		wantCT = "application/x-thing"
	}
	if ev.SpecVersion() != "1.0" || ev.ID() != r.ID || ev.Source() != wantSource || ev.Type() != r.Type ||
		ev.Subject() != r.Key || !ev.Time().Equal(r.CreatedAt) || ev.DataContentType() != wantCT {
		t.Errorf("record %d (%s): %s", i, r.Destination, ev.Context)
	}
	if !bytes.Equal(ev.Data(), r.Payload) {
		t.Errorf("record %d: data %q, want %q", i, ev.Data(), r.Payload)
	}
	for _, h := range rec.Headers {
		forged := strings.HasPrefix(strings.ToLower(h.Key), "ce_") && string(h.Value) == "forged" ||
			r.Destination == "struct" && strings.EqualFold(h.Key, "content-type") && string(h.Value) != cloudevents.StructuredContentType
		if forged {
			t.Errorf("record %d: a message header reached the record: %s=%s", i, h.Key, h.Value)
		}
	}
	if v, _ := kafkatest.Header(rec, "traceparent"); i%2 == 1 && v != "00-1-2-01" {
		t.Errorf("record %d: the message's traceparent header is missing", i)
	}
	if r.Destination != "struct" {
		return
	}
	if ct, _ := kafkatest.Header(rec, "content-type"); ct != cloudevents.StructuredContentType {
		t.Errorf("record %d: content-type %q", i, ct)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(rec.Value, &env); err != nil {
		t.Fatalf("record %d: the value is not a JSON envelope: %v", i, err)
	}
	if _, ok := env["data"]; ok != (i%2 == 0) {
		t.Errorf("record %d: envelope keys %v: want data for a JSON payload, data_base64 otherwise", i, keysOf(env))
	}
	if _, ok := env["data_base64"]; ok != (i%2 == 1) {
		t.Errorf("record %d: envelope keys %v: want data_base64 for a payload that is not JSON", i, keysOf(env))
	}
}

func keysOf(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Records produced in the debezium-outbox format to the real broker, read back with franz-go: the
// value is the payload byte-exact, the key the message Key (the aggregate id, partitioned like the
// Java client), and the headers exactly the sink's own, "id" = the message id, the type under
// "eventType" (or the configured name; a null value for a message without a type, as Debezium emits
// for a NULL type column), then the message's own headers, without those that would forge id or type.
func TestDebeziumOutboxFormat(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 3, nil)
	s := newRealSink(t, brokers, map[string]string{"dbz": topic, "dbz-type": topic}, func(c *kafka.Config) {
		c.Formats = map[string]recordformat.Format{
			"dbz":      {Name: kafka.FormatDebeziumOutbox},
			"dbz-type": {Name: kafka.FormatDebeziumOutbox, TypeHeader: "type"},
		}
	})
	batch := formatBatch("dbz", "dbz", "dbz-type", "dbz-type", "dbz")
	batch[4].Type = ""
	want := map[string]string{
		batch[0].ID: "pgoutbox-id=k-dbz-000000,pgoutbox-type=sinktest.v1,pgoutbox-destination=dbz,id=k-dbz-000000,eventType=sinktest.v1,seq=0",
		batch[1].ID: "pgoutbox-id=k-dbz-000001,pgoutbox-type=sinktest.v1,pgoutbox-destination=dbz,id=k-dbz-000001,eventType=sinktest.v1," +
			"CE_type=forged,Content-Type=application/x-thing,ce_id=forged,traceparent=00-1-2-01",
		batch[2].ID: "pgoutbox-id=k-dbz-type-000002,pgoutbox-type=sinktest.v1,pgoutbox-destination=dbz-type,id=k-dbz-type-000002,type=sinktest.v1,seq=2",
		batch[3].ID: "pgoutbox-id=k-dbz-type-000003,pgoutbox-type=sinktest.v1,pgoutbox-destination=dbz-type,id=k-dbz-type-000003,type=sinktest.v1," +
			"CE_type=forged,Content-Type=application/x-thing,ce_id=forged,eventType=forged,traceparent=00-1-2-01",
		batch[4].ID: "pgoutbox-id=k-dbz-000004,pgoutbox-destination=dbz,id=k-dbz-000004,eventType=<null>,seq=4",
	}
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	recs := kafkatest.ReadAll(t, brokers, topic)
	if len(recs) != len(batch) {
		t.Fatalf("read %d records, want %d", len(recs), len(batch))
	}
	byID := map[string]outbox.Record{}
	for _, r := range batch {
		byID[r.ID] = r
	}
	for _, rec := range recs {
		id, _ := kafkatest.Header(rec, "id")
		r, ok := byID[id]
		if !ok {
			t.Fatalf("record without a known id header: %v", rec.Headers)
		}
		var hs []string
		for _, h := range rec.Headers {
			v := string(h.Value)
			if h.Value == nil {
				v = "<null>"
			}
			hs = append(hs, h.Key+"="+v)
		}
		if got := strings.Join(hs, ","); got != want[id] {
			t.Errorf("message %s: headers\n  %s\nwant\n  %s", id, got, want[id])
		}
		if string(rec.Key) != r.Key || !bytes.Equal(rec.Value, r.Payload) {
			t.Errorf("message %s: key/value %q/%q, want %q/%q", id, rec.Key, rec.Value, r.Key, r.Payload)
		}
		if p := kafka.JavaPartition([]byte(r.Key), 3); rec.Partition != p {
			t.Errorf("message %s: partition %d, want %d (the Java client's for its key)", id, rec.Partition, p)
		}
	}
}

// A record is size-checked as it is sent: a payload that fits the topic's max.message.bytes raw is
// delivered, the same payload as a structured CloudEvent (base64 in the envelope) fails permanently
// with both sizes, without holding back the raw one.
func TestFormattedRecordOverTopicLimit(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 1, map[string]string{"max.message.bytes": "3000"})
	s := newRealSink(t, brokers, map[string]string{"raw": topic, "struct": topic}, func(c *kafka.Config) {
		c.Formats = map[string]recordformat.Format{"struct": {Name: kafka.FormatCloudEventsStructured}}
	})
	payload := bytes.Repeat([]byte{0xfe}, 2500)
	batch := []outbox.Record{
		{Message: outbox.Message{ID: "m-raw", Destination: "raw", Key: "a", Payload: payload}},
		{Message: outbox.Message{ID: "m-struct", Destination: "struct", Key: "b", Payload: payload}},
	}
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || !outbox.IsPermanent(be.Errs[1]) ||
		!strings.Contains(be.Errs[1].Error(), "max.message.bytes 3000") {
		t.Fatalf("Send = %v; want the structured record alone to fail permanently over the limit", err)
	}
	if recs := kafkatest.ReadAll(t, brokers, topic); len(recs) != 1 || !bytes.Equal(recs[0].Value, payload) {
		t.Fatalf("topic holds %d records, want the raw one", len(recs))
	}
}
