package outbox_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// BenchmarkRelayDrain drains a backlog of 200-byte messages (committed 100 per transaction while the
// slot already existed) through a handler that acks at once; reports msgs/s and peak heap.
func BenchmarkRelayDrain(b *testing.B) {
	const backlog = 200_000
	db := pgtest.New(b)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		slot := "b_" + pgtest.RandomSuffix()
		db.Exec(b, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
		msgs := make([]outbox.Message, 100)
		for j := range msgs {
			msgs[j] = outbox.Message{Destination: outbox.EventBus, Key: fmt.Sprint(j % 64), Type: "Bench", Payload: make([]byte, 200)}
		}
		for range backlog / len(msgs) {
			if err := outbox.Enqueue(ctx, "app", db.Pool, msgs...); err != nil {
				b.Fatal(err)
			}
		}
		var n atomic.Int64
		done := make(chan struct{})
		handler := func(context.Context, outbox.Message) error {
			if n.Add(1) == backlog {
				close(done)
			}
			return nil
		}
		var peak uint64
		stopPeak := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopPeak:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
			}
		}()
		b.ResetTimer()
		cpu0 := cpuTime()
		start := time.Now()
		r, err := outbox.Start(ctx, db.Pool, "app", map[outbox.Destination]outbox.Handler{outbox.EventBus: handler}, outbox.WithSlotName(slot))
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("drained %d of %d", n.Load(), backlog)
		}
		elapsed := time.Since(start)
		cpu := cpuTime() - cpu0
		b.StopTimer()
		close(stopPeak)
		_ = r.Stop(ctx)
		db.Exec(b, "SELECT pg_drop_replication_slot($1)", slot)
		db.Exec(b, "TRUNCATE app.pkg_outbox")
		b.ReportMetric(float64(backlog)/elapsed.Seconds(), "msgs/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(cpu.Nanoseconds())/backlog, "cpu-ns/msg")
	}
}

// cpuTime is the process's user+system CPU time so far: the relay's own cost, whatever else the
// machine runs (PostgreSQL's walsender is another process).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
