package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// latencies is an outbox.Observer that records commit→ack times.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) Delivered(_ outbox.Destination, d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}
func (l *latencies) Failed(outbox.Destination, error)  {}
func (l *latencies) DeadLettered(outbox.Destination)   {}
func (l *latencies) Blocked(outbox.Destination, error) {}
func (l *latencies) pct(p float64) time.Duration       { return l.d[int(float64(len(l.d)-1)*p)] }

// BenchmarkRelayLatency runs an open-loop load of 5,000 messages/s (transactions of 10 every 2 ms,
// from 4 producers) for 10 s through a handler that acks at once, and reports commit→handler-ack
// latency percentiles. The commit time is PostgreSQL's commit timestamp (same host clock).
func BenchmarkRelayLatency(b *testing.B) {
	const rate, perTx, seconds, producers = 5000, 10, 10, 4
	db := pgtest.New(b)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		lat := &latencies{}
		r, err := outbox.Start(ctx, db.Pool, "app", map[outbox.Destination]outbox.Handler{
			outbox.EventBus: func(context.Context, outbox.Message) error { return nil },
		}, outbox.WithSlotName("b_"+pgtest.RandomSuffix()), outbox.WithObserver(lat))
		if err != nil {
			b.Fatal(err)
		}
		interval := time.Duration(float64(time.Second) * perTx * producers / rate)
		var wg sync.WaitGroup
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := make([]outbox.Message, perTx)
				for i := range msgs {
					msgs[i] = outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprintf("p%d-%d", p, i), Payload: make([]byte, 200)}
				}
				next := time.Now()
				end := next.Add(seconds * time.Second)
				for next.Before(end) {
					time.Sleep(time.Until(next))
					if err := outbox.Enqueue(ctx, "app", db.Pool, msgs...); err != nil {
						b.Error(err)
						return
					}
					next = next.Add(interval) // open loop: the schedule does not wait for slow commits
				}
			}()
		}
		wg.Wait()
		time.Sleep(500 * time.Millisecond)
		_ = r.Stop(ctx)
		lat.mu.Lock()
		slices.Sort(lat.d)
		n := len(lat.d)
		if n < rate*seconds*9/10 {
			b.Fatalf("only %d deliveries", n)
		}
		b.ReportMetric(float64(lat.pct(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat.pct(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat.pct(0.999).Microseconds())/1000, "p99.9-ms")
		b.ReportMetric(float64(n)/seconds, "msgs/s")
		lat.mu.Unlock()
	}
}
