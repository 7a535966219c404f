package kafka_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
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

	mu         sync.Mutex
	committed  map[string]e2eMsg
	rolledBack map[string]bool
	unknown    map[string]bool
	next       map[string]int
}

type e2eMsg struct {
	key     string
	n       int
	payload []byte
}

func newE2E(t *testing.T, brokers []string, partitions int, topicConfigs map[string]string) *e2e {
	t.Helper()
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, db: db, brokers: brokers, topic: kafkatest.TopicName(t), slot: "t_" + pgtest.RandomSuffix(),
		committed: map[string]e2eMsg{}, rolledBack: map[string]bool{}, unknown: map[string]bool{}, next: map[string]int{}}
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

// generate commits txs transactions (random sizes, 10 % rolled back) over keys keys with random
// payloads, until done is closed or txs is reached.
func (e *e2e) generate(txs, keys int, payloadSize int, done <-chan struct{}) error {
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(1, uint64(time.Now().UnixNano())))
	for i := 0; i < txs; i++ {
		select {
		case <-done:
			return nil
		default:
		}
		var msgs []outbox.Message
		for range 1 + rng.IntN(10) {
			p := make([]byte, payloadSize)
			_, _ = rand.Read(p)
			msgs = append(msgs, outbox.Message{ID: uuid.Must(uuid.NewV7()).String(), Destination: outbox.EventBus,
				Key: fmt.Sprintf("key-%d", rng.IntN(keys)), Type: "Test", Payload: p, Headers: map[string]string{"x-n": fmt.Sprint(i)}})
		}
		rollback := rng.IntN(10) == 0
		err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
			if err := outbox.Enqueue(ctx, "app", tx, msgs...); err != nil {
				return err
			}
			if rollback {
				return errRollback
			}
			return nil
		})
		e.mu.Lock()
		for _, m := range msgs {
			switch {
			case errors.Is(err, errRollback):
				e.rolledBack[m.ID] = true
			case err != nil:
				e.unknown[m.ID] = true
			default:
				e.committed[m.ID] = e2eMsg{key: m.Key, n: e.next[m.Key], payload: m.Payload}
				e.next[m.Key]++
			}
		}
		e.mu.Unlock()
		if err != nil && !errors.Is(err, errRollback) {
			return err
		}
	}
	return nil
}

var errRollback = errors.New("rollback on purpose")

// waitAll reads the topic until every committed message is there, then checks I1, I2, I3, I5,
// byte-exact payloads and headers. It returns the number of duplicates.
func (e *e2e) waitAll(timeout time.Duration, faults bool) int {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var recs []*kgo.Record
	for {
		var err error
		recs, err = kafkatest.ReadAllErr(context.Background(), e.brokers, e.topic)
		if err == nil {
			seen := map[string]bool{}
			for _, r := range recs {
				id, _ := kafkatest.Header(r, kafka.HeaderID)
				seen[id] = true
			}
			e.mu.Lock()
			missing := 0
			for id := range e.committed {
				if !seen[id] {
					missing++
				}
			}
			total := len(e.committed)
			e.mu.Unlock()
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("I1: %d of %d committed messages missing from the topic after %s", missing, total, timeout)
			}
		} else if time.Now().After(deadline) {
			e.t.Fatalf("read topic: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	first := map[string]bool{}
	last := map[string]int{}
	dups, order, phantom := 0, 0, 0
	for _, r := range recs { // ReadAll returns each partition in offset order; a key lives in one partition
		id, ok := kafkatest.Header(r, kafka.HeaderID)
		if !ok {
			e.t.Fatalf("record at %d/%d has no %s header", r.Partition, r.Offset, kafka.HeaderID)
		}
		if e.rolledBack[id] {
			phantom++
		}
		if first[id] {
			dups++
			continue
		}
		first[id] = true
		m, ok := e.committed[id]
		if !ok {
			if !e.rolledBack[id] && !e.unknown[id] {
				e.t.Errorf("record %s was never enqueued", id)
			}
			continue
		}
		if string(r.Key) != m.key || !bytes.Equal(r.Value, m.payload) {
			e.t.Errorf("record %s: key %q payload %d bytes, want key %q and the exact %d payload bytes", id, r.Key, len(r.Value), m.key, len(m.payload))
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
		if prev, ok := last[m.key]; ok && m.n < prev {
			order++
		}
		last[m.key] = m.n
	}
	e.t.Logf("kafka oracle: committed %d, rolled back %d, records %d, duplicates %d", len(e.committed), len(e.rolledBack), len(recs), dups)
	if phantom != 0 || order != 0 {
		e.t.Errorf("I2 phantom=%d, I3 order violations=%d: both must be 0", phantom, order)
	}
	if !faults && dups != 0 {
		e.t.Errorf("I5: %d duplicates without a fault", dups)
	}
	return dups
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
	if err := e.generate(600, 40, 200, nil); err != nil {
		t.Fatal(err)
	}
	e.waitAll(60*time.Second, false)
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
	e.mu.Lock()
	e.committed[msgs[0].ID] = e2eMsg{key: "k", n: 0, payload: msgs[0].Payload}
	e.committed[msgs[2].ID] = e2eMsg{key: "k", n: 2, payload: msgs[2].Payload}
	e.mu.Unlock()
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
	if err := e.generate(20, 5, 50, nil); err != nil {
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
	done := make(chan struct{})
	genErr := make(chan error, 1)
	go func() { genErr <- e.generate(20_000, 20, 100, done) }()
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
	close(done)
	if err := <-genErr; err != nil {
		t.Fatal(err)
	}
	dups := e.waitAll(90*time.Second, true)
	t.Logf("duplicates after the broker outage: %d; sink stats %+v; relay %+v", dups, s.Stats(), r.Stats())
	if n := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Errorf("%d dead letters from a broker outage", n)
	}
}
