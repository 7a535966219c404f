package outbox_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// positionSink is a hand-written outbox.PositionSink: Send delivers to the oracle, the other methods
// are the test's.
type positionSink struct {
	*harness
	resume      func(ctx context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error)
	confirmable func(w pglogrepl.LSN) pglogrepl.LSN
}

func (p *positionSink) Resume(ctx context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
	return p.resume(ctx, info)
}

func (p *positionSink) Confirmable(w pglogrepl.LSN) pglogrepl.LSN { return p.confirmable(w) }

type recKey struct {
	lsn pglogrepl.LSN
	seq int64
}

func confirmedFlush(t *testing.T, db *pgtest.DB, slot string) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// A relay with a PositionSink resumes it once, with the slot's confirmed position, before routing a
// record; confirms only what the sink's Confirmable allows; and on the next start skips the records the
// sink's predicate reports delivered, sending only the others.
func TestPositionSinkSkipsDeliveredAndGatesConfirm(t *testing.T) {
	t.Parallel()
	db := migrated(t)
	o := newOracle(db)
	slot := slotName()

	var resumes atomic.Int32
	var first outbox.ResumeInfo
	var allow atomic.Bool // whether Confirmable lets the relay confirm w
	ps1 := &positionSink{harness: o,
		resume: func(_ context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
			resumes.Add(1)
			first = info
			return nil, nil
		},
	}
	ps1.confirmable = func(w pglogrepl.LSN) pglogrepl.LSN {
		if allow.Load() {
			return w
		}
		return first.Confirmed
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1, err := outbox.Start(ctx1, db.Pool, "app", nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, ps1),
		outbox.WithStatusInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := confirmedFlush(t, db, slot)
	msgs := make([]outbox.Message, 50)
	for i := range msgs {
		msgs[i] = outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: string(rune('a' + i%5))}
	}
	o.commitBatch(t, msgs[:25])
	o.commitBatch(t, msgs[25:])
	o.waitDelivered(t, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // several status intervals
	if n := resumes.Load(); n != 1 {
		t.Errorf("Resume called %d times, want 1", n)
	}
	if first.Slot != slot || first.SystemID == "" || first.Timeline == 0 || first.Confirmed != start || first.Watermark == nil {
		t.Errorf("ResumeInfo = %+v, want slot %s, a system id, a timeline, confirmed %s and a watermark", first, slot, start)
	}
	if w := first.Watermark(); w <= start {
		t.Errorf("Watermark() = %s after every record was acked, want past %s", w, start)
	}
	if got := confirmedFlush(t, db, slot); got != start {
		t.Fatalf("slot confirmed %s although the sink allowed only %s", got, start)
	}
	cancel1() // hard stop: nothing more is confirmed
	_ = r1.Wait()

	// The second run: the sink stored the first 30 records as delivered.
	delivered := map[recKey]bool{}
	for _, r := range o.Records()[:30] {
		delivered[recKey{r.CommitLSN, r.Seq}] = true
	}
	o2 := &harness{Ledger: o.Ledger, Sink: o.Sink}
	ps2 := &positionSink{harness: o2,
		resume: func(_ context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
			if info.Confirmed != start {
				t.Errorf("second Resume: confirmed %s, want %s", info.Confirmed, start)
			}
			return func(r *outbox.Record) bool { return delivered[recKey{r.CommitLSN, r.Seq}] }, nil
		},
		confirmable: func(w pglogrepl.LSN) pglogrepl.LSN { return w },
	}
	before := len(o.Records())
	r2 := startRelay(t, db, nil, outbox.WithSlotName(slot), outbox.WithSink(outbox.EventBus, ps2))
	deadline := time.Now().Add(20 * time.Second)
	for len(o.Records()) < before+20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(o.Records()) - before; got != 20 {
		t.Errorf("second run delivered %d records, want the 20 the sink had not stored", got)
	}
	if s := r2.Stats(); s.Skipped != 30 {
		t.Errorf("Stats().Skipped = %d, want 30", s.Skipped)
	}
	for _, r := range o.Records()[before:] {
		if delivered[recKey{r.CommitLSN, r.Seq}] {
			t.Errorf("record %s (seq %d) delivered again although the sink reported it delivered", r.ID, r.Seq)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for confirmedFlush(t, db, slot) <= o.Records()[0].CommitLSN && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := confirmedFlush(t, db, slot); got <= o.Records()[len(o.Records())-1].CommitLSN {
		t.Errorf("slot confirmed %s, want past the last commit %s once the sink allows it", got, o.Records()[len(o.Records())-1].CommitLSN)
	}
}

// An unavailable sink is resumed again with backoff; any other Resume error stops the relay with it.
func TestPositionSinkResumeErrors(t *testing.T) {
	t.Parallel()
	t.Run("unavailable is retried", func(t *testing.T) {
		t.Parallel()
		db := migrated(t)
		o := newOracle(db)
		var calls atomic.Int32
		ps := &positionSink{harness: o,
			resume: func(context.Context, outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
				if calls.Add(1) <= 2 {
					return nil, outbox.Unavailable(errors.New("broker down"))
				}
				return nil, nil
			},
			confirmable: func(w pglogrepl.LSN) pglogrepl.LSN { return w },
		}
		startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, ps),
			outbox.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
		o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}})
		o.waitDelivered(t, 20*time.Second)
		if n := calls.Load(); n != 3 {
			t.Errorf("Resume called %d times, want 3 (two unavailable, one success)", n)
		}
		o.check(t, false)
	})
	t.Run("each sink is resumed once", func(t *testing.T) {
		t.Parallel()
		db := migrated(t)
		o := newOracle(db)
		var okCalls, flakyCalls atomic.Int32
		ok := &positionSink{harness: o,
			resume: func(context.Context, outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
				okCalls.Add(1)
				return nil, nil
			},
			confirmable: func(w pglogrepl.LSN) pglogrepl.LSN { return w },
		}
		flaky := &positionSink{harness: o,
			resume: func(context.Context, outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
				if flakyCalls.Add(1) == 1 {
					return nil, outbox.Unavailable(errors.New("broker down"))
				}
				return nil, nil
			},
			confirmable: func(w pglogrepl.LSN) pglogrepl.LSN { return w },
		}
		startRelay(t, db, nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, ok), outbox.WithSink(commandQueue, flaky),
			outbox.WithSink(mailman, ok), outbox.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond))
		o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}, {ID: newID(), Destination: commandQueue}})
		o.waitDelivered(t, 20*time.Second)
		if okCalls.Load() != 1 || flakyCalls.Load() != 2 {
			t.Errorf("Resume calls: %d of the sink given twice, %d of the flaky one; want 1 and 2", okCalls.Load(), flakyCalls.Load())
		}
	})
	t.Run("other errors stop the relay", func(t *testing.T) {
		t.Parallel()
		db := migrated(t)
		o := newOracle(db)
		boom := errors.New("position behind the slot")
		var once sync.Once
		ps := &positionSink{harness: o,
			resume: func(context.Context, outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
				return nil, boom
			},
			confirmable: func(w pglogrepl.LSN) pglogrepl.LSN { return w },
		}
		r, err := outbox.Start(context.Background(), db.Pool, "app", nil, outbox.WithSlotName(slotName()), outbox.WithSink(outbox.EventBus, ps))
		if err == nil {
			once.Do(func() { o.commitBatch(t, []outbox.Message{{ID: newID(), Destination: outbox.EventBus}}) })
			done := make(chan error, 1)
			go func() { done <- r.Wait() }()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				_ = r.Stop(context.Background())
				t.Fatal("relay still runs 20s after Resume failed")
			}
		}
		if !errors.Is(err, boom) {
			t.Fatalf("relay ended with %v, want the Resume error", err)
		}
		if o.Count() != 0 {
			t.Errorf("%d records delivered although Resume failed", o.Count())
		}
	})
}
