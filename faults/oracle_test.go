//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
)

// delivery is one message as a consumer saw it, in the sink's order (per key).
type delivery struct {
	id, key string
	payload []byte
	pos     string // where the sink put it (Kafka partition/offset, stdout line), for diagnostics
}

// verdict is what the oracle found.
type verdict struct {
	committed, delivered, dead int
	lost, phantom, dups, order int
	foreign, corrupt           int
}

// deadLetters returns the dead-letter table: id → error.
func deadLetters(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	out := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, "SELECT id::text, error FROM app.pkg_outbox_dead_letter")
	if err != nil {
		t.Fatalf("read dead letters: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, e string
		if err := rows.Scan(&id, &e); err != nil {
			t.Fatal(err)
		}
		out[id] = e
	}
	return out
}

// check judges deliveries against the ledger: I1 (every committed id delivered or dead-lettered), I2 (no
// rolled-back id delivered), I3 (first deliveries of a key in commit order), I5 (no duplicates unless
// faults), and byte-exact keys and payloads. It reports failures on t and returns the counts.
func (l *ledger) check(t *testing.T, ds []delivery, dead map[string]string, faults bool) verdict {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	v := verdict{committed: len(l.committed), delivered: len(ds)}
	seen := map[string]bool{}
	last := map[string]int{}
	lastPos := map[string]string{}
	for _, d := range ds {
		if l.rolledBack[d.id] {
			v.phantom++
		}
		if seen[d.id] {
			v.dups++
			continue
		}
		seen[d.id] = true
		s, ok := l.committed[d.id]
		if !ok {
			if !l.rolledBack[d.id] && !l.unknown[d.id] {
				v.foreign++
			}
			continue
		}
		if d.key != s.key || !bytes.Equal(d.payload, s.payload) {
			v.corrupt++
			if v.corrupt <= 3 {
				t.Errorf("message %s arrived with key %q and %d payload bytes, want key %q and the exact %d bytes", d.id, d.key, len(d.payload), s.key, len(s.payload))
			}
		}
		if prev, ok := last[s.key]; ok && s.n < prev {
			v.order++
			if v.order <= 3 {
				t.Errorf("I3: key %s: message #%d (%s, committed %s) first delivered at %s, after #%d at %s",
					s.key, s.n, d.id, s.at.Format("15:04:05.000"), d.pos, prev, lastPos[s.key])
			}
		}
		last[s.key] = s.n
		lastPos[s.key] = d.pos
	}
	for id := range l.committed {
		if _, isDead := dead[id]; isDead {
			v.dead++
			continue
		}
		if !seen[id] {
			v.lost++
		}
	}
	t.Logf("oracle: committed %d, rolled back %d, indeterminate %d, deliveries %d, duplicates %d, dead-lettered %d; generator: %d failed transactions, last %v",
		len(l.committed), len(l.rolledBack), len(l.unknown), len(ds), v.dups, v.dead, l.txErrors, l.lastErr)
	if v.lost != 0 || v.phantom != 0 || v.order != 0 {
		t.Errorf("I1 lost=%d, I2 phantom=%d, I3 order violations=%d: all must be 0", v.lost, v.phantom, v.order)
	}
	if v.foreign != 0 {
		t.Errorf("%d delivered ids were never enqueued", v.foreign)
	}
	if !faults && v.dups != 0 {
		t.Errorf("I5: %d duplicates without a fault", v.dups)
	}
	return v
}

// pending returns how many committed, not dead-lettered ids are missing from seen.
func (l *ledger) pending(seen func(string) bool, dead map[string]string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id := range l.committed {
		if _, ok := dead[id]; !ok && !seen(id) {
			n++
		}
	}
	return n
}

func recordsToDeliveries(recs []*kgo.Record) ([]delivery, error) {
	out := make([]delivery, 0, len(recs))
	for _, r := range recs {
		id, ok := kafkatest.Header(r, kafka.HeaderID)
		if !ok {
			return nil, fmt.Errorf("record %d/%d has no %s header", r.Partition, r.Offset, kafka.HeaderID)
		}
		out = append(out, delivery{id: id, key: string(r.Key), payload: r.Value,
			pos: fmt.Sprintf("partition %d offset %d (appended %s)", r.Partition, r.Offset, r.Timestamp.Format("15:04:05.000"))})
	}
	return out, nil
}

// waitKafka reads the topic until every committed message is there or dead-lettered, then checks it.
func (l *ledger) waitKafka(t *testing.T, brokers []string, topic string, pool *pgxpool.Pool, timeout time.Duration, faults bool) verdict {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs, err := kafkatest.ReadAllErr(context.Background(), brokers, topic)
		if err == nil {
			ds, derr := recordsToDeliveries(recs)
			if derr != nil {
				t.Fatal(derr)
			}
			ids := map[string]bool{}
			for _, d := range ds {
				ids[d.id] = true
			}
			dead := deadLetters(t, pool)
			missing := l.pending(func(id string) bool { return ids[id] }, dead)
			if missing == 0 {
				return l.check(t, ds, dead, faults)
			}
			if time.Now().After(deadline) {
				t.Errorf("I1: %d committed messages still missing from topic %s after %s", missing, topic, timeout)
				return l.check(t, ds, dead, faults)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("read topic %s: %v", topic, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// stdoutDeliveries parses the JSON lines of the given daemons' stdout, in run order.
func stdoutDeliveries(t *testing.T, ds ...*daemon) []delivery {
	t.Helper()
	var out []delivery
	for _, d := range ds {
		for _, line := range d.stdout.lines() {
			var l stdout.Line
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("pgoutbox %s printed a line that is not a message: %q", d.name, line)
			}
			p := []byte(nil)
			if l.Payload != nil {
				p = []byte(*l.Payload)
			} else {
				p = l.PayloadBase64
			}
			out = append(out, delivery{id: l.ID, key: l.Key, payload: p, pos: fmt.Sprintf("%s stdout line %d", d.name, len(out))})
		}
	}
	return out
}

// waitStdout waits until every committed message was printed by one of ds or dead-lettered, then checks.
func (l *ledger) waitStdout(t *testing.T, pool *pgxpool.Pool, timeout time.Duration, faults bool, ds ...*daemon) verdict {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := stdoutDeliveries(t, ds...)
		ids := make(map[string]bool, len(got))
		for _, d := range got {
			ids[d.id] = true
		}
		dead := deadLetters(t, pool)
		missing := l.pending(func(id string) bool { return ids[id] }, dead)
		if missing == 0 || time.Now().After(deadline) {
			if missing != 0 {
				t.Errorf("I1: %d committed messages still not printed after %s", missing, timeout)
			}
			return l.check(t, got, dead, faults)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// topicWatch consumes a topic continuously and knows which ids reached it.
type topicWatch struct {
	cl     *kgo.Client
	adm    *kadm.Client
	topic  string
	mu     sync.Mutex
	seen   map[string]time.Time
	next   map[int32]int64 // next offset to consume per partition
	cancel context.CancelFunc
	done   chan struct{}
}

func watchTopic(t *testing.T, brokers []string, topic string) *topicWatch {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(32<<20),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &topicWatch{cl: cl, adm: kadm.NewClient(cl), topic: topic, seen: map[string]time.Time{}, next: map[int32]int64{},
		cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if id, ok := kafkatest.Header(r, kafka.HeaderID); ok {
					if _, dup := w.seen[id]; !dup {
						w.seen[id] = now
					}
				}
				if r.Offset+1 > w.next[r.Partition] {
					w.next[r.Partition] = r.Offset + 1
				}
			})
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.cancel(); <-w.done; cl.Close() })
	return w
}

func (w *topicWatch) has(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.seen[id]
	return ok
}

func (w *topicWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

// waitFor waits until id is in the topic; it returns false after timeout.
func (w *topicWatch) waitFor(id string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !w.has(id) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// caughtUp waits until the consumer has read everything the topic held when it was called.
func (w *topicWatch) caughtUp(ctx context.Context) bool {
	ends, err := w.adm.ListEndOffsets(ctx, w.topic)
	if err != nil || ends.Error() != nil {
		return false
	}
	for {
		behind := false
		w.mu.Lock()
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > w.next[o.Partition] {
				behind = true
			}
		})
		w.mu.Unlock()
		if !behind {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// i4 polls the slot's confirmed_flush_lsn and checks that every message committed at or below it is
// already in the topic (or dead-lettered): I4, "ack means delivered". It runs until stop is called.
type i4 struct {
	polls      atomic.Int64
	violations atomic.Int64
	cancel     context.CancelFunc
	done       chan struct{}
}

func watchI4(t *testing.T, l *ledger, w *topicWatch, pool *pgxpool.Pool, slot string) *i4 {
	ctx, cancel := context.WithCancel(context.Background())
	c := &i4{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			time.Sleep(150 * time.Millisecond)
			qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
			// While the slot's initial snapshot is pending, messages committed before its creation lie
			// below the confirmed position unacked (the snapshot, taken again after a crash, covers
			// them); then the slot must not confirm anything past its creation.
			var s *string
			var pending bool
			var created string
			err := pool.QueryRow(qctx, `SELECT s.confirmed_flush_lsn::text, COALESCE(r.snapshot_pending, false),
				COALESCE(r.created_lsn::text, '0/0') FROM pg_replication_slots s
				LEFT JOIN app.pkg_outbox_relay r ON r.slot_name = s.slot_name WHERE s.slot_name = $1`, slot).Scan(&s, &pending, &created)
			qcancel()
			if err != nil || s == nil {
				continue
			}
			flush, _ := pglogrepl.ParseLSN(*s)
			if pending {
				if at, _ := pglogrepl.ParseLSN(created); at != 0 && flush != at {
					c.violations.Add(1)
					t.Errorf("I4: confirmed_flush_lsn %s moved past the slot's creation %s while its initial snapshot was pending", flush, at)
				}
				c.polls.Add(1)
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			ok := w.caughtUp(cctx)
			ccancel()
			if !ok {
				continue // broker unreachable: nothing to judge by
			}
			var suspects []string
			l.mu.Lock()
			for id, m := range l.committed {
				if m.upper != 0 && m.upper <= flush && !w.has(id) {
					suspects = append(suspects, id)
				}
			}
			l.mu.Unlock()
			if len(suspects) > 0 {
				// Acked by being dead-lettered is fine.
				dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
				var n int
				err := pool.QueryRow(dctx, "SELECT count(*) FROM app.pkg_outbox_dead_letter WHERE id = ANY($1::uuid[])", suspects).Scan(&n)
				dcancel()
				if err != nil {
					continue
				}
				if missing := len(suspects) - n; missing > 0 {
					c.violations.Add(int64(missing))
					t.Errorf("I4: confirmed_flush_lsn %s passed %d committed messages not in the topic (e.g. %s)", flush, missing, suspects[0])
				}
			}
			c.polls.Add(1)
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *i4) stop() {
	c.cancel()
	<-c.done
}

func (c *i4) String() string {
	return fmt.Sprintf("I4 polls %d, violations %d", c.polls.Load(), c.violations.Load())
}
