package kafka

import (
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// A waiter collects the producer's results for the records of one produce call: one counter and one
// channel per call, and per record a slot that rides in ProducerMessage.Metadata. The producer's result
// goroutines complete a slot with two atomic operations; no lock and no map is touched unless the
// call gave up waiting (its ctx ended) while records were still queued.
type waiter struct {
	pending atomic.Int64  // slots not yet completed; done is closed when it reaches 0
	done    chan struct{} // closed once every slot is completed
	slots   []slot
}

// slot states. A slot leaves slotPending exactly once, by compare-and-swap: to slotDone when its result
// arrives (or the orphan it joined finishes), or to slotAbandoned when its produce call returns first.
const (
	slotPending uint32 = iota
	slotDone
	slotAbandoned
)

// slot is one record of a waiter.
type slot struct {
	w     *waiter
	state atomic.Uint32
	err   error // the record's result; written before the slot's pending decrement, read after done
	// joined: this slot waits for a record an earlier, abandoned call left queued, instead of producing
	// it again. Set before the record is fed; read only by the call that owns the waiter.
	joined bool
	// orphan is the entry this slot joined or, once abandoned while queued, the entry that now stands
	// for it. Guarded by orphans.mu.
	orphan *orphan
}

func newWaiter(n int) *waiter {
	w := &waiter{done: make(chan struct{}), slots: make([]slot, n)}
	for i := range w.slots {
		w.slots[i].w = w
	}
	return w
}

// expect sets how many slots the call waits for; it must be called before any of them is fed or joined.
// With none, done is closed at once.
func (w *waiter) expect(n int) {
	if n == 0 {
		close(w.done)
		return
	}
	w.pending.Store(int64(n))
}

// complete records err for a pending slot and reports whether it did; the last one closes done.
func (sl *slot) complete(err error) bool {
	if !sl.state.CompareAndSwap(slotPending, slotDone) {
		return false
	}
	sl.err = err
	if sl.w.pending.Add(-1) == 0 {
		close(sl.w.done)
	}
	return true
}

// flightKey identifies one delivery of a record: the same message id committed again (a replay or a
// requeued dead letter) is another delivery.
type flightKey struct {
	id  string
	lsn uint64
}

func keyOf(r *outbox.Record) flightKey { return flightKey{id: r.ID, lsn: uint64(r.CommitLSN)} }

// orphan stands for a record still queued in the producer whose produce call stopped waiting for it.
// A later call with the same delivery waits for it (its slot joins) instead of producing a copy: a copy
// could be written after the original, a duplicate, and in an outage the original may sit queued behind
// the partition's earlier records while the copy overtakes them, a reorder.
type orphan struct {
	key     flightKey
	waiters []*slot // pending slots of later calls that joined
}

// orphans is the set of records queued by abandoned calls, by delivery; the zero value is empty. It
// stays empty while no call gives up, so the common path costs one uncontended lock per call.
type orphans struct {
	mu sync.Mutex
	m  map[flightKey]*orphan
}

// rejoin makes the slots of w whose records an abandoned call left queued wait for those records, and
// returns how many did. msgs[i] == nil means record i is not produced.
func (o *orphans) rejoin(w *waiter, recs []outbox.Record, msgs []*sarama.ProducerMessage) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.m) == 0 {
		return 0
	}
	n := 0
	for i, m := range msgs {
		if m == nil {
			continue
		}
		or, ok := o.m[keyOf(&recs[i])]
		if !ok {
			continue
		}
		sl := &w.slots[i]
		sl.joined = true
		sl.orphan = or
		or.waiters = append(or.waiters, sl)
		n++
	}
	return n
}

// abandon is called when w's produce call stops waiting: its records fed to the producer (indexes
// below fed, not joined) that have no result yet become orphans a later call can join, and its joined
// slots stop waiting.
func (o *orphans) abandon(w *waiter, recs []outbox.Record, msgs []*sarama.ProducerMessage, fed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, m := range msgs {
		if m == nil {
			continue
		}
		sl := &w.slots[i]
		if sl.joined {
			if sl.state.CompareAndSwap(slotPending, slotAbandoned) {
				sl.orphan.remove(sl)
			}
			continue
		}
		if i >= fed {
			continue // never queued
		}
		key := keyOf(&recs[i])
		or := &orphan{key: key}
		sl.orphan = or // before the swap: finish reads it once it sees slotAbandoned
		if !sl.state.CompareAndSwap(slotPending, slotAbandoned) {
			continue // its result arrived first
		}
		if o.m == nil {
			o.m = map[flightKey]*orphan{}
		}
		if _, ok := o.m[key]; !ok {
			o.m[key] = or
		}
	}
}

// finish routes the producer's result for the record of sl to whoever waits for it: sl's own call, or
// once that call gave up, the calls that joined the orphan standing for it.
func (o *orphans) finish(sl *slot, err error) {
	if sl.complete(err) {
		return
	}
	// Abandoned: abandon set sl.orphan and swapped the state while holding o.mu, so taking it here
	// orders this after that.
	o.mu.Lock()
	defer o.mu.Unlock()
	or := sl.orphan
	if o.m[or.key] == or {
		delete(o.m, or.key)
	}
	for _, j := range or.waiters {
		j.complete(err)
	}
	or.waiters = nil
}

func (or *orphan) remove(sl *slot) {
	for i, j := range or.waiters {
		if j == sl {
			last := len(or.waiters) - 1
			or.waiters[i] = or.waiters[last]
			or.waiters[last] = nil
			or.waiters = or.waiters[:last]
			return
		}
	}
}

// count returns how many orphans are queued. For tests.
func (o *orphans) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.m)
}
