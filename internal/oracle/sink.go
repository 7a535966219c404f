package oracle

import (
	"context"
	"sync"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Sink is an in-process [outbox.Sink] that acks everything and remembers it, in delivery order; its
// Handle method makes it an [outbox.Handler] as well. Safe for concurrent use.
type Sink struct {
	mu      sync.RWMutex
	records []outbox.Record
	ds      []Delivery
	seen    map[string]int
}

// NewSink returns an empty sink.
func NewSink() *Sink { return &Sink{seen: map[string]int{}} }

// Send records batch and acks it.
func (s *Sink) Send(_ context.Context, batch []outbox.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range batch {
		s.records = append(s.records, r)
		s.ds = append(s.ds, Delivery{ID: r.ID, Key: r.Key, Payload: r.Payload})
		s.seen[r.ID]++
	}
	return nil
}

// Handle records m and acks it.
func (s *Sink) Handle(ctx context.Context, m outbox.Message) error {
	return s.Send(ctx, []outbox.Record{{Message: m}})
}

// Has reports whether id was delivered.
func (s *Sink) Has(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seen[id] > 0
}

// Count returns how many distinct ids were delivered.
func (s *Sink) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.seen)
}

// Records returns a copy of every record delivered, duplicates included, in delivery order.
func (s *Sink) Records() []outbox.Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]outbox.Record(nil), s.records...)
}

// Deliveries returns every delivery so far, in delivery order.
func (s *Sink) Deliveries() []Delivery {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ds[:len(s.ds):len(s.ds)] // append-only: the prefix never changes
}

// Source reads the sink for [Ledger.Verify] and [Ledger.WaitAll].
func (s *Sink) Source() Source {
	return func(context.Context) ([]Delivery, error) { return s.Deliveries(), nil }
}
