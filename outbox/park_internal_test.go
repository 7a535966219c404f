package outbox

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox/internal/watermark"
)

// chaos decides the outcome of every attempt at random, the way a conforming sink would report it:
// after a record of a key fails in a call, the later records of that key in the call are not tried.
// It keeps one event log (deliveries and dead letters in the order they happened) to judge by.
type chaos struct {
	mu       sync.Mutex
	rnd      *rand.Rand
	poison   string // a key whose records always fail
	events   []event
	attempts map[string]int // real attempts per record id (not counting held back / unavailable)
}

type event struct {
	id   string
	key  string
	seq  int64
	dead bool
	// permanent: dead-lettered for a permanent failure, which no wait can fix; such a record leaves
	// its key's order (later records of the key in the same call may be delivered before it is written)
	permanent bool
}

var errFlaky = errors.New("flaky")

// outcome picks the result of one attempt of rec; held says an earlier record of its key failed in
// this call.
func (c *chaos) outcome(rec *Record, held bool) error {
	if held {
		return NotAttempted(errors.New("behind a failed record of its key"))
	}
	var err error
	switch p := c.rnd.IntN(100); {
	case rec.Key == c.poison && rec.Key != "":
		err = errFlaky
	case p < 70:
	case p < 84:
		err = errFlaky
	case p < 88:
		err = Permanent(errors.New("rejected"))
	case p < 92:
		return NotAttempted(errors.New("skipped"))
	case p < 95:
		return Unavailable(errors.New("down for this record"))
	default:
		err = RetryAfter(errFlaky, time.Millisecond)
	}
	c.attempts[rec.ID]++
	if err == nil {
		c.events = append(c.events, event{id: rec.ID, key: rec.Key, seq: rec.Seq})
	}
	return err
}

func (c *chaos) Send(_ context.Context, batch []Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch p := c.rnd.IntN(100); {
	case p < 3:
		return Unavailable(errors.New("broker down"))
	case p < 5:
		for i := range batch { // every record tried, every one failed
			c.attempts[batch[i].ID]++
		}
		return errors.New("whole call failed")
	}
	errs := make([]error, len(batch))
	failedKeys := map[string]bool{}
	failed := false
	for i := range batch {
		rec := &batch[i]
		errs[i] = c.outcome(rec, rec.Key != "" && failedKeys[rec.Key])
		if errs[i] != nil {
			failed = true
			if !IsPermanent(errs[i]) {
				failedKeys[rec.Key] = true
			}
		}
	}
	if failed {
		return &BatchError{Errs: errs}
	}
	return nil
}

func (c *chaos) handle(_ context.Context, m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := Record{Message: m}
	rec.Seq = seqOf(m)
	return c.outcome(&rec, false)
}

func seqOf(m Message) int64 {
	var s int64
	fmt.Sscanf(string(m.Payload), "%d", &s)
	return s
}

// newLaneTestRelay returns a relay with lanes, gate and watermark but no database or stream; dead
// letters go to the chaos log.
func newLaneTestRelay(cfg relayConfig, c *chaos, sinks map[Destination]Sink, handlers map[Destination]Handler) *Relay {
	cfg.sinks = sinks
	r := &Relay{cfg: cfg, handlers: handlers, log: zap.NewNop(), tracker: watermark.New(0), seed: maphash.MakeSeed(),
		gate: gate{max: cfg.maxInFlight}, blocked: map[Destination]string{}}
	r.writeDeadLetter = func(_ context.Context, it *item) bool {
		c.mu.Lock()
		c.events = append(c.events, event{id: it.rec.ID, key: it.rec.Key, seq: it.rec.Seq, dead: true, permanent: IsPermanent(it.lastErr)})
		c.mu.Unlock()
		r.deadLettered.Add(1)
		it.tx.Ack(1)
		return true
	}
	for range cfg.lanes {
		r.lanes = append(r.lanes, newLane(r))
	}
	r.batch = newBatcher(r)
	return r
}

// TestParkingProperties: random interleavings of successes, retryable, permanent, held-back and
// systemic failures over many keys, through sinks and handlers, with tight parking bounds. Every
// record ends delivered exactly once or dead-lettered (nothing lost); a record of a key is delivered
// or dead-lettered only after every earlier record of that key was (order per key, the poison key
// included); attempts held back or refused as unavailable are not counted; every key is released and
// the gate and the parking are empty at the end.
func TestParkingProperties(t *testing.T) {
	t.Parallel()
	for seed := range uint64(24) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			runParkingProperty(t, seed)
		})
	}
}

func runParkingProperty(t *testing.T, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 42))
	c := &chaos{rnd: rand.New(rand.NewPCG(seed, 7)), poison: "k3", attempts: map[string]int{}}
	cfg := defaultRelayConfig()
	cfg.lanes = 1 + int(seed%3)
	cfg.batchSize = 1 + rnd.IntN(12)
	cfg.maxAttempts = 3
	cfg.backoffMin, cfg.backoffMax = 200*time.Microsecond, 2*time.Millisecond
	cfg.maxInFlight = 40 + rnd.IntN(100)
	cfg.maxParkedPerKey = 1 + rnd.IntN(6)
	cfg.maxParked = 5 + rnd.IntN(30)
	r := newLaneTestRelay(cfg, c, map[Destination]Sink{"sink": c}, map[Destination]Handler{"handler": c.handle})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range r.lanes {
		wg.Go(func() { l.run(ctx) })
	}
	const txs = 600
	var last pglogrepl.LSN
	seq := int64(1)
	for range txs {
		x := r.tracker.Begin()
		for range 1 + rnd.IntN(4) {
			key := fmt.Sprintf("k%d", rnd.IntN(25))
			if rnd.IntN(20) == 0 {
				key = "" // keyless: no order to keep
			}
			dest := Destination("sink")
			if rnd.IntN(3) == 0 {
				dest = "handler"
			}
			it := &item{tx: x, rec: Record{Message: Message{ID: fmt.Sprint("m", seq), Destination: dest, Key: key,
				Payload: fmt.Append(nil, seq)}, Seq: seq}}
			x.Add(1)
			if err := r.batch.add(ctx, it); err != nil {
				t.Fatal(err)
			}
			seq++
		}
		if err := r.batch.flush(ctx); err != nil {
			t.Fatal(err)
		}
		last = pglogrepl.LSN(seq)
		r.tracker.Commit(x, last)
	}
	for r.tracker.Flushed() < last {
		if ctx.Err() != nil {
			t.Fatalf("stalled: flushed %s of %s, %d in flight, parked %+v", r.tracker.Flushed(), last, r.gate.inFlight(), r.Stats().Parked)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	checkParkingRun(t, r, c, int(seq-1))
}

func checkParkingRun(t *testing.T, r *Relay, c *chaos, n int) {
	t.Helper()
	done := map[string]bool{}
	lastSeq := map[string]int64{}
	for _, e := range c.events {
		if done[e.id] {
			t.Fatalf("%s delivered or dead-lettered twice", e.id)
		}
		done[e.id] = true
		if e.key != "" && !e.permanent {
			if e.seq < lastSeq[e.key] {
				t.Fatalf("key %s: seq %d (dead %v) after seq %d: out of order", e.key, e.seq, e.dead, lastSeq[e.key])
			}
			lastSeq[e.key] = e.seq
		}
	}
	if len(done) != n {
		t.Fatalf("%d of %d records delivered or dead-lettered: lost some", len(done), n)
	}
	var dead int
	for _, e := range c.events {
		if !e.dead {
			continue
		}
		dead++
		if a := c.attempts[e.id]; !e.permanent && a != r.cfg.maxAttempts {
			t.Errorf("%s dead-lettered after %d real attempts, want MaxAttempts %d (held-back or unavailable attempts counted?)", e.id, a, r.cfg.maxAttempts)
		}
	}
	if dead == 0 || dead == n {
		t.Fatalf("%d dead letters of %d: the run did not exercise both outcomes", dead, n)
	}
	if got := r.deadLettered.Load(); got != int64(dead) {
		t.Errorf("relay counted %d dead letters, the log has %d", got, dead)
	}
	for id, a := range c.attempts {
		if a > r.cfg.maxAttempts {
			t.Errorf("%s tried %d times, more than MaxAttempts %d (held-back or unavailable attempts counted?)", id, a, r.cfg.maxAttempts)
		}
	}
	st := r.Stats().Parked
	if st.Keys != 0 || st.Records != 0 || r.parkedRecords.Load() != 0 || r.gate.inFlight() != 0 {
		t.Errorf("after the run: parked %+v (total %d), %d in flight; want all released", st, r.parkedRecords.Load(), r.gate.inFlight())
	}
}

// TestCommitLogStaysSmall: while the confirmed position waits (a parked key), the commit log keeps
// one entry per commitLogGrain, and the time it gives for a position is never later than the commit
// time of the transaction confirmed there.
func TestCommitLogStaysSmall(t *testing.T) {
	t.Parallel()
	var c commitLog
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const n = 60_000 // one commit every 100 µs for 6 s
	commitAt := func(i int) time.Time { return t0.Add(time.Duration(i) * 100 * time.Microsecond) }
	for i := range n {
		c.add(pglogrepl.LSN(100+i), commitAt(i))
	}
	if got, max := len(c.entries), n/100+1; got > max {
		t.Fatalf("%d entries for %d commits over 6 s, want at most %d", got, n, max)
	}
	for _, i := range []int{0, 57, 99, 100, 101, 12_345, n - 1} {
		got := c.timeAt(pglogrepl.LSN(100 + i))
		if got.IsZero() && i < 100 {
			continue // inside the first grain: no time known yet (the recorded one is kept)
		}
		if got.After(commitAt(i)) || commitAt(i).Sub(got) > 2*commitLogGrain {
			t.Errorf("timeAt(end of commit %d) = %s, want at most its commit time %s and within 2 grains", i, got, commitAt(i))
		}
	}
}

// gatedSink blocks every Send until the test lets it return, and reports each call.
type gatedSink struct {
	calls   chan []Record
	release chan struct{}
}

func (g *gatedSink) Send(ctx context.Context, batch []Record) error {
	g.calls <- batch
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return Unavailable(ctx.Err())
	}
}

// TestLanePipelinesOtherKeys: while a sink call for key a is in flight, the lane hands the sink the
// next records of other keys at once, but a later record of key a waits for the first call.
func TestLanePipelinesOtherKeys(t *testing.T) {
	t.Parallel()
	g := &gatedSink{calls: make(chan []Record, 8), release: make(chan struct{})}
	cfg := defaultRelayConfig()
	cfg.lanes, cfg.batchSize = 1, 10
	c := &chaos{attempts: map[string]int{}}
	r := newLaneTestRelay(cfg, c, map[Destination]Sink{"sink": g}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.lanes[0].run(ctx)
	commit := func(keys ...string) {
		x := r.tracker.Begin()
		for _, k := range keys {
			x.Add(1)
			if err := r.batch.add(ctx, &item{tx: x, rec: Record{Message: Message{ID: "m-" + k + fmt.Sprint(len(keys)), Destination: "sink", Key: k}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.batch.flush(ctx); err != nil {
			t.Fatal(err)
		}
		r.tracker.Commit(x, 1)
	}
	keysOf := func(b []Record) (ks []string) {
		for _, rec := range b {
			ks = append(ks, rec.Key)
		}
		return ks
	}
	next := func() []string {
		select {
		case b := <-g.calls:
			return keysOf(b)
		case <-time.After(5 * time.Second):
			t.Fatal("no sink call")
			return nil
		}
	}
	commit("a")
	if got := next(); fmt.Sprint(got) != "[a]" {
		t.Fatalf("first call %v, want [a]", got)
	}
	commit("b", "a", "c") // b and c go while [a] is in flight; the second a waits for it
	if got := next(); fmt.Sprint(got) != "[b c]" {
		t.Fatalf("second call %v, want [b c] while the first is in flight", got)
	}
	select {
	case b := <-g.calls:
		t.Fatalf("call %v started while an earlier record of its key was in flight", keysOf(b))
	case <-time.After(100 * time.Millisecond):
	}
	g.release <- struct{}{} // one of the two calls returns
	g.release <- struct{}{}
	if got := next(); fmt.Sprint(got) != "[a]" {
		t.Fatalf("third call %v, want the second a once the first was acked", got)
	}
	g.release <- struct{}{}
}

// failSink fails every record of key bad (retryable) and delivers the rest, recording them.
type failSink struct {
	mu        sync.Mutex
	bad       string
	failing   bool
	delivered []string
}

func (f *failSink) Send(_ context.Context, batch []Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(batch))
	failed := false
	for i, r := range batch {
		if f.failing && r.Key == f.bad {
			errs[i], failed = errFlaky, true
			continue
		}
		f.delivered = append(f.delivered, r.ID)
	}
	if failed {
		return &BatchError{Errs: errs}
	}
	return nil
}

// TestParkedKeyBoundStopsIntake: once a parked key holds back WithMaxParkedPerKey records, its lane
// takes no more (so the decode goroutine, and reading the WAL, stop) instead of queueing without
// bound; when the key is released everything flows again.
func TestParkedKeyBoundStopsIntake(t *testing.T) {
	t.Parallel()
	f := &failSink{bad: "bad", failing: true}
	cfg := defaultRelayConfig()
	cfg.lanes, cfg.batchSize, cfg.maxParkedPerKey, cfg.maxAttempts = 1, 4, 3, 1000
	cfg.backoffMin, cfg.backoffMax = 10*time.Millisecond, 20*time.Millisecond
	r := newLaneTestRelay(cfg, &chaos{attempts: map[string]int{}}, map[Destination]Sink{"sink": f}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.lanes[0].run(ctx)
	fed := make(chan int, 100)
	rest := make(chan struct{}) // the other keys' records are fed once the bad key is parked full
	go func() {
		for i := range 40 {
			key := fmt.Sprint("ok", i)
			if i < 5 {
				key = "bad" // the head and 4 behind it: one over the per-key bound
			}
			if i == 5 {
				select {
				case <-rest:
				case <-ctx.Done():
					return
				}
			}
			x := r.tracker.Begin()
			x.Add(1)
			if err := r.batch.add(ctx, &item{tx: x, rec: Record{Message: Message{ID: fmt.Sprint("m", i), Destination: "sink", Key: key}}}); err != nil {
				return
			}
			if err := r.batch.flush(ctx); err != nil {
				return
			}
			r.tracker.Commit(x, pglogrepl.LSN(i+1))
			fed <- i
		}
	}()
	// Only once the bad key holds its bound is intake expected to stop (records read before that, while
	// its first attempt was in flight, are read legitimately).
	for deadline := time.Now().Add(10 * time.Second); r.Stats().Parked.Records < cfg.maxParkedPerKey; {
		if time.Now().After(deadline) {
			t.Fatalf("the bad key never parked %d records: %+v", cfg.maxParkedPerKey, r.Stats().Parked)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(rest)
	time.Sleep(300 * time.Millisecond) // the bad key retries meanwhile, every 10–20 ms
	st := r.Stats().Parked
	if st.Keys != 1 || st.Records < cfg.maxParkedPerKey {
		t.Fatalf("parked %+v, want the bad key holding back at least %d records", st, cfg.maxParkedPerKey)
	}
	t.Logf("fed %d, parked %+v", len(fed), st)
	if n := len(fed); n >= 40 {
		t.Fatalf("all 40 records were read while the parked key was full: intake did not stop")
	}
	f.mu.Lock()
	f.failing = false
	f.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for r.tracker.Flushed() < 40 {
		if time.Now().After(deadline) {
			t.Fatalf("not everything delivered after the key recovered: flushed %s, parked %+v", r.tracker.Flushed(), r.Stats().Parked)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.delivered) != 40 {
		t.Errorf("%d delivered, want 40", len(f.delivered))
	}
}

// downSink is unavailable while down is set, and records what it delivered.
type downSink struct {
	mu        sync.Mutex
	down      bool
	calls     int
	delivered []string
}

func (d *downSink) Send(_ context.Context, batch []Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.down {
		return Unavailable(errors.New("broker down"))
	}
	for _, r := range batch {
		d.delivered = append(d.delivered, r.ID)
	}
	return nil
}

// TestSystemicFailureHoldsOnlyItsDestination: while one destination is unavailable, the lane keeps
// delivering the other destinations' records (keys apart); the blocked one is retried with backoff,
// counts no attempt, dead-letters nothing, and delivers everything in order once it is back.
func TestSystemicFailureHoldsOnlyItsDestination(t *testing.T) {
	t.Parallel()
	down, up := &downSink{down: true}, &downSink{}
	cfg := defaultRelayConfig()
	cfg.lanes, cfg.maxAttempts = 1, 2
	cfg.backoffMin, cfg.backoffMax = 5*time.Millisecond, 20*time.Millisecond
	c := &chaos{attempts: map[string]int{}}
	r := newLaneTestRelay(cfg, c, map[Destination]Sink{"down": down, "up": up}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.lanes[0].run(ctx)
	for i := range 20 {
		x := r.tracker.Begin()
		x.Add(1)
		dest := Destination("up")
		if i%2 == 0 {
			dest = "down"
		}
		if err := r.batch.add(ctx, &item{tx: x, rec: Record{Message: Message{ID: fmt.Sprint(i), Destination: dest, Key: fmt.Sprint(dest, i%3)}}}); err != nil {
			t.Fatal(err)
		}
		if err := r.batch.flush(ctx); err != nil {
			t.Fatal(err)
		}
		r.tracker.Commit(x, pglogrepl.LSN(i+1))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		up.mu.Lock()
		n := len(up.delivered)
		up.mu.Unlock()
		if n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 records of the healthy destination delivered while the other was down", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // several retries of the blocked destination
	down.mu.Lock()
	retries := down.calls
	down.down = false
	down.mu.Unlock()
	if retries < 2 {
		t.Errorf("the unavailable destination was tried %d times in 100 ms of backoff 5–20 ms", retries)
	}
	for r.tracker.Flushed() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("not all delivered after the destination came back: flushed %s", r.tracker.Flushed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.deadLettered.Load(); n != 0 {
		t.Errorf("%d dead letters from a systemic failure (max attempts 2)", n)
	}
	down.mu.Lock()
	defer down.mu.Unlock()
	if fmt.Sprint(down.delivered) != "[0 2 4 6 8 10 12 14 16 18]" {
		t.Errorf("the blocked destination delivered %v, want every record in commit order", down.delivered)
	}
}
