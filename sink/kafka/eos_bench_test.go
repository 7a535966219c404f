package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// BenchmarkKafkaSendExactlyOnce is BenchmarkKafkaSend's load (8 goroutines × 500 records of 200 bytes,
// 8 partitions) in exactly-once mode: every Send is a new relay transaction (its own commit LSN), and
// the watermark follows the oldest Send in flight, as the relay's would.
func BenchmarkKafkaSendExactlyOnce(b *testing.B) {
	for _, interval := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run(fmt.Sprint("commit_interval=", interval), func(b *testing.B) { benchSendEOS(b, 8, 500, interval) })
	}
	// One record per Send, one Send at a time: ns/op is the sink's transaction cycle (compare with
	// BenchmarkTxnCycle, the same transaction without the sink).
	b.Run("one-record", func(b *testing.B) { benchSendEOS(b, 1, 1, 0) })
}

func benchSendEOS(b *testing.B, goroutines, batchSize int, interval time.Duration) {
	brokers := kafkatest.Brokers(b)
	topic, posTopic := kafkatest.TopicName(b), kafkatest.TopicName(b)+".pos"
	kafkatest.CreateTopic(b, brokers, topic, 8, nil)
	kafkatest.CreateTopic(b, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
	s := newRealSink(b, brokers, nil, func(c *kafka.Config) {
		c.ExactlyOnce.Enable, c.ExactlyOnce.PositionTopic, c.ExactlyOnce.TransactionalID = true, posTopic, topic+".txn"
		c.ExactlyOnce.CommitInterval = interval
	})
	inFlight := make([]atomic.Uint64, goroutines) // the commit LSN each goroutine sends (MaxUint64: none)
	for g := range inFlight {
		inFlight[g].Store(math.MaxUint64)
	}
	var acked atomic.Uint64 // every LSN below it was acked
	watermark := func() pglogrepl.LSN {
		w := acked.Load()
		for g := range inFlight {
			w = min(w, inFlight[g].Load())
		}
		return pglogrepl.LSN(w)
	}
	if _, err := s.Resume(context.Background(), outbox.ResumeInfo{Slot: "bench", SystemID: "bench", Watermark: watermark}); err != nil {
		b.Fatalf("Resume: %v", err)
	}
	payload := bytes.Repeat([]byte("x"), 200)
	total := int64((b.N + batchSize - 1) / batchSize)
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([]outbox.Record, batchSize)
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				lsn := uint64(1000 + n)
				inFlight[g].Store(lsn)
				for i := range batch {
					batch[i] = outbox.Record{Message: outbox.Message{ID: fmt.Sprintf("%d-%d", n, i), Destination: "bench", Route: topic,
						Key: fmt.Sprintf("key-%d-%d", g, i%64), Type: "bench", Payload: payload}, CommitLSN: pglogrepl.LSN(lsn), Seq: int64(i)}
				}
				if err := s.Send(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
				inFlight[g].Store(math.MaxUint64)
				acked.Store(max(acked.Load(), lsn)) // approximate: the min over in-flight Sends bounds it
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total*int64(batchSize))/elapsed.Seconds(), "msgs/s")
}
