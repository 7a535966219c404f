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

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// W2Point is one target rate of the live-latency workload.
type W2Point struct {
	Rate        int          `json:"target_msgs_per_s"`
	Achieved    Summary      `json:"achieved_msgs_per_s"` // per window
	P50MS       Summary      `json:"p50_ms"`
	P99MS       Summary      `json:"p99_ms"`
	P999MS      Summary      `json:"p999_ms"`
	All         hist.Summary `json:"all_windows"`
	LagMaxBytes Summary      `json:"slot_lag_max_bytes"` // per window
	LagEndBytes int64        `json:"slot_lag_end_bytes"`
	Flat        bool         `json:"flat"`
}

// W2Result is the live-latency workload.
type W2Result struct {
	Points      []W2Point `json:"points"`
	Window      float64   `json:"window_s"`
	Warmup      float64   `json:"warmup_s"`
	Windows     int       `json:"windows"`
	PerTx       int       `json:"messages_per_tx"`
	Producers   int       `json:"producers"`
	Partitions  int       `json:"kafka_partitions"`
	HighestFlat int       `json:"highest_flat_rate"`
	FlatRule    string    `json:"flat_rule"`
	Quick       bool      `json:"quick"`
	When        time.Time `json:"when"`
}

const w2Schema = "b2"

func (b *bench) w2(ctx context.Context) (*W2Result, error) {
	res := &W2Result{Window: 10, Warmup: 3, Windows: b.repeats, PerTx: 1, Producers: 16, Partitions: b.partitions,
		Quick: b.quick, When: time.Now().UTC(),
		FlatRule: "p99 (median of windows) ≤ max(2 × p99 at the lowest rate, 20 ms), achieved ≥ 95% of target, slot lag in the last window ≤ 2 × first window + 8 MiB"}
	rates := b.w2Rates
	if b.quick {
		res.Window, res.Warmup = 4, 2
	}
	if err := outbox.Migrate(ctx, b.pool, w2Schema); err != nil {
		return nil, err
	}
	topic := "pgoutbox-bench." + w2Schema
	if err := b.createTopic(ctx, topic, b.partitions); err != nil {
		return nil, err
	}
	defer b.deleteTopic(context.WithoutCancel(ctx), topic)
	const slot = "b2_live"
	defer func() { _ = dropSlot(context.WithoutCancel(ctx), b.pool, slot) }()

	var cur atomic.Pointer[hist.H]
	cur.Store(new(hist.H))
	obs := newCounter(-1, func(d time.Duration) { cur.Load().Record(d) })
	rr, err := startRelay(ctx, relaySpec{DBURL: b.dbURL, Schema: w2Schema, Slot: slot, CreateSlot: true, Sink: "kafka",
		Brokers: b.brokers, Topic: topic}, obs)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rr.stop(context.WithoutCancel(ctx)) }()

	pcfg, err := pgxpool.ParseConfig(b.dbURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(res.Producers)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	body := payload(200)
	var produced atomic.Int64

	for _, rate := range rates {
		pt := W2Point{Rate: rate}
		stopProd := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, res.Producers)
		interval := time.Duration(float64(time.Second) * float64(res.Producers*res.PerTx) / float64(rate))
		t0 := time.Now()
		for p := range res.Producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(p), 7))
				due := t0.Add(time.Duration(r.Int64N(int64(interval)))) // spread producers' phases
				msgs := make([]outbox.Message, res.PerTx)
				for {
					if d := time.Until(due); d > 0 {
						select {
						case <-stopProd:
							return
						case <-time.After(d):
						}
					} else {
						select {
						case <-stopProd:
							return
						default:
						}
					}
					due = due.Add(interval) // open loop: the schedule does not wait for slow commits
					for i := range msgs {
						msgs[i] = outbox.Message{Destination: benchDest, Key: fmt.Sprintf("key-%d", r.IntN(10_000)), Type: "BenchEvent", Payload: body}
					}
					if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, w2Schema, tx, msgs...) }); err != nil {
						errs <- err
						return
					}
					produced.Add(int64(len(msgs)))
				}
			}()
		}
		var lagMax atomic.Int64
		var lagLast atomic.Int64
		stopLag := make(chan struct{})
		lagDone := make(chan struct{})
		go func() {
			defer close(lagDone)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				var lag int64
				if err := b.pool.QueryRow(ctx, `SELECT COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag); err == nil {
					lagLast.Store(lag)
					if lag > lagMax.Load() {
						lagMax.Store(lag)
					}
				}
				select {
				case <-stopLag:
					return
				case <-t.C:
				}
			}
		}()
		if err := sleepCtx(ctx, time.Duration(res.Warmup*float64(time.Second))); err != nil {
			return nil, err
		}
		all := new(hist.H)
		var achieved, p50, p99, p999, lags []float64
		for w := range res.Windows {
			h := new(hist.H)
			cur.Store(h)
			lagMax.Store(0)
			n0, w0 := produced.Load(), time.Now()
			if err := sleepCtx(ctx, time.Duration(res.Window*float64(time.Second))); err != nil {
				return nil, err
			}
			cur.Store(new(hist.H))
			s := h.Summary()
			a := float64(produced.Load()-n0) / time.Since(w0).Seconds()
			achieved, p50, p99, p999 = append(achieved, a), append(p50, s.P50MS), append(p99, s.P99MS), append(p999, s.P999MS)
			lags = append(lags, float64(lagMax.Load()))
			all.Merge(h)
			b.logf("W2 rate %5d window %d: achieved %7.0f msgs/s  p50 %6.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.1f ms  slot lag max %5.1f MiB",
				rate, w+1, a, s.P50MS, s.P99MS, s.P999MS, s.MaxMS, float64(lagMax.Load())/(1<<20))
		}
		close(stopProd)
		wg.Wait()
		close(stopLag)
		<-lagDone
		pt.LagEndBytes = lagLast.Load()
		close(errs)
		if err := <-errs; err != nil {
			return nil, fmt.Errorf("W2 producer at %d msgs/s: %w", rate, err)
		}
		pt.Achieved, pt.P50MS, pt.P99MS, pt.P999MS, pt.LagMaxBytes = summarize(achieved), summarize(p50), summarize(p99), summarize(p999), summarize(lags)
		pt.All = all.Summary()
		res.Points = append(res.Points, pt)
		// Let the relay catch up before the next rate.
		for deadline := time.Now().Add(2 * time.Minute); obs.acked.Load() < produced.Load() && time.Now().Before(deadline); {
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return nil, err
			}
		}
		if err := sleepCtx(ctx, 1500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if len(res.Points) > 0 {
		base := res.Points[0].P99MS.Median
		for i := range res.Points {
			p := &res.Points[i]
			lv := p.LagMaxBytes.Values
			lagOK := len(lv) == 0 || lv[len(lv)-1] <= 2*lv[0]+8<<20
			p.Flat = p.P99MS.Median <= max(2*base, 20) && p.Achieved.Median >= 0.95*float64(p.Rate) && lagOK
			if p.Flat && (i == 0 || res.Points[i-1].Flat) {
				res.HighestFlat = p.Rate
			}
		}
	}
	return res, nil
}
