package kafka_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The exactly-once mode rests on three properties of sarama's transactional producer against a real
// broker, proved here without the sink: records of a committed transaction all become visible to a
// read_committed consumer; records of an aborted one never do; and a second producer with the same
// transactional.id fences the first, whose open transaction is aborted and whose commit fails.

func txnProducer(t *testing.T, brokers []string, txnID string) sarama.AsyncProducer {
	t.Helper()
	sc := saramaTxnConfig(txnID)
	sc.Producer.Transaction.Timeout = 20 * time.Second
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewAsyncProducer(brokers, sc)
	if err != nil {
		t.Fatalf("transactional producer %q: %v", txnID, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// produceAcked sends n records to topic (alternating partitions 0 and 1) in p's open transaction and
// waits for every ack.
func produceAcked(t *testing.T, p sarama.AsyncProducer, topic, prefix string, n int) {
	t.Helper()
	for i := range n {
		p.Input() <- &sarama.ProducerMessage{Topic: topic, Partition: int32(i % 2), Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", prefix, i))}
	}
	for range n {
		select {
		case <-p.Successes():
		case pe := <-p.Errors():
			t.Fatalf("produce %s: %v", prefix, pe.Err)
		case <-time.After(30 * time.Second):
			t.Fatalf("produce %s: no ack after 30s", prefix)
		}
	}
}

func committedValues(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, r := range kafkatest.ReadCommitted(t, brokers, topic) {
		seen[string(r.Value)]++
	}
	return seen
}

// saramaReadCommitted reads both partitions of topic with sarama's own consumer at
// IsolationLevel ReadCommitted up to the sentinels ReadCommitted wrote, and returns the values.
func saramaReadCommitted(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	c, err := sarama.NewConsumer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := map[string]int{}
	for p := int32(0); p < 2; p++ {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
	read:
		for {
			select {
			case m := <-pc.Messages():
				for _, h := range m.Headers {
					if string(h.Key) == kafkatest.HeaderSentinel {
						break read
					}
				}
				seen[string(m.Value)]++
			case <-time.After(30 * time.Second):
				t.Fatalf("sarama read_committed consumer: no sentinel in partition %d after 30s", p)
			}
		}
		_ = pc.Close()
	}
	return seen
}

func TestSaramaTransactionsCommitAndAbort(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 2, nil)
	p := txnProducer(t, brokers, topic+".txn")

	if err := p.BeginTxn(); err != nil {
		t.Fatalf("BeginTxn: %v", err)
	}
	produceAcked(t, p, topic, "committed", 10)
	if err := p.CommitTxn(); err != nil {
		t.Fatalf("CommitTxn: %v", err)
	}
	if err := p.BeginTxn(); err != nil {
		t.Fatalf("BeginTxn: %v", err)
	}
	produceAcked(t, p, topic, "aborted", 5)
	if err := p.AbortTxn(); err != nil {
		t.Fatalf("AbortTxn: %v", err)
	}
	if err := p.BeginTxn(); err != nil { // the producer goes on after an abort
		t.Fatalf("BeginTxn after abort: %v", err)
	}
	produceAcked(t, p, topic, "after", 4)
	if err := p.CommitTxn(); err != nil {
		t.Fatalf("CommitTxn after abort: %v", err)
	}

	for name, seen := range map[string]map[string]int{
		"franz-go": committedValues(t, brokers, topic), "sarama": saramaReadCommitted(t, brokers, topic),
	} {
		for i := range 10 {
			if v := fmt.Sprintf("committed-%d", i); seen[v] != 1 {
				t.Errorf("%s read_committed: %s seen %d times, want 1", name, v, seen[v])
			}
		}
		for i := range 4 {
			if v := fmt.Sprintf("after-%d", i); seen[v] != 1 {
				t.Errorf("%s read_committed: %s seen %d times, want 1", name, v, seen[v])
			}
		}
		if len(seen) != 14 {
			t.Errorf("%s read_committed saw %d distinct records, want 14 (aborted ones visible?): %v", name, len(seen), seen)
		}
	}
	// read_uncommitted does see the aborted records: the abort is what hides them.
	aborted := 0
	for _, r := range kafkatest.ReadAll(t, brokers, topic) {
		if len(r.Value) >= 7 && string(r.Value[:7]) == "aborted" {
			aborted++
		}
	}
	if aborted != 5 {
		t.Errorf("read_uncommitted saw %d aborted records, want 5", aborted)
	}
}

func TestSaramaTransactionalIDFencesZombie(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 2, nil)
	txnID := topic + ".txn"

	zombie := txnProducer(t, brokers, txnID)
	if err := zombie.BeginTxn(); err != nil {
		t.Fatalf("zombie BeginTxn: %v", err)
	}
	produceAcked(t, zombie, topic, "zombie", 6) // acked by the partitions, transaction still open

	successor := txnProducer(t, brokers, txnID) // InitProducerId bumps the epoch: aborts the zombie's transaction
	if err := successor.BeginTxn(); err != nil {
		t.Fatalf("successor BeginTxn: %v", err)
	}
	produceAcked(t, successor, topic, "successor", 4)
	if err := successor.CommitTxn(); err != nil {
		t.Fatalf("successor CommitTxn: %v", err)
	}

	err := zombie.CommitTxn()
	t.Logf("zombie CommitTxn: %v (status %v)", err, zombie.TxnStatus())
	if err == nil {
		t.Fatal("zombie CommitTxn succeeded after a producer with the same transactional.id started")
	}
	if !errors.Is(err, sarama.ErrProducerFenced) && !errors.Is(err, sarama.ErrInvalidProducerEpoch) {
		t.Errorf("zombie CommitTxn = %v, want ProducerFenced or InvalidProducerEpoch", err)
	}
	if zombie.TxnStatus()&sarama.ProducerTxnFlagFatalError == 0 {
		t.Errorf("zombie status %v is not fatal: it could try again", zombie.TxnStatus())
	}
	// A fenced producer cannot start over either.
	if err := zombie.BeginTxn(); err == nil {
		zombie.Input() <- &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder("zombie-again")}
		select {
		case <-zombie.Successes():
			if err := zombie.CommitTxn(); err == nil {
				t.Error("fenced zombie committed a new transaction")
			}
		case pe := <-zombie.Errors():
			t.Logf("zombie produce after fencing: %v", pe.Err)
		case <-time.After(30 * time.Second):
		}
	}

	seen := committedValues(t, brokers, topic)
	for v, n := range seen {
		if len(v) >= 6 && v[:6] == "zombie" {
			t.Errorf("read_committed sees the zombie's record %s (%d times)", v, n)
		}
	}
	for i := range 4 {
		if v := fmt.Sprintf("successor-%d", i); seen[v] != 1 {
			t.Errorf("read_committed: %s seen %d times, want 1", v, seen[v])
		}
	}
}
