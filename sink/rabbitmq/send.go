package rabbitmq

import (
	"context"
	"fmt"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// call is one Send: the records with their exchanges and routing keys, and for each record in flight
// the channel it went out on and its delivery tag there. It is the flight.Publisher of its records.
type call struct {
	*flight.Call
	s         *Sink
	exchanges []string
	keys      []string
	pubs      []*publisher
	tags      []uint64
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
	c := s.newCall(batch)
	for _, ex := range uniqueExchanges(c) {
		if err := s.checkExchange(l, ex); err != nil {
			s.stats.unavailable.Add(uint64(len(batch)))
			if amqpNotFound(err) {
				s.stats.missingExchange.Add(uint64(len(batch)))
			}
			return outbox.Unavailable(err)
		}
	}
	if err := c.Run(ctx, c); err != nil {
		return outbox.Unavailable(fmt.Errorf("rabbitmq: wait for confirms: %w", err))
	}
	return s.result(c)
}

func uniqueExchanges(c *call) []string {
	var out []string
	seen := map[string]bool{}
	for i, ex := range c.exchanges {
		if c.Done(i) || seen[ex] {
			continue
		}
		seen[ex] = true
		out = append(out, ex)
	}
	return out
}

// newCall resolves every record's exchange and routing key; a record without one fails permanently.
func (s *Sink) newCall(batch []outbox.Record) *call {
	n := len(batch)
	c := &call{s: s, exchanges: make([]string, n), keys: make([]string, n), pubs: make([]*publisher, n), tags: make([]uint64, n)}
	c.Call = flight.New("rabbitmq", batch, s.slots, s.cfg.ConfirmTimeout, func(i int) (err error) {
		c.exchanges[i], c.keys[i], err = s.routeFor(&batch[i])
		return err
	})
	return c
}

// Publish sends record i (a slot is held for it) on the next channel.
func (c *call) Publish(ctx context.Context, i int) (bool, flight.Kind, error) {
	s := c.s
	l := s.link.Load()
	if l == nil {
		s.slots.Release()
		return false, flight.Unavailable, s.notConnected()
	}
	if why := l.blocked.Load(); why != nil {
		s.slots.Release()
		return false, flight.Unavailable, fmt.Errorf("rabbitmq: the broker blocks publishing: %s", *why)
	}
	r := &c.Batch[i]
	msg := s.publishing(r)
	if len(msg.Body) > s.cfg.MaxMessageBytes {
		s.slots.Release()
		return false, flight.Permanent, outbox.Permanent(fmt.Errorf("rabbitmq: message %s is %d bytes as a body, over MaxMessageBytes %d",
			r.ID, len(msg.Body), s.cfg.MaxMessageBytes))
	}
	p := l.pubs[s.rr.Add(1)%uint64(len(l.pubs))]
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.slots.Release()
		return false, flight.Unavailable, s.notConnected()
	}
	tag := p.ch.GetNextPublishSeqNo()
	p.pending[tag] = waiter{c: c, idx: i}
	err := p.ch.PublishWithContext(ctx, c.exchanges[i], c.keys[i], true, false, msg)
	if err != nil {
		delete(p.pending, tag)
	}
	p.mu.Unlock()
	if err != nil {
		s.slots.Release()
		return false, flight.Unavailable, fmt.Errorf("rabbitmq: publish message %s: %w", r.ID, err)
	}
	c.pubs[i], c.tags[i] = p, tag
	return true, 0, nil
}

// Abandon stops waiting for record i's confirm.
func (c *call) Abandon(i int) { c.pubs[i].unregister(c.tags[i]) }

// Proceeds lets the next record of a key go once one is confirmed or failed for good.
func (c *call) Proceeds(k flight.Kind) bool { return k == flight.OK || k == flight.Permanent }
