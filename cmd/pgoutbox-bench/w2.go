package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/internal/names"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// W2Point is one target rate of the live-latency workload. The P*MS summaries are commit → visible
// to an independent Kafka consumer (per window); Stages break the latency of all windows down.
type W2Point struct {
	Rate        int                     `json:"target_msgs_per_s"`
	Achieved    Summary                 `json:"achieved_msgs_per_s"` // per window
	P50MS       Summary                 `json:"p50_ms"`
	P99MS       Summary                 `json:"p99_ms"`
	P999MS      Summary                 `json:"p999_ms"`
	All         hist.Summary            `json:"all_windows"`      // commit → consumer, all windows
	Ack         hist.Summary            `json:"relay_ack"`        // PostgreSQL commit → Kafka ack (the relay's view)
	Stages      map[string]hist.Summary `json:"stages,omitempty"` // see w2Stages
	CPU         W2CPU                   `json:"cpu"`
	LagMaxBytes Summary                 `json:"slot_lag_max_bytes"`
	LagEndBytes int64                   `json:"slot_lag_end_bytes"`
	Flat        bool                    `json:"flat"`
}

// W2Result is the live-latency workload.
type W2Result struct {
	Points        []W2Point `json:"points"`
	Window        float64   `json:"window_s"`
	Warmup        float64   `json:"warmup_s"`
	Windows       int       `json:"windows"`
	PerTx         int       `json:"messages_per_tx"`
	Producers     int       `json:"producers"`
	Partitions    int       `json:"kafka_partitions"`
	Linger        float64   `json:"linger_ms"`
	WalsenderNice int       `json:"walsender_nice,omitempty"` // -w2-walsender-nice
	ExactlyOnce   bool      `json:"exactly_once,omitempty"`   // -w2-exactly-once: the relay in exactly-once mode, a read_committed consumer
	HighestFlat   int       `json:"highest_flat_rate"`
	FlatRule      string    `json:"flat_rule"`
	Quick         bool      `json:"quick"`
	When          time.Time `json:"when"`
}

// w2Stages are the stages of a message's way, in order; their names key W2Point.Stages.
// The two walsender stages come from the relay's SourceObserver (once per transaction, here one per
// message); "PG commit → sink call" spans them.
var w2Stages = []string{"send → PG commit", "PG commit → walsender sent", "walsender sent → relay decoded",
	"PG commit → sink call", "sink call → Kafka ack", "send → consumer"}

// Indexes of w2Hists.stages.
const (
	stSendCommit = iota
	stWalsender
	stReceive
	stSinkCall
	stKafkaAck
	stConsumer
)

// w2Hists are one window's histograms. Times: send = the producer's clock just before INSERT (carried
// in the payload), PG commit = the commit timestamp in the WAL, sink call = when the relay called
// the Kafka sink's Send, Kafka ack = when Send returned, consumer = when an independent consumer got it.
type w2Hists struct {
	visible, ack hist.H
	stages       [6]hist.H
}

const w2Schema = "b2"

// w2Probe collects the current window's histograms from the relay's observer, its sink and the consumer.
type w2Probe struct {
	cur atomic.Pointer[w2Hists]
}

func (p *w2Probe) swap() *w2Hists { return p.cur.Swap(new(w2Hists)) }

// stampedSink records when each record reaches the sink and when the sink acked it.
type stampedSink struct {
	next  outbox.Sink
	probe *w2Probe
}

func (s *stampedSink) Send(ctx context.Context, batch []outbox.Record) error {
	start := time.Now()
	h := s.probe.cur.Load()
	for i := range batch {
		r := &batch[i]
		if sent, ok := sentAt(r.Payload); ok {
			h.stages[stSendCommit].Record(r.CommitTime.Sub(sent))
		}
		h.stages[stSinkCall].Record(start.Sub(r.CommitTime))
	}
	err := s.next.Send(ctx, batch)
	h.stages[stKafkaAck].Record(time.Since(start)) // once per call: every record of it waited this long
	return err
}

// stamp wraps s in a stampedSink that, when s is an outbox.PositionSink (the exactly-once Kafka sink),
// is one too: the relay must find it to resume it.
func stamp(s outbox.Sink, probe *w2Probe) outbox.Sink {
	st := &stampedSink{next: s, probe: probe}
	if ps, ok := s.(outbox.PositionSink); ok {
		return stampedPositionSink{stampedSink: st, ps: ps}
	}
	return st
}

type stampedPositionSink struct {
	*stampedSink
	ps outbox.PositionSink
}

func (s stampedPositionSink) Resume(ctx context.Context, info outbox.ResumeInfo) (func(*outbox.Record) bool, error) {
	return s.ps.Resume(ctx, info)
}

func (s stampedPositionSink) Confirmable(w pglogrepl.LSN) pglogrepl.LSN { return s.ps.Confirmable(w) }

func sentAt(payload []byte) (time.Time, bool) {
	if len(payload) < 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(payload))), true
}

func (b *bench) w2(ctx context.Context) (*W2Result, error) {
	res := &W2Result{Window: 10, Warmup: 3, Windows: b.repeats, PerTx: 1, Producers: b.w2Clients, Partitions: b.partitions,
		Quick: b.quick, When: time.Now().UTC(),
		FlatRule: "p99 (median of windows) ≤ max(2 × p99 at the lowest rate, 20 ms), achieved ≥ 95% of target, slot lag in the last window ≤ 2 × first window + 8 MiB"}
	if b.quick {
		res.Window, res.Warmup = 4, 2
	}
	schema, slot := w2Schema, "b2_live"
	if b.w2EOS { // W2E after W2: an outbox and a slot of its own (W2's rows would be its initial snapshot)
		schema, slot = w2Schema+"e", "b2e_live"
	}
	if err := outbox.Migrate(ctx, b.pool, schema); err != nil {
		return nil, err
	}
	topic := "pgoutbox-bench." + schema
	if err := b.createTopic(ctx, topic, b.partitions); err != nil {
		return nil, err
	}
	defer b.deleteTopic(context.WithoutCancel(ctx), topic)
	defer func() { _ = dropSlot(context.WithoutCancel(ctx), b.pool, slot) }()

	probe := &w2Probe{}
	probe.swap()
	obs := newCounter(-1, func(d time.Duration) { probe.cur.Load().ack.Record(d) })
	obs.onDecoded = func(walsender, receive time.Duration) {
		h := probe.cur.Load()
		h.stages[stWalsender].Record(walsender)
		h.stages[stReceive].Record(receive)
	}
	run := &w2Run{b: b, res: res, probe: probe, obs: obs, schema: schema, slot: slot, loadOnly: map[int]float64{}}
	for _, rate := range b.w2Rates { // before the slot exists: no walsender, no relay, no Kafka traffic
		busy, err := run.loadOnlyBusy(ctx, rate)
		if err != nil {
			return nil, err
		}
		run.loadOnly[rate] = busy
	}
	spec := relaySpec{DBURL: b.dbURL, Schema: schema, Slot: slot, CreateSlot: true, Sink: "kafka", Brokers: b.brokers, Topic: topic,
		wrap: func(s outbox.Sink) outbox.Sink { return stamp(s, probe) }}
	if b.linger >= 0 {
		spec.Linger, spec.LingerSet = b.linger, true
	}
	if b.w2EOS {
		spec.ExactlyOnce, spec.PositionTopic, res.ExactlyOnce = true, topic+".positions", true
		if err := b.createTopic(ctx, spec.PositionTopic, 1); err != nil {
			return nil, err
		}
		defer b.deleteTopic(context.WithoutCancel(ctx), spec.PositionTopic)
	}
	rr, err := startRelay(ctx, spec, obs)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rr.stop(context.WithoutCancel(ctx)) }()
	res.Linger = float64(rr.linger) / float64(time.Millisecond)
	if b.w2Nice != 0 {
		if err := reniceWalsender(ctx, b.pool, slot, b.w2Nice); err != nil {
			return nil, err
		}
		res.WalsenderNice = b.w2Nice
	}
	stopConsumer, err := consumeVisible(ctx, b.brokers, topic, b.w2EOS, probe)
	if err != nil {
		return nil, err
	}
	defer stopConsumer()

	for _, rate := range b.w2Rates {
		pt, err := run.rate(ctx, rate)
		if err != nil {
			return nil, err
		}
		res.Points = append(res.Points, pt)
	}
	res.judgeFlat()
	return res, nil
}

// w2ExactlyOnce is W2 in exactly-once mode (read_committed consumer) at the -w2e-rates, run right after
// W2 so that its goal compares the two modes' p99 at the same rate in the same run.
func (b *bench) w2ExactlyOnce(ctx context.Context) (*W2Result, error) {
	rates, eos := b.w2Rates, b.w2EOS
	defer func() { b.w2Rates, b.w2EOS = rates, eos }()
	b.w2Rates, b.w2EOS = b.w2eRates, true
	return b.w2(ctx)
}

func (res *W2Result) judgeFlat() {
	if len(res.Points) == 0 {
		return
	}
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

// w2Run is the state shared by the rates of one W2 run.
type w2Run struct {
	b        *bench
	res      *W2Result
	probe    *w2Probe
	obs      *counter
	schema   string // the outbox the load inserts into
	slot     string
	produced atomic.Int64
	loadOnly map[int]float64 // rate → machine busy % with the load alone
}

// loadOnlyBusy offers rate for a few seconds with nothing reading the WAL and returns how busy the
// machine was (%): what PostgreSQL and the load generator alone cost.
func (w *w2Run) loadOnlyBusy(ctx context.Context, rate int) (float64, error) {
	stop, wait := w.produce(ctx, rate)
	err := sleepCtx(ctx, 2*time.Second)
	busy0, total0 := machineTicks()
	if err == nil {
		err = sleepCtx(ctx, 5*time.Second)
	}
	busy1, total1 := machineTicks()
	stop()
	if err = errors.Join(err, wait()); err != nil {
		return 0, fmt.Errorf("W2 load alone at %d msgs/s: %w", rate, err)
	}
	w.b.logf("W2 load alone at %d msgs/s: machine %.0f%% busy", rate, 100*float64(busy1-busy0)/float64(max(total1-total0, 1)))
	return 100 * float64(busy1-busy0) / float64(max(total1-total0, 1)), nil
}

// rate offers rate msgs/s, measures res.Windows windows after the warm-up, then lets the relay catch up.
func (w *w2Run) rate(ctx context.Context, rate int) (W2Point, error) {
	res := w.res
	pt := W2Point{Rate: rate}
	stopProd, prodErr := w.produce(ctx, rate)
	lag := sampleLag(ctx, w.b.pool, w.slot)
	if err := sleepCtx(ctx, time.Duration(res.Warmup*float64(time.Second))); err != nil {
		return pt, err
	}
	cpu := sampleCPU(ctx, w.b.pool, w.slot)
	stopProfile := w.b.cpuProfile(fmt.Sprintf("W2-%d.pprof", rate)) // the relay and the consumer
	all, ack := new(hist.H), new(hist.H)
	var stages [6]hist.H
	var achieved, p50, p99, p999, lags []float64
	for win := range res.Windows {
		w.probe.swap()
		lag.max.Store(0)
		n0, t0 := w.produced.Load(), time.Now()
		if err := sleepCtx(ctx, time.Duration(res.Window*float64(time.Second))); err != nil {
			return pt, err
		}
		h := w.probe.swap()
		s := h.visible.Summary()
		a := float64(w.produced.Load()-n0) / time.Since(t0).Seconds()
		achieved, p50, p99, p999 = append(achieved, a), append(p50, s.P50MS), append(p99, s.P99MS), append(p999, s.P999MS)
		lags = append(lags, float64(lag.max.Load()))
		all.Merge(&h.visible)
		ack.Merge(&h.ack)
		for i := range stages {
			stages[i].Merge(&h.stages[i])
		}
		w.b.logf("W2 rate %5d window %d: achieved %7.0f msgs/s  commit→consumer p50 %6.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  max %7.1f ms  (relay ack p99 %6.2f ms)  slot lag max %5.1f MiB",
			rate, win+1, a, s.P50MS, s.P99MS, s.P999MS, s.MaxMS, h.ack.Summary().P99MS, float64(lag.max.Load())/(1<<20))
	}
	pt.CPU = cpu.stop()
	pt.CPU.LoadOnlyBusy = w.loadOnly[rate]
	stopProfile()
	stopProd()
	pt.LagEndBytes = lag.stop()
	if err := prodErr(); err != nil {
		return pt, fmt.Errorf("W2 producer at %d msgs/s: %w", rate, err)
	}
	pt.Achieved, pt.P50MS, pt.P99MS, pt.P999MS, pt.LagMaxBytes = summarize(achieved), summarize(p50), summarize(p99), summarize(p999), summarize(lags)
	pt.All, pt.Ack = all.Summary(), ack.Summary()
	pt.Stages = map[string]hist.Summary{}
	for i, name := range w2Stages {
		if i == stConsumer {
			pt.Stages[name] = pt.All
			continue
		}
		pt.Stages[name] = stages[i].Summary()
	}
	// Let the relay catch up before the next rate.
	for deadline := time.Now().Add(2 * time.Minute); w.obs.acked.Load() < w.produced.Load() && time.Now().Before(deadline); {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return pt, err
		}
	}
	return pt, sleepCtx(ctx, 1500*time.Millisecond)
}

// produce starts pgbench in its own process (so the load generator shares no Go scheduler with the
// relay under test) offering rate transactions/s open loop (-R) from res.Producers connections, each
// inserting one message whose payload starts with clock_timestamp() in nanoseconds (int8send is
// big-endian, as sentAt reads it). w.produced follows pgbench's progress reports. stop ends it; wait
// returns its error, if any.
func (w *w2Run) produce(ctx context.Context, rate int) (stop func(), wait func() error) {
	script := fmt.Sprintf(`\set k random(0, 9999)
INSERT INTO %s (id, destination, key, type, payload) VALUES (gen_random_uuid(), '%s', 'key-' || :k, 'BenchEvent',
  int8send((extract(epoch FROM clock_timestamp()) * 1000000000)::int8) || decode(repeat('00', 192), 'hex'));
`, names.Table(w.schema, names.OutboxTable), benchDest)
	f, err := os.CreateTemp("", "pgoutbox-w2-*.sql")
	if err == nil {
		_, err = f.WriteString(script)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		return func() {}, func() error { return err }
	}
	pctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(pctx, w.b.pgbench, "-n", "-c", fmt.Sprint(w.res.Producers), "-j", "2", "-R", fmt.Sprint(rate),
		"-T", "3600", "-P", "1", "-f", f.Name(), w.b.dbURL)
	var stderr bytes.Buffer
	out, err := cmd.StdoutPipe()
	if err == nil {
		cmd.Stderr = io.MultiWriter(&stderr, progressWriter(func(tps float64) { w.produced.Add(int64(tps)) }))
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		return func() {}, func() error { return fmt.Errorf("start pgbench: %w", err) }
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	var once sync.Once
	var runErr error
	stop = func() {
		once.Do(func() {
			cancel()
			if err := cmd.Wait(); err != nil && pctx.Err() == nil {
				runErr = fmt.Errorf("pgbench: %w: %s", err, tail(stderr.String(), 500))
			}
			_ = os.Remove(f.Name())
		})
	}
	return stop, func() error { stop(); return runErr }
}

// progressWriter calls add with the tps of each pgbench progress line ("progress: 3.0 s, 4998.9 tps, ...").
func progressWriter(add func(tps float64)) io.Writer {
	var line []byte
	return writerFunc(func(p []byte) (int, error) {
		for _, c := range p {
			if c != '\n' {
				line = append(line, c)
				continue
			}
			var secs, tps float64
			if n, _ := fmt.Sscanf(string(line), "progress: %f s, %f tps", &secs, &tps); n == 2 {
				add(tps)
			}
			line = line[:0]
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// lagSampler polls the slot's lag every 200 ms.
type lagSampler struct {
	max, last atomic.Int64
	done      chan struct{}
	stopped   chan struct{}
}

func sampleLag(ctx context.Context, pool *pgxpool.Pool, slot string) *lagSampler {
	l := &lagSampler{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(l.stopped)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			var lag int64
			if err := pool.QueryRow(ctx, `SELECT COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lag); err == nil {
				l.last.Store(lag)
				if lag > l.max.Load() {
					l.max.Store(lag)
				}
			}
			select {
			case <-l.done:
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// stop ends the sampling and returns the last lag read.
func (l *lagSampler) stop() int64 {
	close(l.done)
	<-l.stopped
	return l.last.Load()
}
