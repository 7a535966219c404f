package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
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

// lane delivers the messages of the keys hashed to it, in order. A lane waits while its head
// message is retried, so a key's messages never overtake each other.
type lane struct {
	r  *Relay
	in chan []*item // batches from the decode goroutine (or the snapshot), in commit order
	hc handlerCtx
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

func (l *lane) run(ctx context.Context) {
	r := l.r
	buf := make([]*item, 0, 2*r.cfg.batchSize)
	for {
		if len(buf) == 0 {
			select {
			case b := <-l.in:
				buf = append(buf, b...)
			case <-ctx.Done():
				return
			}
		}
	fill: // transactions that queued up while the previous call waited go out together
		for len(buf) < r.cfg.batchSize {
			select {
			case b := <-l.in:
				buf = append(buf, b...)
			default:
				break fill
			}
		}
		// At most batchSize messages per round; what is over stays for the next round, where more
		// may join it, rather than going out as a small call of its own.
		n := min(len(buf), r.cfg.batchSize)
		// Consecutive messages for one destination go out together.
		for start := 0; start < n; {
			end := start + 1
			for end < n && buf[end].rec.Destination == buf[start].rec.Destination {
				end++
			}
			if !l.deliver(ctx, buf[start:end]) {
				return // stopped: what is left stays unacked and is re-delivered after restart
			}
			r.gate.release(end - start)
			start = end
		}
		rest := copy(buf, buf[n:])
		clear(buf[rest:])
		buf = buf[:rest]
	}
}

// deliver delivers group (one destination) until every message is acked; false when ctx ended first.
func (l *lane) deliver(ctx context.Context, group []*item) bool {
	r := l.r
	dest := group[0].rec.Destination
	if s, ok := r.cfg.sinks[dest]; ok {
		return l.deliverSink(ctx, dest, s, group)
	}
	if h, ok := r.handlers[dest]; ok {
		for _, it := range group {
			if !l.deliverHandler(ctx, h, it) {
				return false
			}
		}
		return true
	}
	if r.cfg.defaultSink != nil {
		return l.deliverSink(ctx, dest, r.cfg.defaultSink, group)
	}
	err := Permanent(fmt.Errorf("%w: no handler or sink for destination %q", ErrUnknownDestination, dest))
	for _, it := range group {
		it.rec.Attempt++
		it.firstFail = time.Now()
		it.lastErr = err
		if !r.deadLetter(ctx, it) {
			return false
		}
	}
	return true
}

func (l *lane) deliverHandler(ctx context.Context, h Handler, it *item) bool {
	r := l.r
	for {
		it.rec.Attempt++
		err := r.callHandler(l.hc.arm(ctx, r.cfg.handlerTimeout), h, it.rec.Message)
		l.hc.disarm()
		if err == nil {
			r.ack(it)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if done, ok := l.failed(ctx, it, err); done || !ok {
			return ok
		}
	}
}

// failed records a failed attempt of it; done reports that it was dead-lettered (and so acked),
// ok is false when ctx ended.
func (l *lane) failed(ctx context.Context, it *item, err error) (done, ok bool) {
	r := l.r
	now := time.Now()
	if it.firstFail.IsZero() {
		it.firstFail = now
	}
	it.lastErr = err
	r.failures.Add(1)
	if r.cfg.observer != nil {
		r.cfg.observer.Failed(it.rec.Destination, err)
	}
	if IsPermanent(err) || it.rec.Attempt >= r.cfg.maxAttempts {
		return true, r.deadLetter(ctx, it)
	}
	r.log.Debug("delivery failed, will retry", zap.String("id", it.rec.ID), zap.String("destination", string(it.rec.Destination)),
		zap.Int("attempt", it.rec.Attempt), zap.Error(err))
	return false, sleep(ctx, r.backoff(it.rec.Attempt))
}

func (r *Relay) callHandler(ctx context.Context, h Handler, m Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("outbox: handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h(ctx, m)
}

func (l *lane) deliverSink(ctx context.Context, dest Destination, s Sink, group []*item) bool {
	r := l.r
	pending := group
	recs := make([]Record, 0, len(group))
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
		if err == nil {
			for _, it := range pending {
				r.ack(it)
			}
			if blocked > 0 {
				r.setBlocked(dest, nil)
			}
			return true
		}
		if IsUnavailable(err) {
			// Systemic: nothing counts as an attempt, nothing is dead-lettered, the slot stays put.
			for _, it := range pending {
				it.rec.Attempt--
			}
			blocked++
			r.setBlocked(dest, err)
			if !sleep(ctx, r.backoff(blocked)) {
				return false
			}
			continue
		}
		var be *BatchError
		if !errors.As(err, &be) || len(be.Errs) != len(pending) {
			be = &BatchError{Errs: make([]error, len(pending))}
			for i := range be.Errs {
				be.Errs[i] = err
			}
		}
		next := pending[:0:0]
		var maxAttempt int
		var unavailable error
		for i, it := range pending {
			if be.Errs[i] == nil {
				r.ack(it)
				continue
			}
			if errors.Is(be.Errs[i], ErrNotAttempted) {
				it.rec.Attempt-- // held back by the sink (behind a failed record of its key): not a try
				next = append(next, it)
				continue
			}
			if IsUnavailable(be.Errs[i]) { // systemic for this record: block, no attempt, no dead letter
				it.rec.Attempt--
				unavailable = be.Errs[i]
				next = append(next, it)
				continue
			}
			now := time.Now()
			if it.firstFail.IsZero() {
				it.firstFail = now
			}
			it.lastErr = be.Errs[i]
			r.failures.Add(1)
			if r.cfg.observer != nil {
				r.cfg.observer.Failed(dest, be.Errs[i])
			}
			if IsPermanent(be.Errs[i]) || it.rec.Attempt >= r.cfg.maxAttempts {
				if !r.deadLetter(ctx, it) {
					return false
				}
				continue
			}
			next = append(next, it)
			maxAttempt = max(maxAttempt, it.rec.Attempt)
		}
		pending = next
		if unavailable != nil {
			blocked++
			r.setBlocked(dest, unavailable)
			if !sleep(ctx, max(r.backoff(blocked), r.backoff(maxAttempt))) {
				return false
			}
			continue
		}
		if blocked > 0 {
			blocked = 0
			r.setBlocked(dest, nil)
		}
		if len(pending) > 0 {
			r.log.Debug("sink delivery failed, will retry", zap.String("destination", string(dest)),
				zap.Int("messages", len(pending)), zap.Error(pending[0].lastErr))
			if !sleep(ctx, r.backoff(maxAttempt)) {
				return false
			}
		}
	}
	return true
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
