package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// W6Run is one run of the poison-key workload.
type W6Run struct {
	Produced       int64        `json:"produced"`
	ProducedPerS   float64      `json:"produced_msgs_per_s"`
	DeliveredPerS  float64      `json:"delivered_msgs_per_s"` // acks per second while the load ran (after 2 s)
	Latency        hist.Summary `json:"commit_to_ack"`
	PeakRSSMB      float64      `json:"peak_rss_mb"`
	CPUSeconds     float64      `json:"cpu_s"`
	Seconds        float64      `json:"seconds"` // relay start → last ack
	SlotAtEnd      bool         `json:"slot_at_end"`
	PoisonAttempts int          `json:"poison_attempts,omitempty"`
}

// W6Result is the poison-key workload: live load into Kafka with and without one message that fails
// every attempt until it is dead-lettered.
type W6Result struct {
	Rate       int       `json:"target_msgs_per_s"`
	Seconds    float64   `json:"load_s"`
	Keys       int       `json:"keys"`
	Partitions int       `json:"kafka_partitions"`
	Baseline   W6Run     `json:"baseline"`
	Poison     W6Run     `json:"poison"`
	Ratio      float64   `json:"delivered_ratio"` // poison / baseline delivered msgs/s
	Quick      bool      `json:"quick"`
	When       time.Time `json:"when"`
}

const (
	w6Schema     = "b6"
	w6PoisonType = "BenchPoison"
	w6PoisonKey  = "poison"
)

func (b *bench) w6(ctx context.Context) (*W6Result, error) {
	res := &W6Result{Rate: 5000, Seconds: 60, Keys: 10_000, Partitions: b.partitions, Quick: b.quick, When: time.Now().UTC()}
	if b.quick {
		res.Rate, res.Seconds = 2000, 20
	}
	if err := outbox.Migrate(ctx, b.pool, w6Schema); err != nil {
		return nil, err
	}
	topic := "pgoutbox-bench." + w6Schema
	if err := b.createTopic(ctx, topic, b.partitions); err != nil {
		return nil, err
	}
	defer b.deleteTopic(context.WithoutCancel(ctx), topic)
	for i, run := range []*W6Run{&res.Baseline, &res.Poison} {
		poison := i == 1
		r, err := b.w6Run(ctx, res, topic, poison)
		if err != nil {
			return nil, err
		}
		*run = r
		b.logf("W6 %s: produced %d at %.0f msgs/s, delivered %.0f msgs/s during the load, p99 %.1f ms, max %.0f ms, peak RSS %.0f MB, slot at end %v, poison attempts %d",
			map[bool]string{false: "baseline", true: "poison"}[poison], r.Produced, r.ProducedPerS, r.DeliveredPerS,
			r.Latency.P99MS, r.Latency.MaxMS, r.PeakRSSMB, r.SlotAtEnd, r.PoisonAttempts)
	}
	if res.Baseline.DeliveredPerS > 0 {
		res.Ratio = res.Poison.DeliveredPerS / res.Baseline.DeliveredPerS
	}
	return res, nil
}

// w6Run runs the relay in a child process on a fresh slot and produces the load: one message per
// transaction from 16 producers, open loop, over res.Keys keys; at 1 s the message of type
// BenchPoison (key "poison"), at 5 s and 10 s two more messages of that key. With poison set, the
// child's sink fails the BenchPoison message at every attempt (relay defaults: 10 attempts, backoff
// 100 ms to 30 s, so it is parked ~50 s and then dead-lettered).
func (b *bench) w6Run(ctx context.Context, res *W6Result, topic string, poison bool) (W6Run, error) {
	var run W6Run
	slot := fmt.Sprintf("%s_%v", w6Schema, map[bool]string{false: "base", true: "poison"}[poison])
	if err := createSlots(ctx, b.pool, []string{slot}); err != nil {
		return run, err
	}
	defer func() { _ = dropSlot(context.WithoutCancel(ctx), b.pool, slot) }()
	perProducer := int64(float64(res.Rate)*res.Seconds) / 16
	n := 16*perProducer + 3 // the BenchPoison message and its two followers
	if poison {
		n-- // dead-lettered, not delivered
	}
	spec := relaySpec{DBURL: b.dbURL, Schema: w6Schema, Slot: slot, Sink: "kafka", Brokers: b.brokers, Topic: topic,
		N: n, Timeout: time.Duration(res.Seconds)*time.Second + 3*time.Minute, AckSeries: true}
	if poison {
		spec.PoisonType = w6PoisonType
	}
	type childOut struct {
		r   relayResult
		err error
	}
	done := make(chan childOut, 1)
	go func() { r, err := runRelayChild(ctx, spec); done <- childOut{r, err} }()
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return run, err
	}
	t0 := time.Now()
	produced, err := b.w6Produce(ctx, res, perProducer)
	if err != nil {
		return run, err
	}
	loadEnd := time.Now()
	var end string
	if err := b.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return run, err
	}
	out := <-done
	if out.err != nil {
		return run, out.err
	}
	r := out.r
	run = W6Run{Produced: produced, ProducedPerS: float64(produced) / loadEnd.Sub(t0).Seconds(), PeakRSSMB: mb(r.PeakRSSBytes),
		CPUSeconds: r.UserCPU + r.SysCPU, Seconds: r.Seconds, PoisonAttempts: r.PoisonAttempts}
	if r.Latency != nil {
		run.Latency = *r.Latency
	}
	run.DeliveredPerS = acksBetween(r, t0.Add(2*time.Second), loadEnd)
	err = b.pool.QueryRow(ctx, "SELECT COALESCE(confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
		slot, end).Scan(&run.SlotAtEnd)
	return run, err
}

// acksBetween returns the child's acks per second between from and to (whole seconds).
func acksBetween(r relayResult, from, to time.Time) float64 {
	var n int64
	secs := 0
	for i, c := range r.AcksPerSecond {
		at := time.UnixMilli(r.StartUnixMilli + int64(i)*1000)
		if !at.Before(from) && at.Add(time.Second).Before(to) {
			n += c
			secs++
		}
	}
	if secs == 0 {
		return 0
	}
	return float64(n) / float64(secs)
}

// w6Produce commits perProducer messages from each of 16 producers at res.Rate in total, plus the
// poison-key messages, and returns how many it committed.
func (b *bench) w6Produce(ctx context.Context, res *W6Result, perProducer int64) (int64, error) {
	const producers = 16
	interval := time.Duration(float64(time.Second) * producers / float64(res.Rate))
	body := payload(200)
	var produced atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, producers+1)
	commit := func(m outbox.Message) error {
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, w6Schema, tx, m) })
		if err == nil {
			produced.Add(1)
		}
		return err
	}
	t0 := time.Now()
	for p := range producers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(p), 6))
			due := t0.Add(time.Duration(r.Int64N(int64(interval))))
			for range perProducer {
				if sleepCtx(ctx, time.Until(due)) != nil {
					return
				}
				due = due.Add(interval) // open loop
				if err := commit(outbox.Message{Destination: benchDest, Key: fmt.Sprint("key-", r.IntN(res.Keys)), Type: "BenchEvent", Payload: body}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i, at := range []time.Duration{time.Second, 5 * time.Second, 10 * time.Second} {
			tp := "BenchEvent"
			if i == 0 {
				tp = w6PoisonType
			}
			if sleepCtx(ctx, time.Until(t0.Add(at))) != nil {
				return
			}
			if err := commit(outbox.Message{Destination: benchDest, Key: w6PoisonKey, Type: tp, Payload: body}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	if err := errors.Join(<-errs, ctx.Err()); err != nil {
		return produced.Load(), fmt.Errorf("W6 producer: %w", err)
	}
	return produced.Load(), nil
}

// poisonSink fails every record of type typ with a retryable error (and holds back later records
// of its key in the same call, as a conforming sink does); the rest goes to next.
type poisonSink struct {
	next     outbox.Sink
	typ      string
	attempts atomic.Int64
}

var errPoison = errors.New("bench: the poison message fails every attempt")

func (p *poisonSink) Send(ctx context.Context, batch []outbox.Record) error {
	held := map[string]bool{}
	pass := make([]outbox.Record, 0, len(batch))
	idx := make([]int, 0, len(batch))
	errs := make([]error, len(batch))
	for i := range batch {
		switch r := &batch[i]; {
		case r.Type == p.typ:
			p.attempts.Add(1)
			errs[i], held[r.Key] = errPoison, true
		case held[r.Key]:
			errs[i] = outbox.NotAttempted(errPoison)
		default:
			pass, idx = append(pass, *r), append(idx, i)
		}
	}
	if len(pass) == len(batch) {
		return p.next.Send(ctx, batch)
	}
	err := p.next.Send(ctx, pass)
	var be *outbox.BatchError
	switch {
	case err == nil:
	case errors.As(err, &be) && len(be.Errs) == len(pass):
		for j, i := range idx {
			errs[i] = be.Errs[j]
		}
	default:
		return err // systemic, or the whole call failed
	}
	return &outbox.BatchError{Errs: errs}
}
