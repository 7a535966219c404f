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
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// BenchmarkKafkaSend measures the sink against the real broker: 200-byte records in batches of 500,
// sent by 8 goroutines at once (as the relay's lanes do). One b.N unit is one record.
func BenchmarkKafkaSend(b *testing.B) { benchSend(b, 8, 500, nil) }

// BenchmarkKafkaSendLinger runs BenchmarkKafkaSend's load (8 goroutines × 500 records) for several
// Linger settings.
func BenchmarkKafkaSendLinger(b *testing.B) {
	for _, linger := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprint("linger=", linger), func(b *testing.B) { benchSend(b, 8, 500, withLinger(linger)) })
	}
}

// BenchmarkKafkaSendOne measures the latency of a lone record: one Send of one record at a time, so
// ns/op is the time from Send to ack at a low rate.
func BenchmarkKafkaSendOne(b *testing.B) {
	for _, linger := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprint("linger=", linger), func(b *testing.B) { benchSend(b, 1, 1, withLinger(linger)) })
	}
}

func withLinger(d time.Duration) func(*kafka.Config) { return func(c *kafka.Config) { c.Linger = d } }

// benchSend sends batches of batchSize 200-byte records from goroutines senders to a topic with 8
// partitions; configure (nil: defaults) adjusts the sink's config.
func benchSend(b *testing.B, goroutines, batchSize int, configure func(*kafka.Config)) {
	brokers := kafkatest.Brokers(b)
	topic := kafkatest.TopicName(b)
	kafkatest.CreateTopic(b, brokers, topic, 8, nil)
	s := newRealSink(b, brokers, nil, configure)
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
	b.ReportMetric(float64(total*int64(batchSize))/elapsed.Seconds(), "msgs/s")
}
