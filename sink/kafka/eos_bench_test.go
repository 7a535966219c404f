package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
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

// BenchmarkKafkaSendPaced is a live stream without the relay: 16 senders (like lanes) each send one
// record at a time, 1,000 records/s in all, and the benchmark reports how long a Send takes (p50, p99)
// in the default mode (acked by the idempotent producer) and in exactly-once mode (committed in a Kafka
// transaction, so visible to read_committed consumers). It is the sink's share of W2 vs W2E.
// Run: go test ./sink/kafka -run '^$' -bench KafkaSendPaced -benchtime 8000x
func BenchmarkKafkaSendPaced(b *testing.B) {
	for _, eos := range []bool{false, true} {
		b.Run(fmt.Sprint("exactly_once=", eos), func(b *testing.B) { benchSendPaced(b, eos) })
	}
}

func benchSendPaced(b *testing.B, exactlyOnce bool) {
	const senders, rate = 16, 1000
	brokers := kafkatest.Brokers(b)
	topic, posTopic := kafkatest.TopicName(b), kafkatest.TopicName(b)+".pos"
	kafkatest.CreateTopic(b, brokers, topic, 8, nil)
	kafkatest.CreateTopic(b, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
	s := newRealSink(b, brokers, nil, func(c *kafka.Config) {
		c.ExactlyOnce.Enable, c.ExactlyOnce.PositionTopic, c.ExactlyOnce.TransactionalID = exactlyOnce, posTopic, topic+".txn"
	})
	var inFlight [senders]atomic.Uint64 // the commit LSN each sender sends (MaxUint64: none)
	for g := range inFlight {
		inFlight[g].Store(math.MaxUint64)
	}
	var acked atomic.Uint64
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
	var mu sync.Mutex
	took := make([]time.Duration, 0, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(senders * time.Second / rate)
			defer tick.Stop()
			for ; ; <-tick.C {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				lsn := uint64(1000 + n)
				inFlight[g].Store(lsn)
				r := outbox.Record{Message: outbox.Message{ID: fmt.Sprint(n), Destination: "bench", Route: topic, Key: fmt.Sprint(n), Payload: []byte("x")},
					CommitLSN: pglogrepl.LSN(lsn)}
				start := time.Now()
				if err := s.Send(context.Background(), []outbox.Record{r}); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(start)
				inFlight[g].Store(math.MaxUint64)
				acked.Store(max(acked.Load(), lsn))
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/1e6, "send-p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100])/1e6, "send-p99-ms")
}
