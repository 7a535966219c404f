package flight_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// broker is a fake Publisher: publish decides each record's outcome, which a goroutine of its own
// delivers after a short random delay (nil: OK); a record whose outcome is Pending is never
// acknowledged.
type broker struct {
	t        *testing.T
	c        *flight.Call
	slots    flight.Slots
	publish  func(i int) flight.Kind
	inFlight atomic.Int32
	maxSeen  atomic.Int32
	mu       sync.Mutex
	waiting  map[int]bool
	order    []int // publish order
	overdue  []int
	wg       sync.WaitGroup
}

func newBroker(t *testing.T, slots int, publish func(i int) flight.Kind) *broker {
	return &broker{t: t, slots: flight.NewSlots(slots), publish: publish, waiting: map[int]bool{}}
}

func (b *broker) call(batch []outbox.Record, timeout time.Duration, resolve func(int) error) *flight.Call {
	if resolve == nil {
		resolve = func(int) error { return nil }
	}
	b.c = flight.New("fake", batch, b.slots, timeout, resolve)
	return b.c
}

func (b *broker) Publish(_ context.Context, i int) (bool, flight.Kind, error) {
	for j := range i { // every earlier record of the key has its outcome
		if b.c.Batch[j].Key != "" && b.c.Batch[j].Key == b.c.Batch[i].Key && !b.c.Done(j) {
			b.t.Errorf("record %d published while record %d of its key %q waits", i, j, b.c.Batch[i].Key)
		}
	}
	b.order = append(b.order, i)
	if n := b.inFlight.Add(1); n > b.maxSeen.Load() {
		b.maxSeen.Store(n)
	}
	k := flight.OK
	if b.publish != nil {
		k = b.publish(i)
	}
	b.mu.Lock()
	b.waiting[i] = true
	b.mu.Unlock()
	if k == flight.Pending {
		return true, 0, nil
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		if b.forget(i) {
			b.c.Deliver(flight.Result{Idx: i, Kind: k, Err: errorOf(k)})
		}
	}()
	return true, 0, nil
}

// forget ends record i's wait and reports whether it was waiting (its slot is then released).
func (b *broker) forget(i int) bool {
	b.mu.Lock()
	ok := b.waiting[i]
	delete(b.waiting, i)
	b.mu.Unlock()
	if ok {
		b.inFlight.Add(-1)
		b.slots.Release()
	}
	return ok
}

func (b *broker) Overdue(i int) (bool, flight.Kind, error) {
	b.overdue = append(b.overdue, i)
	return b.forget(i), flight.Unavailable, errors.New("overdue")
}

func (b *broker) Abandon(i int) { b.forget(i) }

func (b *broker) Proceeds(k flight.Kind) bool { return k == flight.OK || k == flight.Permanent }

func errorOf(k flight.Kind) error {
	if k == flight.OK {
		return nil
	}
	return fmt.Errorf("kind %d", k)
}

func records(keys ...string) []outbox.Record {
	out := make([]outbox.Record, len(keys))
	for i, k := range keys {
		out[i] = outbox.Record{Message: outbox.Message{ID: fmt.Sprint("m", i), Key: k}}
	}
	return out
}

// TestOrderPerKeyAndSlots: with many keys and few slots, no record goes before the earlier records of
// its key are done, no more than the slots are in flight, and every record ends OK.
func TestOrderPerKeyAndSlots(t *testing.T) {
	t.Parallel()
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", rand.IntN(50))
		if i%10 == 0 {
			keys[i] = "" // keyless
		}
	}
	b := newBroker(t, 16, nil)
	c := b.call(records(keys...), time.Minute, nil)
	if err := c.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.wg.Wait()
	for i, k := range c.Kinds {
		if k != flight.OK || c.Errs[i] != nil {
			t.Fatalf("record %d: kind %d, err %v; want OK", i, k, c.Errs[i])
		}
	}
	if len(b.order) != len(keys) {
		t.Fatalf("published %d records, want %d", len(b.order), len(keys))
	}
	if m := b.maxSeen.Load(); m > 16 {
		t.Fatalf("%d records in flight at once, over the 16 slots", m)
	}
}

// TestFailureHoldsTheRestOfItsKeyBack: after an unavailable record the later records of its key are
// not attempted; after a permanent one they go; other keys are unaffected.
func TestFailureHoldsTheRestOfItsKeyBack(t *testing.T) {
	t.Parallel()
	// 0 a (unavailable), 1 b (permanent), 2 a, 3 b, 4 c, 5 a
	b := newBroker(t, 8, func(i int) flight.Kind {
		switch i {
		case 0:
			return flight.Unavailable
		case 1:
			return flight.Permanent
		}
		return flight.OK
	})
	c := b.call(records("a", "b", "a", "b", "c", "a"), time.Minute, nil)
	if err := c.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.wg.Wait()
	want := []flight.Kind{flight.Unavailable, flight.Permanent, flight.NotAttempted, flight.OK, flight.OK, flight.NotAttempted}
	for i, k := range c.Kinds {
		if k != want[i] {
			t.Errorf("record %d: kind %d, want %d", i, k, want[i])
		}
	}
	if !errors.Is(c.Errs[2], outbox.ErrNotAttempted) || !errors.Is(c.Errs[5], outbox.ErrNotAttempted) {
		t.Errorf("held-back records' errors %v, %v; want ErrNotAttempted", c.Errs[2], c.Errs[5])
	}
}

// TestResolveFailsOutsideTheOrderOfItsKey: a record resolve refuses fails permanently with its error
// and never holds back its key.
func TestResolveFailsOutsideTheOrderOfItsKey(t *testing.T) {
	t.Parallel()
	bad := errors.New("no route")
	b := newBroker(t, 8, nil)
	c := b.call(records("a", "a", "a"), time.Minute, func(i int) error {
		if i == 1 {
			return bad
		}
		return nil
	})
	if !c.Done(1) || c.Done(0) {
		t.Fatalf("Done after New: %v %v; want record 1 done alone", c.Done(0), c.Done(1))
	}
	if err := c.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.wg.Wait()
	if c.Kinds[0] != flight.OK || c.Kinds[1] != flight.Permanent || c.Kinds[2] != flight.OK || c.Errs[1] != bad {
		t.Fatalf("kinds %v, record 1's error %v; want OK, Permanent (no route), OK", c.Kinds, c.Errs[1])
	}
	if len(b.order) != 2 {
		t.Fatalf("published %v; want records 0 and 2", b.order)
	}
}

// TestOverdue: a record never acknowledged is failed through Overdue after the timeout, and the rest
// of its key is held back; its slot comes back.
func TestOverdue(t *testing.T) {
	t.Parallel()
	b := newBroker(t, 4, func(i int) flight.Kind {
		if i == 0 {
			return flight.Pending
		}
		return flight.OK
	})
	c := b.call(records("a", "b", "a"), 50*time.Millisecond, nil)
	if err := c.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.wg.Wait()
	if c.Kinds[0] != flight.Unavailable || c.Kinds[1] != flight.OK || c.Kinds[2] != flight.NotAttempted {
		t.Fatalf("kinds %v; want Unavailable, OK, NotAttempted", c.Kinds)
	}
	if len(b.overdue) != 1 || b.overdue[0] != 0 {
		t.Fatalf("Overdue called for %v; want record 0 alone", b.overdue)
	}
	if n := len(b.slots); n != 0 {
		t.Fatalf("%d slots still held", n)
	}
}

// TestContextEndAbandons: when ctx ends, Run returns its error and releases the slots of the records
// still waiting.
func TestContextEndAbandons(t *testing.T) {
	t.Parallel()
	b := newBroker(t, 4, func(int) flight.Kind { return flight.Pending })
	c := b.call(records("a", "b"), time.Minute, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Run(ctx, b); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the context's error", err)
	}
	if n := len(b.slots); n != 0 {
		t.Fatalf("%d slots still held after Run returned", n)
	}
}

// TestPublishFailure: a record Publish cannot send ends with Publish's outcome at once.
func TestPublishFailure(t *testing.T) {
	t.Parallel()
	b := &failing{slots: flight.NewSlots(2)}
	b.c = flight.New("fake", records("a", "a"), b.slots, time.Minute, func(int) error { return nil })
	if err := b.c.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if b.c.Kinds[0] != flight.Unavailable || b.c.Kinds[1] != flight.NotAttempted || b.calls != 1 {
		t.Fatalf("kinds %v after %d Publish calls; want Unavailable, NotAttempted after 1", b.c.Kinds, b.calls)
	}
}

type failing struct {
	c     *flight.Call
	slots flight.Slots
	calls int
}

func (f *failing) Publish(context.Context, int) (bool, flight.Kind, error) {
	f.calls++
	f.slots.Release()
	return false, flight.Unavailable, errors.New("not connected")
}
func (f *failing) Overdue(int) (bool, flight.Kind, error) { return false, 0, nil }
func (f *failing) Abandon(int)                            {}
func (f *failing) Proceeds(k flight.Kind) bool            { return k == flight.OK }
