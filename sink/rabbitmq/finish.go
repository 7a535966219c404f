package rabbitmq

import (
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// finish records the outcome of record i and returns ready with its successor of its key: ready to go
// when i was delivered or failed permanently, held back (ErrNotAttempted) when it failed otherwise.
func (s *Sink) finish(c *call, i int, k kind, err error, ready []int) []int {
	if k == kindUnroutable && s.cfg.Unroutable == UnroutablePermanent {
		k = kindPermanent
		err = fmt.Errorf("rabbitmq: message %s: exchange %q routed it to no queue (routing key %q): bind a queue for it: %w",
			c.batch[i].ID, c.exchanges[i], c.keys[i], errUnroutable)
		s.stats.unroutable.Add(1)
	} else if k == kindUnroutable {
		k = kindUnavailable
		err = fmt.Errorf("rabbitmq: exchange %q routes routing key %q to no queue (destination %q): %w",
			c.exchanges[i], c.keys[i], c.batch[i].Destination, errUnroutable)
		s.stats.unroutable.Add(1)
	}
	c.state[i], c.kinds[i] = stateDone, k
	if err != nil {
		c.errs[i] = err
	}
	n := c.next[i]
	if n < 0 {
		return ready
	}
	if k == kindOK || k == kindPermanent {
		return append(ready, int(n))
	}
	for ; n >= 0; n = c.next[n] {
		c.state[n], c.kinds[n] = stateDone, kindNotAttempted
		c.errs[n] = outbox.NotAttempted(fmt.Errorf("rabbitmq: message %s waits behind message %s of its key %q, which failed",
			c.batch[n].ID, c.batch[i].ID, c.batch[i].Key))
	}
	return ready
}

var errUnroutable = errors.New("unroutable (returned by the broker)")

// expire fails the records whose confirm is overdue.
func (s *Sink) expire(c *call, ready []int) []int {
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
		if p := c.pubs[h.idx]; p.unregister(c.tags[h.idx]) {
			c.inFlight--
			if why := p.l.blocked.Load(); why != nil { // the broker holds it: the link is fine
				ready = s.finish(c, h.idx, kindUnavailable, fmt.Errorf("rabbitmq: no publisher confirm within %s: the broker blocks publishing: %s",
					s.cfg.ConfirmTimeout, *why), ready)
				continue
			}
			err := fmt.Errorf("rabbitmq: no publisher confirm within %s (broker slow or unreachable)", s.cfg.ConfirmTimeout)
			ready = s.finish(c, h.idx, kindUnavailable, err, ready)
			// A healthy channel confirms every message: without one, the connection is presumed cut
			// (a silent partition, which heartbeats notice only later); reconnect now.
			p.l.die(err)
		}
	}
	return ready
}

// result classifies the call's outcome into what Send returns and counts it.
func (s *Sink) result(c *call) error {
	failed := false
	for i, k := range c.kinds {
		switch k {
		case kindOK:
			s.stats.delivered.Add(1)
			continue
		case kindPermanent:
			s.stats.permanent.Add(1)
			if !outbox.IsPermanent(c.errs[i]) {
				c.errs[i] = outbox.Permanent(c.errs[i])
			}
		case kindUnavailable:
			s.stats.unavailable.Add(1)
			c.errs[i] = outbox.Unavailable(fmt.Errorf("rabbitmq: message %s to exchange %q: %w", c.batch[i].ID, c.exchanges[i], c.errs[i]))
		}
		failed = true
	}
	if failed {
		return &outbox.BatchError{Errs: c.errs}
	}
	return nil
}

func amqpNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}
