package watermark

import (
	"flag"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

var seedFlag = flag.Uint64("watermark.seed", 0, "seed for the property tests (0: time-based, logged)")

// testSeed returns the seed to use, logged so a failure can be replayed with
// -watermark.seed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -watermark.seed=%d)", seed, seed)
	return seed
}

// mItem is one received item in the naive model: a transaction or a single
// keepalive. The model never pops and never coalesces.
type mItem struct {
	x         *Tx // nil: keepalive
	lsn       pglogrepl.LSN
	sealed    bool
	abandoned bool
	added     int
	acked     int
}

// modelFlush is the reference flush LSN: the largest LSN over the longest
// prefix of sealed, fully acked items, and never below start.
func modelFlush(start pglogrepl.LSN, items []*mItem) pglogrepl.LSN {
	f := start
	for _, it := range items {
		if it.x != nil && (!it.sealed || it.acked != it.added) {
			break
		}
		if !it.abandoned {
			f = max(f, it.lsn)
		}
	}
	return f
}

// pendingAck is one row routed and not yet acked.
type pendingAck struct{ it *mItem }

// TestProperty drives a Tracker with random sequences of transactions
// (0..20 rows, added in chunks), keepalives (some stale) and abandons. Acks
// are released in random batches, in random order, from several goroutines at
// once while a status goroutine polls Flushed. After every step Flushed must
// equal the naive model, and must stay below the end LSN of every committed
// transaction not fully acked (I4); while acks are in flight every value
// observed must be monotonic and within [model before, model after].
func TestProperty(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	rounds, steps := 100, 300
	if testing.Short() {
		rounds = 20
	}
	for r := range rounds {
		rng := rand.New(rand.NewPCG(seed, uint64(r)))
		if !propertyRound(t, rng, steps) {
			t.Fatalf("round %d failed (seed %d)", r, seed)
		}
	}
}

func propertyRound(t *testing.T, rng *rand.Rand, steps int) bool {
	t.Helper()
	start := pglogrepl.LSN(rng.IntN(1000))
	tr := New(start)
	if rng.IntN(2) == 0 { // compact the queue often (compact must not change what Flushed returns)
		tr.minCompact = 1 + rng.IntN(6)
		tr.compactAt = tr.minCompact
	}
	clock := start // last LSN the "server" has sent; commits go above it
	var (
		items   []*mItem
		open    *mItem
		unacked []pendingAck
		last    = start // last value returned by Flushed
	)
	check := func(step int, what string) bool {
		t.Helper()
		want := modelFlush(start, items)
		got := tr.Flushed()
		ok := true
		if got != want {
			t.Errorf("step %d (%s): Flushed() = %v, model %v", step, what, got, want)
			ok = false
		}
		if got < last {
			t.Errorf("step %d (%s): Flushed() regressed %v -> %v", step, what, last, got)
			ok = false
		}
		last = got
		for _, it := range items {
			if it.x != nil && it.sealed && !it.abandoned && it.acked != it.added && got >= it.lsn {
				t.Errorf("step %d (%s): I4: Flushed() = %v at or above end %v of a transaction with %d/%d rows acked",
					step, what, got, it.lsn, it.acked, it.added)
				ok = false
			}
		}
		idle := true
		for _, it := range items {
			if it.acked != it.added {
				idle = false
			}
		}
		if tr.Idle() != idle {
			t.Errorf("step %d (%s): Idle() = %v, model %v", step, what, !idle, idle)
			ok = false
		}
		return ok
	}
	for step := range steps {
		var what string
		switch k := rng.IntN(100); {
		case k < 15 && open == nil:
			what = "begin"
			open = &mItem{x: tr.Begin()}
			items = append(items, open)
			fallthrough
		case k < 35 && open != nil && open.added < 20:
			what += "+add"
			n := rng.IntN(20 - open.added + 1)
			if rng.IntN(4) == 0 {
				n = 0
			}
			open.x.Add(n)
			open.added += n
			for range n {
				unacked = append(unacked, pendingAck{open})
			}
		case k < 50 && open != nil:
			what = "commit"
			clock += pglogrepl.LSN(1 + rng.IntN(100))
			tr.Commit(open.x, clock)
			open.lsn, open.sealed = clock, true
			open = nil
		case k < 55 && open != nil:
			what = "abandon"
			tr.Abandon(open.x)
			open.sealed, open.abandoned = true, true
			open = nil
		case k < 65:
			what = "keepalive"
			walEnd := clock + pglogrepl.LSN(rng.IntN(50))
			if rng.IntN(4) == 0 {
				walEnd = pglogrepl.LSN(rng.Uint64N(uint64(clock) + 1)) // stale
			}
			clock = max(clock, walEnd)
			tr.Keepalive(walEnd)
			items = append(items, &mItem{lsn: walEnd, sealed: true})
		default:
			what = "ack"
			if len(unacked) == 0 {
				break
			}
			rng.Shuffle(len(unacked), func(i, j int) { unacked[i], unacked[j] = unacked[j], unacked[i] })
			n := 1 + rng.IntN(len(unacked))
			batch := unacked[:n]
			unacked = append([]pendingAck(nil), unacked[n:]...)
			before := modelFlush(start, items)
			for _, a := range batch {
				a.it.acked++
			}
			after := modelFlush(start, items)
			if !ackConcurrently(t, rng, tr, batch, before, after) {
				return false
			}
		}
		if !check(step, what) {
			return false
		}
	}
	// Drain: seal the open transaction, ack everything; the queue empties.
	if open != nil {
		tr.Abandon(open.x)
		open.sealed, open.abandoned = true, true
	}
	for _, a := range unacked {
		a.it.x.Ack(1)
		a.it.acked++
	}
	if !check(steps, "drain") {
		return false
	}
	if n := tr.Pending(); n != 0 {
		t.Errorf("drain: Pending() = %d, want 0", n)
		return false
	}
	return true
}

// ackConcurrently acks batch from several goroutines, each acking its share
// one row at a time or in runs, while another goroutine polls Flushed as the
// status timer would. Every value it sees must be monotonic and within
// [before, after].
func ackConcurrently(t *testing.T, rng *rand.Rand, tr *Tracker, batch []pendingAck, before, after pglogrepl.LSN) bool {
	t.Helper()
	lanes := 1 + rng.IntN(4)
	shares := make([][]pendingAck, lanes)
	for _, a := range batch {
		l := rng.IntN(lanes)
		shares[l] = append(shares[l], a)
	}
	var (
		wg   sync.WaitGroup
		done atomic.Bool
		bad  atomic.Value // string
	)
	poller := make(chan struct{})
	go func() {
		defer close(poller)
		prev := before
		for !done.Load() {
			got := tr.Flushed()
			if got < prev || got < before || got > after {
				bad.Store("Flushed() = " + got.String() + " during acks, previous " + prev.String() +
					", want within [" + before.String() + ", " + after.String() + "]")
				return
			}
			prev = got
		}
	}()
	for _, share := range shares {
		wg.Go(func() {
			for i := 0; i < len(share); {
				// Batch consecutive rows of one transaction into one Ack(n).
				j := i + 1
				for j < len(share) && share[j].it == share[i].it && j-i < 3 {
					j++
				}
				share[i].it.x.Ack(j - i)
				i = j
			}
		})
	}
	wg.Wait()
	done.Store(true)
	<-poller
	if msg, _ := bad.Load().(string); msg != "" {
		t.Error(msg)
		return false
	}
	return true
}

// TestPipeline runs the tracker as the relay does: a decode goroutine begins,
// adds, routes rows to lanes, commits or abandons, and sends keepalives; lanes
// ack rows (in their own order, with random delays); a status goroutine polls
// Flushed. Whenever it observes LSN F, every item received before the one
// carrying F — every transaction sealed at a position <= F — must be fully
// acked (I4).
func TestPipeline(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	txs := 10000
	if testing.Short() {
		txs = 2000
	}
	const lanes = 8

	type row struct {
		x     *Tx
		acked *atomic.Int64 // test-side count, incremented before Tx.Ack
	}
	type sealed struct {
		pos   pglogrepl.LSN // end LSN, or the would-be position of an abandoned tx
		rows  int64
		acked *atomic.Int64
	}
	var (
		mu      sync.Mutex
		history []sealed // in seal order, positions increasing
	)
	laneCh := make([]chan row, lanes)
	for i := range laneCh {
		laneCh[i] = make(chan row, 64)
	}
	tr := New(0)
	var wg sync.WaitGroup
	for l := range lanes {
		rng := rand.New(rand.NewPCG(seed, uint64(1000+l)))
		wg.Go(func() {
			var held []row // ack out of arrival order
			for r := range laneCh[l] {
				held = append(held, r)
				for len(held) > 0 && rng.IntN(3) > 0 {
					i := rng.IntN(len(held))
					h := held[i]
					held[i] = held[len(held)-1]
					held = held[:len(held)-1]
					h.acked.Add(1)
					h.x.Ack(1)
				}
			}
			for _, h := range held {
				h.acked.Add(1)
				h.x.Ack(1)
			}
		})
	}
	decodeDone := make(chan struct{})
	statusErr := make(chan string, 1)
	statusDone := make(chan struct{})
	go func() { // status timer
		defer close(statusDone)
		var (
			prev    pglogrepl.LSN
			checked int
		)
		for {
			select {
			case <-decodeDone:
				return
			default:
			}
			f := tr.Flushed()
			if f < prev {
				statusErr <- "Flushed regressed " + prev.String() + " -> " + f.String()
				return
			}
			prev = f
			mu.Lock()
			h := history
			mu.Unlock()
			// Items before checked were verified against an earlier,
			// lower-or-equal F and stay fully acked.
			for ; checked < len(h) && h[checked].pos <= f; checked++ {
				if s := h[checked]; s.acked.Load() != s.rows {
					statusErr <- "I4: Flushed() = " + f.String() + " but the transaction at " + s.pos.String() + " is not fully acked"
					return
				}
			}
			_ = tr.Pending()
			_ = tr.Idle()
		}
	}()
	// Decode goroutine (this one).
	rng := rand.New(rand.NewPCG(seed, 1))
	var clock pglogrepl.LSN
	for range txs {
		x := tr.Begin()
		acked := new(atomic.Int64)
		// The server decodes a transaction at its commit record, so a
		// keepalive sent while its rows stream may carry a WAL end at or
		// beyond the transaction's end LSN.
		end := clock + 1 + pglogrepl.LSN(rng.IntN(10))
		n := rng.IntN(21)
		for i := 0; i < n; {
			k := min(n-i, 1+rng.IntN(4))
			x.Add(k)
			for range k {
				laneCh[rng.IntN(lanes)] <- row{x, acked}
			}
			i += k
			if rng.IntN(20) == 0 {
				walEnd := end + pglogrepl.LSN(rng.IntN(5))
				clock = max(clock, walEnd)
				tr.Keepalive(walEnd) // mid-transaction keepalive
			}
		}
		clock = max(clock, end)
		mu.Lock()
		history = append(history, sealed{pos: end, rows: int64(n), acked: acked})
		mu.Unlock()
		if rng.IntN(50) == 0 {
			tr.Abandon(x)
		} else {
			tr.Commit(x, end)
		}
		if rng.IntN(10) == 0 {
			clock += pglogrepl.LSN(rng.IntN(10))
			tr.Keepalive(clock)
		}
	}
	final := clock + 1
	tr.Keepalive(final)
	for _, ch := range laneCh {
		close(ch)
	}
	wg.Wait()
	close(decodeDone)
	<-statusDone
	select {
	case msg := <-statusErr:
		t.Fatal(msg)
	default:
	}
	if got := tr.Flushed(); got != final {
		t.Errorf("after drain Flushed() = %v, want %v", got, final)
	}
	if n := tr.Pending(); n != 0 || !tr.Idle() {
		t.Errorf("after drain Pending() = %d, Idle() = %v; want 0, true", n, tr.Idle())
	}
}
