package rabbitmq

import (
	"context"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/keychain"
)

// kind is the outcome of one record.
type kind uint8

const (
	kindPending      kind = iota
	kindOK                // confirmed (routed)
	kindPermanent         // retrying cannot help: dead-letter
	kindUnavailable       // systemic: the destination blocks
	kindUnroutable        // returned: no queue bound for its routing key
	kindNotAttempted      // held back behind a failed record of its key
)

// result is the outcome of one published record.
type result struct {
	idx  int
	kind kind
	err  error
}

// record states within a call.
const (
	statePending uint8 = iota
	stateInFlight
	stateDone
)

// call is one Send: its records, their chains per key and their results.
type call struct {
	batch     []outbox.Record
	exchanges []string
	keys      []string
	errs      []error
	kinds     []kind
	next      []int32
	state     []uint8
	pubs      []*publisher // the channel a record in flight went out on
	tags      []uint64     // its delivery tag there
	results   chan result
	inFlight  int
	sent      []sentRecord // published records in publish order, with their deadlines
}

type sentRecord struct {
	idx      int
	deadline time.Time
}

// Send publishes batch and waits for every record's publisher confirm. See [outbox.Sink] for what it
// returns. A record goes to its destination's exchange with the configured routing key, else its
// Route. A record of an unknown destination, with a Route that is not an allowed routing key, or over
// MaxMessageBytes fails permanently; one the exchange cannot route is returned by the broker and fails
// permanently (or, with Unroutable "unavailable", blocks). A missing exchange, a lost connection or
// channel, a nack or a confirm timeout fail the record as unavailable (the destination blocks). Once a
// record fails, the later records of its key in the batch are not sent ([outbox.ErrNotAttempted]).
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	if len(batch) == 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	l := s.link.Load()
	if l == nil {
		return outbox.Unavailable(s.notConnected())
	}
	c, ready := s.newCall(batch)
	for _, ex := range uniqueExchanges(c) {
		if err := s.checkExchange(l, ex); err != nil {
			s.stats.unavailable.Add(uint64(len(batch)))
			if amqpNotFound(err) {
				s.stats.missingExchange.Add(uint64(len(batch)))
			}
			return outbox.Unavailable(err)
		}
	}
	if err := s.run(ctx, c, ready); err != nil {
		return err
	}
	return s.result(c)
}

func uniqueExchanges(c *call) []string {
	var out []string
	seen := map[string]bool{}
	for i, ex := range c.exchanges {
		if c.state[i] == stateDone || seen[ex] {
			continue
		}
		seen[ex] = true
		out = append(out, ex)
	}
	return out
}

// newCall resolves every record's exchange and routing key and chains the records of each key; it
// returns the call and the records that can be published at once.
func (s *Sink) newCall(batch []outbox.Record) (*call, []int) {
	n := len(batch)
	c := &call{batch: batch, exchanges: make([]string, n), keys: make([]string, n), errs: make([]error, n), kinds: make([]kind, n),
		state: make([]uint8, n), pubs: make([]*publisher, n), tags: make([]uint64, n), results: make(chan result, n)}
	chain := keychain.New(n)
	for i := range batch {
		ex, key, err := s.routeFor(&batch[i])
		if err != nil {
			c.errs[i], c.kinds[i], c.state[i] = err, kindPermanent, stateDone
			continue
		}
		c.exchanges[i], c.keys[i] = ex, key
		chain.Add(i, batch[i].Key)
	}
	c.next = chain.Next
	return c, chain.Ready
}

// run publishes the ready records as slots free up, and each record's successor of its key once it is
// confirmed, until every record is done. It returns an error only when ctx ends.
func (s *Sink) run(ctx context.Context, c *call, ready []int) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(ready) > 0 || c.inFlight > 0 {
		var acquire chan struct{}
		if len(ready) > 0 {
			acquire = s.slots
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
			ready = s.publish(ctx, c, ready[0], ready[1:])
			for len(ready) > 0 {
				select {
				case s.slots <- struct{}{}:
					ready = s.publish(ctx, c, ready[0], ready[1:])
					continue
				default:
				}
				break
			}
		case r := <-c.results:
			c.inFlight--
			ready = s.finish(c, r.idx, r.kind, r.err, ready)
		case <-expire:
			timer = nil
			ready = s.expire(c, ready)
		case <-ctx.Done():
			for i, st := range c.state {
				if st == stateInFlight {
					c.pubs[i].unregister(c.tags[i])
				}
			}
			return outbox.Unavailable(fmt.Errorf("rabbitmq: wait for confirms: %w", ctx.Err()))
		}
	}
	return nil
}

// publish sends record i (a slot is held for it) on the next channel and returns ready; a record that
// cannot be sent is finished at once and its slot released.
func (s *Sink) publish(ctx context.Context, c *call, i int, ready []int) []int {
	l := s.link.Load()
	if l == nil {
		<-s.slots
		return s.finish(c, i, kindUnavailable, s.notConnected(), ready)
	}
	if why := l.blocked.Load(); why != nil {
		<-s.slots
		return s.finish(c, i, kindUnavailable, fmt.Errorf("rabbitmq: the broker blocks publishing: %s", *why), ready)
	}
	r := &c.batch[i]
	msg := s.publishing(r)
	if len(msg.Body) > s.cfg.MaxMessageBytes {
		<-s.slots
		return s.finish(c, i, kindPermanent, outbox.Permanent(fmt.Errorf("rabbitmq: message %s is %d bytes as a body, over MaxMessageBytes %d",
			r.ID, len(msg.Body), s.cfg.MaxMessageBytes)), ready)
	}
	p := l.pubs[s.rr.Add(1)%uint64(len(l.pubs))]
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-s.slots
		return s.finish(c, i, kindUnavailable, s.notConnected(), ready)
	}
	tag := p.ch.GetNextPublishSeqNo()
	p.pending[tag] = waiter{c: c, idx: i}
	err := p.ch.PublishWithContext(ctx, c.exchanges[i], c.keys[i], true, false, msg)
	if err != nil {
		delete(p.pending, tag)
	}
	p.mu.Unlock()
	if err != nil {
		<-s.slots
		return s.finish(c, i, kindUnavailable, fmt.Errorf("rabbitmq: publish message %s: %w", r.ID, err), ready)
	}
	c.pubs[i], c.tags[i], c.state[i] = p, tag, stateInFlight
	c.inFlight++
	c.sent = append(c.sent, sentRecord{idx: i, deadline: time.Now().Add(s.cfg.ConfirmTimeout)})
	return ready
}
