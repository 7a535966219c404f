package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// consumer is one way of reading a backlog: pg_recvlogical, or the relay with some sink.
type consumer struct {
	Name  string
	Short string // slot name part: [a-z0-9_]
	Recv  bool
	Relay relaySpec // template: the run fills DBURL (unless set), Schema, Slot, N, Timeout
}

// DrainRun is one read of the backlog.
type DrainRun struct {
	Seconds      float64   `json:"seconds"`
	Rate         float64   `json:"msgs_per_s"`
	CPUSeconds   float64   `json:"cpu_s"`
	PeakRSSMB    float64   `json:"peak_rss_mb"`
	PeakHeapMB   float64   `json:"peak_heap_mb,omitempty"`
	AllocsPerMsg float64   `json:"allocs_per_msg,omitempty"`
	BytesPerMsg  float64   `json:"alloc_bytes_per_msg,omitempty"`
	Slot         slotStats `json:"slot_stats"`
}

// DrainVariant aggregates the repeats of one consumer.
type DrainVariant struct {
	Name         string     `json:"name"`
	Baseline     bool       `json:"baseline"`
	Runs         []DrainRun `json:"runs"`
	Rate         Summary    `json:"msgs_per_s"`
	Seconds      Summary    `json:"seconds"`
	RatioToRecv  Summary    `json:"ratio_to_pg_recvlogical"` // per repeat, against the baseline run of the same repeat
	CPUPer1M     Summary    `json:"cpu_s_per_1m"`
	PeakRSSMB    float64    `json:"peak_rss_mb_max"`
	PeakHeapMB   float64    `json:"peak_heap_mb_max"`
	AllocsPerMsg float64    `json:"allocs_per_msg_median"`
	BytesPerMsg  float64    `json:"alloc_bytes_per_msg_median"`
	Profile      string     `json:"cpu_profile,omitempty"`
}

// DrainResult is one backlog read by several consumers, interleaved per repeat.
type DrainResult struct {
	Workload   string `json:"workload"`
	Title      string `json:"title"`
	N          int    `json:"messages"`
	PerTx      int    `json:"messages_per_tx"`
	Payload    int    `json:"payload_bytes"`
	Keys       string `json:"keys"`
	Partitions int    `json:"kafka_partitions,omitempty"`
	// Transport, WAL and table bytes per message of the fill (transport.go).
	Transport          string         `json:"transport,omitempty"`
	WALBytesPerMsg     float64        `json:"wal_bytes_per_msg,omitempty"`
	FillWALBytesPerMsg float64        `json:"fill_wal_bytes_per_msg,omitempty"`
	TableBytesPerMsg   float64        `json:"table_bytes_per_msg"`
	FillSeconds        float64        `json:"fill_seconds"`
	Repeats            int            `json:"repeats"`
	Variants           []DrainVariant `json:"variants"`
	Quick              bool           `json:"quick"`
	When               time.Time      `json:"when"`
}

func (d *DrainResult) variant(name string) *DrainVariant {
	for i := range d.Variants {
		if d.Variants[i].Name == name {
			return &d.Variants[i]
		}
	}
	return nil
}

// drain fills bl after creating one slot per consumer and repeat, then reads it with every consumer,
// interleaving consumers within each repeat so machine noise spreads evenly.
func (b *bench) drain(ctx context.Context, workload, title string, bl backlog, keys string, consumers []consumer) (*DrainResult, error) {
	if err := outbox.Migrate(ctx, b.pool, bl.Schema); err != nil {
		return nil, err
	}
	res := &DrainResult{Workload: workload, Title: title, N: bl.N, PerTx: bl.PerTx, Payload: bl.Payload, Keys: keys,
		Repeats: b.repeats, Quick: b.quick, When: time.Now().UTC()}
	topic := ""
	for _, c := range consumers {
		if c.Relay.Sink == "kafka" {
			topic = "pgoutbox-bench." + bl.Schema
			res.Partitions = b.partitions
			if err := b.createTopic(ctx, topic, b.partitions); err != nil {
				return nil, err
			}
			defer b.deleteTopic(context.WithoutCancel(ctx), topic)
			break
		}
	}
	slot := func(c consumer, rep int) string { return fmt.Sprintf("%s_%s_%d", bl.Schema, c.Short, rep) }
	var slots []string
	for rep := range b.repeats {
		for _, c := range consumers {
			slots = append(slots, slot(c, rep))
		}
	}
	profiled := func(c consumer) bool { return b.profileDir != "" && !c.Recv }
	for _, c := range consumers {
		if profiled(c) {
			slots = append(slots, slot(c, 99))
		}
	}
	if err := createSlots(ctx, b.pool, slots); err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range slots {
			_ = dropSlot(context.WithoutCancel(ctx), b.pool, s)
		}
	}()
	b.logf("%s: filling %d messages (%d per tx) into %s", workload, bl.N, bl.PerTx, bl.Schema)
	end, took, err := b.fillMeasured(ctx, bl, res)
	if err != nil {
		return nil, err
	}
	res.FillSeconds = took.Seconds()
	b.logf("%s: filled in %.1fs (%.0f msgs/s), end LSN %s", workload, took.Seconds(), float64(bl.N)/took.Seconds(), end)
	if _, err := b.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, err
	}

	timeout := time.Duration(float64(bl.N)/2000*float64(time.Second)) + 2*time.Minute
	runOne := func(c consumer, slotName, profile string) (DrainRun, error) {
		var r DrainRun
		if c.Recv {
			rr, err := runRecvLogical(ctx, b.recvlogical, b.dbURL, slotName, names.Publication(bl.Schema), end, timeout, recvOptions(bl)...)
			if err != nil {
				return r, err
			}
			r = DrainRun{Seconds: rr.Seconds, CPUSeconds: rr.CPU, PeakRSSMB: mb(rr.PeakRSSBytes)}
		} else {
			s := c.Relay
			if s.DBURL == "" {
				s.DBURL = b.dbURL
			}
			s.Schema, s.Slot, s.N, s.Timeout, s.CPUProfile = bl.Schema, slotName, int64(bl.N), timeout, profile
			s.LogicalMessages = bl.Transport == outbox.LogicalMessage
			if s.Sink == "kafka" {
				s.Brokers, s.Topic = b.brokers, topic
			} else if err := b.prepareSink(ctx, &s, bl.Schema); err != nil {
				return r, err
			}
			rr, err := runRelayChild(ctx, s)
			if err != nil {
				return r, err
			}
			r = DrainRun{Seconds: rr.Seconds, CPUSeconds: rr.UserCPU + rr.SysCPU, PeakRSSMB: mb(rr.PeakRSSBytes),
				PeakHeapMB: mb(int64(rr.PeakHeapBytes)), AllocsPerMsg: float64(rr.Allocs) / float64(bl.N),
				BytesPerMsg: float64(rr.AllocBytes) / float64(bl.N)}
		}
		r.Rate = float64(bl.N) / r.Seconds
		r.Slot = readSlotStats(ctx, b.pool, slotName)
		return r, dropSlot(ctx, b.pool, slotName)
	}

	res.Variants = make([]DrainVariant, len(consumers))
	for i, c := range consumers {
		res.Variants[i] = DrainVariant{Name: c.Name, Baseline: c.Recv}
	}
	for rep := range b.repeats {
		for i, c := range consumers {
			r, err := runOne(c, slot(c, rep), "")
			if err != nil {
				return nil, fmt.Errorf("%s %s repeat %d: %w", workload, c.Name, rep+1, err)
			}
			b.logf("%s rep %d %-34s %7.2fs %9.0f msgs/s cpu %6.2fs rss %6.1f MB heap %6.1f MB allocs/msg %.1f spill %d MB stream %d MB",
				workload, rep+1, c.Name, r.Seconds, r.Rate, r.CPUSeconds, r.PeakRSSMB, r.PeakHeapMB, r.AllocsPerMsg,
				r.Slot.SpillBytes>>20, r.Slot.StreamBytes>>20)
			res.Variants[i].Runs = append(res.Variants[i].Runs, r)
		}
	}
	for _, c := range consumers {
		if !profiled(c) {
			continue
		}
		path, _ := filepath.Abs(filepath.Join(b.profileDir, fmt.Sprintf("%s-%s.pprof", workload, c.Short)))
		if _, err := runOne(c, slot(c, 99), path); err != nil {
			return nil, fmt.Errorf("%s %s profile run: %w", workload, c.Name, err)
		}
		res.variant(c.Name).Profile = path
		b.logf("%s: CPU profile of %s in %s", workload, c.Name, path)
	}
	res.summarize()
	if _, err := b.pool.Exec(ctx, fmt.Sprintf("TRUNCATE %s", names.Table(bl.Schema, names.OutboxTable))); err != nil {
		return nil, err
	}
	return res, nil
}

// summarize computes each variant's figures from its runs; the ratio to the baseline is per repeat.
func (d *DrainResult) summarize() {
	var base []DrainRun
	for _, v := range d.Variants {
		if v.Baseline {
			base = v.Runs
		}
	}
	for i := range d.Variants {
		v := &d.Variants[i]
		var rate, secs, cpu, ratio, allocs, bytes []float64
		for j, r := range v.Runs {
			rate, secs = append(rate, r.Rate), append(secs, r.Seconds)
			cpu = append(cpu, r.CPUSeconds/float64(d.N)*1e6)
			allocs, bytes = append(allocs, r.AllocsPerMsg), append(bytes, r.BytesPerMsg)
			v.PeakRSSMB, v.PeakHeapMB = max(v.PeakRSSMB, r.PeakRSSMB), max(v.PeakHeapMB, r.PeakHeapMB)
			if j < len(base) {
				ratio = append(ratio, r.Rate/base[j].Rate)
			}
		}
		v.Rate, v.Seconds, v.CPUPer1M, v.RatioToRecv = summarize(rate), summarize(secs), summarize(cpu), summarize(ratio)
		v.AllocsPerMsg, v.BytesPerMsg = summarize(allocs).Median, summarize(bytes).Median
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func (b *bench) createTopic(ctx context.Context, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	_, _ = adm.DeleteTopics(ctx, topic)
	for i := 0; ; i++ {
		resp, err := adm.CreateTopics(ctx, int32(partitions), 1, nil, topic)
		if err == nil {
			err = resp.Error()
		}
		if err == nil {
			break
		}
		if i > 50 {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
		time.Sleep(200 * time.Millisecond) // a just-deleted topic of the same name is still going away
	}
	for range 150 {
		td, err := adm.ListTopics(ctx, topic)
		if err == nil && td[topic].Err == nil && len(td[topic].Partitions) == partitions {
			ok := true
			for _, p := range td[topic].Partitions {
				ok = ok && p.Leader >= 0 && p.Err == nil
			}
			if ok {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("topic %s: leaders not elected", topic)
}

func (b *bench) deleteTopic(ctx context.Context, topic string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...))
	if err != nil {
		return
	}
	defer cl.Close()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, topic)
}
