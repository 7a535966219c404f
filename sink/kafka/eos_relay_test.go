package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// The relay is killed (its context ended: no drain, no final confirm; its sink closed, aborting the
// open Kafka transaction) while messages flow, and started again with a new sink: a read_committed
// consumer sees every committed message exactly once — no loss, no phantom, no order violation and no
// duplicate. With statusInterval=1h the slot is never confirmed before the kill: everything the first
// run committed to Kafka is streamed again and must be skipped through the position alone.
func TestExactlyOnceRelayKilledAndRestarted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		status    time.Duration
		killAfter int // messages seen by the consumer before the kill
	}{
		{"killed between Kafka commit and slot confirm", time.Hour, 300},
		{"killed mid-stream", 100 * time.Millisecond, 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t)
			e := newE2E(t, brokers, 4, nil)
			posTopic := e.topic + ".pos"
			kafkatest.CreateTopic(t, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
			newSink := func() *kafka.Sink {
				return newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, func(cfg *kafka.Config) {
					cfg.ExactlyOnce.Enable = true
					cfg.ExactlyOnce.PositionTopic = posTopic
					cfg.ExactlyOnce.TransactionTimeout = 20 * time.Second
				})
			}
			start := func(ctx context.Context, s outbox.Sink, status time.Duration) *outbox.Relay {
				r, err := outbox.Start(ctx, e.db.Pool, "app", nil, outbox.WithSlotName(e.slot), outbox.WithSink(outbox.EventBus, s),
					outbox.WithLogger(zaptest.NewLogger(t).Named("run")), outbox.WithStatusInterval(status),
					outbox.WithReadTimeout(max(30*time.Second, 2*status)),
					// Without confirms the initial snapshot would never complete, and the next start would
					// drop the slot and take it again (its rows are then delivered again, in any mode).
					outbox.WithInitialSnapshot(false),
					outbox.WithRetryBackoff(20*time.Millisecond, time.Second))
				if err != nil {
					t.Fatalf("outbox.Start: %v", err)
				}
				return r
			}
			s1 := newSink()
			ctx1, kill := context.WithCancel(context.Background())
			r1 := start(ctx1, s1, c.status)
			before := e.confirmed() // the slot's creation
			gen := e.generate(1500, 30, 100)
			w := topic.Watch(t, brokers, e.topic)
			deadline := time.Now().Add(60 * time.Second)
			for w.Count() < c.killAfter && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			kill()
			_ = r1.Wait()
			_ = s1.Close()
			if c.status == time.Hour && e.confirmed() != before {
				t.Fatalf("the slot moved from %s to %s although the relay never confirmed", before, e.confirmed())
			}
			t.Logf("killed with %d records in the topic (read_uncommitted), slot at %s", w.Count(), e.confirmed())

			s2 := newSink()
			r2 := start(context.Background(), s2, 100*time.Millisecond)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				_ = r2.Stop(ctx)
			})
			if err := gen.Wait(); err != nil {
				t.Fatal(err)
			}
			// The second run has taken everything when the slot passes the end of the WAL written so far
			// (it may wait as a standby until the killed run's walsender is gone).
			var endS string
			if err := e.db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&endS); err != nil {
				t.Fatal(err)
			}
			end, _ := pglogrepl.ParseLSN(endS)
			deadline = time.Now().Add(90 * time.Second)
			for time.Now().Before(deadline) {
				if lsn, err := pglogrepl.ParseLSN(e.confirmed()); err == nil && lsn >= end {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			v := e.l.Verify(t, 90*time.Second, false, topic.CommittedSource(t, brokers, e.topic)) // false: a duplicate fails
			t.Logf("second run skipped %d records already in Kafka", r2.Stats().Skipped)
			if v.Dups != 0 || v.Dead != 0 {
				t.Errorf("%d duplicates, %d dead letters; want 0 and 0", v.Dups, v.Dead)
			}
			if c.status == time.Hour && r2.Stats().Skipped == 0 {
				t.Error("the second run skipped nothing although the first committed records it never confirmed")
			}
		})
	}
}

// A graceful stop confirms everything: the relay waits for the sink to store its final watermark in a
// Kafka transaction, so the slot reaches the end of what was delivered and the next start has nothing
// to skip (other sinks of the relay get nothing twice either).
func TestExactlyOnceGracefulStopConfirmsAll(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t)
	e := newE2E(t, brokers, 3, nil)
	posTopic := e.topic + ".pos"
	kafkatest.CreateTopic(t, brokers, posTopic, 1, map[string]string{"cleanup.policy": "compact"})
	newSink := func() *kafka.Sink {
		return newRealSink(t, brokers, map[string]string{string(outbox.EventBus): e.topic}, func(cfg *kafka.Config) {
			cfg.ExactlyOnce.Enable = true
			cfg.ExactlyOnce.PositionTopic = posTopic
		})
	}
	// A long status interval: only the final confirm of Stop moves the slot past the messages.
	r1 := e.start(newSink(), outbox.WithStatusInterval(10*time.Second), outbox.WithInitialSnapshot(false))
	if err := e.generate(300, 20, 50).Wait(); err != nil {
		t.Fatal(err)
	}
	e.l.Verify(t, 60*time.Second, false, topic.CommittedSource(t, brokers, e.topic))
	before := e.confirmed()
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r1.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("slot confirmed at %s before Stop, %s after", before, e.confirmed())
	r2 := e.start(newSink(), outbox.WithInitialSnapshot(false))
	marker := e.generate(1, 1, 10)
	if err := marker.Wait(); err != nil {
		t.Fatal(err)
	}
	e.l.Verify(t, 60*time.Second, false, topic.CommittedSource(t, brokers, e.topic))
	if s := r2.Stats().Skipped; s != 0 {
		t.Errorf("the next start skipped %d records: the graceful stop left them unconfirmed", s)
	}
}
