package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// PeerDrain is the backlog drain (like W3) read by every peer.
type PeerDrain struct {
	N           int                `json:"messages"`
	PerTx       int                `json:"messages_per_tx"`
	Payload     int                `json:"payload_bytes"`
	Keys        int                `json:"distinct_keys"`
	Partitions  int                `json:"kafka_partitions"`
	FillSeconds float64            `json:"fill_seconds"`
	Repeats     int                `json:"repeats"`
	EndRule     string             `json:"end_rule"`
	When        string             `json:"when,omitempty"`
	LoadAvg     []string           `json:"loadavg_start_end,omitempty"`
	Variants    []PeerDrainVariant `json:"variants"`
}

// PeerDrainVariant aggregates the repeats of one peer.
type PeerDrainVariant struct {
	Name        string         `json:"name"`
	Short       string         `json:"short"`
	Baseline    bool           `json:"baseline"`
	Runs        []PeerDrainRun `json:"runs"`
	Rate        Summary        `json:"msgs_per_s"`
	Seconds     Summary        `json:"seconds"`
	FirstSecs   Summary        `json:"first_record_s"`
	SteadyRate  Summary        `json:"msgs_per_s_after_first"`
	RatioToRecv Summary        `json:"ratio_to_pg_recvlogical"`
	CPUPer1M    Summary        `json:"cpu_s_per_1m"`
	PeakRSSMB   float64        `json:"peak_rss_mb_max"`
	Batches     map[string]any `json:"debezium_batches,omitempty"` // of the last run
}

// PeerDrainRun is one read of the backlog.
type PeerDrainRun struct {
	Seconds    float64 `json:"seconds"`        // process start → last record visible (end LSN for pg_recvlogical)
	FirstSecs  float64 `json:"first_record_s"` // process start → first record visible (0 for pg_recvlogical)
	Rate       float64 `json:"msgs_per_s"`
	CPUSeconds float64 `json:"cpu_s"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
}

const peersDrainSchema = "pd"

func (b *bench) peersDrain(ctx context.Context, env *peersEnv, n int) (*PeerDrain, error) {
	bl := backlog{Schema: peersDrainSchema, N: n, PerTx: 100, Payload: 200, Key: uniformKeys(10_000), Conns: 4}
	peers := peerSet(true)
	res := &PeerDrain{N: n, PerTx: bl.PerTx, Payload: bl.Payload, Keys: 10_000, Partitions: b.partitions, Repeats: b.repeats,
		EndRule: "process start → the sum of the topic's partition end offsets (high watermarks: what a consumer can read) reaches N, polled every 20 ms; pg_recvlogical: process start → exit at --endpos (decoded, nothing produced)"}
	if err := outbox.Migrate(ctx, b.pool, bl.Schema); err != nil {
		return nil, err
	}
	slot := func(p peer, rep int) string { return fmt.Sprintf("%s_%s_%d", bl.Schema, p.Short, rep) }
	var slots []string
	for rep := range b.repeats {
		for _, p := range peers {
			slots = append(slots, slot(p, rep))
		}
	}
	// Every slot exists before the backlog is written, so each peer reads all of it from the WAL.
	if err := createSlots(ctx, b.pool, slots); err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range slots {
			_ = dropSlot(context.WithoutCancel(ctx), b.pool, s)
		}
	}()
	b.logf("peers drain: filling %d messages (%d per tx)", n, bl.PerTx)
	end, took, err := fill(ctx, b.pool, bl)
	if err != nil {
		return nil, err
	}
	res.FillSeconds = took.Seconds()
	b.logf("peers drain: filled in %.1fs, end LSN %s", took.Seconds(), end)
	if _, err := b.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, err
	}
	timeout := time.Duration(float64(n)/1000*float64(time.Second)) + 3*time.Minute
	res.Variants = make([]PeerDrainVariant, len(peers))
	for i, p := range peers {
		res.Variants[i] = PeerDrainVariant{Name: p.Name, Short: p.Short, Baseline: p.Kind == kindRecv}
	}
	for rep := range b.repeats {
		for i, p := range peers {
			r, batches, err := b.peerDrainOne(ctx, env, p, bl, slot(p, rep), end, timeout)
			if err != nil {
				return nil, fmt.Errorf("peers drain %s repeat %d: %w", p.Name, rep+1, err)
			}
			b.logf("peers drain rep %d %-40.40s %7.2fs (first record %5.2fs) %9.0f msgs/s cpu %6.2fs rss %6.1f MB",
				rep+1, p.Name, r.Seconds, r.FirstSecs, r.Rate, r.CPUSeconds, r.PeakRSSMB)
			res.Variants[i].Runs = append(res.Variants[i].Runs, r)
			if batches != nil {
				res.Variants[i].Batches = batches
			}
			if err := dropSlot(ctx, b.pool, slot(p, rep)); err != nil {
				return nil, err
			}
		}
	}
	summarizePeerDrain(res)
	if _, err := b.pool.Exec(ctx, fmt.Sprintf("TRUNCATE %s", names.Table(bl.Schema, names.OutboxTable))); err != nil {
		return nil, err
	}
	return res, nil
}

func summarizePeerDrain(res *PeerDrain) {
	base := res.Variants[0].Runs
	for i := range res.Variants {
		v := &res.Variants[i]
		var rate, secs, first, steady, cpu, ratio []float64
		for j, r := range v.Runs {
			rate, secs, first = append(rate, r.Rate), append(secs, r.Seconds), append(first, r.FirstSecs)
			steady = append(steady, float64(res.N)/(r.Seconds-r.FirstSecs))
			cpu = append(cpu, r.CPUSeconds/float64(res.N)*1e6)
			v.PeakRSSMB = max(v.PeakRSSMB, r.PeakRSSMB)
			if j < len(base) {
				ratio = append(ratio, r.Rate/base[j].Rate)
			}
		}
		v.Rate, v.Seconds, v.FirstSecs, v.SteadyRate = summarize(rate), summarize(secs), summarize(first), summarize(steady)
		v.CPUPer1M, v.RatioToRecv = summarize(cpu), summarize(ratio)
	}
}

// peerDrainOne reads the backlog once with p and measures it.
func (b *bench) peerDrainOne(ctx context.Context, env *peersEnv, p peer, bl backlog, slot, end string, timeout time.Duration) (PeerDrainRun, map[string]any, error) {
	if p.Kind == kindRecv {
		rr, err := runRecvLogical(ctx, b.recvlogical, b.dbURL, slot, names.Publication(bl.Schema), end, timeout)
		if err != nil {
			return PeerDrainRun{}, nil, err
		}
		return PeerDrainRun{Seconds: rr.Seconds, Rate: float64(bl.N) / rr.Seconds, CPUSeconds: rr.CPU, PeakRSSMB: mb(rr.PeakRSSBytes)}, nil, nil
	}
	topic := fmt.Sprintf("pgoutbox-bench.peers-%s", slot)
	if err := b.createTopic(ctx, topic, b.partitions); err != nil {
		return PeerDrainRun{}, nil, err
	}
	defer b.deleteTopic(context.WithoutCancel(ctx), topic)
	c, err := b.startPeer(ctx, env, p, bl.Schema, slot, topic)
	if err != nil {
		return PeerDrainRun{}, nil, err
	}
	defer c.stop()
	first, last, err := b.waitTopicCount(ctx, c, topic, int64(bl.N), timeout)
	if err != nil {
		return PeerDrainRun{}, nil, err
	}
	cpu, hwm, err := c.usage()
	if err != nil {
		return PeerDrainRun{}, nil, err
	}
	c.stop()
	r := PeerDrainRun{Seconds: last.Seconds(), FirstSecs: first.Seconds(), Rate: float64(bl.N) / last.Seconds(), CPUSeconds: cpu, PeakRSSMB: mb(hwm)}
	var batches map[string]any
	if l := c.lines(`{"event":"stop"`); len(l) > 0 {
		_ = json.Unmarshal([]byte(l[len(l)-1]), &batches)
	}
	return r, batches, nil
}

// waitTopicCount polls the topic's end offsets until they add up to n and returns the time from the
// child's start to the first record and to the n-th.
func (b *bench) waitTopicCount(ctx context.Context, c *peerChild, topic string, n int64, timeout time.Duration) (first, last time.Duration, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var seen int64
	for {
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-c.exited:
			return 0, 0, c.failure()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: %d of %d records in %s after %s", c.name, seen, n, topic, timeout)
		}
		offs, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			continue
		}
		now := time.Since(c.start)
		var sum int64
		offs.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				sum += o.Offset
			}
		})
		seen = sum
		if first == 0 && sum > 0 {
			first = now
		}
		if sum >= n {
			return first, now, nil
		}
	}
}
