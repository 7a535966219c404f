package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

var (
	// ErrFenced means another instance with the same transactional.id took over, or the broker aborted a
	// transaction that outlived TransactionTimeout: this producer can commit nothing any more. Every Send
	// fails with it as [outbox.Fatal], which stops the relay; a new relay resumes the sink with a new
	// producer once it holds the slot (a zombie never does: the slot is the other instance's).
	ErrFenced = errors.New("kafka: producer fenced: another relay instance with the same transactional.id took over")
	// ErrPositionBehindSlot means the position stored in the position topic is behind the slot's confirmed
	// position, which the sink never lets the relay pass: the position topic lost data, or the slot was
	// moved without this sink (`pgoutbox skip`, a recreated slot, a run without exactly-once).
	ErrPositionBehindSlot = errors.New("kafka: stored position is behind the slot's confirmed position")
	// ErrPositionMismatch means the stored position names another database or slot than the relay's.
	ErrPositionMismatch = errors.New("kafka: stored position belongs to another database or slot")
)

// eos is the exactly-once side of a Sink: one transactional producer, one Kafka transaction open at a
// time, joined by every concurrent Send and committed by one goroutine (run) together with the position.
type eos struct {
	cfg      ExactlyOnceConfig
	log      *zap.Logger
	brokers  []string
	txnID    string
	client   sarama.Client
	producer sarama.AsyncProducer
	posPart  int32
	mark     func() pglogrepl.LSN // the relay's watermark

	mu      sync.Mutex
	open    *txn
	pos     *position       // the last committed position
	pending map[recKey]*txn // records fed to the open transaction
	broken  error           // fenced or fatal (outbox.Fatal): every Send fails with it
	durable atomic.Uint64   // W of the last committed position
	stats   *txnStats       // the Sink's, across producers

	kick      chan struct{}
	stop      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	drain     sync.WaitGroup
}

// txnStats are the counters behind TxnStats.
type txnStats struct {
	committed, positionOnly, aborted, records, nanos, fenced, overflow atomic.Uint64
}

func (s *txnStats) snapshot() TxnStats {
	return TxnStats{Committed: s.committed.Load(), PositionOnly: s.positionOnly.Load(), Aborted: s.aborted.Load(), Records: s.records.Load(),
		Seconds: time.Duration(s.nanos.Load()).Seconds(), Fenced: s.fenced.Load(), PositionOverflow: s.overflow.Load()}
}

// txn is one Kafka transaction.
type txn struct {
	begun  chan struct{} // closed once BeginTxn succeeded, or with err set when it never will
	feed   sync.RWMutex  // held shared while a Send feeds the producer, exclusively to close
	closed bool          // under eos.mu: takes no more records
	// joining counts the Sends that chose this transaction and have not fed it yet, under eos.mu: the
	// committer lets them in before it closes the transaction (up to joinGrace).
	joining int
	n       int       // records fed, under eos.mu
	first   time.Time // when the first record was fed, under eos.mu
	keys    []recKey  // records fed, under eos.mu
	acks    sync.WaitGroup
	failMu  sync.Mutex
	failed  error // first producer error of a record (not the position)
	posErr  error // producer error of the position record
	done    chan struct{}
	err     error // the outcome, once done is closed: nil when committed
	byRec   bool  // aborted because a record failed in the producer
}

func newTxn() *txn { return &txn{begun: make(chan struct{}), done: make(chan struct{})} }

// txnSlot is the Metadata of one message of a transaction: its result.
type txnSlot struct {
	t   *txn
	pos bool // the position record
	err error
}

// result records the producer's result of sl's message; the message is then done.
func (sl *txnSlot) result(err error) {
	if err != nil {
		sl.err = err
		sl.t.failMu.Lock()
		if sl.pos {
			sl.t.posErr = err
		} else if sl.t.failed == nil {
			sl.t.failed = err
		}
		sl.t.failMu.Unlock()
	}
	sl.t.acks.Done()
}

// drainResults hands the producer's results to their slots until the producer is closed.
func (e *eos) drainResults() {
	e.drain.Add(2)
	go func() {
		defer e.drain.Done()
		for m := range e.producer.Successes() {
			m.Metadata.(*txnSlot).result(nil)
		}
	}()
	go func() {
		defer e.drain.Done()
		for pe := range e.producer.Errors() {
			pe.Msg.Metadata.(*txnSlot).result(pe.Err)
		}
	}()
}

// join waits for the open transaction to begin and returns it with its feed lock held shared and e.mu
// held, or an error for the whole Send. The Send counts as joining the transaction until settleFeed.
func (e *eos) join(ctx context.Context) (*txn, error) {
	for {
		e.mu.Lock()
		t, broken := e.open, e.broken
		if broken == nil {
			t.joining++
		}
		e.mu.Unlock()
		if broken != nil {
			return nil, broken // fatal: the relay stops
		}
		select {
		case <-t.begun:
		case <-ctx.Done():
			e.leave(t)
			return nil, outbox.Unavailable(fmt.Errorf("kafka: wait for the next transaction: %w", ctx.Err()))
		case <-e.stop: // the sink closes, or a new relay resumes it
			e.leave(t)
			return nil, outbox.Unavailable(ErrClosed)
		}
		if t.err != nil {
			e.leave(t)
			return nil, outbox.Unavailable(t.err)
		}
		t.feed.RLock()
		e.mu.Lock()
		if !t.closed {
			return t, nil
		}
		t.joining--
		e.mu.Unlock()
		t.feed.RUnlock()
	}
}

// leave counts a Send that gave up joining t out of it.
func (e *eos) leave(t *txn) {
	e.mu.Lock()
	t.joining--
	e.mu.Unlock()
	e.wake()
}

// wake tells the committer that the open transaction changed.
func (e *eos) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// send delivers the records of batch with non-nil msgs in the open Kafka transaction and waits for the
// outcome of every transaction holding one of them, storing each record's result in errs (nil:
// committed). A record already committed is not produced again; one already in a transaction (fed by
// a Send that gave up) takes that transaction's outcome, which may be an earlier one still committing.
// It returns a non-nil error only for the whole batch (closed, fenced, ctx ended).
func (e *eos) send(ctx context.Context, batch []outbox.Record, msgs []*sarama.ProducerMessage, errs []error) error {
	t, err := e.join(ctx)
	if err != nil {
		return err
	}
	slots := make([]txnSlot, len(batch))
	of := make([]*txn, len(batch)) // the transaction whose outcome is the record's
	var feed []int
	for i, m := range msgs {
		if m == nil {
			continue
		}
		k := recKey{batch[i].CommitLSN, batch[i].Seq}
		switch {
		case k.lsn == 0: // not from a relay: nothing identifies it across restarts
			msgs[i] = nil
			errs[i] = outbox.Permanent(fmt.Errorf("kafka: exactly-once: message %s has no CommitLSN; only records of a relay (commit LSN and Seq) can be delivered exactly once", batch[i].ID))
		case e.pos.committed(k):
			msgs[i] = nil // delivered by an earlier transaction: errs[i] stays nil
		case e.pending[k] != nil:
			msgs[i], of[i] = nil, e.pending[k] // fed by an earlier Send: its transaction decides
		default:
			e.pending[k], of[i] = t, t
			feed = append(feed, i)
		}
	}
	e.mu.Unlock()
	fed := e.feed(ctx, t, feed, msgs, slots)
	e.settleFeed(t, batch, feed, fed)
	t.feed.RUnlock()
	if fed < len(feed) {
		return outbox.Unavailable(fmt.Errorf("kafka: feed the transaction: %w", ctx.Err()))
	}
	for i, x := range of {
		if x == nil || slices.Contains(of[:i], x) {
			continue
		}
		select {
		case <-x.done:
		case <-ctx.Done():
			return outbox.Unavailable(fmt.Errorf("kafka: wait for the transaction's commit (its records stay in it): %w", ctx.Err()))
		}
	}
	for i, x := range of {
		if x != nil {
			errs[i] = x.outcome(&batch[i], &slots[i])
		}
	}
	return nil
}

// feed hands the messages msgs[i], i in feed, to the producer in t and returns how many it took before
// ctx ended.
func (e *eos) feed(ctx context.Context, t *txn, feed []int, msgs []*sarama.ProducerMessage, slots []txnSlot) int {
	for n, i := range feed {
		slots[i].t = t
		msgs[i].Metadata = &slots[i]
		t.acks.Add(1)
		select {
		case e.producer.Input() <- msgs[i]:
		case <-ctx.Done():
			t.acks.Done()
			return n
		}
	}
	return len(feed)
}

// settleFeed records the first fed records of feed in t and forgets the others, and counts the Send
// as no longer joining t; e.mu is taken.
func (e *eos) settleFeed(t *txn, batch []outbox.Record, feed []int, fed int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for j, i := range feed {
		k := recKey{batch[i].CommitLSN, batch[i].Seq}
		if j < fed {
			t.keys = append(t.keys, k)
		} else {
			delete(e.pending, k)
		}
	}
	t.joining--
	if fed > 0 {
		if t.n == 0 {
			t.first = time.Now()
		}
		t.n += fed
	}
	if fed > 0 || t.joining == 0 {
		e.wake()
	}
}

// outcome is the result of r in t, which is done; sl is r's slot when this Send fed it.
func (t *txn) outcome(r *outbox.Record, sl *txnSlot) error {
	switch {
	case t.err == nil:
		return nil
	case outbox.IsFatal(t.err): // fenced: the relay stops, nothing counts against the record
		return t.err
	case sl.t == t && sl.err != nil:
		return sl.err // classified by Sink.result
	case t.byRec:
		return outbox.NotAttempted(fmt.Errorf("kafka: message %s: its transaction was aborted because another record failed: %w", r.ID, t.err))
	}
	return outbox.Unavailable(fmt.Errorf("kafka: message %s: transaction aborted: %w", r.ID, t.err))
}

// confirmable returns the watermark of the last committed position, at most w. When w is ahead, the
// committer is woken: with no records waiting it then commits a transaction holding only the position.
func (e *eos) confirmable(w pglogrepl.LSN) pglogrepl.LSN {
	d := pglogrepl.LSN(e.durable.Load())
	if w > d {
		e.wake()
	}
	return min(w, d)
}

// sendTxn is Send's exactly-once path, after the records were checked: it delivers msgs in the open
// Kafka transaction and classifies the results. A batch rejected as too large inside a transaction
// aborts it: the records it held are retried (their attempts counted) rather than dead-lettered, since
// they may fit alone.
func (s *Sink) sendTxn(ctx context.Context, e *eos, batch []outbox.Record, topics []string, msgs []*sarama.ProducerMessage, errs []error) error {
	if err := e.send(ctx, batch, msgs, errs); err != nil {
		if outbox.IsUnavailable(err) {
			s.stats.unavailable.Add(uint64(len(batch)))
		}
		return err
	}
	for i := range errs {
		if msgs[i] != nil && tooLarge(errs[i]) {
			errs[i] = fmt.Errorf("kafka: message %s: its transaction's batch for %q was rejected as too large (keep MaxMessageBytes at or below the topic's max.message.bytes): %w",
				batch[i].ID, topics[i], errs[i])
			msgs[i] = nil // not classified again (it would be permanent)
		}
	}
	return s.result(batch, topics, msgs, errs)
}
