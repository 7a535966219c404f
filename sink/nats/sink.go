package nats

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
	"github.com/pgoutbox/pgoutbox/sink/internal/routes"
	"github.com/pgoutbox/pgoutbox/sink/nats/subject"
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("nats: sink closed")

// Sink is an [outbox.Sink] that publishes to NATS JetStream and returns from Send only once the
// stream acknowledged every record (a PubAck) or the record failed. It is safe for concurrent use.
//
// Records go out asynchronously: every record of a Send whose key has no earlier record in flight is
// published at once (up to Config.MaxInFlight awaiting a PubAck over all Sends), and a later record of
// the same key is published when the earlier one's PubAck arrives. A record is therefore never on the
// wire before every earlier record of its key is stored, whatever fails in between (a lost
// connection, a full stream), which keeps the order per key; keys run in parallel.
type Sink struct {
	cfg     Config
	log     *zap.Logger
	nc      *nats.Conn
	sub     *nats.Subscription
	inbox   string // reply subject prefix, "_INBOX.<nuid>."
	allowed map[string]*subject.AllowList
	slots   flight.Slots // one per record awaiting its PubAck

	seq     atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]waiter // reply token → the record awaiting it

	closed   atomic.Bool
	once     sync.Once
	checking atomic.Bool // a connection check after a PubAck timeout runs

	blockedMu sync.Mutex
	blocked   map[string]string
	nBlocked  atomic.Int32

	stats struct {
		delivered, duplicates, permanent, unavailable, noStream, routeNotAllowed, routeNoStream, droppedHeaders atomic.Uint64
	}
}

// waiter is one published record whose PubAck a Send awaits.
type waiter struct {
	c   *call
	idx int
}

// Option configures optional dependencies of a Sink.
type Option func(*Sink)

// WithLogger sets the logger (default zap.NewNop()); the sink logs under the name "nats".
func WithLogger(l *zap.Logger) Option {
	return func(s *Sink) {
		if l != nil {
			s.log = l
		}
	}
}

// New validates cfg and connects. A server that cannot be reached yields an error wrapping
// [outbox.ErrUnavailable]; once connected, the sink reconnects by itself for as long as it lives.
func New(cfg Config, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, log: zap.NewNop(), allowed: map[string]*subject.AllowList{}, waiting: map[uint64]waiter{},
		blocked: map[string]string{}, slots: flight.NewSlots(cfg.MaxInFlight)}
	for dest, patterns := range cfg.AllowedSubjects {
		a, err := subject.NewAllowList(patterns)
		if err != nil {
			return nil, fmt.Errorf("nats: config: AllowedSubjects[%q]%w", dest, err) // Validate catches it first
		}
		s.allowed[dest] = a
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.Named("nats")
	nopts, err := cfg.options(
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			s.log.Warn("disconnected; records awaiting a PubAck fail as unavailable", zap.Error(err))
			s.failWaiting(fmt.Errorf("nats: connection lost before the PubAck: %w", errOr(err, nats.ErrDisconnected)))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { s.log.Info("reconnected", zap.String("server", redact(nc.ConnectedUrl()))) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { s.log.Warn("async error", zap.Error(err)) }),
	)
	if err != nil {
		return nil, err
	}
	s.nc, err = nats.Connect(joinURLs(cfg.URLs), nopts...)
	if err != nil {
		return nil, outbox.Unavailable(fmt.Errorf("nats: connect to %s: %w", redactAll(cfg.URLs), err))
	}
	s.inbox = nats.NewInbox() + "."
	if s.sub, err = s.nc.Subscribe(s.inbox+"*", s.onReply); err != nil {
		s.nc.Close()
		return nil, fmt.Errorf("nats: subscribe to PubAcks: %w", err)
	}
	_ = s.sub.SetPendingLimits(-1, -1) // bounded by MaxInFlight; a dropped PubAck would cost a timeout
	return s, nil
}

// Close closes the connection; records still awaiting a PubAck fail as unavailable (the relay sends
// them again later). Sends after Close fail with ErrClosed. Close is idempotent.
func (s *Sink) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.failWaiting(outbox.Unavailable(ErrClosed))
		s.nc.Close()
	})
	return nil
}

// Blocked returns the configured subjects (Config.Subjects) that the last records sent to them found
// without a stream, with the reason: records for them fail as unavailable (the destination blocks)
// until a stream takes the subject. Readiness checks report it. A subject taken from a record's Route
// is never listed: a message cannot block a destination by naming a subject no stream takes. The map
// is a copy.
func (s *Sink) Blocked() map[string]string {
	s.blockedMu.Lock()
	defer s.blockedMu.Unlock()
	return maps.Clone(s.blocked)
}

// Stats counts records by outcome since New.
type Stats struct {
	Delivered   uint64 // stored by a stream (PubAck), duplicates included
	Duplicates  uint64 // acked as duplicates: the stream already held the message id (Nats-Msg-Id)
	Permanent   uint64 // failed for good (over max_payload or the stream's max_msg_size, bad subject)
	Unavailable uint64 // failed with a systemic error (connection lost, PubAck timeout, stream full)
	NoStream    uint64 // records to a configured subject that no stream takes (systemic)
	// RouteNotAllowed counts records whose Route is not a valid subject or is outside their
	// destination's AllowedSubjects (failed permanently, also counted in Permanent).
	RouteNotAllowed uint64
	// RouteNoStream counts attempts of records whose Route names a subject no stream takes (failed for
	// that record only, retried by the relay).
	RouteNoStream uint64
	// DroppedHeaders counts message headers not sent (reserved names, invalid names or values).
	DroppedHeaders uint64
}

// Stats returns the counters. Safe for concurrent use.
func (s *Sink) Stats() Stats {
	return Stats{
		Delivered: s.stats.delivered.Load(), Duplicates: s.stats.duplicates.Load(), Permanent: s.stats.permanent.Load(),
		Unavailable: s.stats.unavailable.Load(), NoStream: s.stats.noStream.Load(), RouteNotAllowed: s.stats.routeNotAllowed.Load(),
		RouteNoStream: s.stats.routeNoStream.Load(), DroppedHeaders: s.stats.droppedHeaders.Load(),
	}
}

// subjectFor returns the subject of r: its destination's configured subject always wins; otherwise its
// Route, if it is a valid subject inside the destination's allow-list. Any other case fails permanently.
func (s *Sink) subjectFor(r *outbox.Record) (subj string, fromRoute bool, err error) {
	return routes.Target(subjectRoutes, "nats", s.cfg.Subjects, s.allowed, &s.stats.routeNotAllowed, r)
}

// block lists a configured subject without a stream; unblock removes it once a record is stored there.
func (s *Sink) block(subj, dest string) {
	reason := fmt.Sprintf("no stream takes subject %q (destination %q): create one, or add the subject to a stream", subj, dest)
	s.blockedMu.Lock()
	_, was := s.blocked[subj]
	s.blocked[subj] = reason
	s.nBlocked.Store(int32(len(s.blocked)))
	s.blockedMu.Unlock()
	if !was {
		s.log.Warn("no stream for the subject; deliveries to it are blocked", zap.String("subject", subj), zap.String("destination", dest))
	}
}

func (s *Sink) unblock(subj string) {
	if s.nBlocked.Load() == 0 {
		return
	}
	s.blockedMu.Lock()
	_, was := s.blocked[subj]
	delete(s.blocked, subj)
	s.nBlocked.Store(int32(len(s.blocked)))
	s.blockedMu.Unlock()
	if was {
		s.log.Info("a stream takes the subject again; deliveries resume", zap.String("subject", subj))
	}
}

// register records that the record idx of c awaits the PubAck sent to the returned reply subject.
func (s *Sink) register(c *call, idx int) (token uint64, reply string) {
	token = s.seq.Add(1)
	s.mu.Lock()
	s.waiting[token] = waiter{c: c, idx: idx}
	s.mu.Unlock()
	return token, s.inbox + strconv.FormatUint(token, 36)
}

// unregister removes token and reports whether it was still waiting (its slot is then released).
func (s *Sink) unregister(token uint64) bool {
	s.mu.Lock()
	_, ok := s.waiting[token]
	delete(s.waiting, token)
	s.mu.Unlock()
	if ok {
		s.slots.Release()
	}
	return ok
}

// onReply routes a PubAck (or a no-responders status) to the Send awaiting it.
func (s *Sink) onReply(m *nats.Msg) {
	token, err := strconv.ParseUint(lastToken(m.Subject), 36, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	w, ok := s.waiting[token]
	delete(s.waiting, token)
	s.mu.Unlock()
	if !ok {
		return // timed out, abandoned or failed by a disconnect
	}
	s.slots.Release()
	w.c.Deliver(parseAck(m, w.idx))
}

// failWaiting fails every record awaiting a PubAck with err (a lost connection, Close).
func (s *Sink) failWaiting(err error) {
	s.mu.Lock()
	all := s.waiting
	s.waiting = map[uint64]waiter{}
	s.mu.Unlock()
	for _, w := range all {
		s.slots.Release()
		w.c.Deliver(flight.Result{Idx: w.idx, Kind: flight.Unavailable, Err: err})
	}
}

func joinURLs(urls []string) string {
	out := ""
	for i, u := range urls {
		if i > 0 {
			out += ","
		}
		out += u
	}
	return out
}

func redactAll(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redact(u)
	}
	return fmt.Sprint(out)
}

func lastToken(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}

func errOr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

// ackTimeoutErr is the error of a record whose PubAck did not come within Config.AckTimeout.
func ackTimeoutErr(d time.Duration) error {
	return fmt.Errorf("nats: no PubAck within %s (server slow or unreachable): %w", d, nats.ErrTimeout)
}
