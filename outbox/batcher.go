package outbox

import (
	"context"
	"hash/maphash"
)

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
