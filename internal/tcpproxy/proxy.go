// Package tcpproxy is an in-process TCP proxy for fault-injection tests: it forwards connections to
// one target and can, at any moment, blackhole them (bytes are swallowed in both directions, no FIN,
// no RST — what a cut network cable looks like to both ends), reset them (RST to both ends), refuse
// new ones, or add latency to every chunk.
//
// A Proxy is safe for concurrent use. Mode changes apply to existing connections at once and to new
// ones as they arrive; a blackholed connection stays dead after Pass (as after a real partition, the
// peers must notice and reconnect).
package tcpproxy

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int32

const (
	// Pass forwards bytes (after the configured latency).
	Pass Mode = iota
	// Blackhole accepts connections and reads every byte, but forwards nothing and never closes.
	Blackhole
	// Refuse resets every new connection at once; existing ones keep their mode.
	Refuse
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Blackhole:
		return "blackhole"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Mode(%d)", int32(m))
}

// Proxy forwards TCP connections from Addr to a target address.
type Proxy struct {
	ln      net.Listener
	target  string
	mode    atomic.Int32
	latency atomic.Int64

	mu     sync.Mutex
	conns  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted atomic.Int64
}

// link is one proxied connection: the client side and, unless blackholed at accept, the server side.
type link struct {
	client, server net.Conn
	dead           atomic.Bool // blackholed: swallow everything
}

// New listens on listen (e.g. "127.0.0.1:0") and forwards to target.
func New(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listen %s: %w", listen, err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns how many connections the proxy accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Active returns the number of open proxied connections.
func (p *Proxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Mode returns the current mode.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// SetLatency delays every forwarded chunk by d (0 removes the delay). Order is preserved.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Blackhole makes every current connection, and every new one, swallow its bytes silently.
func (p *Proxy) Blackhole() {
	p.mode.Store(int32(Blackhole))
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.conns {
		l.dead.Store(true)
	}
}

// Refuse resets new connections as soon as they are accepted; existing connections are untouched.
func (p *Proxy) Refuse() { p.mode.Store(int32(Refuse)) }

// Pass lets new connections through again. Connections blackholed before stay blackholed.
func (p *Proxy) Pass() { p.mode.Store(int32(Pass)) }

// Reset closes every current connection with an RST to both peers. The mode is unchanged.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
	return len(ls)
}

// Close stops accepting, resets every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		switch p.Mode() {
		case Refuse:
			rst(c)
			continue
		case Blackhole:
			l := &link{client: c}
			l.dead.Store(true)
			if !p.add(l) {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer p.remove(l)
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
			}()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) add(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		l.reset()
		return false
	}
	p.conns[l] = struct{}{}
	return true
}

func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		rst(c)
		return
	}
	l := &link{client: c, server: s}
	if !p.add(l) {
		return
	}
	defer p.remove(l)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, s, c) }()
	go func() { defer wg.Done(); p.pipe(l, c, s) }()
	wg.Wait()
	l.close()
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, delaying each chunk by the latency, until either side fails. While the link
// is blackholed, bytes are read and dropped.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			if d := time.Until(ch.at); d > 0 {
				time.Sleep(d)
			}
			if l.dead.Load() {
				continue
			}
			if _, err := dst.Write(ch.b); err != nil {
				l.close()
				for range q { // drain so the reader never blocks
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.dead.Load() {
			q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(time.Duration(p.latency.Load()))}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	// A clean EOF propagates as a half-close; a blackholed peer never sees a FIN.
	if tc, ok := dst.(*net.TCPConn); ok && !l.dead.Load() {
		_ = tc.CloseWrite()
	}
}

func (l *link) close() {
	_ = l.client.Close()
	if l.server != nil {
		_ = l.server.Close()
	}
}

func (l *link) reset() {
	rst(l.client)
	if l.server != nil {
		rst(l.server)
	}
}

// rst closes c so that the peer gets an RST instead of a FIN.
func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
