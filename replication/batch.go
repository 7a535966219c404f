package replication

import "github.com/jackc/pglogrepl"

// arenaChunk is the size of the byte blocks XLogData copies are carved from; larger messages get
// their own allocation.
const arenaChunk = 32 << 10

// batcher collects events for one send on Run's channel. Data copies are carved out of shared
// blocks, so a batch costs a few allocations rather than one per message. Blocks are never reused:
// the receiver owns them.
type batcher struct {
	max    int
	events []Event
	arena  []byte
}

func newBatcher(max int) *batcher { return &batcher{max: max} }

func (b *batcher) len() int   { return len(b.events) }
func (b *batcher) full() bool { return len(b.events) >= b.max }

func (b *batcher) add(ev Event) {
	if b.events == nil {
		b.events = make([]Event, 0, min(b.max, 64))
	}
	b.events = append(b.events, ev)
}

func (b *batcher) addData(xld pglogrepl.XLogData) {
	b.add(Event{Kind: XLogData, WALStart: xld.WALStart, ServerWALEnd: xld.ServerWALEnd, ServerTime: xld.ServerTime,
		Data: b.copy(xld.WALData)})
}

func (b *batcher) copy(data []byte) []byte {
	n := len(data)
	if n > arenaChunk/4 {
		return append(make([]byte, 0, n), data...)
	}
	if cap(b.arena)-len(b.arena) < n {
		b.arena = make([]byte, 0, arenaChunk)
	}
	start := len(b.arena)
	b.arena = append(b.arena, data...)
	return b.arena[start : start+n : start+n]
}

// take hands the batch over; the batcher starts a new one (the arena's remaining space stays in use:
// carved slices are capped, so they never overlap).
func (b *batcher) take() []Event {
	ev := b.events
	b.events = nil
	return ev
}

// reset drops the pending events (after a lost connection: they will be sent again).
func (b *batcher) reset() { b.events = nil }
