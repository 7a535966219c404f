package watermark

import (
	"sync"
	"sync/atomic"

	"github.com/jackc/pglogrepl"
)

// Tx states. A Tx moves open → committed|abandoned → flushed, never back.
const (
	stateOpen      uint32 = iota // rows may still be added
	stateCommitted               // sealed with its end LSN
	stateAbandoned               // sealed without an LSN (stream broke before Commit)
	stateFlushed                 // popped by Flushed: fully acked, gone from the queue
)

// Tracker computes the monotonic flush LSN from transactions received in
// order and acked in any order (see the package documentation).
//
// A Tracker is safe for concurrent use. The intended split is: Begin, Tx.Add,
// Commit, Abandon and Keepalive from the relay's decode goroutine (in stream
// order), Tx.Ack from any number of lane goroutines, Flushed, Pending and Idle
// from the status timer or anywhere else. Tx.Ack is lock-free; every other
// method takes a mutex held for O(1), or for the number of items popped (Flushed)
// or queued (Idle).
//
// At most one transaction is open at a time: Begin .. Commit (or Abandon)
// brackets one transaction of the stream, as pgoutput sends them outside
// streaming mode (a streamed transaction is begun when its Stream Commit
// arrives). The queue order, Begin order, is therefore commit order, which is
// what makes confirming an end LSN safe: every transaction that committed
// before it was received, and popped, before it.
//
// Guarantee: Flushed returns the LSN of the last item T such that T and every
// item received before it are sealed and fully acked (or a value it returned
// before, or the start position, whichever is largest). It never returns less
// than it returned before.
type Tracker struct {
	mu    sync.Mutex
	q     queue         // received items not yet popped, in received order
	open  *Tx           // the transaction begun and not yet sealed, if any
	flush pglogrepl.LSN // highest LSN confirmed so far; monotonic
	// compactAt is the queue length at which Flushed compacts the queue (see
	// compact); it never goes below minCompact.
	compactAt, minCompact int
}

// New returns a Tracker whose flush LSN starts at start, the position already
// confirmed to the server (the slot's confirmed_flush_lsn, or where streaming
// resumed).
func New(start pglogrepl.LSN) *Tracker {
	return &Tracker{flush: start, compactAt: 1024, minCompact: 1024}
}

// Tx is the handle for one received transaction, created by [Tracker.Begin].
//
// Add must be called (by the decode goroutine) for rows before they are routed
// to lanes, and never after the Tx is sealed by Commit or Abandon. Ack may be
// called concurrently from any goroutine, once per routed row or batched
// (Ack(n)); the total acked must never exceed the total added. Once the last
// row of a sealed Tx is acked the Tx must not be used again.
type Tx struct {
	pending atomic.Int64  // rows added minus rows acked
	state   atomic.Uint32 // stateOpen, ...; written under owner.mu
	end     pglogrepl.LSN // TransactionEndLSN; written by Commit under owner.mu
	owner   *Tracker
}

// Begin queues a new, open transaction after everything received so far and
// returns its handle. It panics if the previous transaction is still open
// (neither committed nor abandoned). It allocates one Tx (32 bytes). Txs are
// deliberately not pooled: a stray Ack on a flushed Tx then panics (its count
// goes negative) instead of silently corrupting the count of an unrelated,
// later transaction that reused it.
func (t *Tracker) Begin() *Tx {
	x := &Tx{owner: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open != nil {
		panic("watermark: Begin while a transaction is open")
	}
	t.open = x
	t.q.push(entry{tx: x})
	return x
}

// Add records n more rows routed for x. Call it before routing the rows, so a
// lane can never ack a row that was not counted. It is an atomic O(1)
// operation; it panics if n < 0 or x is already sealed.
func (x *Tx) Add(n int) {
	if n < 0 {
		panic("watermark: Add with a negative row count")
	}
	if x.state.Load() != stateOpen {
		panic("watermark: Add on a sealed transaction")
	}
	x.pending.Add(int64(n))
}

// Ack records n rows of x as acked: delivered durably, or dead-lettered. It is
// lock-free and O(1) (one atomic add), safe to call from many goroutines at
// once. It panics if n < 0 or if more rows are acked than were added.
func (x *Tx) Ack(n int) {
	if n < 0 {
		panic("watermark: Ack with a negative row count")
	}
	if x.pending.Add(-int64(n)) < 0 {
		panic("watermark: more rows acked than added")
	}
}

// Commit seals x: no more rows will be added, and once x and everything
// received before it are fully acked the flush LSN may advance to end, which
// must be the commit's TransactionEndLSN (not CommitLSN). It panics if x is
// not t's open transaction (another Tracker's, or already sealed).
func (t *Tracker) Commit(x *Tx, end pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seal(x, stateCommitted)
	x.end = end
}

// Abandon seals x without an LSN, for a transaction whose stream broke before
// its Commit arrived. Its routed rows must still all be acked before anything
// received after it counts, but x itself never advances the flush LSN (the
// transaction will be received again after reconnecting). It panics if x is
// not t's open transaction (another Tracker's, or already sealed).
func (t *Tracker) Abandon(x *Tx) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seal(x, stateAbandoned)
}

// seal moves t's open transaction x to state; t.mu is held.
func (t *Tracker) seal(x *Tx, state uint32) {
	switch {
	case x.owner != t:
		panic("watermark: transaction from another Tracker")
	case x != t.open:
		panic("watermark: transaction sealed twice")
	}
	t.open = nil
	x.state.Store(state)
}

// Keepalive queues the WAL end of a server keepalive as a zero-row, sealed
// item: it is confirmed only once everything received before it is acked.
// Consecutive keepalives (with nothing begun in between) coalesce into one
// item carrying the largest WAL end, so an idle stream does not grow the
// queue. A WAL end at or below the current flush LSN is ignored.
func (t *Tracker) Keepalive(walEnd pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if walEnd <= t.flush {
		return
	}
	if t.q.n > 0 {
		if b := t.q.back(); b.tx == nil {
			b.lsn = max(b.lsn, walEnd)
			return
		}
	}
	t.q.push(entry{lsn: walEnd})
}

// Flushed pops the completed prefix of the queue — sealed items whose rows
// are all acked — and returns the flush LSN: the largest LSN carried by any
// item popped so far, or the start position if larger. The result is
// monotonic. It takes the mutex for O(1 + items popped) and never allocates.
func (t *Tracker) Flushed() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.q.n > 0 {
		e := t.q.front()
		lsn := e.lsn
		if x := e.tx; x != nil {
			// The state is read first: Commit/Abandon hold t.mu, and every Add
			// of x happens before them, so a sealed x has its final row count
			// and pending == 0 really means fully acked.
			s := x.state.Load()
			if s == stateOpen || x.pending.Load() != 0 {
				break
			}
			lsn = 0
			if s == stateCommitted {
				lsn = x.end
			}
			x.state.Store(stateFlushed)
		}
		t.flush = max(t.flush, lsn)
		t.q.pop()
	}
	if t.q.n >= t.compactAt {
		t.compact()
	}
	return t.flush
}

// done reports whether the item e is sealed and fully acked, and the LSN it
// confirms once popped (zero for an abandoned transaction). See Flushed for why
// the state is read first.
func (e *entry) done() (bool, pglogrepl.LSN) {
	x := e.tx
	if x == nil {
		return true, e.lsn
	}
	s := x.state.Load()
	if s == stateOpen || x.pending.Load() != 0 {
		return false, 0
	}
	if s == stateCommitted {
		return true, x.end
	}
	return true, 0
}

// compact merges every run of sealed, fully acked items behind an unfinished
// one into a single zero-row item carrying the run's largest LSN, as if a
// keepalive: popping it later confirms exactly what popping the run would have.
// So the transactions acked behind a record that waits (a parked key, a slow
// sink) cost one queue entry per run, not one per transaction, and their Txs
// can be collected. t.mu is held; it runs when the queue reaches compactAt,
// which then doubles the remaining length, so its cost is amortized O(1) per
// item.
func (t *Tracker) compact() {
	w := 0
	for i := range t.q.n {
		e := *t.q.at(i)
		ok, lsn := e.done()
		if !ok {
			*t.q.at(w) = e
			w++
			continue
		}
		if e.tx != nil {
			e.tx.state.Store(stateFlushed)
		}
		if w > 0 {
			if prev := t.q.at(w - 1); prev.tx == nil {
				prev.lsn = max(prev.lsn, lsn)
				continue
			}
		}
		*t.q.at(w) = entry{lsn: lsn}
		w++
	}
	for i := w; i < t.q.n; i++ {
		*t.q.at(i) = entry{}
	}
	t.q.n = w
	t.compactAt = max(t.minCompact, 2*w)
}

// Pending returns the number of items still queued: transactions not yet
// popped by Flushed, plus runs of keepalives. It is meant for metrics and for
// draining (Pending() == 0 after Flushed means everything received is
// confirmed).
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.q.n
}

// Idle reports whether nothing received is unacked: every row added to every
// queued transaction has been acked. An open transaction whose routed rows
// are all acked counts as idle. It walks the queue under the mutex.
func (t *Tracker) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.q.n {
		if x := t.q.at(i).tx; x != nil && x.pending.Load() != 0 {
			return false
		}
	}
	return true
}
