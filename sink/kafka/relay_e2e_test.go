package kafka_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// e2e drives PostgreSQL → relay → a real Kafka broker and checks I1–I5 on what a consumer reads.
type e2e struct {
	t       *testing.T
	db      *pgtest.DB
	brokers []string
	topic   string
	slot    string
	l       *oracle.Ledger
}

func newE2E(t *testing.T, brokers []string, partitions int, topicConfigs map[string]string) *e2e {
	t.Helper()
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, db: db, brokers: brokers, topic: kafkatest.TopicName(t), slot: "t_" + pgtest.RandomSuffix(), l: oracle.New(db.Pool, "app")}
	if partitions > 0 {
		kafkatest.CreateTopic(t, brokers, e.topic, partitions, topicConfigs)
	}
	return e
}

func (e *e2e) start(sink outbox.Sink, opts ...outbox.Option) *outbox.Relay {
	e.t.Helper()
	opts = append([]outbox.Option{outbox.WithSlotName(e.slot), outbox.WithSink(outbox.EventBus, sink),
		outbox.WithLogger(zaptest.NewLogger(e.t)), outbox.WithStatusInterval(100 * time.Millisecond),
		outbox.WithRetryBackoff(20*time.Millisecond, time.Second)}, opts...)
	r, err := outbox.Start(context.Background(), e.db.Pool, "app", nil, opts...)
	if err != nil {
		e.t.Fatalf("outbox.Start: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
	})
	return r
}

// generate starts committing txs transactions (1–10 messages over keys keys with random payloads of
// payloadSize bytes, 10 % rolled back, some with a rolled-back savepoint).
func (e *e2e) generate(txs, keys int, payloadSize int) *oracle.Generator {
	return e.l.Generate(oracle.GenConfig{Workers: 1, Keys: keys, MaxMsgs: 10, Payload: payloadSize, MaxTx: txs})
}

// waitAll reads the topic until every committed message is there, then checks I1, I2, I3, I5,
// byte-exact keys and payloads, that no committed message was dead-lettered, and the headers of every
// record of a committed message. It returns the number of duplicates.
func (e *e2e) waitAll(timeout time.Duration, faults bool) int {
	e.t.Helper()
	v := e.l.Verify(e.t, timeout, faults, topic.Source(e.t, e.brokers, e.topic))
	if v.Dead != 0 {
		e.t.Errorf("I1: %d committed messages were dead-lettered instead of delivered", v.Dead)
	}
	for _, r := range kafkatest.ReadAll(e.t, e.brokers, e.topic) {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		if _, ok := e.l.Lookup(id); !ok {
			continue
		}
		if typ, _ := kafkatest.Header(r, kafka.HeaderType); typ != "Test" {
			e.t.Errorf("record %s: type header %q", id, typ)
		}
		if dest, _ := kafkatest.Header(r, kafka.HeaderDestination); dest != string(outbox.EventBus) {
			e.t.Errorf("record %s: destination header %q", id, dest)
		}
		if _, ok := kafkatest.Header(r, "x-n"); !ok {
			e.t.Errorf("record %s: message header x-n missing", id)
		}
	}
	return v.Dups
}

func (e *e2e) confirmed() string {
	var s string
	_ = e.db.Pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&s)
	return s
}

func TestRelayToKafka(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	e := newE2E(t, brokers, 4, nil)
	s := newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, nil)
	e.start(s)
	i4 := e.l.WatchI4(t, topic.Watch(t, brokers, e.topic).I4(e.slot))
	if err := e.generate(600, 40, 200).Wait(); err != nil {
		t.Fatal(err)
	}
	e.waitAll(60*time.Second, false)
	time.Sleep(500 * time.Millisecond) // a few more I4 polls after the last ack
	if i4.Stop(); i4.Polls() == 0 {
		t.Error("the I4 watcher never judged a confirmed_flush_lsn")
	}
	if n := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}

// A record over the topic's max.message.bytes is dead-lettered with the reason; its neighbours,
// same key included, are delivered.
func TestRelayToKafkaTooLargeIsDeadLettered(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	e := newE2E(t, brokers, 1, map[string]string{"max.message.bytes": "20000"})
	s := newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, nil)
	e.start(s, outbox.WithMaxAttempts(3))
	big := outbox.Message{ID: uuid.NewString(), Destination: outbox.EventBus, Key: "k", Payload: make([]byte, 50_000)}
	msgs := []outbox.Message{
		{ID: uuid.NewString(), Destination: outbox.EventBus, Key: "k", Type: "Test", Payload: []byte("before"), Headers: map[string]string{"x-n": "0"}},
		big,
		{ID: uuid.NewString(), Destination: outbox.EventBus, Key: "k", Type: "Test", Payload: []byte("after"), Headers: map[string]string{"x-n": "1"}},
	}
	if err := outbox.Enqueue(context.Background(), "app", e.db.Pool, msgs...); err != nil {
		t.Fatal(err)
	}
	e.l.RecordCommitted(0, msgs[0], msgs[2]) // the big one is dead-lettered: checked below
	e.waitAll(30*time.Second, false)
	deadline := time.Now().Add(20 * time.Second)
	for {
		dls, err := outbox.ListDeadLetters(context.Background(), e.db.Pool, "app", outbox.DeadLetterFilter{IDs: []string{big.ID}})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) == 1 {
			if !strings.Contains(dls[0].Error, "20000") || len(dls[0].Payload) != 50_000 {
				t.Errorf("dead letter error %q (payload %d bytes): want the topic limit named", dls[0].Error, len(dls[0].Payload))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the too-large message was not dead-lettered")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A missing topic blocks its destination: reported, nothing dead-lettered, the slot stays; creating
// the topic lets everything through.
func TestRelayToKafkaMissingTopicBlocks(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	e := newE2E(t, brokers, 0, nil) // topic not created yet
	s := newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, nil)
	r := e.start(s, outbox.WithMaxAttempts(2))
	if err := e.generate(20, 5, 50).Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.Blocked()[outbox.EventBus] == "" {
		if time.Now().After(deadline) {
			t.Fatal("the relay never reported event_bus blocked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("blocked: %s", r.Blocked()[outbox.EventBus])
	time.Sleep(2 * time.Second) // well past MaxAttempts × backoff
	if n := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Fatalf("%d dead letters for a missing topic", n)
	}
	kafkatest.CreateTopic(t, brokers, e.topic, 2, nil)
	e.waitAll(60*time.Second, true)
	if b := r.Blocked(); len(b) != 0 {
		t.Errorf("still blocked after the topic exists: %v", b)
	}
}

// The broker is stopped for 10 s mid-stream and restarted: the slot does not move while it is down,
// and nothing is lost.
func TestRelayToKafkaBrokerDown(t *testing.T) {
	if testing.Short() {
		t.Skip("stops and starts its own broker")
	}
	t.Parallel()
	kafkatest.Brokers(t)
	if _, err := exec.LookPath("java"); err != nil {
		pgtest.SkipOrFail(t, "java not found: cannot start a dedicated broker")
	}
	dir := filepath.Join(os.TempDir(), "pgoutbox-kafka-e2e-"+pgtest.RandomSuffix())
	t.Cleanup(func() { kafkaScript(t, dir, "clean") })
	line := strings.TrimSpace(kafkaScript(t, dir, "up"))
	brokers := []string{strings.TrimPrefix(line, "export "+kafkatest.EnvBrokers+"=")}
	e := newE2E(t, brokers, 2, nil)
	s := newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, func(c *kafka.Config) {
		c.RetryBackoff = 100 * time.Millisecond
		c.DialTimeout = time.Second
		c.ReadTimeout = 3 * time.Second
		c.WriteTimeout = 3 * time.Second
	})
	// Sends time out while the broker is down: the relay retries them, and the sink must re-join the
	// records still queued in the producer instead of producing copies.
	r := e.start(s, outbox.WithHandlerTimeout(2*time.Second))
	i4 := e.l.WatchI4(t, topic.Watch(t, brokers, e.topic).I4(e.slot))
	gen := e.generate(20_000, 20, 100)
	time.Sleep(time.Second)
	kafkaScript(t, dir, "down")
	time.Sleep(3 * time.Second) // in-flight sends fail, the lanes block
	frozen := e.confirmed()
	time.Sleep(7 * time.Second) // 10 s down in all, transactions keep committing
	if now := e.confirmed(); now != frozen {
		t.Errorf("confirmed_flush_lsn moved from %s to %s while the broker was down", frozen, now)
	}
	kafkaScript(t, dir, "up")
	time.Sleep(time.Second)
	if err := gen.Stop(); err != nil {
		t.Fatal(err)
	}
	dups := e.waitAll(90*time.Second, true)
	if i4.Stop(); i4.Polls() == 0 {
		t.Error("the I4 watcher never judged a confirmed_flush_lsn")
	}
	t.Logf("duplicates after the broker outage: %d; sink stats %+v; relay %+v; %s", dups, s.Stats(), r.Stats(), i4)
	if n := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Errorf("%d dead letters from a broker outage", n)
	}
}
