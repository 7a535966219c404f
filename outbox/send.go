package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// sendResult is what a sink call returned, for the lane to settle.
type sendResult struct {
	dest  Destination
	items []*item
	err   error
}

// startSend calls s.Send for group in its own goroutine; the lane settles the result when it comes
// (finish). The group's keys are busy until then: no later record of theirs goes out meanwhile.
func (l *lane) startSend(ctx context.Context, dest Destination, s Sink, group []*item) {
	recs := make([]Record, len(group))
	for i, it := range group {
		it.rec.Attempt++
		recs[i] = it.rec
		if it.hash != 0 {
			l.busy[it.hash]++
		}
	}
	l.pending++
	timeout := l.r.cfg.handlerTimeout
	go func() {
		sendCtx, cancel := context.WithTimeout(ctx, timeout)
		err := s.Send(sendCtx, recs)
		cancel()
		l.results <- sendResult{dest: dest, items: group, err: err} // buffered for every call in flight
	}()
}

// finish settles a sink call's result: acks, dead letters and parked keys; records to send again
// (the destination was unavailable, or the sink held them back) go back before the ready records,
// and the destination is held back for a while. False when ctx ended.
func (l *lane) finish(ctx context.Context, res sendResult) bool {
	l.pending--
	for _, it := range res.items {
		if it.hash != 0 {
			if n := l.busy[it.hash] - 1; n > 0 {
				l.busy[it.hash] = n
			} else {
				delete(l.busy, it.hash)
			}
		}
	}
	if ctx.Err() != nil {
		return false
	}
	next, systemic, ok := l.settle(ctx, res.dest, res.items, res.err)
	l.releaseGate()
	if !ok {
		return false
	}
	l.holdBack(res.dest, systemic, len(next) > 0)
	if len(next) > 0 {
		// Nothing of their keys went out since (the keys were busy): they stay first.
		l.buf = append(next, l.buf...)
	}
	return true
}

// holdBack records the state of dest after a call: blocked with backoff after a systemic failure
// (reported through setBlocked), paused briefly when the sink only held records back, free otherwise.
func (l *lane) holdBack(dest Destination, systemic error, left bool) {
	r := l.r
	b := l.blocked[dest]
	switch {
	case systemic != nil:
		if b == nil {
			b = &destBlock{}
			l.blocked[dest] = b
		}
		b.failures++
		b.until = time.Now().Add(max(r.backoff(b.failures), RetryAfterOf(systemic)))
		r.setBlocked(dest, systemic)
	case left: // held back by the sink without a failure of their own: soon again
		if b == nil || b.failures == 0 {
			l.blocked[dest] = &destBlock{until: time.Now().Add(r.cfg.backoffMin)}
		}
	case b != nil:
		delete(l.blocked, dest)
		if b.failures > 0 {
			r.setBlocked(dest, nil)
		}
	}
}

// callHandler calls h for it until it is delivered, dead-lettered or parked; an unavailable
// destination is retried in place, with backoff. False when ctx ended.
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
		if !ok {
			return false
		}
		if len(next) == 0 {
			if blocked > 0 {
				r.setBlocked(dest, nil)
			}
			return true
		}
		blocked++
		r.setBlocked(dest, systemic)
		l.releaseGate()
		if !sleep(ctx, max(r.backoff(blocked), RetryAfterOf(systemic))) {
			return false
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

// settle applies the result of one delivery attempt of pending (err as a Sink.Send returns it):
// delivered records are acked; a record that failed for good, or for the last allowed time, is
// dead-lettered; one that failed otherwise parks its key; a later record of a key parked in this
// batch waits behind it. It returns the records to send again (systemic failure, or held back by the
// sink) and the systemic error, if any; ok is false when ctx ended.
func (l *lane) settle(ctx context.Context, dest Destination, pending []*item, err error) (next []*item, systemic error, ok bool) {
	if err == nil {
		for _, it := range pending {
			l.delivered(it)
		}
		return nil, nil, true
	}
	if f := fatalOf(err); f != nil { // the sink is done for: stop the relay, settle nothing
		l.r.log.Error("sink failed for good: the relay stops (a new start resumes from the slot)",
			zap.String("destination", string(dest)), zap.Error(f))
		l.r.fail(fmt.Errorf("outbox: destination %s: %w", dest, f))
		err = f
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

// delivered acks it; when it was the head of a parked key, the key is released.
func (l *lane) delivered(it *item) {
	l.r.ack(it)
	l.acked++
	if k := l.park.lookup(it); k != nil && k.retry == it {
		l.release(k)
	}
}

// deadLetter dead-letters it (k is its parked key, if any): the key is released when it was its head.
func (l *lane) deadLetter(ctx context.Context, it *item, k *parkedKey) bool {
	if !l.r.writeDeadLetter(ctx, it) {
		return false
	}
	l.acked++
	if k != nil && k.retry == it {
		l.release(k)
	}
	return true
}

// release unparks k: the records that waited behind its head go first. No record of k is among the
// ready ones (they joined the queue when a group reached them), so nothing overtakes within the key.
func (l *lane) release(k *parkedKey) {
	if q := l.park.release(k); len(q) > 0 {
		l.buf = append(q, l.buf...)
	}
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
