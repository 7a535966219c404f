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
	s := newBenchSink(b, goroutines, func(c *kafka.Config) {
		c.ExactlyOnce.Enable, c.ExactlyOnce.CommitInterval = true, interval
	})
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
				for i := range batch {
					batch[i] = outbox.Record{Message: outbox.Message{ID: fmt.Sprintf("%d-%d", n, i), Destination: "bench", Route: s.topic,
						Key: fmt.Sprintf("key-%d-%d", g, i%64), Type: "bench", Payload: payload}, CommitLSN: pglogrepl.LSN(lsn), Seq: int64(i)}
				}
				if err := s.send(g, lsn, batch); err != nil {
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

// benchSink is a sink for a benchmark's senders, resumed with a watermark like the relay's: the oldest
// commit LSN a sender has in flight, or the highest one acked.
type benchSink struct {
	*kafka.Sink
	topic    string
	inFlight []atomic.Uint64 // per sender: the commit LSN it sends (MaxUint64: none)
	acked    atomic.Uint64
}

func newBenchSink(b *testing.B, senders int, mod func(*kafka.Config)) *benchSink {
	brokers := kafkatest.Brokers(b)
	topic, posTopic := kafkatest.TopicName(b), kafkatest.TopicName(b)+".pos"
	kafkatest.CreateTopic(b, brokers, topic, 8, nil)
	kafkatest.CreateTopic(b, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
	bs := &benchSink{topic: topic, inFlight: make([]atomic.Uint64, senders)}
	bs.Sink = newRealSink(b, brokers, nil, func(c *kafka.Config) {
		c.ExactlyOnce.PositionTopic, c.ExactlyOnce.TransactionalID = posTopic, topic+".txn"
		mod(c)
	})
	for g := range bs.inFlight {
		bs.inFlight[g].Store(math.MaxUint64)
	}
	watermark := func() pglogrepl.LSN {
		w := bs.acked.Load()
		for g := range bs.inFlight {
			w = min(w, bs.inFlight[g].Load())
		}
		return pglogrepl.LSN(w)
	}
	if _, err := bs.Resume(context.Background(), outbox.ResumeInfo{Slot: "bench", SystemID: "bench", Watermark: watermark}); err != nil {
		b.Fatalf("Resume: %v", err)
	}
	return bs
}

// send sends batch (all of commit LSN lsn) for sender g, keeping the watermark.
func (bs *benchSink) send(g int, lsn uint64, batch []outbox.Record) error {
	bs.inFlight[g].Store(lsn)
	err := bs.Send(context.Background(), batch)
	bs.inFlight[g].Store(math.MaxUint64)
	if err == nil {
		bs.acked.Store(max(bs.acked.Load(), lsn)) // approximate: the min over in-flight Sends bounds it
	}
	return err
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
	s := newBenchSink(b, senders, func(c *kafka.Config) { c.ExactlyOnce.Enable = exactlyOnce })
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
				r := outbox.Record{Message: outbox.Message{ID: fmt.Sprint(n), Destination: "bench", Route: s.topic, Key: fmt.Sprint(n), Payload: []byte("x")},
					CommitLSN: pglogrepl.LSN(lsn)}
				start := time.Now()
				if err := s.send(g, lsn, []outbox.Record{r}); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(start)
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
