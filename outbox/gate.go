package outbox

import (
	"context"
	"hash/maphash"
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

// batcher collects routed messages per lane and hands each lane its messages as one slice: when a
// lane's batch is full and at every flush (the decode goroutine flushes at each commit). It belongs
// to one goroutine.
type batcher struct {
	r    *Relay
	pend [][]*item
	last []int  // size of each lane's previous batch: the next one starts with that capacity
	rr   uint64 // round-robin for keyless messages
}

func newBatcher(r *Relay) *batcher {
	return &batcher{r: r, pend: make([][]*item, len(r.lanes)), last: make([]int, len(r.lanes))}
}

// add routes it to the lane of its key (keyless messages go round-robin).
func (b *batcher) add(ctx context.Context, it *item) error {
	var h uint64
	if it.rec.Key != "" {
		h = maphash.String(b.r.seed, it.rec.Key) | 1 // never 0, which marks a keyless record
		it.hash = h
	} else {
		b.rr++
		h = b.rr
	}
	i := int(h % uint64(len(b.pend)))
	if b.pend[i] == nil {
		b.pend[i] = make([]*item, 0, min(max(b.last[i], 4), b.r.cfg.batchSize))
	}
	b.pend[i] = append(b.pend[i], it)
	if len(b.pend[i]) >= b.r.cfg.batchSize {
		return b.send(ctx, i)
	}
	return nil
}

// flush hands every lane its pending messages, waiting for room (backpressure: while MaxInFlight
// messages are unacked, the WAL is not read).
func (b *batcher) flush(ctx context.Context) error {
	for i := range b.pend {
		if len(b.pend[i]) > 0 {
			if err := b.send(ctx, i); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *batcher) send(ctx context.Context, i int) error {
	batch := b.pend[i]
	if err := b.r.gate.acquire(ctx, len(batch)); err != nil {
		return err
	}
	select {
	case b.r.lanes[i].in <- batch:
		b.pend[i], b.last[i] = nil, len(batch) // the lane owns batch now
		return nil
	case <-ctx.Done():
		b.r.gate.release(len(batch))
		return ctx.Err()
	}
}

// drop forgets the pending messages of a transaction cut short: they were never handed to a lane,
// so they are acked in the watermark right away (the transaction is sent again after a reconnect).
func (b *batcher) drop() {
	for i, p := range b.pend {
		for _, it := range p {
			it.tx.Ack(1)
		}
		b.pend[i] = nil
	}
}
