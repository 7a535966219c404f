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
	d := &drainer{b: b, workload: workload, bl: bl, consumers: consumers,
		timeout: time.Duration(float64(bl.N)/2000*float64(time.Second)) + 2*time.Minute,
		res: &DrainResult{Workload: workload, Title: title, N: bl.N, PerTx: bl.PerTx, Payload: bl.Payload, Keys: keys,
			Repeats: b.repeats, Quick: b.quick, When: time.Now().UTC()}}
	if d.usesKafka() {
		d.topic = "pgoutbox-bench." + bl.Schema
		d.res.Partitions = b.partitions
		if err := b.createTopic(ctx, d.topic, b.partitions); err != nil {
			return nil, err
		}
		defer b.deleteTopic(context.WithoutCancel(ctx), d.topic)
		if err := b.createTopic(ctx, d.topic+".positions", 1); err != nil { // exactly-once variants
			return nil, err
		}
		defer b.deleteTopic(context.WithoutCancel(ctx), d.topic+".positions")
	}
	slots := d.slots()
	if err := createSlots(ctx, b.pool, slots); err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range slots {
			_ = dropSlot(context.WithoutCancel(ctx), b.pool, s)
		}
	}()
	if err := d.fill(ctx); err != nil {
		return nil, err
	}
	if err := d.measure(ctx); err != nil {
		return nil, err
	}
	if err := d.profile(ctx); err != nil {
		return nil, err
	}
	d.res.summarize()
	if _, err := b.pool.Exec(ctx, fmt.Sprintf("TRUNCATE %s", names.Table(bl.Schema, names.OutboxTable))); err != nil {
		return nil, err
	}
	return d.res, nil
}

// drainer is one drain in progress: the backlog, its consumers and what their runs share.
type drainer struct {
	b         *bench
	workload  string
	bl        backlog
	consumers []consumer
	topic     string        // the Kafka topic; "" when no consumer produces to Kafka
	end       string        // the backlog's end LSN, once filled
	timeout   time.Duration // per run
	res       *DrainResult
}

// usesKafka says whether a consumer produces to Kafka (they then share one topic).
func (d *drainer) usesKafka() bool {
	for _, c := range d.consumers {
		if c.Relay.Sink == "kafka" {
			return true
		}
	}
	return false
}

// slot names the slot of consumer c in repeat rep (99: the profile run).
func (d *drainer) slot(c consumer, rep int) string {
	return fmt.Sprintf("%s_%s_%d", d.bl.Schema, c.Short, rep)
}

// profiled says whether c gets a profile run after the repeats (-profile; the relay only).
func (d *drainer) profiled(c consumer) bool { return d.b.profileDir != "" && !c.Recv }

// slots are every slot the drain reads: one per consumer and repeat, then one per profiled consumer.
func (d *drainer) slots() []string {
	var slots []string
	for rep := range d.b.repeats {
		for _, c := range d.consumers {
			slots = append(slots, d.slot(c, rep))
		}
	}
	for _, c := range d.consumers {
		if d.profiled(c) {
			slots = append(slots, d.slot(c, 99))
		}
	}
	return slots
}

// fill writes the backlog and checkpoints, so the reads start from the same state.
func (d *drainer) fill(ctx context.Context) error {
	b, bl := d.b, d.bl
	b.logf("%s: filling %d messages (%d per tx) into %s", d.workload, bl.N, bl.PerTx, bl.Schema)
	end, took, err := b.fillMeasured(ctx, bl, d.res)
	if err != nil {
		return err
	}
	d.end = end
	d.res.FillSeconds = took.Seconds()
	b.logf("%s: filled in %.1fs (%.0f msgs/s), end LSN %s", d.workload, took.Seconds(), float64(bl.N)/took.Seconds(), end)
	_, err = b.pool.Exec(ctx, "CHECKPOINT")
	return err
}

// measure reads the backlog with every consumer in every repeat, the consumers taking turns within a repeat.
func (d *drainer) measure(ctx context.Context) error {
	d.res.Variants = make([]DrainVariant, len(d.consumers))
	for i, c := range d.consumers {
		d.res.Variants[i] = DrainVariant{Name: c.Name, Baseline: c.Recv}
	}
	for rep := range d.b.repeats {
		for i, c := range d.consumers {
			r, err := d.runOne(ctx, c, d.slot(c, rep), "")
			if err != nil {
				return fmt.Errorf("%s %s repeat %d: %w", d.workload, c.Name, rep+1, err)
			}
			d.b.logf("%s rep %d %-34s %7.2fs %9.0f msgs/s cpu %6.2fs rss %6.1f MB heap %6.1f MB allocs/msg %.1f spill %d MB stream %d MB",
				d.workload, rep+1, c.Name, r.Seconds, r.Rate, r.CPUSeconds, r.PeakRSSMB, r.PeakHeapMB, r.AllocsPerMsg,
				r.Slot.SpillBytes>>20, r.Slot.StreamBytes>>20)
			d.res.Variants[i].Runs = append(d.res.Variants[i].Runs, r)
		}
	}
	return nil
}

// profile reads the backlog once more with each profiled consumer under the CPU profiler.
func (d *drainer) profile(ctx context.Context) error {
	for _, c := range d.consumers {
		if !d.profiled(c) {
			continue
		}
		path, _ := filepath.Abs(filepath.Join(d.b.profileDir, fmt.Sprintf("%s-%s.pprof", d.workload, c.Short)))
		if _, err := d.runOne(ctx, c, d.slot(c, 99), path); err != nil {
			return fmt.Errorf("%s %s profile run: %w", d.workload, c.Name, err)
		}
		d.res.variant(c.Name).Profile = path
		d.b.logf("%s: CPU profile of %s in %s", d.workload, c.Name, path)
	}
	return nil
}

// runOne reads the backlog from slotName with c, then drops the slot; profile, when set, is where the
// relay writes its CPU profile.
func (d *drainer) runOne(ctx context.Context, c consumer, slotName, profile string) (DrainRun, error) {
	var (
		r   DrainRun
		err error
	)
	if c.Recv {
		r, err = d.runRecv(ctx, slotName)
	} else {
		r, err = d.runRelay(ctx, c, slotName, profile)
	}
	if err != nil {
		return r, err
	}
	r.Rate = float64(d.bl.N) / r.Seconds
	r.Slot = readSlotStats(ctx, d.b.pool, slotName)
	return r, dropSlot(ctx, d.b.pool, slotName)
}

func (d *drainer) runRecv(ctx context.Context, slotName string) (DrainRun, error) {
	b, bl := d.b, d.bl
	rr, err := runRecvLogical(ctx, b.recvlogical, b.dbURL, slotName, names.Publication(bl.Schema), d.end, d.timeout, recvOptions(bl)...)
	if err != nil {
		return DrainRun{}, err
	}
	return DrainRun{Seconds: rr.Seconds, CPUSeconds: rr.CPU, PeakRSSMB: mb(rr.PeakRSSBytes)}, nil
}

func (d *drainer) runRelay(ctx context.Context, c consumer, slotName, profile string) (DrainRun, error) {
	b, bl := d.b, d.bl
	s := c.Relay
	if s.DBURL == "" {
		s.DBURL = b.dbURL
	}
	s.Schema, s.Slot, s.N, s.Timeout, s.CPUProfile = bl.Schema, slotName, int64(bl.N), d.timeout, profile
	s.LogicalMessages = bl.Transport == outbox.LogicalMessage
	if s.Sink == "kafka" {
		s.Brokers, s.Topic, s.PositionTopic = b.brokers, d.topic, d.topic+".positions"
	} else if err := b.prepareSink(ctx, &s, bl.Schema); err != nil {
		return DrainRun{}, err
	}
	rr, err := runRelayChild(ctx, s)
	if err != nil {
		return DrainRun{}, err
	}
	return DrainRun{Seconds: rr.Seconds, CPUSeconds: rr.UserCPU + rr.SysCPU, PeakRSSMB: mb(rr.PeakRSSBytes),
		PeakHeapMB: mb(int64(rr.PeakHeapBytes)), AllocsPerMsg: float64(rr.Allocs) / float64(bl.N),
		BytesPerMsg: float64(rr.AllocBytes) / float64(bl.N)}, nil
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
