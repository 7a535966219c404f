package outbox

import (
	"context"
	"sync"
)

// gate bounds the messages in flight (WithMaxInFlight): room for a whole batch is taken before the
// batch goes to a lane, and given back when the lane has acked it. One lock per batch, where a
// channel-token semaphore costs two channel operations per message.
type gate struct {
	mu   sync.Mutex
	n    int
	max  int
	wake chan struct{} // closed (and dropped) by release while an acquire waits
}

// acquire waits until k more messages fit (or nothing is in flight, so that a batch larger than max
// still goes), then takes the room; it returns ctx's error if ctx ends first.
func (g *gate) acquire(ctx context.Context, k int) error {
	g.mu.Lock()
	for g.n != 0 && g.n+k > g.max {
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
		g.mu.Lock()
	}
	g.n += k
	g.mu.Unlock()
	return nil
}

// release gives back the room of k messages.
func (g *gate) release(k int) {
	g.mu.Lock()
	g.n -= k
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
	g.mu.Unlock()
}

// inFlight returns the messages taken and not yet released.
func (g *gate) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}
