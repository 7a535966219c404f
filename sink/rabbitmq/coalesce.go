package rabbitmq

import (
	"net"
	"sync"
)

// maxCoalesced bounds the bytes a coalescingConn holds unwritten: a Write waits while it holds more.
const maxCoalesced = 1 << 20

// coalescingConn is a net.Conn whose writes are handed to a goroutine of its own, which writes
// whatever gathered while its previous write was in the kernel in one write: amqp091-go flushes every
// published message with a write of its own (~3 small frames), so many Sends publishing at once would
// otherwise cost a system call and a TCP segment each, on this side and on the broker's. Nothing waits
// for more data: a Write with the writer idle goes out at once.
//
// A Write returns once its bytes are queued. When writing to the socket fails, the connection is
// closed, so amqp091-go's reader fails and the connection shuts down: the messages in the lost bytes
// were never confirmed, and their records fail as unavailable like any on a lost connection. Later
// Writes return the error.
type coalescingConn struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond // signalled when the writer took the pending bytes, or failed
	pending []byte
	spare   []byte
	err     error
	closed  bool
	wake    chan struct{} // cap 1: bytes are pending
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, wake: make(chan struct{}, 1)}
	cc.cond.L = &cc.mu
	go cc.writer()
	return cc
}

// Write queues p, waiting while too much is queued already.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for len(c.pending) >= maxCoalesced && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if c.err != nil || c.closed {
		err := c.err
		c.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// writer writes what is pending, all of it at a time, until Close or a failed write.
func (c *coalescingConn) writer() {
	for range c.wake {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		buf := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.cond.Broadcast()
		c.mu.Unlock()
		if len(buf) > 0 {
			if _, err := c.Conn.Write(buf); err != nil {
				c.fail(err)
				return
			}
		}
		c.mu.Lock()
		if cap(buf) <= maxCoalesced { // keep one buffer, not one that a burst grew large
			c.spare = buf[:0]
		}
		c.mu.Unlock()
	}
}

func (c *coalescingConn) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.cond.Broadcast()
	c.mu.Unlock()
	_ = c.Conn.Close()
}

// Close closes the connection and stops the writer; what is still queued is dropped (amqp091-go
// closes the connection once the broker answered connection.close, or when it is lost). Idempotent.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return c.Conn.Close()
}
