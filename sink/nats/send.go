package nats

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/keychain"
)

// record states within a call.
const (
	statePending uint8 = iota
	stateInFlight
	stateDone
)

// call is one Send: its records, their chains per key and their results.
type call struct {
	batch    []outbox.Record
	subjects []string
	route    []bool   // subject taken from the Route
	errs     []error  // per record
	kinds    []kind   // per record, once done
	next     []int32  // next record of the same key in this call, or -1
	state    []uint8  // statePending, stateInFlight, stateDone
	tokens   []uint64 // reply token of a record in flight
	results  chan result
	inFlight int
	// sent lists published records in publish order with their deadlines: its head is the first to
	// time out.
	sent []sentRecord
}

type sentRecord struct {
	idx      int
	deadline time.Time
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
	c, ready := s.newCall(batch)
	if err := s.run(ctx, c, ready); err != nil {
		return err
	}
	return s.result(c)
}

// newCall resolves every record's subject and chains the records of each key; it returns the call and
// the records that can be published at once (the first of each key, and every keyless record).
func (s *Sink) newCall(batch []outbox.Record) (*call, []int) {
	n := len(batch)
	c := &call{batch: batch, subjects: make([]string, n), route: make([]bool, n), errs: make([]error, n),
		kinds: make([]kind, n), state: make([]uint8, n), tokens: make([]uint64, n),
		results: make(chan result, n)}
	chain := keychain.New(n)
	for i := range batch {
		subj, fromRoute, err := s.subjectFor(&batch[i])
		if err != nil {
			c.errs[i], c.kinds[i], c.state[i] = err, kindPermanent, stateDone
			continue
		}
		c.subjects[i], c.route[i] = subj, fromRoute
		chain.Add(i, batch[i].Key)
	}
	c.next = chain.Next
	return c, chain.Ready
}

// run publishes the ready records as slots free up, and each record's successor of its key once its
// PubAck arrives, until every record is done. It returns an error only when ctx ends.
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
			ready = s.publish(c, ready[0], ready[1:])
			for len(ready) > 0 { // publish what fits without waiting
				select {
				case s.slots <- struct{}{}:
					ready = s.publish(c, ready[0], ready[1:])
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
			s.abandon(c)
			return outbox.Unavailable(fmt.Errorf("nats: wait for PubAcks: %w", ctx.Err()))
		}
	}
	return nil
}

// publish sends record i (a slot is held for it) and returns ready; a record that cannot be sent is
// finished at once and its slot released.
func (s *Sink) publish(c *call, i int, ready []int) []int {
	r := &c.batch[i]
	m := s.message(r, c.subjects[i])
	if limit := s.nc.MaxPayload(); limit > 0 {
		if size := msgSize(m); size > limit {
			<-s.slots
			err := outbox.Permanent(fmt.Errorf("nats: message %s is %d bytes with its headers, over the server's max_payload %d: %w",
				r.ID, size, limit, nats.ErrMaxPayload))
			return s.finish(c, i, kindPermanent, err, ready)
		}
	}
	token, reply := s.register(c, i)
	m.Reply = reply
	c.tokens[i], c.state[i] = token, stateInFlight
	c.inFlight++
	if err := s.nc.PublishMsg(m); err != nil {
		if !s.unregister(token) {
			return ready // a disconnect failed it meanwhile: its result is on the way
		}
		c.inFlight--
		k := classifyPublish(err)
		return s.finish(c, i, k, fmt.Errorf("nats: publish message %s to %q: %w", r.ID, c.subjects[i], err), ready)
	}
	c.sent = append(c.sent, sentRecord{idx: i, deadline: time.Now().Add(s.cfg.AckTimeout)})
	return ready
}

// finish records the outcome of record i and returns ready with its successor of its key: ready to go
// when i was delivered or failed permanently, held back (ErrNotAttempted) when it failed otherwise.
func (s *Sink) finish(c *call, i int, k kind, err error, ready []int) []int {
	c.state[i], c.kinds[i] = stateDone, k
	if err != nil {
		c.errs[i] = err
	}
	n := c.next[i]
	if n < 0 {
		return ready
	}
	if k == kindOK || k == kindDuplicate || k == kindPermanent {
		return append(ready, int(n))
	}
	for ; n >= 0; n = c.next[n] {
		c.state[n], c.kinds[n] = stateDone, kindNotAttempted
		c.errs[n] = outbox.NotAttempted(fmt.Errorf("nats: message %s waits behind message %s of its key %q, which failed",
			c.batch[n].ID, c.batch[i].ID, c.batch[i].Key))
	}
	return ready
}

// expire fails the records whose PubAck is overdue.
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
		if s.unregister(c.tokens[h.idx]) {
			c.inFlight--
			ready = s.finish(c, h.idx, kindUnavailable, outbox.Unavailable(ackTimeoutErr(s.cfg.AckTimeout)), ready)
			s.checkConn()
		}
	}
	return ready
}

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

// abandon stops waiting for c's records in flight: their slots are released and late PubAcks dropped.
func (s *Sink) abandon(c *call) {
	for i, st := range c.state {
		if st == stateInFlight {
			s.unregister(c.tokens[i])
		}
	}
}

// result classifies the call's outcome into what Send returns, counts it and updates Blocked.
func (s *Sink) result(c *call) error {
	failed := false
	for i, k := range c.kinds {
		switch k {
		case kindOK, kindDuplicate:
			s.stats.delivered.Add(1)
			if k == kindDuplicate {
				s.stats.duplicates.Add(1)
			}
			if !c.route[i] {
				s.unblock(c.subjects[i])
			}
			continue
		case kindPermanent:
			s.stats.permanent.Add(1)
			if !outbox.IsPermanent(c.errs[i]) {
				c.errs[i] = outbox.Permanent(fmt.Errorf("nats: message %s to %q: %w", c.batch[i].ID, c.subjects[i], c.errs[i]))
			}
		case kindRetry:
			c.errs[i] = fmt.Errorf("nats: message %s to %q: %w", c.batch[i].ID, c.subjects[i], c.errs[i])
		case kindUnavailable:
			s.stats.unavailable.Add(1)
			c.errs[i] = outbox.Unavailable(c.errs[i])
		case kindNoStream:
			r := &c.batch[i]
			if c.route[i] {
				s.stats.routeNoStream.Add(1)
				c.errs[i] = fmt.Errorf("nats: message %s: no stream takes subject %q named by its Route (destination %q has no configured subject): %w",
					r.ID, c.subjects[i], r.Destination, c.errs[i])
			} else {
				s.stats.noStream.Add(1)
				s.block(c.subjects[i], string(r.Destination))
				c.errs[i] = outbox.Unavailable(fmt.Errorf("nats: no stream takes subject %q (destination %q): %w", c.subjects[i], r.Destination, c.errs[i]))
			}
		}
		failed = true
	}
	if failed {
		return &outbox.BatchError{Errs: c.errs}
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
