package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// PeerLive is the live load (like W2) relayed by each peer in turn.
type PeerLive struct {
	Rates      []int             `json:"target_msgs_per_s"`
	Warmup     float64           `json:"warmup_s"`
	Seconds    float64           `json:"measured_s"`
	Producers  int               `json:"producers"`
	Partitions int               `json:"kafka_partitions"`
	Keys       int               `json:"distinct_keys"`
	Repeats    int               `json:"repeats"`
	When       string            `json:"when,omitempty"`
	LoadAvg    []string          `json:"loadavg_start_end,omitempty"`
	Method     string            `json:"method"`
	Variants   []PeerLiveVariant `json:"variants"`
}

// PeerLiveVariant is one peer under every rate, over the repeats.
type PeerLiveVariant struct {
	Name      string          `json:"name"`
	Short     string          `json:"short"`
	ReadyS    Summary         `json:"ready_s"` // process start → first probe visible to the consumer
	Points    []PeerLivePoint `json:"points"`
	PeakRSSMB float64         `json:"peak_rss_mb_max"`
	Batches   map[string]any  `json:"debezium_batches,omitempty"` // of the last run
}

// PeerLivePoint is one rate: a run per repeat and their summaries.
type PeerLivePoint struct {
	Rate       int           `json:"target_msgs_per_s"`
	Runs       []PeerLiveRun `json:"runs"`
	Achieved   Summary       `json:"achieved_msgs_per_s"`
	P50MS      Summary       `json:"p50_ms"`
	P99MS      Summary       `json:"p99_ms"`
	P999MS     Summary       `json:"p999_ms"`
	MaxMS      Summary       `json:"max_ms"`
	CPUPercent Summary       `json:"cpu_percent"`
	Missing    int           `json:"missing"` // over all runs
}

// PeerLiveRun is one rate in one repeat.
type PeerLiveRun struct {
	Achieved   float64      `json:"achieved_msgs_per_s"`
	Latency    hist.Summary `json:"latency"`
	Missing    int          `json:"missing"` // committed in the window, not seen by the consumer within 60 s after the load
	CPUPercent float64      `json:"cpu_percent"`
	LoadAvg    string       `json:"loadavg_end"`
}

// peerLiveRun is one peer through every rate once.
type peerLiveRun struct {
	ready   time.Duration
	rssMB   float64
	batches map[string]any
	points  []PeerLiveRun
}

const (
	peersLiveSchema = "pl"
	seqDigits       = 16 // the payload starts with the message's sequence number in decimal
)

// seqTracker holds, per message sequence number, when its COMMIT returned and when the consumer read it.
type seqTracker struct {
	next     atomic.Int64
	commitAt []atomic.Int64 // unix ns
	recvAt   []atomic.Int64
	received atomic.Int64
}

func newSeqTracker(n int) *seqTracker {
	return &seqTracker{commitAt: make([]atomic.Int64, n), recvAt: make([]atomic.Int64, n)}
}

func (t *seqTracker) take() (int64, error) {
	s := t.next.Add(1) - 1
	if s >= int64(len(t.commitAt)) {
		return 0, fmt.Errorf("more than %d messages: raise the tracker size", len(t.commitAt))
	}
	return s, nil
}

func (t *seqTracker) recv(v []byte, at time.Time) {
	if len(v) < seqDigits {
		return
	}
	s, err := strconv.ParseInt(string(v[:seqDigits]), 10, 64)
	if err != nil || s < 0 || s >= int64(len(t.recvAt)) {
		return
	}
	if t.recvAt[s].CompareAndSwap(0, at.UnixNano()) {
		t.received.Add(1)
	}
}

// window returns the latency of every message whose COMMIT returned within [from, to), and how many of
// them the consumer has not seen.
func (t *seqTracker) window(from, to time.Time, hi int64) (*hist.H, int) {
	h := new(hist.H)
	missing := 0
	f, e := from.UnixNano(), to.UnixNano()
	for s := range min(hi, int64(len(t.commitAt))) {
		c := t.commitAt[s].Load()
		if c < f || c >= e {
			continue
		}
		r := t.recvAt[s].Load()
		if r == 0 {
			missing++
			continue
		}
		h.Record(time.Duration(max(r-c, 0)))
	}
	return h, missing
}

func seqPayload(seq int64, size int) []byte {
	p := make([]byte, max(size, seqDigits))
	copy(p, fmt.Sprintf("%0*d", seqDigits, seq))
	for i := seqDigits; i < len(p); i++ {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

func (b *bench) peersLive(ctx context.Context, env *peersEnv, rates []int) (*PeerLive, error) {
	res := &PeerLive{Rates: rates, Warmup: 5, Seconds: 20, Producers: 16, Partitions: b.partitions, Keys: 10_000,
		Method: "16 open-loop producers (fixed schedule, a late commit does not delay the next), one message of 200 B per transaction whose payload starts with its sequence number; " +
			"latency = the producer's wall clock when COMMIT returned → an independent sarama consumer (all partitions, read_uncommitted) received the record, same machine clock; " +
			"messages committed during the measured period only; CPU % = the relay process's user+system CPU over the measured period (100 % = one core)"}
	if b.quick {
		res.Warmup, res.Seconds = 3, 8
	}
	res.Repeats = b.repeats
	if err := outbox.Migrate(ctx, b.pool, peersLiveSchema); err != nil {
		return nil, err
	}
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
	peers := peerSet(false)
	for _, p := range peers {
		v := PeerLiveVariant{Name: p.Name, Short: p.Short}
		for _, r := range res.Rates {
			v.Points = append(v.Points, PeerLivePoint{Rate: r})
		}
		res.Variants = append(res.Variants, v)
	}
	ready := make([][]float64, len(peers))
	for rep := range b.repeats {
		for i, p := range peers {
			run, err := b.peerLiveOne(ctx, env, pool, p, res, fmt.Sprintf("%s_%s_%d", peersLiveSchema, p.Short, rep))
			if err != nil {
				return nil, fmt.Errorf("peers live %s repeat %d: %w", p.Name, rep+1, err)
			}
			v := &res.Variants[i]
			ready[i] = append(ready[i], run.ready.Seconds())
			v.PeakRSSMB = max(v.PeakRSSMB, run.rssMB)
			if run.batches != nil {
				v.Batches = run.batches
			}
			for j, pr := range run.points {
				v.Points[j].Runs = append(v.Points[j].Runs, pr)
			}
			if _, err := b.pool.Exec(ctx, fmt.Sprintf("TRUNCATE %s", names.Table(peersLiveSchema, names.OutboxTable))); err != nil {
				return nil, err
			}
		}
	}
	for i := range res.Variants {
		v := &res.Variants[i]
		v.ReadyS = summarize(ready[i])
		for j := range v.Points {
			summarizeLivePoint(&v.Points[j])
		}
	}
	return res, nil
}

func summarizeLivePoint(pt *PeerLivePoint) {
	var ach, p50, p99, p999, mx, cpu []float64
	pt.Missing = 0
	for _, r := range pt.Runs {
		ach, cpu = append(ach, r.Achieved), append(cpu, r.CPUPercent)
		p50, p99, p999, mx = append(p50, r.Latency.P50MS), append(p99, r.Latency.P99MS), append(p999, r.Latency.P999MS), append(mx, r.Latency.MaxMS)
		pt.Missing += r.Missing
	}
	pt.Achieved, pt.P50MS, pt.P99MS, pt.P999MS, pt.MaxMS, pt.CPUPercent = summarize(ach), summarize(p50), summarize(p99), summarize(p999), summarize(mx), summarize(cpu)
}

func (b *bench) peerLiveOne(ctx context.Context, env *peersEnv, pool *pgxpool.Pool, p peer, res *PeerLive, slot string) (peerLiveRun, error) {
	var run peerLiveRun
	topic := "pgoutbox-bench.peers-" + slot
	if err := createSlots(ctx, b.pool, []string{slot}); err != nil {
		return run, err
	}
	defer func() { _ = dropSlot(context.WithoutCancel(ctx), b.pool, slot) }()
	if err := b.createTopic(ctx, topic, b.partitions); err != nil {
		return run, err
	}
	defer b.deleteTopic(context.WithoutCancel(ctx), topic)
	total := 20_000
	for _, r := range res.Rates {
		total += int(float64(r)*(res.Warmup+res.Seconds)*1.2) + 10_000
	}
	tr := newSeqTracker(total)
	stopConsumer, err := consumeTopic(b.brokers, topic, b.partitions, tr.recv)
	if err != nil {
		return run, err
	}
	defer stopConsumer()
	c, err := b.startPeer(ctx, env, p, peersLiveSchema, slot, topic)
	if err != nil {
		return run, err
	}
	defer c.stop()
	if run.ready, err = b.probeUntilVisible(ctx, c, pool, tr); err != nil {
		return run, err
	}
	b.logf("peers live %s: ready after %.1fs", p.Name, run.ready.Seconds())
	for _, rate := range res.Rates {
		pr, err := b.livePoint(ctx, c, pool, tr, rate, res)
		if err != nil {
			return run, err
		}
		run.points = append(run.points, pr)
		l := pr.Latency
		b.logf("peers live %-32.32s %5d msgs/s: achieved %6.0f p50 %7.1f ms p99 %7.1f ms p99.9 %7.1f ms max %7.1f ms missing %d cpu %3.0f%% load %s",
			p.Name, rate, pr.Achieved, l.P50MS, l.P99MS, l.P999MS, l.MaxMS, pr.Missing, pr.CPUPercent, pr.LoadAvg)
	}
	_, hwm, err := c.usage()
	if err != nil {
		return run, err
	}
	run.rssMB = mb(hwm)
	c.stop()
	if l := c.lines(`{"event":"stop"`); len(l) > 0 {
		_ = json.Unmarshal([]byte(l[len(l)-1]), &run.batches)
	}
	return run, nil
}

// enqueueSeq commits one message carrying the next sequence number and records when COMMIT returned.
func enqueueSeq(ctx context.Context, pool *pgxpool.Pool, tr *seqTracker, key string) error {
	seq, err := tr.take()
	if err != nil {
		return err
	}
	msg := outbox.Message{Destination: benchDest, Key: key, Type: "BenchEvent", Payload: seqPayload(seq, 200)}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, peersLiveSchema, tx, msg) }); err != nil {
		return err
	}
	tr.commitAt[seq].Store(time.Now().UnixNano())
	return nil
}

// probeUntilVisible commits a message every 200 ms until the consumer sees one.
func (b *bench) probeUntilVisible(ctx context.Context, c *peerChild, pool *pgxpool.Pool, tr *seqTracker) (time.Duration, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for tr.received.Load() == 0 {
		select {
		case <-c.exited:
			return 0, c.failure()
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: no probe message visible after 3 minutes", c.name)
		}
		if err := enqueueSeq(ctx, pool, tr, "probe"); err != nil {
			return 0, err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return 0, err
		}
	}
	ready := time.Since(c.start)
	// Let the probes and the peer's start-up settle before the load.
	return ready, sleepCtx(ctx, 2*time.Second)
}

// livePoint runs the open-loop load at rate, then waits for the consumer to see it all.
func (b *bench) livePoint(ctx context.Context, c *peerChild, pool *pgxpool.Pool, tr *seqTracker, rate int, res *PeerLive) (PeerLiveRun, error) {
	var pt PeerLiveRun
	interval := time.Duration(float64(time.Second) * float64(res.Producers) / float64(rate))
	t0 := time.Now()
	from := t0.Add(time.Duration(res.Warmup * float64(time.Second)))
	to := from.Add(time.Duration(res.Seconds * float64(time.Second)))
	var wg sync.WaitGroup
	errs := make(chan error, res.Producers)
	var inWindow atomic.Int64
	for i := range res.Producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 11))
			due := t0.Add(time.Duration(r.Int64N(int64(interval))))
			for due.Before(to) {
				if err := sleepCtx(ctx, time.Until(due)); err != nil {
					errs <- err
					return
				}
				due = due.Add(interval) // open loop
				if err := enqueueSeq(ctx, pool, tr, fmt.Sprintf("key-%d", r.IntN(res.Keys))); err != nil {
					errs <- err
					return
				}
				if now := time.Now(); !now.Before(from) && now.Before(to) {
					inWindow.Add(1)
				}
			}
		}()
	}
	if err := sleepCtx(ctx, time.Until(from)); err != nil {
		return pt, err
	}
	cpu0, _, err := c.usage()
	if err != nil {
		return pt, err
	}
	if err := sleepCtx(ctx, time.Until(to)); err != nil {
		return pt, err
	}
	cpu1, _, err := c.usage()
	if err != nil {
		return pt, err
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return pt, fmt.Errorf("producer at %d msgs/s: %w", rate, err)
	}
	pt.CPUPercent = (cpu1 - cpu0) / res.Seconds * 100
	pt.Achieved = float64(inWindow.Load()) / res.Seconds
	hi := tr.next.Load()
	for deadline := time.Now().Add(60 * time.Second); tr.received.Load() < hi && time.Now().Before(deadline); {
		select {
		case <-c.exited:
			return pt, c.failure()
		default:
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return pt, err
		}
	}
	h, missing := tr.window(from, to, hi)
	pt.Latency, pt.Missing, pt.LoadAvg = h.Summary(), missing, loadAvg()
	return pt, sleepCtx(ctx, 2*time.Second)
}

// consumeTopic reads every partition of topic from the start with sarama and hands each record's value
// and receipt time to onRecord. The returned function stops it.
func consumeTopic(brokers []string, topic string, partitions int, onRecord func([]byte, time.Time)) (func(), error) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_0_0_0
	cfg.ClientID = "pgoutbox-bench-peers"
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("sarama client: %w", err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("sarama consumer: %w", err)
	}
	var pcs []sarama.PartitionConsumer
	var wg sync.WaitGroup
	stop := func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		wg.Wait()
		_ = consumer.Close()
		_ = client.Close()
	}
	for p := range partitions {
		pc, err := consumer.ConsumePartition(topic, int32(p), sarama.OffsetOldest)
		for try := 0; err != nil && try < 50; try++ { // a topic just created: metadata may lag behind
			time.Sleep(200 * time.Millisecond)
			_ = client.RefreshMetadata(topic)
			pc, err = consumer.ConsumePartition(topic, int32(p), sarama.OffsetOldest)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("consume %s/%d: %w", topic, p, err)
		}
		pcs = append(pcs, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range pc.Messages() {
				onRecord(m.Value, time.Now())
			}
		}()
	}
	return stop, nil
}
