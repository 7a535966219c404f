package rabbitmq

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// unroutable is the outcome of record i, returned by the broker: permanent, or unavailable with
// Unroutable "unavailable".
func (c *call) unroutable(i int) flight.Result {
	c.s.stats.unroutable.Add(1)
	if c.s.cfg.Unroutable == UnroutablePermanent {
		return flight.Result{Idx: i, Kind: flight.Permanent, Err: fmt.Errorf("rabbitmq: message %s: exchange %q routed it to no queue (routing key %q): bind a queue for it: %w",
			c.Batch[i].ID, c.exchanges[i], c.keys[i], errUnroutable)}
	}
	return flight.Result{Idx: i, Kind: flight.Unavailable, Err: fmt.Errorf("rabbitmq: exchange %q routes routing key %q to no queue (destination %q): %w",
		c.exchanges[i], c.keys[i], c.Batch[i].Destination, errUnroutable)}
}

var errUnroutable = errors.New("unroutable (returned by the broker)")

// Overdue fails record i, whose confirm did not come within ConfirmTimeout, as unavailable; unless
// the broker blocks publishing, the link is presumed cut and replaced.
func (c *call) Overdue(i int) (bool, flight.Kind, error) {
	p := c.pubs[i]
	if !p.unregister(c.tags[i]) {
		return false, 0, nil
	}
	if why := p.l.blocked.Load(); why != nil { // the broker holds it: the link is fine
		return true, flight.Unavailable, fmt.Errorf("rabbitmq: no publisher confirm within %s: the broker blocks publishing: %s",
			c.s.cfg.ConfirmTimeout, *why)
	}
	err := fmt.Errorf("rabbitmq: no publisher confirm within %s (broker slow or unreachable)", c.s.cfg.ConfirmTimeout)
	// A healthy channel confirms every message: without one, the connection is presumed cut (a silent
	// partition, which heartbeats notice only later); reconnect now.
	p.l.die(err)
	return true, flight.Unavailable, err
}

// result classifies the call's outcome into what Send returns and counts it.
func (s *Sink) result(c *call) error {
	failed := false
	for i, k := range c.Kinds {
		switch k {
		case flight.OK:
			s.stats.delivered.Add(1)
			continue
		case flight.Permanent:
			s.stats.permanent.Add(1)
			if !outbox.IsPermanent(c.Errs[i]) {
				c.Errs[i] = outbox.Permanent(c.Errs[i])
			}
		case flight.Unavailable:
			s.stats.unavailable.Add(1)
			c.Errs[i] = outbox.Unavailable(fmt.Errorf("rabbitmq: message %s to exchange %q: %w", c.Batch[i].ID, c.exchanges[i], c.Errs[i]))
		}
		failed = true
	}
	if failed {
		return &outbox.BatchError{Errs: c.Errs}
	}
	return nil
}

func amqpNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}
