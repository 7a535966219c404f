package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// W1Row is one (clients, messages per tx) configuration of the enqueue-cost workload.
type W1Row struct {
	Clients int     `json:"clients"`
	Msgs    int     `json:"messages_per_tx"`
	TPS     Summary `json:"tps"`
	MeanMS  Summary `json:"mean_ms"`
	P50MS   Summary `json:"p50_ms"`
	P99MS   Summary `json:"p99_ms"`
	AddedMS Summary `json:"added_ms_per_tx"` // mean latency minus the business-only mean of the same repeat
}

// W1Result is the enqueue-cost workload.
type W1Result struct {
	Rows     []W1Row   `json:"rows"`
	Seconds  float64   `json:"seconds_per_run"`
	Warmup   float64   `json:"warmup_s"`
	Repeats  int       `json:"repeats"`
	Accounts int       `json:"accounts"`
	Payload  int       `json:"payload_bytes"`
	Quick    bool      `json:"quick"`
	When     time.Time `json:"when"`
}

const w1Schema = "b1"

func (b *bench) w1(ctx context.Context) (*W1Result, error) {
	const accounts = 100_000
	res := &W1Result{Seconds: 5, Warmup: 1, Repeats: b.repeats, Accounts: accounts, Payload: 256, Quick: b.quick, When: time.Now().UTC()}
	if b.quick {
		res.Seconds = 2
	}
	if err := b.w1Setup(ctx, accounts); err != nil {
		return nil, err
	}
	clients, msgs := []int{1, 8}, []int{0, 1, 10}
	type key struct{ c, m int }
	type one struct{ tps, mean, p50, p99 float64 }
	runs := map[key][]one{}
	body := payload(res.Payload)
	for rep := range b.repeats {
		for _, c := range clients {
			for _, m := range msgs {
				tps, s, err := b.w1Run(ctx, outbox.Table, c, m, body, accounts, time.Duration(res.Warmup*float64(time.Second)), time.Duration(res.Seconds*float64(time.Second)))
				if err != nil {
					return nil, err
				}
				b.logf("W1 rep %d clients %d msgs %2d: %8.0f tps  mean %.3f ms  p50 %.3f ms  p99 %.3f ms", rep+1, c, m, tps, s.MeanMS, s.P50MS, s.P99MS)
				runs[key{c, m}] = append(runs[key{c, m}], one{tps, s.MeanMS, s.P50MS, s.P99MS})
			}
		}
	}
	for _, c := range clients {
		for _, m := range msgs {
			var tps, mean, p50, p99, added []float64
			for i, r := range runs[key{c, m}] {
				tps, mean, p50, p99 = append(tps, r.tps), append(mean, r.mean), append(p50, r.p50), append(p99, r.p99)
				added = append(added, r.mean-runs[key{c, 0}][i].mean)
			}
			res.Rows = append(res.Rows, W1Row{Clients: c, Msgs: m, TPS: summarize(tps), MeanMS: summarize(mean),
				P50MS: summarize(p50), P99MS: summarize(p99), AddedMS: summarize(added)})
		}
	}
	return res, nil
}

// w1Setup migrates W1's schema and fills its accounts table.
func (b *bench) w1Setup(ctx context.Context, accounts int) error {
	if err := outbox.Migrate(ctx, b.pool, w1Schema); err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS b1.accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)",
		"TRUNCATE b1.accounts",
		fmt.Sprintf("INSERT INTO b1.accounts (id) SELECT generate_series(1, %d)", accounts),
		"VACUUM ANALYZE b1.accounts",
	} {
		if _, err := b.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("W1 setup: %s: %w", q, err)
		}
	}
	return nil
}

// w1Run runs `BEGIN; UPDATE one account; [Enqueue msgs with transport tr]; COMMIT` on clients connections
// in a closed loop.
func (b *bench) w1Run(ctx context.Context, tr outbox.Transport, clients, msgs int, body []byte, accounts int, warmup, dur time.Duration) (float64, hist.Summary, error) {
	conns := make([]*pgx.Conn, clients)
	for i := range conns {
		c, err := pgx.Connect(ctx, b.dbURL)
		if err != nil {
			return 0, hist.Summary{}, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	var h hist.H
	var measuring atomic.Bool
	var done atomic.Bool
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			batch := make([]outbox.Message, msgs)
			for !done.Load() {
				for j := range batch {
					batch[j] = outbox.Message{Destination: benchDest, Key: fmt.Sprintf("acct-%d", r.IntN(accounts)), Type: "BalanceChanged", Payload: body}
				}
				id := 1 + r.IntN(accounts)
				t0 := time.Now()
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "UPDATE b1.accounts SET balance = balance + 1 WHERE id = $1", id); err != nil {
						return err
					}
					if msgs > 0 {
						return outbox.Enqueuer{Schema: w1Schema, Transport: tr}.Enqueue(ctx, tx, batch...)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				if measuring.Load() {
					h.Record(time.Since(t0))
					count.Add(1)
				}
			}
		}()
	}
	time.Sleep(warmup)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(dur)
	measuring.Store(false)
	elapsed := time.Since(start)
	done.Store(true)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, hist.Summary{}, fmt.Errorf("W1 clients %d msgs %d: %w", clients, msgs, err)
	}
	return float64(count.Load()) / elapsed.Seconds(), h.Summary(), nil
}
