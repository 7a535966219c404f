package kafka_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// poisonSize is over the default max.message.bytes (1048588) of the conformance topics.
const poisonSize = 1100000

func newRealSink(t testing.TB, brokers []string, topics map[string]string, mod func(*kafka.Config)) *kafka.Sink {
	t.Helper()
	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	cfg.Topics = topics
	if mod != nil {
		mod(&cfg)
	}
	s, err := kafka.New(cfg, kafka.WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatalf("kafka.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type topicReader struct {
	brokers []string
	topic   string
}

func (r topicReader) Read(t testing.TB) []sinktest.Delivery {
	var out []sinktest.Delivery
	for _, rec := range kafkatest.ReadAll(t, r.brokers, r.topic) {
		out = append(out, toDelivery(rec))
	}
	return out
}

// Poison makes the record larger than the topic's max.message.bytes.
func (r topicReader) Poison(rec *outbox.Record) { rec.Payload = bytes.Repeat([]byte("p"), poisonSize) }

func toDelivery(rec *kgo.Record) sinktest.Delivery {
	d := sinktest.Delivery{Key: string(rec.Key), Payload: rec.Value, Headers: map[string]string{}}
	for _, h := range rec.Headers {
		switch h.Key {
		case kafka.HeaderID:
			d.ID = string(h.Value)
		case kafka.HeaderType:
			d.Type = string(h.Value)
		case kafka.HeaderDestination:
			d.Destination = string(h.Value)
		default:
			d.Headers[h.Key] = string(h.Value)
		}
	}
	return d
}

func TestConformance(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	sinktest.Run(t, func(t *testing.T) (outbox.Sink, sinktest.Reader) {
		topic := kafkatest.TopicName(t)
		kafkatest.CreateTopic(t, brokers, topic, 3, nil)
		return newRealSink(t, brokers, map[string]string{string(sinktest.Destination): topic}, nil), topicReader{brokers, topic}
	})
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func TestRoundTripHeadersAndRoute(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 4, nil)
	s := newRealSink(t, brokers, nil, nil)
	payload := []byte{0, 1, 2, 0xff, '{', '}', 0x80}
	rec := outbox.Record{Message: outbox.Message{
		ID: "0190b0f8-0000-7000-8000-000000000001", Destination: "orders", Route: topic, Key: "order-42",
		Type: "order.created", Payload: payload, Headers: map[string]string{"b": "2", "a": "1"},
	}}
	if err := s.Send(ctx(t, 30*time.Second), []outbox.Record{rec}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := kafkatest.ReadAll(t, brokers, topic)
	if len(got) != 1 {
		t.Fatalf("read %d records, want 1", len(got))
	}
	r := got[0]
	if string(r.Key) != "order-42" || !bytes.Equal(r.Value, payload) {
		t.Fatalf("key/value = %q/%q", r.Key, r.Value)
	}
	var keys []string
	for _, h := range r.Headers {
		keys = append(keys, h.Key+"="+string(h.Value))
	}
	want := "pgoutbox-id=0190b0f8-0000-7000-8000-000000000001,pgoutbox-type=order.created,pgoutbox-destination=orders,a=1,b=2"
	if strings.Join(keys, ",") != want {
		t.Fatalf("headers = %s, want %s", strings.Join(keys, ","), want)
	}
	// The partition is the Java client's: murmur2("order-42") positive % 4.
	if want := kafka.JavaPartition([]byte("order-42"), 4); r.Partition != want {
		t.Fatalf("partition = %d, want %d", r.Partition, want)
	}
}

func TestMissingTopicIsUnavailable(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	good := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, good, 1, nil)
	missing := kafkatest.TopicName(t) + ".missing"
	s := newRealSink(t, brokers, map[string]string{"good": good, "bad": missing}, nil)
	batch := []outbox.Record{sinktest.Record("a", 0), sinktest.Record("a", 1)}
	batch[0].Destination, batch[1].Destination = "good", "bad"
	err := s.Send(ctx(t, 30*time.Second), batch)
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send = %v, want unavailable", err)
	}
	if _, ok := s.Blocked()[missing]; !ok {
		t.Fatalf("Blocked() = %v, want %s listed", s.Blocked(), missing)
	}
	if got := kafkatest.ReadAll(t, brokers, good); len(got) != 0 {
		t.Fatalf("%d records delivered although the batch was unavailable", len(got))
	}
	if s.Stats().UnknownTopic == 0 {
		t.Fatal("unknown topic not counted")
	}
	// Creating the topic unblocks it (the relay retries the batch).
	kafkatest.CreateTopic(t, brokers, missing, 1, nil)
	if err := s.Send(ctx(t, 30*time.Second), batch); err != nil {
		t.Fatalf("Send after creating the topic: %v", err)
	}
	if b := s.Blocked(); len(b) != 0 {
		t.Fatalf("Blocked() = %v after the topic exists", b)
	}
}

func TestTooLargeIsPermanentNeighboursDelivered(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 1, map[string]string{"max.message.bytes": "2000"})
	s := newRealSink(t, brokers, map[string]string{"d": topic}, nil)
	var batch []outbox.Record
	for i := range 5 {
		r := sinktest.Record("k", i)
		r.Destination = "d"
		batch = append(batch, r)
	}
	batch[2].Payload = bytes.Repeat([]byte("x"), 2500)
	err := s.Send(ctx(t, 30*time.Second), batch)
	var be *outbox.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("Send = %v, want BatchError", err)
	}
	size := fmt.Sprintf("%d bytes", kafka.RecordBatchSize(batch[2], topic))
	if !outbox.IsPermanent(be.Errs[2]) || !strings.Contains(be.Errs[2].Error(), "max.message.bytes 2000") || !strings.Contains(be.Errs[2].Error(), size) {
		t.Fatalf("too-large error = %v, want permanent naming both sizes", be.Errs[2])
	}
	got := kafkatest.ReadAll(t, brokers, topic)
	if len(got) != 4 {
		t.Fatalf("delivered %d records, want the 4 neighbours", len(got))
	}
}

// The pre-check and the broker agree on the exact limit: a record batch of exactly max.message.bytes
// is accepted, one byte more is permanent.
func TestSizeLimitExact(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	const limit = 3000
	kafkatest.CreateTopic(t, brokers, topic, 1, map[string]string{"max.message.bytes": fmt.Sprint(limit)})
	s := newRealSink(t, brokers, map[string]string{"d": topic}, nil)
	r := sinktest.Record("k", 0)
	r.Destination = "d"
	r.Payload = nil
	base := kafka.RecordBatchSize(r, topic)
	r.Payload = bytes.Repeat([]byte("y"), limit-base-4) // varint of the value length grows by a byte or two
	for kafka.RecordBatchSize(r, topic) < limit {
		r.Payload = append(r.Payload, 'y')
	}
	if n := kafka.RecordBatchSize(r, topic); n != limit {
		t.Fatalf("could not build a record of exactly %d bytes (got %d)", limit, n)
	}
	if err := s.Send(ctx(t, 30*time.Second), []outbox.Record{r}); err != nil {
		t.Fatalf("record of exactly max.message.bytes: %v", err)
	}
	r.ID += "-big"
	r.Payload = append(r.Payload, 'y')
	err := s.Send(ctx(t, 30*time.Second), []outbox.Record{r})
	var be *outbox.BatchError
	if !errors.As(err, &be) || !outbox.IsPermanent(be.Errs[0]) {
		t.Fatalf("record one byte over: %v, want permanent", err)
	}
	// Without the pre-check (compression on), the broker's verdict is the same.
	sc := newRealSink(t, brokers, map[string]string{"d": topic}, func(c *kafka.Config) { c.Compression = "lz4" })
	r.Payload = make([]byte, limit*2)
	_, _ = rand.Read(r.Payload)
	r.ID += "-lz4"
	err = sc.Send(ctx(t, 30*time.Second), []outbox.Record{r})
	if !errors.As(err, &be) || !outbox.IsPermanent(be.Errs[0]) {
		t.Fatalf("incompressible record over the limit with lz4: %v, want permanent", err)
	}
}
