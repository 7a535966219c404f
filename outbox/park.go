package outbox

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
)

// A parked key: one of its records failed with a retryable error. That record (the head) waits for
// its next attempt and every later record of the key waits behind it, in commit order, so the key's
// order holds while its lane goes on delivering other keys. A key leaves the parking when its head is
// delivered or dead-lettered; its waiting records are then delivered next.
type parkedKey struct {
	key   string
	head  *item     // the failed record, waiting for due; nil while it is being retried
	retry *item     // the head while it is being retried
	queue []*item   // later records of the key, in commit order
	due   time.Time // when head is tried again
	since time.Time // when the key was parked
	index int       // position in the due heap; -1 when not in it
}

// parking holds the parked keys of one lane. Only the lane's goroutine changes it; mu lets Stats read
// it from other goroutines (the lane takes mu only while it changes something).
type parking struct {
	mu      sync.Mutex
	keys    map[string]*parkedKey
	due     dueHeap
	records int // records held: waiting heads and queued records
	full    int // keys whose queue reached the per-key limit
	limit   int // most records queued behind one head
	// total counts the records held by every lane's parking (the relay-wide bound).
	total *atomic.Int64
}

func newParking(limitPerKey int, total *atomic.Int64) *parking {
	return &parking{keys: map[string]*parkedKey{}, limit: limitPerKey, total: total}
}

// addRecords changes the records held by n; p.mu is held.
func (p *parking) addRecords(n int) {
	p.records += n
	p.total.Add(int64(n))
}

// parkKey is the key an item is parked under: its Key, or for a keyless record (no order to keep)
// the record itself.
func parkKey(it *item) string {
	if it.rec.Key != "" {
		return it.rec.Key
	}
	return "\x00" + it.rec.ID
}

// lookup returns the parked key of it, or nil. It costs nothing while no key is parked.
func (p *parking) lookup(it *item) *parkedKey {
	if len(p.keys) == 0 {
		return nil
	}
	return p.keys[parkKey(it)]
}

// hold queues it behind its parked key k.
func (p *parking) hold(k *parkedKey, it *item) {
	p.mu.Lock()
	k.queue = append(k.queue, it)
	p.addRecords(1)
	if len(k.queue) == p.limit {
		p.full++
	}
	p.mu.Unlock()
}

// park makes it the head of its key, tried again at due, and reports whether the key was parked
// just now (else it already was and it is the head that was being retried).
func (p *parking) park(it *item, due time.Time) (k *parkedKey, parked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := parkKey(it)
	k = p.keys[key]
	if parked = k == nil; parked {
		k = &parkedKey{key: key, since: time.Now(), index: -1}
		p.keys[key] = k
	}
	k.head, k.retry, k.due = it, nil, due
	p.addRecords(1)
	heap.Push(&p.due, k)
	return k, parked
}

// takeDue returns the heads due at now and marks them as being retried; their keys stay parked.
func (p *parking) takeDue(now time.Time, out []*item) []*item {
	if len(p.due) == 0 || p.due[0].due.After(now) {
		return out
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.due) > 0 && !p.due[0].due.After(now) {
		k := heap.Pop(&p.due).(*parkedKey)
		k.retry, k.head = k.head, nil
		p.addRecords(-1)
		out = append(out, k.retry)
	}
	return out
}

// release unparks k once its head was delivered or dead-lettered and returns the records that waited
// behind it, in order: they go next.
func (p *parking) release(k *parkedKey) []*item {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.keys, k.key)
	if k.index >= 0 {
		heap.Remove(&p.due, k.index)
	}
	if k.head != nil {
		p.addRecords(-1)
	}
	if len(k.queue) >= p.limit {
		p.full--
	}
	p.addRecords(-len(k.queue))
	q := k.queue
	k.queue, k.head, k.retry = nil, nil, nil
	return q
}

// next returns when the earliest head is due.
func (p *parking) next() (time.Time, bool) {
	if len(p.due) == 0 {
		return time.Time{}, false
	}
	return p.due[0].due, true
}

// ParkedStats describes the keys held back by a failing record (see [Relay.Stats]).
type ParkedStats struct {
	// Keys parked now, and the records they hold back (failed heads included).
	Keys, Records int
	// Since is when the longest-parked key was parked (zero when none is).
	Since time.Time
	// OldestLSN is the lowest commit LSN among the held-back records: the slot's confirmed position
	// cannot pass it, so the server retains WAL from there on (zero when no key is parked).
	OldestLSN pglogrepl.LSN
}

// add adds p's parked keys to s.
func (p *parking) stats(s *ParkedStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.Keys += len(p.keys)
	s.Records += p.records
	for _, k := range p.keys {
		if s.Since.IsZero() || k.since.Before(s.Since) {
			s.Since = k.since
		}
		first := k.head
		if first == nil {
			first = k.retry
		}
		if first != nil && (s.OldestLSN == 0 || first.rec.CommitLSN < s.OldestLSN) {
			s.OldestLSN = first.rec.CommitLSN
		}
	}
}

// dueHeap orders parked keys by when their head is due.
type dueHeap []*parkedKey

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *dueHeap) Push(x any) {
	k := x.(*parkedKey)
	k.index = len(*h)
	*h = append(*h, k)
}

func (h *dueHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	k.index = -1
	*h = old[:len(old)-1]
	return k
}
