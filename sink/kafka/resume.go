package kafka

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

var _ outbox.PositionSink = (*Sink)(nil)

// positionReadTimeout bounds reading the position topic at Resume.
const positionReadTimeout = time.Minute

// eosRetries is how often the transactional producer retries a record when Config.Retries is 0.
const eosRetries = 5

// Resume implements [outbox.PositionSink]. Without ExactlyOnce it skips nothing. With it, it starts the
// transactional producer (which fences a previous instance with the same transactional.id and aborts
// its open transaction), reads the position last committed to the position topic (read_committed, up
// to a marker it commits itself) and returns the predicate of the records it says were delivered. A
// position of another database or slot ([ErrPositionMismatch]) or behind the slot's confirmed position
// ([ErrPositionBehindSlot]) is an error; brokers that cannot be reached are unavailable (the relay
// retries). A relay calls it before its first Send; a new relay (one started again after the last
// stopped, e.g. because this producer was fenced) calls it again: the sink then closes its producer
// (aborting its open transaction) and starts over with a new one. A Sink serves one relay at a time:
// resuming it again ends what the previous relay still had in flight (its Sends fail unavailable).
func (s *Sink) Resume(ctx context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
	if !s.cfg.ExactlyOnce.Enable {
		return nil, nil
	}
	s.resumeMu.Lock()
	defer s.resumeMu.Unlock()
	s.mu.Lock()
	closed, old := s.closed, s.eos.Swap(nil)
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if old != nil {
		old.close()
		s.log.Info("exactly-once: resuming again: the previous producer is closed", zap.String("transactional_id", old.txnID))
	}
	e, err := s.startEOS(info)
	if err != nil {
		return nil, err
	}
	pos, err := e.readPosition(ctx, info)
	if err != nil {
		e.shutdown()
		return nil, err
	}
	e.pos = pos
	e.durable.Store(uint64(pos.w))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		e.shutdown()
		return nil, ErrClosed
	}
	s.eos.Store(e)
	s.mu.Unlock()
	go e.run()
	s.log.Info("exactly-once: resumed", zap.String("transactional_id", e.txnID), zap.String("position_topic", e.cfg.PositionTopic),
		zap.String("watermark", pos.w.String()), zap.Int("committed_above", pos.size()), zap.String("slot_confirmed", info.Confirmed.String()))
	return func(r *outbox.Record) bool { return pos.delivered(recKey{r.CommitLSN, r.Seq}) }, nil
}

// Confirmable implements [outbox.PositionSink]: the watermark of the last committed position, at most w
// (w itself without ExactlyOnce).
func (s *Sink) Confirmable(w pglogrepl.LSN) pglogrepl.LSN {
	if !s.cfg.ExactlyOnce.Enable {
		return w
	}
	e := s.eos.Load()
	if e == nil {
		return 0
	}
	return e.confirmable(w)
}

// txnRetryBackoff is the wait between retries of the transaction coordinator's requests.
const txnRetryBackoff = time.Millisecond

// startEOS connects the transactional producer.
func (s *Sink) startEOS(info outbox.ResumeInfo) (*eos, error) {
	c := s.cfg.ExactlyOnce
	e := &eos{cfg: c, log: s.log, stats: &s.stats.txn, brokers: s.cfg.Brokers, txnID: c.TransactionalID, mark: info.Watermark, pending: map[recKey]*txn{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), open: newTxn()}
	if e.txnID == "" {
		if info.SystemID == "" {
			return nil, errors.New("kafka: exactly-once: the database system identifier is unknown (the relay's role may not execute pg_control_system()); set ExactlyOnce.TransactionalID (kafka.transactional_id)")
		}
		e.txnID = fmt.Sprintf("pgoutbox-%s-%s", info.SystemID, info.Slot)
	}
	sc, err := s.cfg.saramaConfig()
	if err != nil {
		return nil, err
	}
	// Bounded retries, unlike the default mode's outage mode: a record that fails aborts its whole
	// transaction, so giving up on it cannot reorder a key, and a fenced producer's records must fail
	// rather than be retried for an hour (sarama retries a batch whose AddPartitionsToTxn failed).
	pc := sc
	pc.Producer.Retry.Max = cmp.Or(s.cfg.Retries, eosRetries)
	pc.Producer.Retry.BackoffFunc = nil
	pc.Producer.Transaction.ID = e.txnID
	pc.Producer.Transaction.Timeout = c.TransactionTimeout
	// The coordinator answers CONCURRENT_TRANSACTIONS while the markers of the transaction just
	// committed are being written: sarama's default 100 ms backoff then made every transaction after
	// the first wait 100 ms (W2: p50 200 ms at 1k msgs/s). Retry sooner, as often over the same 5 s.
	pc.Producer.Transaction.Retry.Backoff = txnRetryBackoff
	pc.Producer.Transaction.Retry.Max = int(5 * time.Second / txnRetryBackoff)
	posTopic := c.PositionTopic
	pc.Producer.Partitioner = func(topic string) sarama.Partitioner {
		if topic == posTopic {
			return sarama.NewManualPartitioner(topic)
		}
		return sarama.NewMurmur2Partitioner(topic)
	}
	if e.client, err = sarama.NewClient(s.cfg.Brokers, pc); err != nil {
		return nil, outbox.Unavailable(fmt.Errorf("kafka: connect to %v: %w", s.cfg.Brokers, err))
	}
	parts, err := e.client.Partitions(posTopic)
	if err != nil {
		_ = e.client.Close()
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return nil, outbox.Unavailable(fmt.Errorf("kafka: position topic %q does not exist; create it with cleanup.policy=compact: %w", posTopic, err))
		}
		return nil, outbox.Unavailable(fmt.Errorf("kafka: look up position topic %q: %w", posTopic, err))
	}
	p, _ := sarama.NewMurmur2Partitioner(posTopic).Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(e.txnID)}, int32(len(parts)))
	e.posPart = parts[p]
	// InitProducerId: from here on an older instance with this transactional.id can commit nothing.
	if e.producer, err = sarama.NewAsyncProducerFromClient(e.client); err != nil {
		_ = e.client.Close()
		return nil, outbox.Unavailable(fmt.Errorf("kafka: transactional producer %q: %w", e.txnID, err))
	}
	e.drainResults()
	return e, nil
}

// readPosition commits a marker to the position topic's partition of e's key and reads that partition
// read_committed up to the marker: the last record of the key before it is the position committed last
// (nothing of this transactional.id can commit after the producer started). No record, or a tombstone,
// is no position: nothing is skipped.
func (e *eos) readPosition(ctx context.Context, info outbox.ResumeInfo) (*position, error) {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	if err := e.writeMarker(nonce); err != nil {
		return nil, err
	}
	cc := *e.client.Config()
	cc.Consumer.IsolationLevel = sarama.ReadCommitted
	cc.Consumer.Return.Errors = true
	consumer, err := sarama.NewConsumer(e.brokers, &cc)
	if err != nil {
		return nil, outbox.Unavailable(fmt.Errorf("kafka: read position topic %q: %w", e.cfg.PositionTopic, err))
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(e.cfg.PositionTopic, e.posPart, sarama.OffsetOldest)
	if err != nil {
		return nil, outbox.Unavailable(fmt.Errorf("kafka: read position topic %q partition %d: %w", e.cfg.PositionTopic, e.posPart, err))
	}
	defer pc.Close()
	timeout := time.NewTimer(positionReadTimeout)
	defer timeout.Stop()
	var last []byte
	for {
		select {
		case m := <-pc.Messages():
			switch string(m.Key) {
			case e.txnID:
				last = m.Value
			case e.markerKey():
				if bytes.Equal(m.Value, nonce) {
					return e.checkPosition(last, info)
				}
			}
		case cerr := <-pc.Errors():
			return nil, outbox.Unavailable(fmt.Errorf("kafka: read position topic %q: %w", e.cfg.PositionTopic, cerr))
		case <-timeout.C:
			return nil, outbox.Unavailable(fmt.Errorf("kafka: read position topic %q partition %d: marker not seen after %v (a transaction of another producer open on it?)",
				e.cfg.PositionTopic, e.posPart, positionReadTimeout))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (e *eos) markerKey() string { return e.txnID + "/resume" }

// writeMarker commits a transaction holding only a marker record (key <transactional.id>/resume,
// value nonce) to the position topic's partition of e's key.
func (e *eos) writeMarker(nonce []byte) error {
	t := newTxn()
	if err := e.producer.BeginTxn(); err != nil {
		return outbox.Unavailable(fmt.Errorf("kafka: begin the resume transaction: %w", err))
	}
	sl := &txnSlot{t: t, pos: true}
	t.acks.Add(1)
	e.producer.Input() <- &sarama.ProducerMessage{Topic: e.cfg.PositionTopic, Partition: e.posPart,
		Key: sarama.StringEncoder(e.markerKey()), Value: sarama.ByteEncoder(nonce), Metadata: sl}
	t.acks.Wait()
	err := sl.err
	if err == nil {
		err = e.producer.CommitTxn()
	}
	if err != nil {
		if e.producer.TxnStatus()&sarama.ProducerTxnFlagFatalError == 0 {
			_ = e.producer.AbortTxn()
		}
		return outbox.Unavailable(fmt.Errorf("kafka: commit the resume marker to %q: %w", e.cfg.PositionTopic, err))
	}
	return nil
}

// checkPosition decodes the stored position b and checks it against the relay.
func (e *eos) checkPosition(b []byte, info outbox.ResumeInfo) (*position, error) {
	fresh := &position{systemID: info.SystemID, slot: info.Slot, timeline: info.Timeline, exc: map[pglogrepl.LSN][]int64{}}
	if b == nil {
		e.log.Info("exactly-once: no stored position; starting from the slot's confirmed position (what was in flight before is delivered again, once)",
			zap.String("transactional_id", e.txnID))
		return fresh, nil
	}
	p, err := decodePosition(b)
	if err != nil {
		return nil, fmt.Errorf("kafka: position of %q in %q: %w", e.txnID, e.cfg.PositionTopic, err)
	}
	if p.systemID != info.SystemID || p.slot != info.Slot {
		return nil, fmt.Errorf("%w: position of %q in %q is for database %s slot %s, the relay streams database %s slot %s; configure another ExactlyOnce.TransactionalID",
			ErrPositionMismatch, e.txnID, e.cfg.PositionTopic, p.systemID, p.slot, info.SystemID, info.Slot)
	}
	if p.timeline != 0 && info.Timeline != 0 && p.timeline != info.Timeline {
		// A promoted standby or a restored backup may lack transactions the position names and reuse
		// their LSNs for others: skipping by it could lose those. Start over from the slot instead.
		e.log.Warn("exactly-once: the database changed timeline since the position was stored (failover or restore); what is above the slot's confirmed position is delivered again, once",
			zap.String("transactional_id", e.txnID), zap.Uint32("position_timeline", p.timeline), zap.Uint32("timeline", info.Timeline),
			zap.String("position", p.w.String()), zap.String("slot_confirmed", info.Confirmed.String()))
		return fresh, nil
	}
	if p.w < info.Confirmed && info.Snapshot {
		e.log.Warn("exactly-once: the stored position is of an earlier slot; the relay re-created the slot for its initial snapshot, whose rows are delivered again",
			zap.String("transactional_id", e.txnID), zap.String("position", p.w.String()), zap.String("slot_confirmed", info.Confirmed.String()))
		return fresh, nil
	}
	if p.w < info.Confirmed {
		return nil, fmt.Errorf("%w: position of %q in %q is at %s, slot %s is confirmed at %s: the position topic lost data or the slot was moved without this sink (skip, recreated slot, a run without exactly-once); "+
			"to start over, produce a tombstone (null value) with key %q to %q: the records in flight before are then delivered again, once",
			ErrPositionBehindSlot, e.txnID, e.cfg.PositionTopic, p.w, info.Slot, info.Confirmed, e.txnID, e.cfg.PositionTopic)
	}
	p.timeline = info.Timeline // positions written from now on are on this timeline
	return p, nil
}

// shutdown closes the producer and its client, waiting for the result goroutines.
func (e *eos) shutdown() {
	_ = e.producer.Close()
	e.drain.Wait()
	if !e.client.Closed() {
		_ = e.client.Close()
	}
}

// close stops the committer (the open transaction is aborted; its Sends fail unavailable) and closes
// the producer. A committer stuck in an outage is cut off after closeTimeout by closing the client.
// It is idempotent: Close and a second Resume may both close the same producer.
func (e *eos) close() {
	e.closeOnce.Do(func() {
		close(e.stop)
		select {
		case <-e.done:
		case <-time.After(closeTimeout):
			e.log.Warn("close: the exactly-once committer is still waiting for the brokers; abandoning its transaction")
			_ = e.client.Close()
			select {
			case <-e.done:
			case <-time.After(closeTimeout):
			}
		}
		e.shutdown()
	})
}
