// Package flight runs one Send of a sink that publishes records asynchronously and awaits an
// acknowledgement for each (a NATS PubAck, a RabbitMQ publisher confirm). It publishes every record
// whose key has no earlier record awaiting its acknowledgement, bounds the records awaiting one over
// all the Sends of a sink ([Slots]), publishes a record's successor of its key once the record is
// acknowledged or failed permanently, holds the rest of the key back ([outbox.ErrNotAttempted]) once
// it failed otherwise, and fails the records whose acknowledgement is overdue. A record is therefore
// never published before every earlier record of its key in the batch is stored, whatever fails in
// between: the order per key holds, and keys run in parallel.
//
// The sink provides the [Publisher] (how to publish one record, what an overdue acknowledgement
// means) and delivers each acknowledgement to [Call.Deliver] from its own goroutine.
package flight

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/keychain"
)

// Kind is the outcome of one record. A sink may define kinds of its own from Own on.
type Kind uint8

const (
	Pending      Kind = iota
	OK                // acknowledged
	Permanent         // retrying cannot help: dead-letter
	Unavailable       // systemic: the destination blocks
	NotAttempted      // held back behind a failed record of its key
	Own               // the first kind a sink defines
)

// Result is the outcome of record Idx of a call.
type Result struct {
	Idx  int
	Kind Kind
	Err  error
}

// Slots bounds the records awaiting an acknowledgement over all the Sends of a sink, one slot each:
// Run takes a slot before it publishes a record, and whoever ends the wait (the sink's dispatcher on
// an acknowledgement, a timeout, a lost connection) releases it. Safe for concurrent use.
type Slots chan struct{}

// NewSlots returns n slots.
func NewSlots(n int) Slots { return make(Slots, n) }

// Release frees one slot.
func (s Slots) Release() { <-s }

// Publisher is what a sink does for the records of one call. Run calls its methods from the Send's
// goroutine, never two at once.
type Publisher interface {
	// Publish sends record i, for which a slot is held, and reports whether it is on its way (its
	// Result will be delivered). When it is not, the slot is released and k and err are its outcome.
	Publish(ctx context.Context, i int) (sent bool, k Kind, err error)
	// Overdue is called for record i when its acknowledgement did not come within the timeout; it
	// reports whether the record was still waiting, in which case it no longer is (its slot is
	// released and a late acknowledgement is dropped) and k and err are its outcome.
	Overdue(i int) (waiting bool, k Kind, err error)
	// Abandon stops waiting for record i, sent and not yet acknowledged, when the Send's ctx ends.
	Abandon(i int)
	// Proceeds reports whether a record of kind k lets the next record of its key go (it is stored,
	// or failed for good); otherwise the rest of the key is held back.
	Proceeds(k Kind) bool
}

// record states within a call.
const (
	statePending uint8 = iota
	stateInFlight
	stateDone
)

// Call is one Send: its records, their chains per key and their outcomes. Kinds and Errs hold each
// record's outcome once Run returned nil. Only Deliver is safe to call from other goroutines.
type Call struct {
	Batch []outbox.Record
	Kinds []Kind
	Errs  []error

	name     string // the sink's, to start errors
	slots    Slots
	timeout  time.Duration
	state    []uint8
	next     []int32
	ready    []int
	results  chan Result
	inFlight int
	sent     []sentRecord // published records in publish order, with their deadlines
}

type sentRecord struct {
	idx      int
	deadline time.Time
}

// New returns the call of batch for the sink name, whose records wait at most timeout for their
// acknowledgement. resolve checks record i before anything is published (its route, say): an error
// fails the record permanently with that error, outside the order of its key.
func New(name string, batch []outbox.Record, slots Slots, timeout time.Duration, resolve func(i int) error) *Call {
	n := len(batch)
	c := &Call{Batch: batch, Kinds: make([]Kind, n), Errs: make([]error, n), name: name, slots: slots, timeout: timeout,
		state: make([]uint8, n), results: make(chan Result, n)}
	chain := keychain.New(n)
	for i := range batch {
		if err := resolve(i); err != nil {
			c.Errs[i], c.Kinds[i], c.state[i] = err, Permanent, stateDone
			continue
		}
		chain.Add(i, batch[i].Key)
	}
	c.next, c.ready = chain.Next, chain.Ready
	return c
}

// Done reports whether record i has its outcome.
func (c *Call) Done(i int) bool { return c.state[i] == stateDone }

// Deliver hands in the outcome of a record Run published; it never blocks. Deliver it once per
// published record, after releasing its slot.
func (c *Call) Deliver(r Result) { c.results <- r }

// Run publishes the ready records as slots free up, and each record's successor of its key once it is
// acknowledged, until every record is done. It returns an error only when ctx ends: the records still
// waiting are abandoned.
func (c *Call) Run(ctx context.Context, p Publisher) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(c.ready) > 0 || c.inFlight > 0 {
		var acquire Slots
		if len(c.ready) > 0 {
			acquire = c.slots
		}
		var expire <-chan time.Time
		if len(c.sent) > 0 {
			if timer == nil {
				timer = time.NewTimer(time.Until(c.sent[0].deadline))
			}
			expire = timer.C
		}
		select {
		case acquire <- struct{}{}:
			c.publish(ctx, p)
			for len(c.ready) > 0 { // publish what fits without waiting
				select {
				case c.slots <- struct{}{}:
					c.publish(ctx, p)
					continue
				default:
				}
				break
			}
		case r := <-c.results:
			c.inFlight--
			c.finish(p, r.Idx, r.Kind, r.Err)
		case <-expire:
			timer = nil
			c.expire(p)
		case <-ctx.Done():
			for i, st := range c.state {
				if st == stateInFlight {
					p.Abandon(i)
				}
			}
			return ctx.Err()
		}
	}
	return nil
}

// publish sends the first ready record, for which a slot is held.
func (c *Call) publish(ctx context.Context, p Publisher) {
	i := c.ready[0]
	c.ready = c.ready[1:]
	sent, k, err := p.Publish(ctx, i)
	if !sent {
		c.finish(p, i, k, err)
		return
	}
	c.state[i] = stateInFlight
	c.inFlight++
	c.sent = append(c.sent, sentRecord{idx: i, deadline: time.Now().Add(c.timeout)})
}

// finish records the outcome of record i and makes its successor of its key ready to go when p lets
// it proceed, or holds the rest of the key back (ErrNotAttempted).
func (c *Call) finish(p Publisher, i int, k Kind, err error) {
	c.state[i], c.Kinds[i] = stateDone, k
	if err != nil {
		c.Errs[i] = err
	}
	n := c.next[i]
	if n < 0 {
		return
	}
	if p.Proceeds(k) {
		c.ready = append(c.ready, int(n))
		return
	}
	for ; n >= 0; n = c.next[n] {
		c.state[n], c.Kinds[n] = stateDone, NotAttempted
		c.Errs[n] = outbox.NotAttempted(fmt.Errorf("%s: message %s waits behind message %s of its key %q, which failed",
			c.name, c.Batch[n].ID, c.Batch[i].ID, c.Batch[i].Key))
	}
}

// expire fails the records whose acknowledgement is overdue.
func (c *Call) expire(p Publisher) {
	now := time.Now()
	for len(c.sent) > 0 {
		h := c.sent[0]
		if c.state[h.idx] != stateInFlight {
			c.sent = c.sent[1:]
			continue
		}
		if h.deadline.After(now) {
			break
		}
		c.sent = c.sent[1:]
		if waiting, k, err := p.Overdue(h.idx); waiting {
			c.inFlight--
			c.finish(p, h.idx, k, err)
		}
	}
}
