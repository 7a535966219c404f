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
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
	w2eRates        []int // W2E: W2 in exactly-once mode
	w2Clients       int
	w2Nice          int             // W2: the walsender's nice value (0: left alone)
	w2EOS           bool            // W2: exactly-once mode, read_committed consumer
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
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, selected, err := newBench(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if o.profile {
		b.profileDir = filepath.Join(o.out, "profiles")
		if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
			return err
		}
	}

	res := &Results{}
	if old, err := os.ReadFile(filepath.Join(o.out, "results.json")); err == nil {
		_ = json.Unmarshal(old, res) // keep the workloads not run this time
	}
	if len(selected) == 0 { // -workloads "," re-renders BENCH.md and the charts from results.json
		return writeOutputs(o.out, res)
	}
	res.Machine = describeMachine(ctx, b.adminURL)
	res.Command = "go run ./cmd/pgoutbox-bench " + strings.Join(os.Args[1:], " ")
	res.When = time.Now().UTC()

	dbName := o.db
	if o.peers {
		dbName = peersDBName
	}
	closeDB, err := b.openDatabase(ctx, dbName, o.keep)
	if err != nil {
		return err
	}
	defer closeDB()
	b.logf("machine: %d CPUs %s, %d MB, PostgreSQL %s, %s", res.Machine.NProc, res.Machine.CPU, res.Machine.MemoryMB, res.Machine.PostgreSQL, res.Machine.Kafka)
	if o.peers {
		return b.runPeers(ctx, o.out, res.Machine)
	}
	if err := b.runWorkloads(ctx, o, selected, res); err != nil {
		return err
	}
	b.logf("wrote %s", filepath.Join(o.out, "BENCH.md"))
	return nil
}

// openDatabase (re)creates the database name and connects b to it; closeDB closes the pool and, unless keep,
// drops the database.
func (b *bench) openDatabase(ctx context.Context, name string, keep bool) (closeDB func(), err error) {
	if err := recreateDatabase(ctx, b.adminURL, name); err != nil {
		return nil, err
	}
	if b.dbURL, err = withDatabase(b.adminURL, name); err != nil {
		return nil, err
	}
	drop := func() {
		if keep {
			return
		}
		if err := dropDatabase(context.WithoutCancel(ctx), b.adminURL, name); err != nil {
			b.logf("cleanup: %v", err)
		}
	}
	if b.pool, err = pgxpool.New(ctx, b.dbURL); err != nil {
		drop()
		return nil, err
	}
	return func() {
		b.pool.Close()
		drop()
	}, nil
}

// runWorkloads runs the selected workloads in the suite's order, writing the outputs after each.
func (b *bench) runWorkloads(ctx context.Context, o *options, selected map[string]bool, res *Results) error {
	n3, n4, n5 := o.size(o.w3n, 1_000_000, 100_000), o.size(o.w4n, 1_000_000, 100_000), o.size(o.w5n, 200_000, 50_000)
	workloads := []struct {
		name string
		run  func() error
		save bool // write BENCH.md, results.json and the charts afterwards
	}{
		{"W1", func() (err error) { res.W1, err = b.w1(ctx); return err }, true},
		{"W3", func() (err error) { res.W3, err = b.w3(ctx, n3); return err }, true},
		// W3 into NATS JetStream and RabbitMQ: SINKS.md and sinks.json (sinks.go)
		{"W3S", func() error { return b.w3Sinks(ctx, n3, o.out) }, false},
		{"W4", func() (err error) { res.W4, err = b.w4(ctx, n4); return err }, true},
		{"W5", func() (err error) { res.W5, err = b.w5(ctx, n5); return err }, true},
		{"W6", func() (err error) { res.W6, err = b.w6(ctx); return err }, true},
		{"W2", func() (err error) { res.W2, err = b.w2(ctx); return err }, true},
		{"W2E", func() (err error) { res.W2E, err = b.w2ExactlyOnce(ctx); return err }, true},
		{"WT", func() (err error) { res.WT, err = b.wt(ctx, n3); return err }, true},
	}
	for _, w := range workloads {
		if !selected[w.name] {
			continue
		}
		if err := w.run(); err != nil {
			return err
		}
		if w.save {
			if err := writeOutputs(o.out, res); err != nil {
				return err
			}
		}
	}
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
	cs = append(cs, consumer{Name: "relay → Kafka (exactly-once, sink defaults)", Short: "keos", Relay: relaySpec{Sink: "kafka", ExactlyOnce: true}})
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
