package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
	"github.com/pgoutbox/pgoutbox/sink/rabbitmq/routingkey"
)

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("rabbitmq: sink closed")

// exchangeTTL is how long an exchange found to exist is not checked again.
const exchangeTTL = time.Minute

// Sink is an [outbox.Sink] that publishes to RabbitMQ exchanges with publisher confirms, persistent
// delivery and mandatory routing, and returns from Send only once the broker confirmed every record
// or the record failed. It is safe for concurrent use.
//
// Records go out asynchronously over Config.Channels channels: every record of a Send whose key has no
// earlier record in flight is published at once (up to Config.MaxInFlight awaiting a confirm over all
// Sends), and a later record of the same key is published when the earlier one is confirmed, so a
// record is never published before every earlier record of its key is stored: the order per key holds
// whatever fails (a lost channel, a nack, a returned message). A lost connection or channel fails the
// records awaiting a confirm as unavailable and the sink reconnects by itself.
type Sink struct {
	cfg     Config
	log     *zap.Logger
	allowed map[string]*routingkey.AllowList
	slots   flight.Slots
	rr      atomic.Uint64

	link    atomic.Pointer[link] // nil while disconnected
	linkMu  sync.Mutex
	linkErr error // why there is no link
	cancel  context.CancelFunc
	stopped chan struct{}
	once    sync.Once
	closed  atomic.Bool

	exMu      sync.Mutex
	exchanges map[string]time.Time // exchange → when it was found to exist
	blocked   map[string]string

	stats struct {
		delivered, permanent, unavailable, unroutable, missingExchange, routeNotAllowed, droppedHeaders atomic.Uint64
	}
}

// Option configures optional dependencies of a Sink.
type Option func(*Sink)

// WithLogger sets the logger (default zap.NewNop()); the sink logs under the name "rabbitmq".
func WithLogger(l *zap.Logger) Option {
	return func(s *Sink) {
		if l != nil {
			s.log = l
		}
	}
}

// New validates cfg and connects. A broker that cannot be reached yields an error wrapping
// [outbox.ErrUnavailable]; once connected, the sink reconnects by itself until Close.
func New(cfg Config, opts ...Option) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, log: zap.NewNop(), allowed: map[string]*routingkey.AllowList{}, slots: flight.NewSlots(cfg.MaxInFlight),
		exchanges: map[string]time.Time{}, blocked: map[string]string{}, stopped: make(chan struct{})}
	for dest, d := range cfg.Destinations {
		if d.AllowedRoutingKeys != nil {
			a, err := routingkey.NewAllowList(d.AllowedRoutingKeys)
			if err != nil {
				return nil, fmt.Errorf("rabbitmq: config: Destinations[%q].AllowedRoutingKeys%w", dest, err)
			}
			s.allowed[dest] = a
		}
	}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.Named("rabbitmq")
	l, err := s.dial()
	if err != nil {
		return nil, outbox.Unavailable(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.supervise(ctx, l)
	for s.link.Load() == nil { // supervise publishes the first link at once
		time.Sleep(time.Millisecond)
	}
	return s, nil
}

// Close closes the connection; records still awaiting a confirm fail as unavailable (the relay sends
// them again later). Sends after Close fail with ErrClosed. Close is idempotent.
func (s *Sink) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.cancel()
		<-s.stopped
	})
	return nil
}

func (s *Sink) setLinkErr(err error) {
	s.linkMu.Lock()
	s.linkErr = err
	s.linkMu.Unlock()
}

func (s *Sink) notConnected() error {
	s.linkMu.Lock()
	err := s.linkErr
	s.linkMu.Unlock()
	if err == nil {
		err = errors.New("reconnecting")
	}
	return fmt.Errorf("rabbitmq: not connected: %w", err)
}

// Blocked returns the configured exchanges that the last Send for them found missing, with the reason:
// while one is listed its records fail as unavailable (the destination blocks). Readiness checks
// report it. The map is a copy.
func (s *Sink) Blocked() map[string]string {
	s.exMu.Lock()
	defer s.exMu.Unlock()
	return maps.Clone(s.blocked)
}

// Stats counts records by outcome since New.
type Stats struct {
	Delivered   uint64 // confirmed by the broker (routed to at least one queue)
	Permanent   uint64 // failed for good (too large, no route, unroutable with Unroutable "permanent")
	Unavailable uint64 // failed with a systemic error (connection or channel lost, nack, confirm timeout)
	Unroutable  uint64 // returned by the broker: no queue bound for the routing key
	// MissingExchange counts records to a configured exchange that does not exist (systemic).
	MissingExchange uint64
	// RouteNotAllowed counts records whose Route is not a valid routing key or is outside their
	// destination's AllowedRoutingKeys (failed permanently, also counted in Permanent).
	RouteNotAllowed uint64
	// DroppedHeaders counts message headers not sent (reserved or invalid names).
	DroppedHeaders uint64
}

// Stats returns the counters. Safe for concurrent use.
func (s *Sink) Stats() Stats {
	return Stats{Delivered: s.stats.delivered.Load(), Permanent: s.stats.permanent.Load(), Unavailable: s.stats.unavailable.Load(),
		Unroutable: s.stats.unroutable.Load(), MissingExchange: s.stats.missingExchange.Load(),
		RouteNotAllowed: s.stats.routeNotAllowed.Load(), DroppedHeaders: s.stats.droppedHeaders.Load()}
}

// routeFor returns the exchange and routing key of r: its destination's configured routing key always
// wins; otherwise its Route, if it is a valid routing key inside the destination's allow-list.
func (s *Sink) routeFor(r *outbox.Record) (exchange, key string, err error) {
	d, ok := s.cfg.Destinations[string(r.Destination)]
	if !ok {
		return "", "", outbox.Permanent(fmt.Errorf("rabbitmq: message %s: destination %q has no exchange in Config.Destinations", r.ID, r.Destination))
	}
	if d.RoutingKey != "" {
		return d.Exchange, d.RoutingKey, nil
	}
	if err := routingkey.Validate(r.Route); err != nil {
		s.stats.routeNotAllowed.Add(1)
		return "", "", outbox.Permanent(fmt.Errorf("rabbitmq: message %s of destination %q: its Route cannot be a routing key: %w", r.ID, r.Destination, err))
	}
	if a := s.allowed[string(r.Destination)]; a != nil && !a.Allows(r.Route) {
		s.stats.routeNotAllowed.Add(1)
		return "", "", outbox.Permanent(fmt.Errorf("rabbitmq: message %s of destination %q: Route %q is not an allowed routing key (allowed: %s)",
			r.ID, r.Destination, r.Route, a))
	}
	return d.Exchange, r.Route, nil
}

// checkExchange reports whether exchange exists (cached for exchangeTTL): nil when it does, an error
// wrapping amqp.NotFound when it does not, and another error when the broker cannot tell now.
func (s *Sink) checkExchange(l *link, exchange string) error {
	if exchange == "" {
		return nil // the default exchange always exists
	}
	s.exMu.Lock()
	at, ok := s.exchanges[exchange]
	s.exMu.Unlock()
	if ok && time.Since(at) < exchangeTTL {
		return nil
	}
	ch, err := l.conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: open channel to check exchange %q: %w", exchange, err)
	}
	err = ch.ExchangeDeclarePassive(exchange, "direct", true, false, false, false, nil)
	_ = ch.Close() // a 404 closed it already
	s.exMu.Lock()
	defer s.exMu.Unlock()
	var ae *amqp.Error
	if err != nil && errors.As(err, &ae) && ae.Code == amqp.NotFound {
		reason := fmt.Sprintf("exchange %q does not exist: declare it (the sink never declares exchanges)", exchange)
		if _, was := s.blocked[exchange]; !was {
			s.log.Warn("exchange missing; deliveries to it are blocked", zap.String("exchange", exchange))
		}
		s.blocked[exchange] = reason
		delete(s.exchanges, exchange)
		return fmt.Errorf("rabbitmq: %s: %w", reason, err)
	}
	if err != nil {
		return fmt.Errorf("rabbitmq: check exchange %q: %w", exchange, err)
	}
	if _, was := s.blocked[exchange]; was {
		s.log.Info("exchange present again; deliveries resume", zap.String("exchange", exchange))
		delete(s.blocked, exchange)
	}
	s.exchanges[exchange] = time.Now()
	return nil
}
