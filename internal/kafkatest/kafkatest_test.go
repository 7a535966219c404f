package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

func TestCreateTopicAndReadAll(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 3, map[string]string{"max.message.bytes": "2048"})

	if got := kafkatest.ReadAll(t, brokers, topic); len(got) != 0 {
		t.Fatalf("new topic has %d records", len(got))
	}
	cl := kafkatest.Client(t, brokers, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want []string
	for p := int32(0); p < 3; p++ {
		for i := 0; i < 5; i++ {
			v := fmt.Sprintf("p%d-%d", p, i)
			want = append(want, v)
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(v), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(v)}}}).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
	}
	got := kafkatest.ReadAll(t, brokers, topic)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if string(r.Value) != want[i] {
			t.Errorf("record %d = %q, want %q", i, r.Value, want[i])
		}
		if h, _ := kafkatest.Header(r, "h"); h != want[i] {
			t.Errorf("record %d header = %q", i, h)
		}
	}
}

// The test brokers run with auto.create.topics.enable=false, as production does.
func TestNoAutoCreate(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	cl := kafkatest.Client(t, brokers, kgo.AllowAutoTopicCreation(), kgo.ProduceRequestTimeout(2*time.Second), kgo.RecordDeliveryTimeout(3*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
	if err == nil {
		t.Fatalf("produce to missing topic %q succeeded: the broker auto-creates topics", topic)
	}
	if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, kgo.ErrRecordTimeout) {
		t.Logf("produce error: %v", err)
	}
}
