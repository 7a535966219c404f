package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// benchDest is the destination of every benchmark message.
const benchDest outbox.Destination = "bench"

// backlog describes messages committed before a slot is read.
type backlog struct {
	Schema  string
	N       int                // messages
	PerTx   int                // messages per transaction
	Payload int                // bytes
	Key     func(i int) string // ordering key of message i
	Conns   int                // parallel writers
	// Transport writes the messages (the relays then read them WithLogicalMessages).
	Transport outbox.Transport
}

func payload(n int) []byte {
	p := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range p {
		p[i] = byte('a' + r.IntN(26))
	}
	return p
}

func uniformKeys(distinct int) func(int) string {
	return func(i int) string { return fmt.Sprintf("key-%d", i%distinct) }
}

// fill commits b's messages and returns the WAL position after the last commit.
func fill(ctx context.Context, pool *pgxpool.Pool, b backlog) (end string, took time.Duration, err error) {
	start := time.Now()
	body := payload(b.Payload)
	txs := (b.N + b.PerTx - 1) / b.PerTx
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.Conns)
	for range max(1, min(b.Conns, txs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]outbox.Message, 0, min(b.PerTx, 10_000))
			for {
				t := int(next.Add(1)) - 1
				if t >= txs {
					return
				}
				first, last := t*b.PerTx, min((t+1)*b.PerTx, b.N)
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					for lo := first; lo < last; lo += cap(msgs) {
						msgs = msgs[:0]
						for i := lo; i < min(lo+cap(msgs), last); i++ {
							msgs = append(msgs, outbox.Message{Destination: benchDest, Key: b.Key(i), Type: "BenchEvent", Payload: body})
						}
						if err := (outbox.Enqueuer{Schema: b.Schema, Transport: b.Transport}).Enqueue(ctx, tx, msgs...); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("fill %s: %w", b.Schema, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return "", 0, err
	}
	took = time.Since(start)
	err = pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	return end, took, err
}

func createSlots(ctx context.Context, pool *pgxpool.Pool, names []string) error {
	for _, n := range names {
		if _, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", n); err != nil {
			return fmt.Errorf("create slot %s: %w", n, err)
		}
	}
	return nil
}

// dropSlot drops a slot, waiting for its walsender to go away.
func dropSlot(ctx context.Context, pool *pgxpool.Pool, name string) error {
	for range 100 {
		var active bool
		err := pool.QueryRow(ctx, "SELECT COALESCE((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)", name).Scan(&active)
		if err != nil {
			return err
		}
		if !active {
			break
		}
		_, _ = pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", name)
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	_, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", name)
	return err
}

// slotStats are pg_stat_replication_slots counters: whether the walsender spilled or streamed.
type slotStats struct {
	SpillTxns   int64 `json:"spill_txns"`
	SpillBytes  int64 `json:"spill_bytes"`
	StreamTxns  int64 `json:"stream_txns"`
	StreamBytes int64 `json:"stream_bytes"`
}

func readSlotStats(ctx context.Context, pool *pgxpool.Pool, slot string) slotStats {
	var s slotStats
	_ = pool.QueryRow(ctx, `SELECT spill_txns, spill_bytes, stream_txns, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = $1`, slot).
		Scan(&s.SpillTxns, &s.SpillBytes, &s.StreamTxns, &s.StreamBytes)
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
