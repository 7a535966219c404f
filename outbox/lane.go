package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox/internal/watermark"
)

// item is one message in flight: received from the WAL, not yet acked.
type item struct {
	rec       Record
	tx        *watermark.Tx
	hash      uint64 // of the key (0 for a keyless record): which records must keep their order
	firstFail time.Time
	lastErr   error
}

// sendsPerLane is how many Sink.Send calls a lane keeps in flight at once. A lane hands the sink its
// next batch before the previous one is acked, so records do not wait for the acks of unrelated keys;
// records of a key that is in a call still in flight wait for that call (order per key).
const sendsPerLane = 4

// lane delivers the messages of the keys hashed to it. Records of one key go out in commit order: a
// record waits while an earlier record of its key is in a call still in flight, and a record that
// fails with a retryable error parks its key (see parking): it and the later records of its key wait
// for its next attempt while the lane goes on with every other key. A systemic failure
// (ErrUnavailable) holds the records of that destination back, with backoff, and nothing else.
type lane struct {
	r  *Relay
	in chan []*item // batches from the decode goroutine (or the snapshot), in commit order
	hc handlerCtx

	park    *parking
	buf     []*item         // records ready to go, in arrival order (per key, commit order)
	acked   int             // records acked since the gate was last told
	busy    map[uint64]int  // key hash → records of it in sink calls still in flight
	pending int             // sink calls in flight
	results chan sendResult // their results
	blocked map[Destination]*destBlock
	held    time.Time // the earliest end of a hold on a destination that kept records back in the last launch
	timer   *time.Timer
	due     []*item             // scratch: heads due for a retry
	skip    map[uint64]struct{} // scratch: keys a group must not take (an earlier record of theirs stays)
	one     [1]*item
}

// destBlock is a destination the lane holds back after a systemic failure, or after the sink held
// records back without a failure of their own.
type destBlock struct {
	until    time.Time
	failures int // consecutive systemic failures (0: only a short pause)
}

func newLane(r *Relay) *lane {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &lane{
		r: r,
		// Room for about two full batches of small slices (one per transaction), so that a lane can
		// fill its sink calls while the previous call waits for its acks; the gate bounds the items.
		in:      make(chan []*item, 2*r.cfg.batchSize),
		park:    newParking(r.cfg.maxParkedPerKey, &r.parkedRecords),
		buf:     make([]*item, 0, 2*r.cfg.batchSize),
		busy:    map[uint64]int{},
		skip:    map[uint64]struct{}{},
		results: make(chan sendResult, sendsPerLane),
		blocked: map[Destination]*destBlock{},
		timer:   t,
	}
}

// handlerCtx gives each Handler call a deadline without a new context and timer per call: the lane
// keeps one cancelable context and re-arms one timer for every call. When a call overruns, the timer
// cancels the context (cause context.DeadlineExceeded) and the next call gets a fresh one.
type handlerCtx struct {
	ctx   context.Context
	timer *time.Timer
}

func (h *handlerCtx) arm(parent context.Context, timeout time.Duration) context.Context {
	if h.ctx == nil || h.ctx.Err() != nil {
		ctx, cancel := context.WithCancelCause(parent)
		h.ctx = ctx
		h.timer = time.AfterFunc(timeout, func() { cancel(context.DeadlineExceeded) })
		return ctx
	}
	h.timer.Reset(timeout)
	return h.ctx
}

func (h *handlerCtx) disarm() { h.timer.Stop() }

// run delivers until ctx ends; what is not acked by then is re-delivered after a restart. Sink calls
// still in flight then finish on their own (their results are dropped).
func (l *lane) run(ctx context.Context) {
	for {
		l.retryDue()
		l.intake()
		if !l.launch(ctx) || !l.wait(ctx) {
			return
		}
	}
}

// accepting reports whether the lane takes more records: not while one of its parked keys holds back
// as many records as a key may, nor while the parked records of all lanes reach their bound, nor
// while a batch of records is waiting already. The decode goroutine then waits for room in the lane,
// which stops reading the WAL: memory stays bounded.
func (l *lane) accepting() bool {
	return len(l.buf) < l.r.cfg.batchSize && l.park.full == 0 && l.r.parkedRecords.Load() < int64(l.r.cfg.maxParked)
}

// intake takes the batches already queued for the lane, up to a full batch, without waiting.
func (l *lane) intake() {
	for l.accepting() {
		select {
		case b := <-l.in:
			l.buf = append(l.buf, b...)
		default:
			return
		}
	}
}

// wait blocks until records arrive, a sink call returns, a parked head or a held-back destination is
// due, or ctx ends (false). Records of a parked key join its queue only when a group reaches them, so
// that they queue up in the order they came.
func (l *lane) wait(ctx context.Context) bool {
	var in chan []*item
	if l.accepting() {
		in = l.in
	}
	var results chan sendResult
	if l.pending > 0 {
		results = l.results
	}
	var tick <-chan time.Time
	if d, ok := l.nextWake(in == nil); ok {
		l.timer.Reset(d)
		tick = l.timer.C
		defer l.timer.Stop()
	}
	select {
	case b := <-in:
		l.buf = append(l.buf, b...)
	case res := <-results:
		return l.finish(ctx, res)
	case <-tick:
	case <-ctx.Done():
		return false
	}
	return true
}

// nextWake returns how long until the earliest parked head or held-back destination is due;
// held says the lane takes no input, so it looks again soon when other lanes' parked keys hold it.
func (l *lane) nextWake(held bool) (time.Duration, bool) {
	at := l.held
	if due, ok := l.park.next(); ok && (at.IsZero() || due.Before(at)) {
		at = due
	}
	d, ok := max(time.Until(at), 0), !at.IsZero()
	if held && l.park.full == 0 && len(l.buf) < l.r.cfg.batchSize && (!ok || d > parkedPoll) {
		return parkedPoll, true // held back by other lanes' parked records: look again soon
	}
	return d, ok
}

// parkedPoll is how often a lane held back by the relay-wide parked bound checks for room.
const parkedPoll = 20 * time.Millisecond

// retryDue puts the parked heads whose wait is over before the ready records: they go next.
func (l *lane) retryDue() {
	l.due = l.park.takeDue(time.Now(), l.due[:0])
	if len(l.due) > 0 {
		l.buf = append(l.due, l.buf...)
		l.due = nil
	}
}

// launch hands the ready records to their destinations, one group (one destination, at most a
// batch) at a time: sink calls until sendsPerLane are in flight, handler calls one after another.
// False when ctx ended.
func (l *lane) launch(ctx context.Context) bool {
	l.held = time.Time{}
	for len(l.buf) > 0 && l.pending < sendsPerLane {
		group := l.nextGroup()
		if len(group) == 0 {
			return true
		}
		if !l.deliver(ctx, group) {
			return false
		}
	}
	return true
}

// nextGroup takes from buf, in order, the records of the first destination that can go now: up to a
// batch, skipping records whose key has a record in a call in flight, whose destination is held back,
// or behind which an earlier record of their key stays. Records of a parked key join its queue.
func (l *lane) nextGroup() []*item {
	now := time.Now()
	var dest Destination
	var group []*item
	clear(l.skip)
	w := 0
	for i, it := range l.buf {
		if len(group) == l.r.cfg.batchSize {
			w += copy(l.buf[w:], l.buf[i:])
			break
		}
		if k := l.park.lookup(it); k != nil && k.retry != it {
			l.park.hold(k, it)
			continue
		}
		take := group == nil || it.rec.Destination == dest
		if take && group == nil {
			if b := l.blocked[it.rec.Destination]; b != nil && now.Before(b.until) {
				take = false
				if l.held.IsZero() || b.until.Before(l.held) {
					l.held = b.until
				}
			}
		}
		if take && it.hash != 0 && len(l.busy)+len(l.skip) > 0 {
			_, skipped := l.skip[it.hash]
			take = !skipped && l.busy[it.hash] == 0
		}
		if !take {
			if it.hash != 0 {
				l.skip[it.hash] = struct{}{}
			}
			l.buf[w] = it
			w++
			continue
		}
		if group == nil {
			dest = it.rec.Destination
			group = make([]*item, 0, min(len(l.buf)-i, l.r.cfg.batchSize))
		}
		group = append(group, it)
	}
	clear(l.buf[w:])
	l.buf = l.buf[:w]
	return group
}

// deliver starts a sink call for group (one destination), or calls its handler for each record, or
// dead-letters it when the destination has neither; false when ctx ended first.
func (l *lane) deliver(ctx context.Context, group []*item) bool {
	r := l.r
	defer l.releaseGate()
	dest := group[0].rec.Destination
	if s, ok := r.cfg.sinks[dest]; ok {
		l.startSend(ctx, dest, s, group)
		return true
	}
	if h, ok := r.handlers[dest]; ok {
		for _, it := range group {
			if k := l.park.lookup(it); k != nil && k.retry != it {
				l.park.hold(k, it) // an earlier record of its key failed in this group
				continue
			}
			if !l.callHandler(ctx, dest, h, it) {
				return false
			}
		}
		return true
	}
	if r.cfg.defaultSink != nil {
		l.startSend(ctx, dest, r.cfg.defaultSink, group)
		return true
	}
	err := Permanent(fmt.Errorf("%w: no handler or sink for destination %q", ErrUnknownDestination, dest))
	for _, it := range group {
		it.rec.Attempt++
		l.failure(dest, it, err)
		if !l.deadLetter(ctx, it, l.park.lookup(it)) {
			return false
		}
	}
	return true
}
