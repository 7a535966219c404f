package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// snapshotState reads the relay record of slot: snapshot pending, created_lsn.
func snapshotState(t *testing.T, db *pgtest.DB, slot string) (pending bool, created string) {
	t.Helper()
	if err := db.Pool.QueryRow(context.Background(), `SELECT snapshot_pending, created_lsn::text FROM app.pkg_outbox_relay
		WHERE slot_name = $1`, slot).Scan(&pending, &created); err != nil {
		t.Fatalf("relay record of %s: %v", slot, err)
	}
	return pending, created
}

func waitSnapshotDone(t *testing.T, db *pgtest.DB, slot string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pending, _ := snapshotState(t, db, slot); !pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("snapshot_pending still true 20s after every message was delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayInitialSnapshot: messages committed before the relay's first start (before its slot
// existed) are delivered, together with those committed while the slot is created and after, each
// exactly once and in order per key (I1–I5; I4 with the pending snapshot covering the older rows).
func TestRelayInitialSnapshot(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, streaming bool) {
		db := relayDB(t, streaming)
		o := newOracle(db)
		slot := slotName()
		if err := o.gen(2, 10, 300, 10); err != nil { // all before the slot exists
			t.Fatal(err)
		}
		before := o.Counts().Committed
		i4 := o.watchI4(t, slot)
		genErr := make(chan error, 1)
		go func() { genErr <- o.gen(2, 10, 300, 10) }() // around the slot's creation and after
		startRelay(t, db, nil, withStreaming(t, streaming, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o),
			outbox.WithSink(commandQueue, o), outbox.WithSink(mailman, o))...)
		if err := <-genErr; err != nil {
			t.Fatal(err)
		}
		o.waitDelivered(t, 60*time.Second)
		waitSnapshotDone(t, db, slot)
		time.Sleep(300 * time.Millisecond) // more I4 polls after the snapshot completed
		i4.Stop()
		if i4.Polls() == 0 {
			t.Error("I4 watcher never saw the slot")
		}
		t.Logf("%d messages committed before the first start, %d in all", before, o.Counts().Committed)
		o.check(t, false)
	})
}

// TestRelayInitialSnapshotTakenAgain: a relay stopped before every snapshot row was acked leaves the
// snapshot pending (the slot confirms nothing past its creation); the next start drops the slot,
// takes a new snapshot and delivers everything: duplicates, never a loss.
func TestRelayInitialSnapshotTakenAgain(t *testing.T) {
	t.Parallel()
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			t.Parallel()
			db := migrated(t)
			o := newOracle(db)
			slot := slotName()
			msgs := make([]outbox.Message, 300)
			for i := range msgs {
				msgs[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("k%d", i%7), Payload: []byte("before")}
			}
			o.commitBatch(t, msgs)

			// Run 1 acks 100 messages, then its destination is down.
			var acked atomic.Int64
			flaky := sinkFunc(func(ctx context.Context, batch []outbox.Record) error {
				var ok []outbox.Record
				for _, r := range batch {
					if acked.Load() >= 100 {
						break
					}
					acked.Add(1)
					ok = append(ok, r)
				}
				_ = o.Send(ctx, ok)
				if len(ok) < len(batch) {
					return &outbox.BatchError{Errs: batchErrs(len(batch), len(ok), outbox.Unavailable(errors.New("broker down")))}
				}
				return nil
			})
			ctx1, cancel1 := context.WithCancel(context.Background())
			r1, err := outbox.Start(ctx1, db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, flaky),
				outbox.WithStatusInterval(50*time.Millisecond), outbox.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			after := []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: "k1", Payload: []byte("after")}}
			o.commitBatch(t, after) // streamed, behind the snapshot
			for deadline := time.Now().Add(30 * time.Second); acked.Load() < 100; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("run 1 acked %d messages in 30s, want 100", acked.Load())
				}
			}
			time.Sleep(200 * time.Millisecond) // several status intervals: nothing may be confirmed past the creation
			pending, created1 := snapshotState(t, db, slot)
			if !pending {
				t.Fatal("snapshot_pending is false while 200 of its rows are unacked")
			}
			if got := db.QueryInt(t, `SELECT (confirmed_flush_lsn = $2::pg_lsn)::int FROM pg_replication_slots WHERE slot_name = $1`, slot, created1); got != 1 {
				t.Fatal("the slot confirmed past its creation while its snapshot was pending")
			}
			// Records failed one by one with ErrUnavailable inside a BatchError block the destination
			// like a whole-batch ErrUnavailable: no attempt counted, nothing dead-lettered.
			if _, ok := r1.Blocked()[outbox.EventBus]; !ok {
				t.Errorf("Blocked() = %v, want %s blocked by the per-record ErrUnavailable", r1.Blocked(), outbox.EventBus)
			}
			if n := db.QueryInt(t, `SELECT count(*) FROM app.pkg_outbox_dead_letter`); n != 0 {
				t.Errorf("%d records dead-lettered while their sink reported ErrUnavailable", n)
			}
			if graceful {
				sctx, c := context.WithTimeout(context.Background(), time.Second)
				_ = r1.Stop(sctx) // the drain times out: the destination is down
				c()
			} else {
				cancel1()
				_ = r1.Wait()
			}
			cancel1()

			startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o))
			o.waitDelivered(t, 30*time.Second)
			waitSnapshotDone(t, db, slot)
			if _, created2 := snapshotState(t, db, slot); created2 == created1 {
				t.Errorf("slot still created at %s: the incomplete snapshot was not taken again", created1)
			}
			if dups := o.check(t, true); dups < 100 {
				t.Errorf("%d duplicates, want at least the 100 acked by run 1 (the snapshot is taken again whole)", dups)
			}
		})
	}
}

func batchErrs(n, ok int, err error) []error {
	errs := make([]error, n)
	for i := ok; i < n; i++ {
		errs[i] = err
	}
	return errs
}

// TestRelayInitialSnapshotOff: WithInitialSnapshot(false) streams only what commits after the slot's creation.
func TestRelayInitialSnapshotOff(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	old := outbox.Message{ID: newID(), Destination: outbox.EventBus}
	if err := outbox.Enqueue(context.Background(), "app", db.Pool, old); err != nil {
		t.Fatal(err)
	}
	slot := slotName()
	startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, o), outbox.WithInitialSnapshot(false))
	o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}})
	o.waitDelivered(t, 20*time.Second)
	if o.Has(old.ID) {
		t.Error("with the initial snapshot off, a message committed before the slot existed was delivered")
	}
	if pending, _ := snapshotState(t, db, slot); pending {
		t.Error("snapshot_pending set with the initial snapshot off")
	}
	o.check(t, false)
}

// TestRelayInitialSnapshotTwoInstances: two relays start at once on a new slot: one creates it and
// takes the snapshot, the other stands by; every message arrives exactly once.
func TestRelayInitialSnapshotTwoInstances(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	if err := o.gen(2, 5, 200, -1); err != nil {
		t.Fatal(err)
	}
	slot := slotName()
	var wg sync.WaitGroup
	relays := make([]*outbox.Relay, 2)
	for i := range relays {
		wg.Go(func() {
			relays[i] = startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithInstanceID(fmt.Sprintf("twin-%d", i)),
				outbox.WithSink(outbox.EventBus, o), outbox.WithSink(commandQueue, o), outbox.WithSink(mailman, o))
		})
	}
	wg.Wait()
	o.waitDelivered(t, 30*time.Second)
	waitSnapshotDone(t, db, slot)
	states := string(relays[0].State()) + "," + string(relays[1].State())
	if states != "streaming,standby" && states != "standby,streaming" {
		t.Errorf("states %s, want one streaming and one standby", states)
	}
	o.check(t, false)
}
