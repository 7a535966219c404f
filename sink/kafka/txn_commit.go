package kafka

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// idleCommitEvery is how often an idle sink looks whether the relay's watermark moved past the
// stored position, and then commits a transaction holding only the position (so the slot follows).
const idleCommitEvery = 200 * time.Millisecond

// run commits the open transaction again and again until stop: it begins it, waits until it is due
// (commit) and begins the next.
func (e *eos) run() {
	defer close(e.done)
	idle := time.NewTicker(max(idleCommitEvery, e.cfg.CommitInterval))
	defer idle.Stop()
	last := time.Now()
	for {
		e.mu.Lock()
		t, broken := e.open, e.broken
		e.mu.Unlock()
		if broken != nil || !e.begin(t) { // broken: fail already settled t
			return
		}
		if !e.due(t, idle, last) {
			e.closeOpen(t, ErrClosed)
			return
		}
		e.commit(t)
		last = time.Now()
	}
}

// begin begins t in the producer, retrying (after aborting what the producer holds) until it
// succeeds, the producer fails for good or stop; t.begun is closed either way.
func (e *eos) begin(t *txn) bool {
	for attempt := 1; ; attempt++ {
		err := e.producer.BeginTxn()
		if err == nil {
			close(t.begun)
			return true
		}
		st := e.producer.TxnStatus()
		if st&sarama.ProducerTxnFlagFatalError != 0 {
			_ = e.fail(t, err)
			return false
		}
		if st&(sarama.ProducerTxnFlagAbortableError|sarama.ProducerTxnFlagEndTransaction) != 0 { // an abort to finish
			if aerr := e.producer.AbortTxn(); aerr != nil {
				e.log.Warn("abort the failed transaction", zap.Error(aerr))
			}
		}
		e.log.Warn("begin a transaction; retrying", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-e.stop:
			t.err = ErrClosed
			close(t.begun)
			return false
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 5*time.Second)):
		}
	}
}

// fail marks the sink broken by err (fenced, or a fatal producer error) and t failed with it; it
// returns the error every Send now fails with ([outbox.Fatal]: the relay stops).
func (e *eos) fail(t *txn, err error) error {
	broken := fmt.Errorf("kafka: transactional producer %q failed for good: %w", e.txnID, err)
	if errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) {
		broken = fmt.Errorf("%w (transactional.id %q): %w", ErrFenced, e.txnID, err)
	}
	broken = outbox.Fatal(broken)
	e.mu.Lock()
	if e.broken == nil {
		e.broken = broken
		e.stats.fenced.Add(1)
		e.log.Error("exactly-once producer failed for good: the relay stops; a new start resumes from the stored position", zap.Error(broken))
	}
	broken = e.broken
	e.mu.Unlock()
	select {
	case <-t.begun: // already settled: Sends may be reading t.err
	default:
		t.err = broken
		close(t.begun)
	}
	return broken
}

// joinGrace bounds how long a transaction holding records stays open for the Sends that chose it but
// have not fed it yet (woken together when it began, they reach it one after another).
const joinGrace = 10 * time.Millisecond

// due waits until t should be committed: it holds records, CommitInterval has passed since the first
// and no Send is still joining it (or joinGrace has passed), or it holds CommitRecords; or it holds
// none but the relay's watermark moved past the stored position and the last commit is
// idleCommitEvery old. False on stop.
func (e *eos) due(t *txn, idle *time.Ticker, last time.Time) bool {
	var timer <-chan time.Time
	for {
		e.mu.Lock()
		n, first, joining := t.n, t.first, t.joining
		e.mu.Unlock()
		switch {
		case n >= e.cfg.CommitRecords:
			return true
		case n > 0:
			hold := first.Add(e.cfg.CommitInterval)
			if joining > 0 {
				hold = later(hold, first.Add(joinGrace))
			}
			wait := time.Until(hold)
			if wait <= 0 {
				return true
			}
			timer = time.After(wait)
		case time.Since(last) >= idleCommitEvery && e.mark() > e.pos.w:
			return true
		}
		select {
		case <-e.kick:
		case <-timer:
		case <-idle.C:
		case <-e.stop:
			return false
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// close closes t to new records and makes a new transaction the open one; it returns t's records.
func (e *eos) closeTxn(t *txn) []recKey {
	t.feed.Lock()
	defer t.feed.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	t.closed = true
	e.open = newTxn()
	return t.keys
}

// commit writes the position into t, waits for every record's ack and commits t (or aborts it when a
// record failed, the position does not fit or the commit failed), then settles the Sends waiting.
func (e *eos) commit(t *txn) {
	keys := e.closeTxn(t)
	next := e.pos.next(e.mark(), keys) // the watermark read after t closed: nothing of t is below it
	val := next.encode()
	if len(val) > e.cfg.PositionMaxBytes {
		var left int
		next, val, left = next.fit(e.cfg.PositionMaxBytes)
		e.stats.overflow.Add(uint64(left))
		e.log.Warn("position too large: the newest records committed above the relay's watermark are left out of it and would be delivered again after a crash (a record parked for long holds the watermark back?)",
			zap.Int("left_out", left), zap.String("watermark", next.w.String()), zap.Int("max_bytes", e.cfg.PositionMaxBytes))
	}
	t.acks.Add(1)
	e.producer.Input() <- &sarama.ProducerMessage{Topic: e.cfg.PositionTopic, Partition: e.posPart,
		Key: sarama.StringEncoder(e.txnID), Value: sarama.ByteEncoder(val), Metadata: &txnSlot{t: t, pos: true}}
	t.acks.Wait()
	var err error
	switch {
	case t.posErr != nil:
		err = fmt.Errorf("kafka: write the position to %q: %w", e.cfg.PositionTopic, t.posErr)
	case t.failed != nil:
		err, t.byRec = t.failed, true
	default:
		err = e.commitTxn()
	}
	if err != nil && e.producer.TxnStatus()&sarama.ProducerTxnFlagFatalError == 0 {
		if aerr := e.producer.AbortTxn(); aerr != nil {
			e.log.Warn("abort the transaction", zap.Error(aerr))
		}
	}
	e.settle(t, keys, next, err)
}

// commitTxn commits the producer's transaction. A failure that leaves the producer neither in an
// abortable nor a fatal state (the coordinator did not answer: the transaction may have committed) is
// retried until it resolves or the sink closes: treating it as aborted would send its records again.
func (e *eos) commitTxn() error {
	err := e.producer.CommitTxn()
	for attempt := 1; err != nil && e.producer.TxnStatus()&sarama.ProducerTxnFlagInError == 0; attempt++ {
		e.log.Warn("commit: outcome unknown; committing again", zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-e.stop:
			return fmt.Errorf("kafka: commit outcome unknown at close (the next start resolves it): %w", err)
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
		err = e.producer.CommitTxn()
	}
	return err
}

// settle records t's outcome and wakes the Sends waiting for it.
func (e *eos) settle(t *txn, keys []recKey, next *position, err error) {
	fatal := err != nil && (e.producer.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 || errors.Is(err, sarama.ErrProducerFenced))
	e.mu.Lock()
	for _, k := range keys {
		delete(e.pending, k)
	}
	if err == nil {
		e.pos = next
		e.durable.Store(uint64(next.w))
	}
	first := t.first
	e.mu.Unlock()
	switch {
	case err == nil && len(keys) == 0:
		e.stats.positionOnly.Add(1)
	case err == nil:
		e.stats.committed.Add(1)
		e.stats.records.Add(uint64(len(keys)))
		e.stats.nanos.Add(uint64(time.Since(first)))
	default:
		e.stats.aborted.Add(1)
	}
	if fatal {
		err = e.fail(e.current(), err)
	} else if err != nil && !t.byRec {
		e.log.Warn("transaction aborted; its records are sent again", zap.Int("records", len(keys)), zap.Error(err))
	}
	t.err = err
	close(t.done)
}

func (e *eos) current() *txn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.open
}

// closeOpen ends the open transaction t without committing it (the sink closes): its records are
// aborted (or never become visible: the broker aborts the transaction at its timeout, or the next
// instance's start does) and its Sends fail with err.
func (e *eos) closeOpen(t *txn, err error) {
	keys := e.closeTxn(t)
	if len(keys) > 0 {
		t.acks.Wait()
		if aerr := e.producer.AbortTxn(); aerr != nil {
			e.log.Warn("close: abort the open transaction", zap.Error(aerr))
		}
	}
	e.mu.Lock()
	for _, k := range keys {
		delete(e.pending, k)
	}
	e.mu.Unlock()
	t.err = outbox.Unavailable(err)
	close(t.done)
	next := e.current()
	next.err = ErrClosed
	close(next.begun) // Sends waiting for the next transaction see it
}
