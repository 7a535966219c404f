package nats

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// call is one Send: the records with their subjects, and the reply token of each record in flight.
// It is the flight.Publisher of its records.
type call struct {
	*flight.Call
	s        *Sink
	subjects []string
	route    []bool   // subject taken from the Route
	tokens   []uint64 // reply token of a record in flight
}

// Send publishes batch and waits for every record's PubAck. See [outbox.Sink] for what it returns.
// A record's subject is its destination's configured subject (Config.Subjects), else its Route. A record
// with no subject, a Route that is not an allowed subject, or larger than the server's max_payload
// (headers included) or the stream's max_msg_size fails permanently. No stream for a configured subject,
// a lost connection, a PubAck timeout or a full stream fail the record as unavailable (the destination
// blocks); no stream for a subject named by a Route fails that record only (retried, then
// dead-lettered). Once a record fails, the later records of its key in the batch are not sent
// ([outbox.ErrNotAttempted]).
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	if len(batch) == 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	c := s.newCall(batch)
	if err := c.Run(ctx, c); err != nil {
		return outbox.Unavailable(fmt.Errorf("nats: wait for PubAcks: %w", err))
	}
	return s.result(c)
}

// newCall resolves every record's subject; a record without one fails permanently.
func (s *Sink) newCall(batch []outbox.Record) *call {
	n := len(batch)
	c := &call{s: s, subjects: make([]string, n), route: make([]bool, n), tokens: make([]uint64, n)}
	c.Call = flight.New("nats", batch, s.slots, s.cfg.AckTimeout, func(i int) (err error) {
		c.subjects[i], c.route[i], err = s.subjectFor(&batch[i])
		return err
	})
	return c
}

// Publish sends record i (a slot is held for it).
func (c *call) Publish(_ context.Context, i int) (bool, flight.Kind, error) {
	s := c.s
	r := &c.Batch[i]
	m := s.message(r, c.subjects[i])
	if limit := s.nc.MaxPayload(); limit > 0 {
		if size := msgSize(m); size > limit {
			s.slots.Release()
			return false, flight.Permanent, outbox.Permanent(fmt.Errorf("nats: message %s is %d bytes with its headers, over the server's max_payload %d: %w",
				r.ID, size, limit, nats.ErrMaxPayload))
		}
	}
	token, reply := s.register(c, i)
	m.Reply = reply
	c.tokens[i] = token
	if err := s.nc.PublishMsg(m); err != nil {
		if !s.unregister(token) {
			return true, 0, nil // a disconnect failed it meanwhile: its result is on the way
		}
		return false, classifyPublish(err), fmt.Errorf("nats: publish message %s to %q: %w", r.ID, c.subjects[i], err)
	}
	return true, 0, nil
}

// Proceeds lets the next record of a key go once one is stored (a duplicate was stored before) or
// failed for good.
func (c *call) Proceeds(k flight.Kind) bool {
	return k == flight.OK || k == kindDuplicate || k == flight.Permanent
}

// Overdue fails record i, whose PubAck did not come within AckTimeout, as unavailable, and checks
// that the connection still answers.
func (c *call) Overdue(i int) (bool, flight.Kind, error) {
	if !c.s.unregister(c.tokens[i]) {
		return false, 0, nil
	}
	c.s.checkConn()
	return true, flight.Unavailable, outbox.Unavailable(ackTimeoutErr(c.s.cfg.AckTimeout))
}

// Abandon stops waiting for record i's PubAck: its slot is released and a late PubAck dropped.
func (c *call) Abandon(i int) { c.s.unregister(c.tokens[i]) }

// checkConn checks, once at a time, that the connection still answers a PING after a PubAck timed
// out; if not (a silent network cut, which PINGs notice only after several intervals), it reconnects
// at once.
func (s *Sink) checkConn() {
	if !s.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.checking.Store(false)
		if err := s.nc.FlushTimeout(min(2*time.Second, s.cfg.AckTimeout)); err != nil && !s.closed.Load() {
			s.log.Warn("connection does not answer after a PubAck timeout; reconnecting", zap.Error(err))
			_ = s.nc.ForceReconnect()
		}
	}()
}

// result classifies the call's outcome into what Send returns, counts it and updates Blocked.
func (s *Sink) result(c *call) error {
	failed := false
	for i, k := range c.Kinds {
		switch k {
		case flight.OK, kindDuplicate:
			s.stats.delivered.Add(1)
			if k == kindDuplicate {
				s.stats.duplicates.Add(1)
			}
			if !c.route[i] {
				s.unblock(c.subjects[i])
			}
			continue
		case flight.Permanent:
			s.stats.permanent.Add(1)
			if !outbox.IsPermanent(c.Errs[i]) {
				c.Errs[i] = outbox.Permanent(fmt.Errorf("nats: message %s to %q: %w", c.Batch[i].ID, c.subjects[i], c.Errs[i]))
			}
		case kindRetry:
			c.Errs[i] = fmt.Errorf("nats: message %s to %q: %w", c.Batch[i].ID, c.subjects[i], c.Errs[i])
		case flight.Unavailable:
			s.stats.unavailable.Add(1)
			c.Errs[i] = outbox.Unavailable(c.Errs[i])
		case kindNoStream:
			r := &c.Batch[i]
			if c.route[i] {
				s.stats.routeNoStream.Add(1)
				c.Errs[i] = fmt.Errorf("nats: message %s: no stream takes subject %q named by its Route (destination %q has no configured subject): %w",
					r.ID, c.subjects[i], r.Destination, c.Errs[i])
			} else {
				s.stats.noStream.Add(1)
				s.block(c.subjects[i], string(r.Destination))
				c.Errs[i] = outbox.Unavailable(fmt.Errorf("nats: no stream takes subject %q (destination %q): %w", c.subjects[i], r.Destination, c.Errs[i]))
			}
		}
		failed = true
	}
	if failed {
		return &outbox.BatchError{Errs: c.Errs}
	}
	return nil
}

// msgSize is the size the server compares with max_payload: the encoded headers plus the data.
func msgSize(m *nats.Msg) int64 {
	n := 0
	if len(m.Header) > 0 {
		n = len("NATS/1.0\r\n") + 2
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + 2 + len(v) + 2
			}
		}
	}
	return int64(n + len(m.Data))
}
