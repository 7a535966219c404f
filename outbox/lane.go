package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox/internal/watermark"
)

// item is one message in flight: received from the WAL, not yet acked.
type item struct {
	rec       Record
	tx        *watermark.Tx
	firstFail time.Time
	lastErr   error
}

// lane delivers the messages of the keys hashed to it. Records of one key go out in commit order; a
// record that fails with a retryable error parks its key (see parking): it and the later records of
// its key wait for its next attempt while the lane goes on with every other key. Only a systemic
// failure (ErrUnavailable) makes the lane wait, since then no other record of that destination can
// be delivered either.
type lane struct {
	r  *Relay
	in chan []*item // batches from the decode goroutine (or the snapshot), in commit order
	hc handlerCtx

	park     *parking
	buf      []*item // records ready to go, in arrival order
	released []*item // records of keys just released from the parking: they go before buf
	acked    int     // records acked since the gate was last told
	due      []*item // scratch: heads due for a retry
	one      [1]*item
	timer    *time.Timer
}

func newLane(r *Relay) *lane {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &lane{
		r: r,
		// Room for about two full batches of small slices (one per transaction), so that a lane can
		// fill its sink calls while the previous call waits for its acks; the gate bounds the items.
		in:    make(chan []*item, 2*r.cfg.batchSize),
		park:  newParking(r.cfg.maxParkedPerKey, &r.parkedRecords),
		buf:   make([]*item, 0, 2*r.cfg.batchSize),
		timer: t,
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

// run delivers until ctx ends; what is not acked by then is re-delivered after a restart.
func (l *lane) run(ctx context.Context) {
	for {
		if !l.retryDue(ctx) {
			return
		}
		l.intake()
		if len(l.buf) == 0 {
			if !l.wait(ctx) {
				return
			}
			continue
		}
		if !l.round(ctx) {
			return
		}
	}
}

// accepting reports whether the lane takes more records: not while one of its parked keys holds back
// as many records as a key may, nor while the parked records of all lanes reach their bound. The
// decode goroutine then waits for room in the lane, which stops reading the WAL: memory stays bounded.
func (l *lane) accepting() bool {
	return l.park.full == 0 && l.r.parkedRecords.Load() < int64(l.r.cfg.maxParked)
}

// intake takes the batches already queued for the lane, up to a full batch, without waiting.
func (l *lane) intake() {
	for len(l.buf) < l.r.cfg.batchSize && l.accepting() {
		select {
		case b := <-l.in:
			l.take(b)
		default:
			return
		}
	}
}

// take adds b to the records ready to go. Records of a parked key join its queue only when a round
// reaches them (unparked), so that they queue up in the order they came.
func (l *lane) take(b []*item) { l.buf = append(l.buf, b...) }

// wait blocks until records arrive, a parked head is due or ctx ends (false).
func (l *lane) wait(ctx context.Context) bool {
	var in chan []*item
	if l.accepting() {
		in = l.in
	}
	d := time.Duration(-1)
	if due, ok := l.park.next(); ok {
		d = max(time.Until(due), 0)
	}
	if in == nil && l.park.full == 0 && (d < 0 || d > parkedPoll) {
		d = parkedPoll // held back by other lanes' parked records: look again soon
	}
	var tick <-chan time.Time
	if d >= 0 {
		l.timer.Reset(d)
		tick = l.timer.C
		defer l.timer.Stop()
	}
	select {
	case b := <-in:
		l.take(b)
	case <-tick:
	case <-ctx.Done():
		return false
	}
	return true
}

// parkedPoll is how often a lane held back by the relay-wide parked bound checks for room.
const parkedPoll = 20 * time.Millisecond

// round delivers up to one batch of the ready records; false when ctx ended first.
func (l *lane) round(ctx context.Context) bool {
	// At most batchSize messages per round; what is over stays for the next round, where more may
	// join it, rather than going out as a small call of its own.
	n := min(len(l.buf), l.r.cfg.batchSize)
	batch := l.buf[:n]
	// Consecutive messages for one destination go out together.
	for start := 0; start < n; {
		end := start + 1
		for end < n && batch[end].rec.Destination == batch[start].rec.Destination {
			end++
		}
		if !l.deliver(ctx, batch[start:end]) {
			return false // stopped: what is left stays unacked and is re-delivered after restart
		}
		start = end
	}
	rest := copy(l.buf, l.buf[n:])
	clear(l.buf[rest:])
	l.buf = l.buf[:rest]
	l.mergeReleased()
	return true
}

// retryDue tries again the parked heads whose wait is over, one call per destination.
func (l *lane) retryDue(ctx context.Context) bool {
	l.due = l.park.takeDue(time.Now(), l.due[:0])
	if len(l.due) == 0 {
		return true
	}
	heads := l.due
	slices.SortStableFunc(heads, func(a, b *item) int { return cmp.Compare(a.rec.Destination, b.rec.Destination) })
	for start := 0; start < len(heads); {
		end := start + 1
		for end < len(heads) && heads[end].rec.Destination == heads[start].rec.Destination {
			end++
		}
		if !l.deliver(ctx, heads[start:end]) {
			return false
		}
		start = end
	}
	clear(l.due)
	l.mergeReleased()
	return true
}

// mergeReleased puts the records of released keys before the ready ones. No record of those keys is
// among the ready ones (they waited in the parking), so nothing overtakes within a key.
func (l *lane) mergeReleased() {
	if len(l.released) > 0 {
		l.buf = append(l.released, l.buf...)
		l.released = nil
	}
}

// deliver delivers group (one destination) until every record is acked, dead-lettered or parked;
// false when ctx ended first.
func (l *lane) deliver(ctx context.Context, group []*item) bool {
	group = l.unparked(group)
	if len(group) == 0 {
		return true
	}
	r := l.r
	defer l.releaseGate()
	dest := group[0].rec.Destination
	if s, ok := r.cfg.sinks[dest]; ok {
		return l.sendSink(ctx, dest, s, group)
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
		return l.sendSink(ctx, dest, r.cfg.defaultSink, group)
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

// unparked filters group in place: records of a parked key join its queue, except the key's head
// being retried.
func (l *lane) unparked(group []*item) []*item {
	if len(l.park.keys) == 0 {
		return group
	}
	out := group[:0]
	for _, it := range group {
		if k := l.park.lookup(it); k != nil && k.retry != it {
			l.park.hold(k, it)
			continue
		}
		out = append(out, it)
	}
	return out
}

func (l *lane) callHandler(ctx context.Context, dest Destination, h Handler, it *item) bool {
	r := l.r
	blocked := 0
	for {
		it.rec.Attempt++
		err := r.callHandler(l.hc.arm(ctx, r.cfg.handlerTimeout), h, it.rec.Message)
		l.hc.disarm()
		if err != nil && ctx.Err() != nil {
			return false
		}
		l.one[0] = it
		next, systemic, ok := l.settle(ctx, dest, l.one[:], err)
		l.one[0] = nil
		if !ok || !l.settled(ctx, dest, &blocked, systemic, len(next)) {
			return false
		}
		if len(next) == 0 {
			return true
		}
	}
}

func (r *Relay) callHandler(ctx context.Context, h Handler, m Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("outbox: handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h(ctx, m)
}

func (l *lane) sendSink(ctx context.Context, dest Destination, s Sink, pending []*item) bool {
	r := l.r
	recs := make([]Record, 0, len(pending))
	blocked := 0
	for len(pending) > 0 {
		recs = recs[:0]
		for _, it := range pending {
			it.rec.Attempt++
			recs = append(recs, it.rec)
		}
		sendCtx, cancel := context.WithTimeout(ctx, r.cfg.handlerTimeout)
		err := s.Send(sendCtx, recs)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		var systemic error
		var ok bool
		pending, systemic, ok = l.settle(ctx, dest, pending, err)
		if !ok || !l.settled(ctx, dest, &blocked, systemic, len(pending)) {
			return false
		}
	}
	return true
}

// settle applies the result of one delivery attempt of pending (err as a Sink.Send returns it):
// delivered records are acked; a record that failed for good, or for the last allowed time, is
// dead-lettered; one that failed otherwise parks its key; a later record of a key parked in this
// batch waits behind it. It returns the records to send again at once (systemic failure, or held back
// by the sink) and the systemic error, if any; ok is false when ctx ended.
func (l *lane) settle(ctx context.Context, dest Destination, pending []*item, err error) (next []*item, systemic error, ok bool) {
	if err == nil {
		for _, it := range pending {
			l.delivered(it)
		}
		return nil, nil, true
	}
	if IsUnavailable(err) { // the destination as a whole: nothing counts as an attempt, the slot stays put
		for _, it := range pending {
			it.rec.Attempt--
		}
		return pending, err, true
	}
	var be *BatchError
	if !errors.As(err, &be) || len(be.Errs) != len(pending) {
		be = nil
	}
	for i, it := range pending {
		e := err
		if be != nil {
			e = be.Errs[i]
		}
		if e == nil {
			l.delivered(it)
			continue
		}
		k := l.park.lookup(it)
		behind := k != nil && k.retry != it // a key parked by an earlier record of this batch
		if errors.Is(e, ErrNotAttempted) || IsUnavailable(e) {
			it.rec.Attempt-- // not tried, or the destination could not take it: no attempt
			switch {
			case behind:
				l.park.hold(k, it)
			case IsUnavailable(e):
				systemic = cmp.Or(systemic, e)
				next = append(next, it)
			default:
				next = append(next, it)
			}
			continue
		}
		l.failure(dest, it, e)
		switch {
		case behind:
			l.park.hold(k, it)
		case IsPermanent(e) || it.rec.Attempt >= l.r.cfg.maxAttempts:
			if !l.deadLetter(ctx, it, k) {
				return nil, nil, false
			}
		default:
			l.parkFailed(it, e)
		}
	}
	return next, systemic, true
}

// settled waits after a settle that left records to send again: with backoff while the destination
// is unavailable (it is reported blocked), briefly when the sink only held records back. It reports
// the destination unblocked once a call got through. False when ctx ended.
func (l *lane) settled(ctx context.Context, dest Destination, blocked *int, systemic error, left int) bool {
	r := l.r
	if systemic != nil {
		*blocked++
		r.setBlocked(dest, systemic)
		l.releaseGate()
		return sleep(ctx, max(r.backoff(*blocked), RetryAfterOf(systemic)))
	}
	if *blocked > 0 {
		*blocked = 0
		r.setBlocked(dest, nil)
	}
	if left > 0 { // held back by the sink without a failure of their own: soon again
		l.releaseGate()
		return sleep(ctx, r.cfg.backoffMin)
	}
	return true
}

// delivered acks it; when it was the head of a parked key, the key is released.
func (l *lane) delivered(it *item) {
	l.r.ack(it)
	l.acked++
	if k := l.park.lookup(it); k != nil && k.retry == it {
		l.released = append(l.released, l.park.release(k)...)
	}
}

// deadLetter dead-letters it (k is its parked key, if any): the key is released when it was its head.
func (l *lane) deadLetter(ctx context.Context, it *item, k *parkedKey) bool {
	if !l.r.writeDeadLetter(ctx, it) {
		return false
	}
	l.acked++
	if k != nil && k.retry == it {
		l.released = append(l.released, l.park.release(k)...)
	}
	return true
}

// failure records a failed attempt of it.
func (l *lane) failure(dest Destination, it *item, err error) {
	r := l.r
	if it.firstFail.IsZero() {
		it.firstFail = time.Now()
	}
	it.lastErr = err
	r.failures.Add(1)
	if r.cfg.observer != nil {
		r.cfg.observer.Failed(dest, err)
	}
}

// parkFailed parks the key of it, which failed with a retryable error: it is tried again after the
// backoff of its attempt (or the wait its error asked for, if longer).
func (l *lane) parkFailed(it *item, err error) {
	r := l.r
	wait := max(r.backoff(it.rec.Attempt), RetryAfterOf(err))
	k, parked := l.park.park(it, time.Now().Add(wait))
	log := r.log.Debug
	if parked {
		log = r.log.Info
	}
	log("delivery failed; key parked until the record is delivered or dead-lettered",
		zap.String("id", it.rec.ID), zap.String("destination", string(it.rec.Destination)), zap.String("key", it.rec.Key),
		zap.Int("attempt", it.rec.Attempt), zap.Duration("retry_in", wait), zap.Int("waiting_behind", len(k.queue)), zap.Error(err))
}

// releaseGate gives the gate back the room of the records acked since the last call.
func (l *lane) releaseGate() {
	if l.acked > 0 {
		l.r.gate.release(l.acked)
		l.acked = 0
	}
}

// backoff returns the wait before attempt+1: capped exponential with up to 20% jitter.
func (r *Relay) backoff(attempt int) time.Duration {
	d := r.cfg.backoffMin
	for i := 1; i < attempt && d < r.cfg.backoffMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.backoffMax)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
