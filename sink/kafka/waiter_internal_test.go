package kafka

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// call is a produce call as the tests drive it: records, their messages and a waiter.
type call struct {
	recs []outbox.Record
	msgs []*sarama.ProducerMessage
	w    *waiter
}

func newCall(ids ...string) *call {
	c := &call{w: newWaiter(len(ids))}
	for _, id := range ids {
		c.recs = append(c.recs, outbox.Record{Message: outbox.Message{ID: id}, CommitLSN: 7})
		c.msgs = append(c.msgs, &sarama.ProducerMessage{})
	}
	c.w.expect(len(ids))
	return c
}

func (c *call) done() bool {
	select {
	case <-c.w.done:
		return true
	default:
		return false
	}
}

func (c *call) slot(i int) *slot { return &c.w.slots[i] }

// Every result lands in its own record's slot, each counts once, and the call is done only after the
// last one, whatever the order and concurrency of the results.
func TestWaiterAttributesAndCountsEachResultOnce(t *testing.T) {
	t.Parallel()
	var o orphans
	for round := range 200 {
		const n = 64
		ids := make([]string, n)
		want := make([]error, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("r%d-%d", round, i)
			if i%3 == 0 {
				want[i] = fmt.Errorf("failure of record %d", i)
			}
		}
		c := newCall(ids...)
		order := rand.Perm(n)
		last := order[n-1]
		var wg sync.WaitGroup
		for g := range 4 { // like the Successes and Errors goroutines, and more
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := g; k < n-1; k += 4 {
					o.finish(c.slot(order[k]), want[order[k]])
				}
			}()
		}
		wg.Wait()
		if c.done() {
			t.Fatalf("round %d: done with one result still missing", round)
		}
		// A second result for a record that has one must neither count nor overwrite it.
		if c.slot(order[0]).complete(errors.New("second result")) {
			t.Fatal("a slot completed twice")
		}
		if c.done() {
			t.Fatalf("round %d: a repeated result counted", round)
		}
		o.finish(c.slot(last), want[last])
		if !c.done() {
			t.Fatalf("round %d: not done after every result", round)
		}
		for i := range n {
			if got := c.slot(i).err; got != want[i] {
				t.Fatalf("round %d: record %d got %v, want %v", round, i, got, want[i])
			}
		}
	}
	if o.count() != 0 {
		t.Fatalf("%d orphans without any abandoned call", o.count())
	}
}

// A call that gives up leaves its queued records as orphans; a later call with the same deliveries, in
// any order and mixed with new records, waits for those instead of producing them, and gets each
// one's own result.
func TestOrphanRejoinRoutesEachResult(t *testing.T) {
	t.Parallel()
	var o orphans
	a := newCall("r0", "r1", "r2", "r3")
	o.finish(a.slot(0), nil)          // r0 acked before a gave up
	o.abandon(a.w, a.recs, a.msgs, 3) // r3 was never fed
	if got := o.count(); got != 2 {
		t.Fatalf("orphans = %d, want r1 and r2", got)
	}

	b := newCall("r3", "r2", "new", "r1", "r0")
	if got := o.rejoin(b.w, b.recs, b.msgs); got != 2 {
		t.Fatalf("rejoined %d, want r2 and r1", got)
	}
	for i, want := range []bool{false, true, false, true, false} {
		if b.slot(i).joined != want {
			t.Fatalf("b slot %d joined = %v, want %v", i, b.slot(i).joined, want)
		}
	}
	// b produces r3, new and r0 itself (r0's first copy was acked: a replay is a new delivery).
	errR1 := errors.New("r1 failed")
	o.finish(b.slot(0), nil)
	o.finish(b.slot(2), nil)
	o.finish(b.slot(4), nil)
	o.finish(a.slot(2), nil) // r2's result reaches b through the orphan
	if b.done() {
		t.Fatal("b done before r1's result")
	}
	o.finish(a.slot(1), errR1)
	if !b.done() {
		t.Fatal("b not done after every result")
	}
	for i, want := range []error{nil, nil, nil, errR1, nil} {
		if got := b.slot(i).err; got != want {
			t.Fatalf("b record %d got %v, want %v", i, got, want)
		}
	}
	if a.slot(1).err != nil || a.slot(2).err != nil || a.done() {
		t.Fatal("a result reached the call that gave up")
	}
	if got := o.count(); got != 0 {
		t.Fatalf("%d orphans left after their results", got)
	}
	// Once its result is in, a delivery is no longer joined: a later call produces it.
	c := newCall("r1")
	if got := o.rejoin(c.w, c.recs, c.msgs); got != 0 {
		t.Fatalf("rejoined %d finished orphans", got)
	}
}

// A joining call that gives up too stops waiting, and the orphan stays for the next call.
func TestOrphanJoinerGivesUp(t *testing.T) {
	t.Parallel()
	var o orphans
	a := newCall("r0", "r1")
	o.abandon(a.w, a.recs, a.msgs, 2)
	b := newCall("r0", "r1")
	if got := o.rejoin(b.w, b.recs, b.msgs); got != 2 {
		t.Fatalf("b rejoined %d", got)
	}
	o.finish(a.slot(0), nil)          // b gets r0 …
	o.abandon(b.w, b.recs, b.msgs, 2) // … and gives up on r1
	if got := o.count(); got != 1 {
		t.Fatalf("orphans = %d, want r1 only", got)
	}
	c := newCall("r1", "r0")
	if got := o.rejoin(c.w, c.recs, c.msgs); got != 1 {
		t.Fatalf("c rejoined %d, want r1", got)
	}
	o.finish(c.slot(1), nil)
	errR1 := errors.New("r1 failed")
	o.finish(a.slot(1), errR1)
	if !c.done() || c.slot(0).err != errR1 || c.slot(1).err != nil {
		t.Fatalf("c done=%v errs %v %v, want r1's error on slot 0", c.done(), c.slot(0).err, c.slot(1).err)
	}
	if b.slot(1).state.Load() != slotAbandoned || b.slot(1).err != nil || b.w.pending.Load() != 1 {
		t.Fatal("the result reached the joiner that gave up")
	}
	if got := o.count(); got != 0 {
		t.Fatalf("%d orphans left", got)
	}
}

// A result racing with the call giving up is either taken by the call or handed to the orphan, never
// both and never lost: afterwards no orphan is left, and a joiner that came in between gets it.
func TestOrphanResultRacesAbandon(t *testing.T) {
	t.Parallel()
	var o orphans
	for i := range 2000 {
		id := fmt.Sprint("r", i)
		a := newCall(id)
		errR := fmt.Errorf("result %d", i)
		finished := make(chan struct{})
		go func() { o.finish(a.slot(0), errR); close(finished) }()
		o.abandon(a.w, a.recs, a.msgs, 1)
		b := newCall(id)
		joined := o.rejoin(b.w, b.recs, b.msgs) == 1
		<-finished
		switch st := a.slot(0).state.Load(); {
		case st == slotDone:
			if a.slot(0).err != errR || !a.done() || joined {
				t.Fatalf("round %d: result taken by a (err %v) but b joined=%v", i, a.slot(0).err, joined)
			}
		case st == slotAbandoned:
			if a.slot(0).err != nil || a.done() {
				t.Fatalf("round %d: abandoned slot got the result", i)
			}
			if joined && (!b.done() || b.slot(0).err != errR) {
				t.Fatalf("round %d: joiner did not get the result", i)
			}
		default:
			t.Fatalf("round %d: slot still pending", i)
		}
		if o.count() != 0 {
			t.Fatalf("round %d: %d orphans left after the result", i, o.count())
		}
	}
}
