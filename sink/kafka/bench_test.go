package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// BenchmarkKafkaSend measures the sink against the real broker: 200-byte records in batches of 500,
// sent by 8 goroutines at once (as the relay's lanes do). One b.N unit is one record.
func BenchmarkKafkaSend(b *testing.B) {
	const (
		batchSize  = 500
		goroutines = 8
	)
	brokers := kafkatest.Brokers(b)
	topic := kafkatest.TopicName(b)
	kafkatest.CreateTopic(b, brokers, topic, goroutines, nil)
	s := newRealSink(b, brokers, nil, nil)
	payload := bytes.Repeat([]byte("x"), 200)
	batches := make([][]outbox.Record, goroutines)
	for g := range batches {
		for i := range batchSize {
			batches[g] = append(batches[g], outbox.Record{Message: outbox.Message{
				ID: fmt.Sprintf("0190b0f8-0000-7000-8000-%012d", g*batchSize+i), Destination: "bench", Route: topic,
				Key: fmt.Sprintf("key-%d-%d", g, i%64), Type: "bench", Payload: payload,
			}})
		}
	}
	total := int64((b.N + batchSize - 1) / batchSize)
	var next atomic.Int64
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if err := s.Send(ctx, batches[g]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total*batchSize)/elapsed.Seconds(), "msgs/s")
}
