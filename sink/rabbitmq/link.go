package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/sink/internal/flight"
)

// link is one connection and its publishing channels. It dies as a whole: when the connection or any
// of its channels closes, every record awaiting a confirm on it fails as unavailable and the sink
// dials a new link.
type link struct {
	conn *amqp.Connection
	pubs []*publisher
	dead chan struct{}
	once sync.Once
	err  error // why it died; read after dead is closed
	// blocked holds the broker's reason while it blocks publishing on this connection (a memory or
	// disk alarm: connection.blocked); nil otherwise.
	blocked atomic.Pointer[string]
}

// publisher is one channel in confirm mode with the records awaiting its confirms.
type publisher struct {
	s        *Sink
	l        *link
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	returns  chan amqp.Return
	mu       sync.Mutex // held to publish (tag and publish together) and to touch pending
	pending  map[uint64]waiter
	closed   bool
	returned map[string]int // returned, not yet confirmed, by returnKey; the dispatcher's own
}

// waiter is one published record whose confirm a Send awaits.
type waiter struct {
	c   *call
	idx int
}

// dial opens a link: the connection and cfg.Channels channels in confirm mode, each with its dispatcher.
func (s *Sink) dial() (*link, error) {
	c := s.cfg
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: URL: %w", err)
	}
	if c.User != "" {
		u.User = url.UserPassword(c.User, c.Password)
	}
	ac := amqp.Config{Heartbeat: c.Heartbeat, Properties: amqp.NewConnectionProperties(),
		Dial: dialer(c.DialTimeout)}
	ac.Properties.SetClientConnectionName(c.Name)
	if u.Scheme == "amqps" || c.TLS.Enable {
		if ac.TLSClientConfig, err = c.TLS.build(u.Hostname()); err != nil {
			return nil, err
		}
		if u.Scheme == "amqp" {
			u.Scheme = "amqps"
		}
	}
	conn, err := amqp.DialConfig(u.String(), ac)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: connect to %s: %w", redact(c.URL), err)
	}
	l := &link{conn: conn, dead: make(chan struct{})}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go s.watchBlocked(l, conn.NotifyBlocked(make(chan amqp.Blocking, 4)))
	for range c.Channels {
		p, err := s.openPublisher(l)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		l.pubs = append(l.pubs, p)
	}
	go func() {
		if e, ok := <-closed; ok && e != nil {
			l.die(fmt.Errorf("rabbitmq: connection closed: %w", e))
		} else {
			l.die(errors.New("rabbitmq: connection closed"))
		}
	}()
	return l, nil
}

// dialer connects with amqp091-go's DefaultDial (its deadline covers the handshake too: a cut link
// never answers it) and coalesces the connection's writes.
func dialer(timeout time.Duration) func(network, addr string) (net.Conn, error) {
	dial := amqp.DefaultDial(timeout)
	return func(network, addr string) (net.Conn, error) {
		conn, err := dial(network, addr)
		if err != nil {
			return nil, err
		}
		return newCoalescingConn(conn), nil
	}
}

func (s *Sink) openPublisher(l *link) (*publisher, error) {
	ch, err := l.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("rabbitmq: confirm mode: %w", err)
	}
	// Buffered for every record that can be in flight: the connection's reader blocks on them.
	p := &publisher{s: s, l: l, ch: ch, pending: map[uint64]waiter{}, returned: map[string]int{},
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, s.cfg.MaxInFlight)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, s.cfg.MaxInFlight))}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	go p.dispatch()
	go func() {
		if e, ok := <-closed; ok && e != nil {
			l.die(fmt.Errorf("rabbitmq: channel closed: %w", e))
		}
	}()
	return p, nil
}

// watchBlocked follows the broker's connection.blocked and connection.unblocked: while blocked, records
// are not published (they fail as unavailable at once) instead of stalling on a connection the broker
// no longer reads.
func (s *Sink) watchBlocked(l *link, blocks <-chan amqp.Blocking) {
	for b := range blocks {
		if b.Active {
			reason := b.Reason
			l.blocked.Store(&reason)
			s.log.Warn("broker blocks publishing (resource alarm); records fail as unavailable until it lifts", zap.String("reason", reason))
			continue
		}
		l.blocked.Store(nil)
		s.log.Info("broker publishes again (alarm cleared)")
	}
}

// die marks the link dead with err (the first reason wins), closes it and fails what awaits a confirm.
func (l *link) die(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.dead)
		for _, p := range l.pubs {
			p.failAll(err)
		}
		// A cut connection never answers connection.close: bound the wait, off the caller's goroutine.
		go func() { _ = l.conn.CloseDeadline(time.Now().Add(closeWait)) }()
	})
}

// dispatch routes the channel's returns and confirms to the Sends awaiting them. A return (an
// unroutable message) precedes the confirm of the same message: the confirm's handler drains the
// returns first, so it always sees it.
func (p *publisher) dispatch() {
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				p.failAll(errors.New("rabbitmq: channel closed"))
				return
			}
			p.returned[returnKey(r.MessageId, r.Exchange, r.RoutingKey)]++
		case cf, ok := <-p.confirms:
			if !ok {
				p.failAll(errors.New("rabbitmq: channel closed"))
				return
			}
			p.drainReturns()
			p.confirm(cf)
		}
	}
}

func (p *publisher) drainReturns() {
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				return
			}
			p.returned[returnKey(r.MessageId, r.Exchange, r.RoutingKey)]++
		default:
			return
		}
	}
}

func (p *publisher) confirm(cf amqp.Confirmation) {
	p.mu.Lock()
	w, ok := p.pending[cf.DeliveryTag]
	delete(p.pending, cf.DeliveryTag)
	p.mu.Unlock()
	if !ok {
		return // timed out or abandoned
	}
	p.s.slots.Release()
	c := w.c
	switch {
	case len(p.returned) > 0 && p.takeReturned(returnKey(c.Batch[w.idx].ID, c.exchanges[w.idx], c.keys[w.idx])):
		c.Deliver(c.unroutable(w.idx))
	case cf.Ack:
		c.Deliver(flight.Result{Idx: w.idx, Kind: flight.OK})
	default:
		c.Deliver(flight.Result{Idx: w.idx, Kind: flight.Unavailable,
			Err: errors.New("rabbitmq: the broker nacked the message (an internal error or a queue refusing publishes)")})
	}
}

// takeReturned reports whether a message of key was returned, forgetting one return of it.
func (p *publisher) takeReturned(key string) bool {
	n := p.returned[key]
	switch {
	case n == 0:
		return false
	case n == 1:
		delete(p.returned, key)
	default:
		p.returned[key] = n - 1
	}
	return true
}

// failAll fails every record awaiting a confirm on p with err; later publishes on p fail at once.
func (p *publisher) failAll(err error) {
	p.mu.Lock()
	all := p.pending
	p.pending = map[uint64]waiter{}
	p.closed = true
	p.mu.Unlock()
	for _, w := range all {
		p.s.slots.Release()
		w.c.Deliver(flight.Result{Idx: w.idx, Kind: flight.Unavailable, Err: err})
	}
}

// unregister removes tag and reports whether it was still waiting (its slot is then released).
func (p *publisher) unregister(tag uint64) bool {
	p.mu.Lock()
	_, ok := p.pending[tag]
	delete(p.pending, tag)
	p.mu.Unlock()
	if ok {
		p.s.slots.Release()
	}
	return ok
}

func returnKey(id, exchange, key string) string { return id + "\x00" + exchange + "\x00" + key }

// supervise keeps a link up until ctx ends: it dials with capped exponential backoff, publishes the
// link for Sends, and dials again when it dies.
func (s *Sink) supervise(ctx context.Context, first *link) {
	defer close(s.stopped)
	l := first
	wait := s.cfg.ReconnectWait
	for {
		if l != nil {
			s.link.Store(l)
			s.setLinkErr(nil)
			select {
			case <-l.dead:
				s.link.Store(nil)
				s.setLinkErr(l.err)
				s.log.Warn("connection lost; records awaiting a confirm fail as unavailable, reconnecting", zap.Error(l.err))
			case <-ctx.Done():
				s.link.Store(nil)
				l.die(ErrClosed)
				return
			}
			wait = s.cfg.ReconnectWait
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		var err error
		if l, err = s.dial(); err != nil {
			s.setLinkErr(err)
			s.log.Warn("reconnect failed", zap.Duration("next_in", min(2*wait, maxReconnectWait)), zap.Error(err))
			wait = min(2*wait, maxReconnectWait)
			continue
		}
		s.log.Info("reconnected")
	}
}

const (
	maxReconnectWait = 15 * time.Second
	closeWait        = 2 * time.Second // how long closing a dead link waits for the broker
)
