package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// BenchmarkTxnCycle is the floor of exactly-once latency, without the sink or the relay: one record at
// a time, each in its own Kafka transaction with a position record beside it (what the sink's smallest
// transaction holds), against the real broker. It reports the cycle (begin → both acked → committed) and
// commit → visible to a read_committed consumer, p50 and p99, for sarama's transactional producer and
// for franz-go's, beside the default mode's path (an idempotent produce, visible to a read_uncommitted
// consumer). total is the record's way from the producer to the consumer: the least a record waits in
// exactly-once mode (it arrives as its transaction begins; one arriving later also waits for the
// transaction in progress). Run: go test ./sink/kafka -run '^$' -bench TxnCycle -benchtime 1000x
func BenchmarkTxnCycle(b *testing.B) {
	brokers := kafkatest.Brokers(b)
	b.Run("client=sarama", func(b *testing.B) { benchTxnCycle(b, brokers, newSaramaCycler) })
	b.Run("client=franz-go", func(b *testing.B) { benchTxnCycle(b, brokers, newFranzCycler) })
	b.Run("client=sarama-idempotent", func(b *testing.B) { benchTxnCycle(b, brokers, newSaramaPlain) })
}

// cycler produces one record (and, transactional, a position record) and returns once it is durable:
// committed, or acked.
type cycler struct {
	cycle         func(i int) error
	readCommitted bool
	close         func()
}

func benchTxnCycle(b *testing.B, brokers []string, newCycler func(testing.TB, []string, string, string) cycler) {
	topic, posTopic := kafkatest.TopicName(b), kafkatest.TopicName(b)+".pos"
	kafkatest.CreateTopic(b, brokers, topic, 1, nil)
	kafkatest.CreateTopic(b, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
	c := newCycler(b, brokers, topic, posTopic)
	defer c.close()
	iso := kgo.ReadUncommitted()
	if c.readCommitted {
		iso = kgo.ReadCommitted()
	}
	consumer := kafkatest.Client(b, brokers, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	seen := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			fs := consumer.PollFetches(ctx)
			fs.EachRecord(func(*kgo.Record) { seen <- time.Now() })
		}
	}()
	if err := c.cycle(-1); err != nil { // warm up: producer id, metadata, the consumer's first fetch
		b.Fatal(err)
	}
	<-seen
	cycles, visible, total := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := c.cycle(i); err != nil {
			b.Fatal(err)
		}
		done := time.Now()
		select {
		case at := <-seen:
			cycles, visible = append(cycles, done.Sub(start)), append(visible, at.Sub(done))
			total = append(total, at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatalf("record %d not visible after 10s", i)
		}
	}
	b.StopTimer()
	report := func(d []time.Duration, name string) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2])/1e6, name+"-p50-ms")
		b.ReportMetric(float64(d[len(d)*99/100])/1e6, name+"-p99-ms")
	}
	report(cycles, "cycle")
	report(visible, "visible")
	report(total, "total")
}

// saramaTxnConfig is a transactional (or, with an empty txnID, idempotent) producer's configuration, as
// the sink sets it up.
func saramaTxnConfig(txnID string) *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Transaction.ID = txnID
	sc.Producer.Transaction.Retry.Backoff = time.Millisecond // as the sink (txnRetryBackoff)
	sc.Producer.Transaction.Retry.Max = 5000
	return sc
}

// newSaramaCycler: BeginTxn, the record and the position record (each acked), CommitTxn.
func newSaramaCycler(t testing.TB, brokers []string, topic, posTopic string) cycler {
	p, err := sarama.NewAsyncProducer(brokers, saramaTxnConfig(topic+".txn"))
	if err != nil {
		t.Fatal(err)
	}
	return cycler{readCommitted: true, close: func() { _ = p.Close() }, cycle: func(i int) error {
		if err := p.BeginTxn(); err != nil {
			return err
		}
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprint(i))}
		p.Input() <- &sarama.ProducerMessage{Topic: posTopic, Key: sarama.StringEncoder("pos"), Value: sarama.StringEncoder(fmt.Sprint(i))}
		for range 2 {
			select {
			case <-p.Successes():
			case pe := <-p.Errors():
				return pe.Err
			}
		}
		return p.CommitTxn()
	}}
}

// newSaramaPlain: the default mode's path, one idempotent record acked.
func newSaramaPlain(t testing.TB, brokers []string, topic, _ string) cycler {
	sc := saramaTxnConfig("")
	sc.Producer.Transaction.ID = ""
	p, err := sarama.NewAsyncProducer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	return cycler{close: func() { _ = p.Close() }, cycle: func(i int) error {
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(fmt.Sprint(i))}
		select {
		case <-p.Successes():
			return nil
		case pe := <-p.Errors():
			return pe.Err
		}
	}}
}

// newFranzCycler: franz-go's transactional producer, the same transaction.
func newFranzCycler(t testing.TB, brokers []string, topic, posTopic string) cycler {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(topic+".franz.txn"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	return cycler{readCommitted: true, close: cl.Close, cycle: func(i int) error {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		rs := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: fmt.Append(nil, i)},
			&kgo.Record{Topic: posTopic, Key: []byte("pos"), Value: fmt.Append(nil, i)})
		if err := rs.FirstErr(); err != nil {
			return err
		}
		return cl.EndTransaction(ctx, kgo.TryCommit)
	}}
}
