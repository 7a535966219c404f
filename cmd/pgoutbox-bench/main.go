// Command pgoutbox-bench measures pgoutbox against the physical limits of the machine it runs on:
// the cost Enqueue adds to a transaction (W1), commit→Kafka-ack latency under open-loop load (W2),
// backlog drain against pg_recvlogical (W3), one huge transaction with streaming off and on (W4),
// uniform vs hot keys (W5), live load with one poison key (W6), and W1 and W3 with each Enqueue transport
// (WT: table vs logical messages). It writes BENCH.md, results.json and SVG charts into -out.
//
//	eval "$(make -s services-up)"
//	go run ./cmd/pgoutbox-bench -out bench/ [-quick] [-workloads W1,W3]
//
// PostgreSQL comes from PGOUTBOX_TEST_DATABASE_URL (the bench creates and drops its own database),
// pg_recvlogical from PGOUTBOX_PG_BIN, Kafka from PGOUTBOX_TEST_KAFKA_BROKERS.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

type bench struct {
	adminURL, dbURL string
	pool            *pgxpool.Pool
	recvlogical     string
	pgbench         string
	brokers         []string
	quick           bool
	repeats         int
	partitions      int
	profileDir      string
	w2Rates         []int
	linger          time.Duration   // W2's Kafka linger; < 0: the sink's default
	lingers         []time.Duration // extra relay → Kafka drain variants
	streamMem       int
	rabbitmqQueues  string // W3S: the queue types RabbitMQ drains go to, one row each (-rabbitmq-queues)
	start           time.Time
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] "+format+"\n", append([]any{time.Since(b.start).Seconds()}, args...)...)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(childMain(os.Args[2:]))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgoutbox-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		out       = flag.String("out", "bench", "directory for BENCH.md, results.json and the charts")
		quick     = flag.Bool("quick", false, "smaller backlogs and shorter runs")
		dbFlag    = flag.String("db", "pgoutbox_bench", "the database the bench creates (dropping one of that name) and drops afterwards")
		workloads = flag.String("workloads", "W1,W2,W3,W4,W5,W6,WT", "comma-separated workloads to run")
		repeats   = flag.Int("repeats", 3, "repeats per measurement (median and spread are reported)")
		parts     = flag.Int("partitions", 8, "partitions of the Kafka topics")
		profile   = flag.Bool("profile", false, "also run each relay drain variant once more under the CPU profiler (written to <out>/profiles)")
		w3n       = flag.Int("w3-n", 0, "W3 backlog size (default 1,000,000; -quick 100,000)")
		w4n       = flag.Int("w4-n", 0, "W4 transaction size (default 1,000,000; -quick 100,000)")
		w5n       = flag.Int("w5-n", 0, "W5 backlog size per key pattern (default 200,000; -quick 50,000)")
		rates     = flag.String("w2-rates", "", "W2 target rates in msgs/s (default 1000,5000,10000,20000)")
		keep      = flag.Bool("keep", false, "keep the bench database afterwards")
		linger    = flag.Duration("w2-linger", -1, "W2's Kafka linger (default: the sink's default)")
		lingers   = flag.String("kafka-lingers", "10ms", "extra relay → Kafka variants of the drains (W3, W5), by linger; empty: only the sink's defaults")
		streamMem = flag.Int("w4-stream-mem", 16, "W4 streaming-on decoder memory limit, MiB (outbox.WithStreamMemoryLimit; 16 = the relay's default)")
		rmqQueues = flag.String("rabbitmq-queues", "quorum", "W3S: the RabbitMQ queue types to drain into, a row each (quorum, classic)")
		peers     = flag.Bool("peers", false, "instead of W1–W6: pgoutbox run vs Debezium vs pg_recvlogical (peers*.go; writes PEERS.md and peers.json)")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{quick: *quick, repeats: *repeats, partitions: *parts, streamMem: *streamMem << 20, linger: *linger, start: time.Now(),
		rabbitmqQueues: *rmqQueues}
	b.adminURL = os.Getenv("PGOUTBOX_TEST_DATABASE_URL")
	if b.adminURL == "" {
		return errors.New(`PGOUTBOX_TEST_DATABASE_URL is unset: run eval "$(scripts/postgres.sh up)" (and scripts/kafka.sh up)`)
	}
	for _, s := range strings.Split(os.Getenv("PGOUTBOX_TEST_KAFKA_BROKERS"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			b.brokers = append(b.brokers, s)
		}
	}
	b.recvlogical, b.pgbench = "pg_recvlogical", "pgbench"
	if d := os.Getenv("PGOUTBOX_PG_BIN"); d != "" {
		b.recvlogical, b.pgbench = filepath.Join(d, "pg_recvlogical"), filepath.Join(d, "pgbench")
	}
	run := map[string]bool{}
	for _, w := range strings.Split(*workloads, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		switch w {
		case "W1", "W2", "W3", "W4", "W5", "W6", "WT", "W3S":
			run[w] = true
		case "":
		default:
			return fmt.Errorf("-workloads: unknown workload %q (W1..W6, WT)", w)
		}
	}
	if (run["W2"] || run["W3"] || run["W5"] || run["W6"] || run["WT"]) && len(b.brokers) == 0 {
		return errors.New(`W2, W3, W5, W6 and WT need Kafka: PGOUTBOX_TEST_KAFKA_BROKERS is unset; run eval "$(scripts/kafka.sh up)"`)
	}
	if run["W2"] {
		if _, err := exec.LookPath(b.pgbench); err != nil {
			return fmt.Errorf("pgbench not found (%s): set PGOUTBOX_PG_BIN: %w", b.pgbench, err)
		}
	}
	if run["W3"] || run["W4"] || run["WT"] {
		if _, err := exec.LookPath(b.recvlogical); err != nil {
			return fmt.Errorf("pg_recvlogical not found (%s): set PGOUTBOX_PG_BIN: %w", b.recvlogical, err)
		}
	}
	for _, s := range strings.Split(*lingers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("-kafka-lingers: %q is not a duration >= 0", s)
		}
		b.lingers = append(b.lingers, d)
	}
	b.w2Rates = []int{1000, 5000, 10000, 20000}
	if *rates != "" {
		b.w2Rates = nil
		for _, s := range strings.Split(*rates, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || r <= 0 {
				return fmt.Errorf("-w2-rates: %q is not a positive integer", s)
			}
			b.w2Rates = append(b.w2Rates, r)
		}
	}
	pick := func(flagV, full, q int) int {
		switch {
		case flagV > 0:
			return flagV
		case *quick:
			return q
		}
		return full
	}
	n3, n4, n5 := pick(*w3n, 1_000_000, 100_000), pick(*w4n, 1_000_000, 100_000), pick(*w5n, 200_000, 50_000)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if *profile {
		b.profileDir = filepath.Join(*out, "profiles")
		if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
			return err
		}
	}

	res := &Results{}
	if old, err := os.ReadFile(filepath.Join(*out, "results.json")); err == nil {
		_ = json.Unmarshal(old, res) // keep the workloads not run this time
	}
	if len(run) == 0 { // -workloads "," re-renders BENCH.md and the charts from results.json
		return writeOutputs(*out, res)
	}
	res.Machine = describeMachine(ctx, b.adminURL)
	res.Command = "go run ./cmd/pgoutbox-bench " + strings.Join(os.Args[1:], " ")
	res.When = time.Now().UTC()

	dbName := *dbFlag
	if *peers {
		dbName = peersDBName
	}
	if err := recreateDatabase(ctx, b.adminURL, dbName); err != nil {
		return err
	}
	var err error
	if b.dbURL, err = withDatabase(b.adminURL, dbName); err != nil {
		return err
	}
	if !*keep {
		defer func() {
			if err := dropDatabase(context.Background(), b.adminURL, dbName); err != nil {
				b.logf("cleanup: %v", err)
			}
		}()
	}
	if b.pool, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	defer b.pool.Close()
	b.logf("machine: %d CPUs %s, %d MB, PostgreSQL %s, %s", res.Machine.NProc, res.Machine.CPU, res.Machine.MemoryMB, res.Machine.PostgreSQL, res.Machine.Kafka)
	if *peers {
		return b.runPeers(ctx, *out, res.Machine)
	}

	save := func() error { return writeOutputs(*out, res) }
	if run["W1"] {
		if res.W1, err = b.w1(ctx); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["W3"] {
		if res.W3, err = b.w3(ctx, n3); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["W3S"] { // W3 into NATS JetStream and RabbitMQ: SINKS.md and sinks.json (sinks.go)
		if err := b.w3Sinks(ctx, n3, *out); err != nil {
			return err
		}
	}
	if run["W4"] {
		if res.W4, err = b.w4(ctx, n4); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["W5"] {
		if res.W5, err = b.w5(ctx, n5); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["W6"] {
		if res.W6, err = b.w6(ctx); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["W2"] {
		if res.W2, err = b.w2(ctx); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	if run["WT"] {
		if res.WT, err = b.wt(ctx, n3); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}
	b.logf("wrote %s", filepath.Join(*out, "BENCH.md"))
	return nil
}

// kafkaConsumers are the relay → Kafka variants of the drains: the sink's defaults first, then one
// per -kafka-lingers value (the knob that trades latency for batch size).
func (b *bench) kafkaConsumers() []consumer {
	cs := []consumer{{Name: "relay → Kafka (sink defaults)", Short: "kd", Relay: relaySpec{Sink: "kafka"}}}
	for _, l := range b.lingers {
		cs = append(cs, consumer{Name: fmt.Sprintf("relay → Kafka (linger %s)", l), Short: "k" + strings.TrimSuffix(l.String(), "s"),
			Relay: relaySpec{Sink: "kafka", Linger: l, LingerSet: true}})
	}
	for i := range cs {
		cs[i].Short = strings.NewReplacer(".", "_", "µ", "u").Replace(cs[i].Short)
	}
	return cs
}

var (
	recvConsumer    = consumer{Name: "pg_recvlogical → /dev/null", Short: "recv", Recv: true}
	handlerConsumer = consumer{Name: "relay → handler (ack at once)", Short: "h", Relay: relaySpec{Sink: "handler"}}
)

func (b *bench) w3(ctx context.Context, n int) (*DrainResult, error) {
	cs := append([]consumer{recvConsumer, handlerConsumer}, b.kafkaConsumers()...)
	return b.drain(ctx, "W3", "Backlog drain", backlog{Schema: "b3", N: n, PerTx: 100, Payload: 200, Key: uniformKeys(10_000), Conns: 4},
		"10,000 distinct", cs)
}

func (b *bench) w4(ctx context.Context, n int) (*DrainResult, error) {
	on, err := withParam(b.dbURL, "options", "-c logical_decoding_work_mem=64kB")
	if err != nil {
		return nil, err
	}
	spill, err := os.MkdirTemp("", "pgoutbox-bench-spill-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(spill)
	cs := []consumer{
		recvConsumer,
		{Name: "relay → handler, streaming off", Short: "off", Relay: relaySpec{Sink: "handler"}},
		{Name: fmt.Sprintf("relay → handler, streaming on (%d MiB, work_mem 64kB)", b.streamMem>>20), Short: "on", Relay: relaySpec{Sink: "handler", DBURL: on,
			Streaming: true, StreamMem: b.streamMem, SpillDir: spill}},
	}
	return b.drain(ctx, "W4", "One huge transaction", backlog{Schema: "b4", N: n, PerTx: n, Payload: 200, Key: uniformKeys(10_000), Conns: 1},
		"10,000 distinct", cs)
}

// W5Result compares key distributions.
type W5Result struct {
	Uniform *DrainResult `json:"uniform"`
	Hot     *DrainResult `json:"hot"`
}

func (b *bench) w5(ctx context.Context, n int) (*W5Result, error) {
	cs := []consumer{handlerConsumer, b.kafkaConsumers()[0]}
	u, err := b.drain(ctx, "W5u", "Keys: uniform", backlog{Schema: "b5u", N: n, PerTx: 100, Payload: 200, Key: uniformKeys(10_000), Conns: 4},
		"10,000 distinct", cs)
	if err != nil {
		return nil, err
	}
	h, err := b.drain(ctx, "W5h", "Keys: 4 hot", backlog{Schema: "b5h", N: n, PerTx: 100, Payload: 200, Key: func(i int) string { return fmt.Sprintf("hot-%d", i%4) }, Conns: 4},
		"4 hot keys", cs)
	if err != nil {
		return nil, err
	}
	return &W5Result{Uniform: u, Hot: h}, nil
}
