package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sink delivers records to an external system (Kafka, a webhook, stdout). The relay calls Send from
// several goroutines at once (each lane keeps a few calls in flight), so implementations must be safe
// for concurrent use.
//
// Send delivers batch in order and returns only when every record in it is durable (acked) or has failed.
// Records of one Key arrive in commit order, and a record is never in a call while an earlier record
// of its Key is in another call still in flight, so a sink that preserves the order within a batch
// preserves the order per key; once a record fails (other than permanently), a sink must not deliver a
// later record of the same Key in that Send (report it ErrNotAttempted).
// Send returns:
//   - nil when every record is durable;
//   - an error wrapping ErrUnavailable when the destination cannot take anything now (broker down,
//     endpoint overloaded): the relay blocks and retries the whole batch, counts no attempt,
//     dead-letters nothing and keeps the slot where it is;
//   - a *BatchError whose Errs[i] is nil for each delivered record and non-nil for each failed one;
//     a failure wrapping ErrPermanent is dead-lettered at once, one wrapping ErrNotAttempted (the sink
//     held the record back, e.g. behind a failed earlier record of its key) is retried without counting
//     an attempt, one wrapping ErrUnavailable blocks the destination like a whole-batch ErrUnavailable
//     (retried, no attempt counted, never dead-lettered), and any other one is retried with backoff
//     until the relay's MaxAttempts;
//   - an error wrapping ErrFatal ([Fatal]) when the sink itself can deliver nothing more until the relay
//     is started again: the relay stops with it, as unavailable for the batch (nothing acked, dead-lettered
//     or counted);
//   - any other error: every record of the batch failed with it.
//
// A record that failed with a retryable error parks its key: it waits for its next attempt and the
// later records of its key wait behind it, in order, while every other key keeps flowing (see
// [WithMaxParkedPerKey]); the slot's confirmed position stays below it until it is delivered or
// dead-lettered.
//
// Any of these errors may carry a wait the destination asked for ([RetryAfter], e.g. HTTP 429 or 503
// with Retry-After): the relay waits at least that long before it tries the record (or, for a systemic
// error, the destination) again.
type Sink interface {
	Send(ctx context.Context, batch []Record) error
}

// Handler is an in-process destination: it returns nil once the message is handled.
// A returned error (or a panic) counts as a failed attempt and parks the message's key until it is
// handled or dead-lettered, like a Sink's per-record failure; an error wrapping ErrPermanent
// dead-letters it at once, one wrapping ErrUnavailable blocks the destination without counting
// an attempt, and one wrapping ErrFatal stops the relay.
type Handler func(ctx context.Context, m Message) error

var (
	// ErrUnavailable marks a systemic failure: the sink cannot deliver anything right now.
	ErrUnavailable = errors.New("outbox: sink unavailable")
	// ErrPermanent marks a failure that retrying cannot fix (too large, rejected by the receiver).
	ErrPermanent = errors.New("outbox: permanent delivery failure")
	// ErrNotAttempted marks a record the sink did not try to deliver in this Send.
	ErrNotAttempted = errors.New("outbox: not attempted")
	// ErrFatal marks a failure of the sink itself that no retry by this relay can heal, e.g. a
	// transactional Kafka producer fenced by another instance: the relay stops with it (see [Fatal]).
	ErrFatal = errors.New("outbox: sink failed for good")
)

// BatchError reports per-record results of a Sink.Send: Errs has one entry per record of the batch,
// nil for each delivered one.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	failed := 0
	var first error
	for _, err := range e.Errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("outbox: %d of %d records failed, first: %v", failed, len(e.Errs), first)
}

// Unavailable wraps err as a systemic failure (see ErrUnavailable).
func Unavailable(err error) error { return &classified{kind: ErrUnavailable, err: err} }

// Permanent wraps err as a permanent per-record failure (see ErrPermanent).
func Permanent(err error) error { return &classified{kind: ErrPermanent, err: err} }

type classified struct {
	kind error
	err  error
}

func (c *classified) Error() string {
	if c.err == nil {
		return c.kind.Error()
	}
	return c.err.Error()
}

func (c *classified) Unwrap() []error { return []error{c.kind, c.err} }

// Fatal wraps err as a failure of the sink itself (see ErrFatal). The relay stops with it: [Relay.Wait]
// returns it, the records of the call are not acked (as for [ErrUnavailable]) and the slot keeps the
// position of what was acked before, so a new relay (a restart of the process, or the daemon starting an
// outbox again) delivers them. A sink returns it when only starting over can heal it: a
// [PositionSink] resumes again then. The error also wraps ErrUnavailable.
func Fatal(err error) error {
	return &classified{kind: ErrFatal, err: &classified{kind: ErrUnavailable, err: err}}
}

// IsFatal reports whether err is a failure of the sink itself ([Fatal]).
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// fatalOf returns err when it is [Fatal], else the first per-record error of a *BatchError in it that is,
// else nil.
func fatalOf(err error) error {
	if IsFatal(err) {
		return err
	}
	var be *BatchError
	if errors.As(err, &be) {
		for _, e := range be.Errs {
			if IsFatal(e) {
				return e
			}
		}
	}
	return nil
}

// NotAttempted wraps err for a record the sink did not try (see ErrNotAttempted): no attempt is counted.
func NotAttempted(err error) error { return &classified{kind: ErrNotAttempted, err: err} }

// IsUnavailable reports whether err marks the sink as unavailable (systemic).
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsPermanent reports whether err is a permanent per-record failure.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// RetryAfter returns err carrying a wait of d that the destination asked for (an HTTP Retry-After
// header, a broker throttle): the relay does not try the record, or for an [ErrUnavailable] error
// the destination, again before d has passed. Its class (unavailable, permanent, not attempted,
// retryable) stays err's. A d of zero or less returns err unchanged.
func RetryAfter(err error, d time.Duration) error {
	if err == nil || d <= 0 {
		return err
	}
	return &retryAfter{err: err, d: d}
}

// RetryAfterOf returns the largest wait carried by err ([RetryAfter]), or 0.
func RetryAfterOf(err error) time.Duration {
	var d time.Duration
	for err != nil {
		if ra, ok := err.(*retryAfter); ok {
			d = max(d, ra.d)
			err = ra.err
			continue
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				d = max(d, RetryAfterOf(e))
			}
			return d
		default:
			return d
		}
	}
	return d
}

type retryAfter struct {
	err error
	d   time.Duration
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }
