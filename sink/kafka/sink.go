package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/routes"
	"github.com/pgoutbox/pgoutbox/sink/kafka/topicname"
)

// Header names the sink adds to every Kafka record, before the message's own headers.
const (
	HeaderID          = "pgoutbox-id"
	HeaderType        = "pgoutbox-type"
	HeaderDestination = "pgoutbox-destination"
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("kafka: sink closed")

// Sink is an [outbox.Sink] that produces to Kafka with an idempotent sarama AsyncProducer (acks=all,
// one request in flight per broker) and returns from Send only once every record is acked by all
// in-sync replicas or has failed (with [Config.ExactlyOnce]: once the Kafka transaction holding it
// committed). It is safe for concurrent use; records of one Send keep their order per partition, and so
// per key. It implements [outbox.PositionSink].
type Sink struct {
	cfg    Config
	log    *zap.Logger
	client sarama.Client // metadata and topic configs (bounded retries)
	admin  sarama.ClusterAdmin
	// producerClient is the producer's own client: in outage mode its metadata refresh waits for the
	// broker instead of failing records (see producerConfig).
	producerClient sarama.Client
	producer       sarama.AsyncProducer
	topics         *topicCache
	// allowed holds the compiled Config.AllowedTopics, by destination.
	allowed map[string]*topicname.AllowList

	mu     sync.RWMutex // held shared while feeding the producer, exclusively to close it
	closed bool
	once   sync.Once
	drain  sync.WaitGroup

	blockedMu sync.Mutex
	blocked   map[string]string

	orphans orphans // records left queued in the producer by Sends that stopped waiting
	// eos is the exactly-once side, once resumed (stored under mu); with ExactlyOnce, producer and
	// producerClient stay nil.
	eos      atomic.Pointer[eos]
	resumeMu sync.Mutex // serializes Resume

	stats struct {
		delivered, permanent, unavailable, unknownTopic, tooLargeRetried, rejoined atomic.Uint64
		routeNotAllowed, routeTopicMissing                                         atomic.Uint64
		txn                                                                        txnStats
	}
}

// Option configures optional dependencies of a Sink.
type Option func(*Sink)

// WithLogger sets the logger (default zap.NewNop()); the sink logs under the name "kafka".
func WithLogger(l *zap.Logger) Option {
	return func(s *Sink) {
		if l != nil {
			s.log = l
		}
	}
}

// New validates cfg, connects to the brokers (fetching cluster metadata) and starts the producer.
// A broker that cannot be reached yields an error wrapping [outbox.ErrUnavailable].
func New(cfg Config, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, err := cfg.saramaConfig()
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, log: zap.NewNop(), blocked: map[string]string{}, allowed: map[string]*topicname.AllowList{}}
	for dest, patterns := range cfg.AllowedTopics {
		if s.allowed[dest], err = topicname.NewAllowList(patterns); err != nil {
			return nil, fmt.Errorf("kafka: config: AllowedTopics[%q]: %w", dest, err) // Validate catches it first
		}
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.Named("kafka")
	s.client, err = sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, outbox.Unavailable(fmt.Errorf("kafka: connect to %v: %w", cfg.Brokers, err))
	}
	s.admin, err = sarama.NewClusterAdminFromClient(s.client)
	if err != nil {
		_ = s.client.Close()
		return nil, fmt.Errorf("kafka: admin client: %w", err)
	}
	s.topics = newTopicCache(s.admin, cfg.TopicConfigTTL)
	if cfg.ExactlyOnce.Enable {
		return s, nil // the transactional producer starts at Resume: starting it fences the active instance
	}
	s.producerClient, err = sarama.NewClient(cfg.Brokers, producerConfig(sc, cfg))
	if err != nil {
		_ = s.admin.Close()
		return nil, outbox.Unavailable(fmt.Errorf("kafka: connect to %v: %w", cfg.Brokers, err))
	}
	s.producer, err = sarama.NewAsyncProducerFromClient(s.producerClient)
	if err != nil {
		_ = s.producerClient.Close()
		_ = s.admin.Close()
		return nil, fmt.Errorf("kafka: producer: %w", err)
	}
	s.drain.Add(2)
	go func() {
		defer s.drain.Done()
		for m := range s.producer.Successes() {
			s.orphans.finish(m.Metadata.(*slot), nil)
		}
	}()
	go func() {
		defer s.drain.Done()
		for pe := range s.producer.Errors() {
			s.orphans.finish(pe.Msg.Metadata.(*slot), pe.Err)
		}
	}()
	return s, nil
}

// Close flushes what the producer holds, waits for its acks and closes the connections.
// Sends after Close fail with ErrClosed. Close is idempotent and safe to call concurrently with Send.
func (s *Sink) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		e := s.eos.Load()
		s.mu.Unlock()
		if s.cfg.ExactlyOnce.Enable {
			if e != nil {
				e.close()
			}
			s.resumeMu.Lock() // a Resume in progress closes what it started, seeing closed
			s.resumeMu.Unlock()
			err = s.admin.Close()
			return
		}
		s.producer.AsyncClose()
		drained := make(chan struct{})
		go func() { s.drain.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(closeTimeout):
			// In an outage the producer would keep retrying for an hour: closing its client makes
			// the queued records fail (they are unacked, so the relay re-delivers them later).
			s.log.Warn("close: producer still has unacked records after the timeout; abandoning them",
				zap.Duration("timeout", closeTimeout))
			_ = s.producerClient.Close()
			select {
			case <-drained:
			case <-time.After(closeTimeout):
			}
		}
		if !s.producerClient.Closed() {
			_ = s.producerClient.Close()
		}
		err = s.admin.Close() // closes the shared client too
	})
	return err
}

// Blocked returns the configured topics (Config.Topics) that the last Send for them found missing, with
// the reason: while a topic is listed, records for it are not sent and Send reports the sink
// unavailable. Readiness checks report it. A topic taken from a record's Route is never listed: a
// message cannot block a destination by naming a missing topic. The map is a copy.
func (s *Sink) Blocked() map[string]string {
	s.blockedMu.Lock()
	defer s.blockedMu.Unlock()
	return maps.Clone(s.blocked)
}

// Stats counts records by outcome since New.
type Stats struct {
	Delivered       uint64 // acked by the brokers
	Permanent       uint64 // failed for good (too large, no topic, rejected)
	Unavailable     uint64 // failed with a systemic error (broker down, no leader, timeouts)
	UnknownTopic    uint64 // Sends that found a topic missing
	TooLargeRetried uint64 // records re-sent alone after their batch was rejected as too large
	Rejoined        uint64 // records a Send found still queued from an earlier Send and waited for instead of producing again
	// RouteNotAllowed counts records whose Route named a topic outside their destination's
	// AllowedTopics (failed permanently, also counted in Permanent).
	RouteNotAllowed uint64
	// RouteTopicMissing counts attempts of records whose Route named a topic that does not exist
	// (failed for that record only, retried by the relay).
	RouteTopicMissing uint64
	// Transactions is the exactly-once side (zero without ExactlyOnce).
	Transactions TxnStats
}

// TxnStats counts the Kafka transactions of the exactly-once mode, over every producer the sink had.
type TxnStats struct {
	Committed uint64 // transactions committed with records (and the position)
	// PositionOnly counts the transactions committed with the position alone (the relay's watermark
	// moved while no record came: the slot follows).
	PositionOnly uint64
	Aborted      uint64 // transactions aborted: a record failed, the position did not fit, the commit failed
	// Records counts the records committed in transactions; Seconds the time from their first record
	// to their commit, summed over committed transactions (Seconds / Committed is the mean).
	Records uint64
	Seconds float64
	// Fenced counts the producers that failed for good (fenced by another instance, or by a broker
	// that aborted a transaction older than TransactionTimeout); each stopped its relay.
	Fenced uint64
	// PositionOverflow counts the records left out of a position that would not fit PositionMaxBytes.
	PositionOverflow uint64
}

// Stats returns the counters. Safe for concurrent use.
func (s *Sink) Stats() Stats {
	return Stats{
		Delivered:         s.stats.delivered.Load(),
		Permanent:         s.stats.permanent.Load(),
		Unavailable:       s.stats.unavailable.Load(),
		UnknownTopic:      s.stats.unknownTopic.Load(),
		TooLargeRetried:   s.stats.tooLargeRetried.Load(),
		Rejoined:          s.stats.rejoined.Load(),
		RouteNotAllowed:   s.stats.routeNotAllowed.Load(),
		RouteTopicMissing: s.stats.routeTopicMissing.Load(),
		Transactions:      s.stats.txn.snapshot(),
	}
}

// Send produces batch and waits for every record's ack. See [outbox.Sink] for what it returns.
// A record's topic is its destination's configured topic (Config.Topics), else its Route. A record with
// no topic, with a Route outside its destination's AllowedTopics or that is not a legal topic name, or
// larger than its topic's max.message.bytes fails permanently without being sent. A missing configured
// topic makes the whole batch unavailable before anything is sent; a missing topic named by a Route
// fails that record only (retried, then dead-lettered), and later records of its key in the batch wait
// behind it ([outbox.ErrNotAttempted]).
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	if len(batch) == 0 {
		return nil
	}
	s.mu.RLock()
	closed, e := s.closed, s.eos.Load()
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if s.cfg.ExactlyOnce.Enable && e == nil {
		return outbox.Unavailable(errors.New("kafka: exactly-once sink not resumed: a relay calls Resume before the first Send"))
	}
	errs := make([]error, len(batch))
	msgs := make([]*sarama.ProducerMessage, len(batch))
	topics := make([]string, len(batch))
	limits, err := s.resolve(ctx, batch, topics, errs)
	if err != nil {
		return err
	}
	newMessages(batch, topics, errs, msgs)
	s.applyFormats(batch, msgs)
	for i := range batch {
		if msgs[i] == nil {
			continue
		}
		if limit := limits[topics[i]]; s.prechecked(limit) {
			if size := batchSize(msgs[i]); size > limit {
				errs[i] = outbox.Permanent(fmt.Errorf("kafka: message %s is %d bytes as a record batch, over topic %q max.message.bytes %d",
					batch[i].ID, size, topics[i], limit))
				msgs[i] = nil
			}
		}
	}

	if e != nil {
		return s.sendTxn(ctx, e, batch, topics, msgs, errs)
	}
	if err := s.produce(ctx, batch, msgs, errs); err != nil {
		return err
	}

	// A batch the broker rejected as too large may hold records that fit alone: re-send those one at a
	// time, in order, so only a record that is itself too large fails.
	for i := range batch {
		if msgs[i] == nil || !tooLarge(errs[i]) {
			continue
		}
		s.stats.tooLargeRetried.Add(1)
		one := []*sarama.ProducerMessage{newMessage(&batch[i], topics[i])}
		s.applyFormats(batch[i:i+1], one)
		oneErr := []error{nil}
		if err := s.produce(ctx, batch[i:i+1], one, oneErr); err != nil {
			return err
		}
		errs[i] = oneErr[0]
		if tooLarge(errs[i]) && s.prechecked(limits[topics[i]]) && limits[topics[i]] < s.cfg.MaxMessageBytes {
			// The record fits by itself (the pre-check is exact), so the rejected batch was assembled
			// with other Sends' records: the producer builds batches larger than the topic accepts.
			s.log.Warn("broker rejected a batch as too large although each record fits; lower MaxMessageBytes to the topic's max.message.bytes",
				zap.String("topic", topics[i]), zap.Int("max.message.bytes", limits[topics[i]]), zap.Int("MaxMessageBytes", s.cfg.MaxMessageBytes))
			errs[i] = outbox.Unavailable(fmt.Errorf("kafka: topic %q rejected a batch as too large (max.message.bytes %d < Config.MaxMessageBytes %d): %w",
				topics[i], limits[topics[i]], s.cfg.MaxMessageBytes, errs[i]))
		} else if tooLarge(errs[i]) {
			errs[i] = outbox.Permanent(fmt.Errorf("kafka: message %s is %d bytes as a record batch; the broker rejects it as too large for topic %q (max.message.bytes %d): %w",
				batch[i].ID, batchSize(one[0]), topics[i], limits[topics[i]], errs[i]))
		}
	}
	return s.result(batch, topics, msgs, errs)
}

// resolve picks the topic of every record of batch into topics and looks up each topic's
// max.message.bytes, returned by topic. A record that cannot be sent now gets its error in errs
// instead. It returns an error, for the whole batch, when a configured topic is missing or a topic
// cannot be looked up.
func (s *Sink) resolve(ctx context.Context, batch []outbox.Record, topics []string, errs []error) (map[string]int, error) {
	limits := map[string]int{}
	var missing map[string]error    // topics from Routes found missing in this Send
	var failedKey map[string]string // key → id of a record of it that failed above: later ones wait
	for i := range batch {
		r := &batch[i]
		if id, ok := failedKey[r.Key]; ok {
			errs[i] = outbox.NotAttempted(fmt.Errorf("kafka: message %s waits behind message %s of its key %q, which failed", r.ID, id, r.Key))
			continue
		}
		topic, fromRoute, err := s.topicFor(r)
		if err != nil {
			errs[i] = err
			continue
		}
		topics[i] = topic
		if _, ok := limits[topic]; ok {
			continue
		}
		if err, ok := missing[topic]; ok {
			errs[i] = s.routeTopicMissing(r, topic, err)
		} else {
			limit, err := s.topics.maxMessageBytes(ctx, topic)
			switch {
			case err == nil:
				s.unblock(topic)
				limits[topic] = limit
				continue
			case fromRoute && routeTopicError(err):
				if missing == nil {
					missing = map[string]error{}
				}
				missing[topic] = err
				errs[i] = s.routeTopicMissing(r, topic, err)
			case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
				return nil, s.unknownTopic(topic, r)
			default:
				s.stats.unavailable.Add(uint64(len(batch)))
				if ctx.Err() != nil {
					return nil, fmt.Errorf("kafka: look up topic %q: %w", topic, err)
				}
				return nil, outbox.Unavailable(fmt.Errorf("kafka: look up topic %q: %w", topic, err))
			}
		}
		if r.Key != "" {
			if failedKey == nil {
				failedKey = map[string]string{}
			}
			failedKey[r.Key] = r.ID
		}
	}
	return limits, nil
}

// routeTopicError reports whether err, from looking up a topic named by a Route, concerns that topic
// only (missing, or not writable by this producer) rather than the brokers.
func routeTopicError(err error) bool {
	return errors.Is(err, sarama.ErrUnknownTopicOrPartition) || errors.Is(err, sarama.ErrTopicAuthorizationFailed)
}

// routeTopicMissing returns the per-record error of r, whose Route names topic, which the lookup
// found missing (or not writable): a retryable failure of r alone, never a block of its destination.
func (s *Sink) routeTopicMissing(r *outbox.Record, topic string, err error) error {
	s.stats.routeTopicMissing.Add(1)
	return fmt.Errorf("kafka: message %s: topic %q named by its Route cannot be written (destination %q has no configured topic): %w",
		r.ID, topic, r.Destination, err)
}

// produce feeds the non-nil msgs to the producer and waits for their results, stored in errs.
// A record still queued in the producer from an earlier Send (whose ctx ended first) is not produced
// again: this Send waits for that copy. It returns a non-nil error only when ctx ends or the sink is
// closed; the records then stay queued in the producer and a later Send of them picks them up.
func (s *Sink) produce(ctx context.Context, recs []outbox.Record, msgs []*sarama.ProducerMessage, errs []error) error {
	n := 0
	for _, m := range msgs {
		if m != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	w := newWaiter(len(msgs))
	w.expect(n)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	if joined := s.orphans.rejoin(w, recs, msgs); joined > 0 {
		s.stats.rejoined.Add(uint64(joined))
	}
	fed := len(msgs)
	var ctxErr error
feed:
	for i, m := range msgs {
		if m == nil || w.slots[i].joined {
			continue
		}
		m.Metadata = &w.slots[i]
		select {
		case s.producer.Input() <- m:
		case <-ctx.Done():
			ctxErr, fed = ctx.Err(), i // msgs[i] was never queued
			break feed
		}
	}
	s.mu.RUnlock()
	if ctxErr != nil {
		s.orphans.abandon(w, recs, msgs, fed)
		return outbox.Unavailable(fmt.Errorf("kafka: send: %w", ctxErr))
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		select {
		case <-w.done: // every result is in: no reason to give up on them
		default:
			s.orphans.abandon(w, recs, msgs, fed)
			return outbox.Unavailable(fmt.Errorf("kafka: wait for acks (broker slow or down; records stay queued): %w", ctx.Err()))
		}
	}
	for i, m := range msgs {
		if m != nil {
			errs[i] = w.slots[i].err
		}
	}
	return nil
}

// result classifies per-record errors into what Send returns. Producer errors (msgs[i] != nil) are
// classified here; the others were classified before producing.
func (s *Sink) result(batch []outbox.Record, topics []string, msgs []*sarama.ProducerMessage, errs []error) error {
	var systemic error
	failed := false
	for i, err := range errs {
		if err == nil {
			s.stats.delivered.Add(1)
			continue
		}
		failed = true
		if errors.Is(err, outbox.ErrNotAttempted) {
			continue // held back behind a failed record of its key
		}
		if outbox.IsPermanent(err) {
			s.stats.permanent.Add(1)
			continue
		}
		if outbox.IsUnavailable(err) {
			s.stats.unavailable.Add(1)
			if systemic == nil {
				systemic = err
			}
			continue
		}
		if msgs[i] == nil {
			continue // failed before producing: a Route's topic that cannot be written
		}
		switch classify(err) {
		case kindUnknownTopic:
			s.topics.forget(topics[i])
			if s.cfg.Topics[string(batch[i].Destination)] == "" {
				errs[i] = s.routeTopicMissing(&batch[i], topics[i], err) // deleted since the lookup
				continue
			}
			systemic = s.unknownTopic(topics[i], &batch[i])
		case kindPermanent:
			s.stats.permanent.Add(1)
			errs[i] = outbox.Permanent(fmt.Errorf("kafka: produce message %s to %q: %w", batch[i].ID, topics[i], err))
		case kindUnavailable:
			s.stats.unavailable.Add(1)
			if systemic == nil {
				systemic = outbox.Unavailable(fmt.Errorf("kafka: produce to %q: %w", topics[i], err))
			}
		default:
			errs[i] = fmt.Errorf("kafka: produce message %s to %q: %w", batch[i].ID, topics[i], err)
		}
	}
	if systemic != nil {
		return systemic
	}
	if failed {
		return &outbox.BatchError{Errs: errs}
	}
	return nil
}

// prechecked reports whether records for a topic with max.message.bytes limit are size-checked before
// sending: only uncompressed, since compression decides the size the broker sees.
func (s *Sink) prechecked(limit int) bool {
	return limit > 0 && (s.cfg.Compression == "" || s.cfg.Compression == "none")
}

// topicFor returns the topic of r and whether it came from r's Route: the destination's configured
// topic always wins; otherwise the Route, if it is a legal topic name inside the destination's
// allow-list. Any other case is a permanent failure.
func (s *Sink) topicFor(r *outbox.Record) (topic string, fromRoute bool, err error) {
	return routes.Target(topicRoutes, "kafka", s.cfg.Topics, s.allowed, &s.stats.routeNotAllowed, r)
}

func (s *Sink) unknownTopic(topic string, r *outbox.Record) error {
	reason := fmt.Sprintf("topic %q does not exist (destination %q); create it: the brokers do not auto-create topics", topic, r.Destination)
	s.stats.unknownTopic.Add(1)
	s.blockedMu.Lock()
	_, was := s.blocked[topic]
	s.blocked[topic] = reason
	s.blockedMu.Unlock()
	if !was {
		s.log.Warn("topic missing; deliveries to it are blocked", zap.String("topic", topic), zap.String("destination", string(r.Destination)))
	}
	return outbox.Unavailable(fmt.Errorf("kafka: %s: %w", reason, sarama.ErrUnknownTopicOrPartition))
}

func (s *Sink) unblock(topic string) {
	s.blockedMu.Lock()
	_, was := s.blocked[topic]
	delete(s.blocked, topic)
	s.blockedMu.Unlock()
	if was {
		s.log.Info("topic present again; deliveries resume", zap.String("topic", topic))
	}
}

// closeTimeout bounds how long Close waits for the producer to flush.
const closeTimeout = 10 * time.Second
