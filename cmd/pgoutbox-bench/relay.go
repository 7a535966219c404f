package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox-bench/internal/hist"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

// childArg makes the bench binary run one relay measurement (relaySpec as JSON in the next argument)
// and print a relayResult as JSON: a fresh process per run gives a clean peak RSS.
const childArg = "-child-relay"

// relaySpec is one relay run.
type relaySpec struct {
	DBURL       string        `json:"db_url"`
	Schema      string        `json:"schema"`
	Slot        string        `json:"slot"`
	CreateSlot  bool          `json:"create_slot"`
	N           int64         `json:"n"`    // stop after this many acks (0: run until stopped)
	Sink        string        `json:"sink"` // "handler" (acks at once) or "kafka"
	Brokers     []string      `json:"brokers,omitempty"`
	Topic       string        `json:"topic,omitempty"`
	Linger      time.Duration `json:"linger,omitempty"`
	BatchBytes  int           `json:"batch_bytes,omitempty"`
	Lanes       int           `json:"lanes,omitempty"`
	BatchSize   int           `json:"batch_size,omitempty"`
	MaxInFlight int           `json:"max_in_flight,omitempty"`
	Streaming   bool          `json:"streaming,omitempty"`
	// LogicalMessages starts the relay WithLogicalMessages.
	LogicalMessages bool          `json:"logical_messages,omitempty"`
	StreamMem       int           `json:"stream_mem,omitempty"`
	SpillDir        string        `json:"spill_dir,omitempty"`
	CPUProfile      string        `json:"cpu_profile,omitempty"`
	Timeout         time.Duration `json:"timeout"`
	// PoisonType makes the sink fail every record of this type (W6).
	PoisonType string `json:"poison_type,omitempty"`
	// AckSeries reports acks per second and the commit→ack latency (W6).
	AckSeries bool `json:"ack_series,omitempty"`
	// wrap, in-process runs only, wraps the sink (W2 stamps records on their way through it).
	wrap func(outbox.Sink) outbox.Sink
	// ExactlyOnce runs the Kafka sink in exactly-once mode, its positions in PositionTopic.
	ExactlyOnce   bool   `json:"exactly_once,omitempty"`
	PositionTopic string `json:"position_topic,omitempty"`
	// LingerSet: Linger is set even when 0 (a zero Linger otherwise means the sink's default).
	LingerSet bool `json:"linger_set,omitempty"`
	// SinkURL and Target are the server and the subject or exchange of the "nats" and "rabbitmq"
	// sinks (sinks.go).
	SinkURL string `json:"sink_url,omitempty"`
	Target  string `json:"target,omitempty"`
	// QueueType is the type of the durable queue the "rabbitmq" sink's exchange routes to: "quorum"
	// or "classic".
	QueueType string `json:"queue_type,omitempty"`
}

// relayResult is what a child run reports.
type relayResult struct {
	Delivered     int64   `json:"delivered"`
	Seconds       float64 `json:"seconds"` // Start → N-th ack
	UserCPU       float64 `json:"user_cpu_s"`
	SysCPU        float64 `json:"sys_cpu_s"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`  // VmHWM
	PeakHeapBytes uint64  `json:"peak_heap_bytes"` // live+unswept heap objects, sampled every 10ms
	Allocs        uint64  `json:"allocs"`          // heap objects allocated during the run
	AllocBytes    uint64  `json:"alloc_bytes"`
	Err           string  `json:"err,omitempty"`
	// With AckSeries: acks in each second from StartUnix on, and the commit→ack latency.
	StartUnixMilli int64         `json:"start_unix_ms,omitempty"`
	AcksPerSecond  []int64       `json:"acks_per_second,omitempty"`
	Latency        *hist.Summary `json:"latency,omitempty"`
	PoisonAttempts int           `json:"poison_attempts,omitempty"`
}

// counter is an outbox.Observer counting acks; it closes done at n and forwards latencies to onAck.
type counter struct {
	n     int64
	acked atomic.Int64
	done  chan struct{}
	once  sync.Once
	onAck func(time.Duration)
	// onDecoded, when set, gets the relay's source delays (outbox.SourceObserver).
	onDecoded func(walsender, receive time.Duration)
}

func newCounter(n int64, onAck func(time.Duration)) *counter {
	return &counter{n: n, done: make(chan struct{}), onAck: onAck}
}

func (c *counter) Delivered(_ outbox.Destination, commitToAck time.Duration) {
	if c.onAck != nil {
		c.onAck(commitToAck)
	}
	if c.acked.Add(1) == c.n {
		c.once.Do(func() { close(c.done) })
	}
}
func (c *counter) Decoded(walsender, receive time.Duration) {
	if c.onDecoded != nil {
		c.onDecoded(walsender, receive)
	}
}
func (c *counter) Failed(outbox.Destination, error)  {}
func (c *counter) DeadLettered(outbox.Destination)   {}
func (c *counter) Blocked(outbox.Destination, error) {}

// runningRelay is a relay with its pool and sink.
type runningRelay struct {
	relay  *outbox.Relay
	pool   *pgxpool.Pool
	sink   *kafka.Sink
	poison *poisonSink
	linger time.Duration // the Kafka sink's
	closer io.Closer     // another sink (sinks.go)
}

func (r *runningRelay) stop(ctx context.Context) error {
	err := r.relay.Stop(ctx)
	if r.sink != nil {
		err = errors.Join(err, r.sink.Close())
	}
	if r.closer != nil {
		err = errors.Join(err, r.closer.Close())
	}
	r.pool.Close()
	return err
}

func startRelay(ctx context.Context, s relaySpec, obs outbox.Observer) (*runningRelay, error) {
	pool, err := pgxpool.New(ctx, s.DBURL)
	if err != nil {
		return nil, fmt.Errorf("relay pool: %w", err)
	}
	opts := []outbox.Option{outbox.WithSlotName(s.Slot), outbox.WithCreateSlot(s.CreateSlot), outbox.WithRetention(0),
		outbox.WithObserver(obs), outbox.WithInstanceID("bench-" + s.Slot)}
	if s.Lanes > 0 {
		opts = append(opts, outbox.WithLanes(s.Lanes))
	}
	if s.BatchSize > 0 {
		opts = append(opts, outbox.WithBatchSize(s.BatchSize))
	}
	if s.MaxInFlight > 0 {
		opts = append(opts, outbox.WithMaxInFlight(s.MaxInFlight))
	}
	if s.LogicalMessages {
		opts = append(opts, outbox.WithLogicalMessages())
	}
	if s.Streaming {
		opts = append(opts, outbox.WithStreaming(true))
		if s.StreamMem > 0 {
			opts = append(opts, outbox.WithStreamMemoryLimit(s.StreamMem))
		}
		if s.SpillDir != "" {
			opts = append(opts, outbox.WithSpillDir(s.SpillDir))
		}
	}
	rr := &runningRelay{pool: pool}
	var handlers map[outbox.Destination]outbox.Handler
	switch s.Sink {
	case "handler":
		handlers = map[outbox.Destination]outbox.Handler{benchDest: func(context.Context, outbox.Message) error { return nil }}
	case "kafka":
		cfg := kafka.DefaultConfig()
		cfg.Brokers = s.Brokers
		cfg.Topics = map[string]string{string(benchDest): s.Topic}
		if s.Linger > 0 || s.LingerSet {
			cfg.Linger = s.Linger
		}
		if s.BatchBytes > 0 {
			cfg.BatchBytes = s.BatchBytes
		}
		if s.ExactlyOnce {
			cfg.ExactlyOnce.Enable, cfg.ExactlyOnce.PositionTopic = true, s.PositionTopic
		}
		if rr.sink, err = kafka.New(cfg); err != nil {
			pool.Close()
			return nil, err
		}
		rr.linger = cfg.Linger
		var sink outbox.Sink = rr.sink
		if s.PoisonType != "" {
			rr.poison = &poisonSink{next: rr.sink, typ: s.PoisonType}
			sink = rr.poison
		}
		if s.wrap != nil {
			sink = s.wrap(sink)
		}
		opts = append(opts, outbox.WithSink(benchDest, sink))
	default:
		sink, closer, err := newOtherSink(s)
		if err != nil {
			pool.Close()
			return nil, err
		}
		rr.closer = closer
		opts = append(opts, outbox.WithSink(benchDest, sink))
	}
	rr.relay, err = outbox.Start(ctx, pool, s.Schema, handlers, opts...)
	if err != nil {
		if rr.sink != nil {
			_ = rr.sink.Close()
		}
		pool.Close()
		return nil, err
	}
	return rr, nil
}

// childMain runs one relay measurement in this process.
func childMain(args []string) int {
	var s relaySpec
	if len(args) != 1 || json.Unmarshal([]byte(args[0]), &s) != nil {
		fmt.Fprintln(os.Stderr, "usage: pgoutbox-bench -child-relay '<relaySpec JSON>'")
		return 2
	}
	res := measureRelay(s)
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Err != "" {
		return 1
	}
	return 0
}

func measureRelay(s relaySpec) relayResult {
	var res relayResult
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()

	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(samples)
	allocs0, bytes0 := samples[1].Value.Uint64(), samples[2].Value.Uint64()
	peakHeap := samplePeakHeap()
	if s.CPUProfile != "" {
		if f, err := os.Create(s.CPUProfile); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}

	start := time.Now()
	var series *ackSeries
	var onAck func(time.Duration)
	if s.AckSeries {
		series = newAckSeries(start, s.Timeout)
		onAck = series.record
	}
	c := newCounter(s.N, onAck)
	rr, err := startRelay(ctx, s, c)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	select {
	case <-c.done:
		res.Seconds = time.Since(start).Seconds()
	case <-ctx.Done():
		res.Err = fmt.Sprintf("timeout after %s with %d of %d acked", s.Timeout, c.acked.Load(), s.N)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	res.UserCPU = time.Duration(ru.Utime.Nano()).Seconds()
	res.SysCPU = time.Duration(ru.Stime.Nano()).Seconds()
	metrics.Read(samples)
	res.Allocs, res.AllocBytes = samples[1].Value.Uint64()-allocs0, samples[2].Value.Uint64()-bytes0
	res.PeakHeapBytes = peakHeap()
	res.PeakRSSBytes = vmHWM()
	res.Delivered = c.acked.Load()
	if series != nil {
		series.report(&res)
	}
	if rr.poison != nil {
		res.PoisonAttempts = int(rr.poison.attempts.Load())
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	if err := rr.stop(stopCtx); err != nil && res.Err == "" && !errors.Is(err, context.Canceled) {
		res.Err = "stop: " + err.Error()
	}
	return res
}

// samplePeakHeap samples the live heap every 10 ms until the returned function is called, which
// returns the peak.
func samplePeakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); <-sampled; return peak.Load() }
}

// ackSeries counts acks per second since start and their commit→ack latency.
type ackSeries struct {
	start time.Time
	acks  []atomic.Int64
	lat   hist.H
}

func newAckSeries(start time.Time, span time.Duration) *ackSeries {
	return &ackSeries{start: start, acks: make([]atomic.Int64, int(span/time.Second)+2)}
}

func (a *ackSeries) record(d time.Duration) {
	a.lat.Record(d)
	a.acks[min(int(time.Since(a.start)/time.Second), len(a.acks)-1)].Add(1)
}

func (a *ackSeries) report(res *relayResult) {
	res.StartUnixMilli = a.start.UnixMilli()
	for i := range min(int(time.Since(a.start)/time.Second)+1, len(a.acks)) {
		res.AcksPerSecond = append(res.AcksPerSecond, a.acks[i].Load())
	}
	sum := a.lat.Summary()
	res.Latency = &sum
}

// vmHWM returns this process's peak resident set size in bytes.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmHWM: %d kB", &kb); n == 1 {
			return kb * 1024
		}
	}
	return 0
}

// runRelayChild runs spec in a child process of this binary.
func runRelayChild(ctx context.Context, s relaySpec) (relayResult, error) {
	self, err := os.Executable()
	if err != nil {
		return relayResult{}, err
	}
	spec, _ := json.Marshal(s)
	cmd := exec.CommandContext(ctx, self, childArg, string(spec))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	runErr := cmd.Run()
	var res relayResult
	sc := bufio.NewScanner(&out)
	var last string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			last = sc.Text()
		}
	}
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		return res, fmt.Errorf("relay child: %v: %s", runErr, tail(stderr.String(), 2000))
	}
	if res.Err != "" {
		return res, fmt.Errorf("relay child: %s", res.Err)
	}
	return res, nil
}

// recvResult is one pg_recvlogical run.
type recvResult struct {
	Seconds      float64
	CPU          float64
	PeakRSSBytes int64
}

// runRecvLogical streams slot to /dev/null with pg_recvlogical until endLSN and times it; options are
// more pgoutput options (name=value).
func runRecvLogical(ctx context.Context, pgBin, dbURL, slot, publication, endLSN string, timeout time.Duration, options ...string) (recvResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"-d", dbURL, "--slot=" + slot, "--start", "--no-loop", "--endpos=" + endLSN,
		"-o", "proto_version=1", "-o", "publication_names=" + publication, "-f", "/dev/null"}
	for _, o := range options {
		args = append(args, "-o", o)
	}
	cmd := exec.CommandContext(ctx, pgBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return recvResult{}, fmt.Errorf("pg_recvlogical: %w: %s", err, tail(stderr.String(), 1000))
	}
	r := recvResult{Seconds: time.Since(start).Seconds()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		r.PeakRSSBytes = ru.Maxrss * 1024
	}
	return r, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
