package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// options are the command's flags (the -peers-* ones are in peers.go).
type options struct {
	out, db, workloads string
	quick, profile     bool
	keep, peers        bool
	repeats            int
	partitions         int
	w3n, w4n, w5n      int
	rates, eosRates    string
	clients, nice      int
	w2EOS              bool
	linger             time.Duration
	lingers            string
	streamMem          int // MiB
	rmqQueues          string
}

// parseFlags defines the flags and parses the command line.
func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.out, "out", "bench", "directory for BENCH.md, results.json and the charts")
	flag.BoolVar(&o.quick, "quick", false, "smaller backlogs and shorter runs")
	flag.StringVar(&o.db, "db", "pgoutbox_bench", "the database the bench creates (dropping one of that name) and drops afterwards")
	flag.StringVar(&o.workloads, "workloads", "W1,W2,W2E,W3,W4,W5,W6,WT", "comma-separated workloads to run (W2E: W2 in exactly-once mode at -w2e-rates, beside W2)")
	flag.IntVar(&o.repeats, "repeats", 3, "repeats per measurement (median and spread are reported)")
	flag.IntVar(&o.partitions, "partitions", 8, "partitions of the Kafka topics")
	flag.BoolVar(&o.profile, "profile", false, "also run each relay drain variant once more under the CPU profiler (written to <out>/profiles)")
	flag.IntVar(&o.w3n, "w3-n", 0, "W3 backlog size (default 1,000,000; -quick 100,000)")
	flag.IntVar(&o.w4n, "w4-n", 0, "W4 transaction size (default 1,000,000; -quick 100,000)")
	flag.IntVar(&o.w5n, "w5-n", 0, "W5 backlog size per key pattern (default 200,000; -quick 50,000)")
	flag.StringVar(&o.rates, "w2-rates", "", "W2 target rates in msgs/s (default 1000,5000,10000,20000)")
	flag.IntVar(&o.clients, "w2-clients", 16, "W2's pgbench connections")
	flag.StringVar(&o.eosRates, "w2e-rates", "1000", "W2E target rates in msgs/s (W2 in exactly-once mode; its goal compares it with W2 at the same rate)")
	flag.BoolVar(&o.w2EOS, "w2-exactly-once", false, "W2 with the Kafka sink in exactly-once mode and a read_committed consumer")
	flag.IntVar(&o.nice, "w2-walsender-nice", 0, "W2 diagnostic: renice the slot's walsender to this value (e.g. -10: it gets the CPU before the load's backends; needs root)")
	flag.BoolVar(&o.keep, "keep", false, "keep the bench database afterwards")
	flag.DurationVar(&o.linger, "w2-linger", -1, "W2's Kafka linger (default: the sink's default)")
	flag.StringVar(&o.lingers, "kafka-lingers", "10ms", "extra relay → Kafka variants of the drains (W3, W5), by linger; empty: only the sink's defaults")
	flag.IntVar(&o.streamMem, "w4-stream-mem", 16, "W4 streaming-on decoder memory limit, MiB (outbox.WithStreamMemoryLimit; 16 = the relay's default)")
	flag.StringVar(&o.rmqQueues, "rabbitmq-queues", "quorum", "W3S: the RabbitMQ queue types to drain into, a row each (quorum, classic)")
	flag.BoolVar(&o.peers, "peers", false, "instead of W1–W6: pgoutbox run vs Debezium vs pg_recvlogical (peers*.go; writes PEERS.md and peers.json)")
	flag.Parse()
	return o
}

// size is a workload's size: the flag's value when set, else the -quick or the full default.
func (o *options) size(flagV, full, quick int) int {
	switch {
	case flagV > 0:
		return flagV
	case o.quick:
		return quick
	}
	return full
}

// newBench builds the bench from the flags and the environment, and returns the workloads to run
// after checking that what they need is there.
func newBench(o *options) (*bench, map[string]bool, error) {
	b := &bench{quick: o.quick, repeats: o.repeats, partitions: o.partitions, streamMem: o.streamMem << 20, linger: o.linger,
		w2Clients: o.clients, w2Nice: o.nice, w2EOS: o.w2EOS, rabbitmqQueues: o.rmqQueues, start: time.Now()}
	if err := b.readEnv(); err != nil {
		return nil, nil, err
	}
	selected, err := parseWorkloads(o.workloads)
	if err != nil {
		return nil, nil, err
	}
	if err := b.checkNeeds(selected); err != nil {
		return nil, nil, err
	}
	if b.lingers, err = parseLingers(o.lingers); err != nil {
		return nil, nil, err
	}
	b.w2Rates = []int{1000, 5000, 10000, 20000}
	if o.rates != "" {
		if b.w2Rates, err = parseRates(o.rates); err != nil {
			return nil, nil, fmt.Errorf("-w2-rates: %w", err)
		}
	}
	if b.w2eRates, err = parseRates(o.eosRates); err != nil {
		return nil, nil, fmt.Errorf("-w2e-rates: %w", err)
	}
	return b, selected, nil
}

// readEnv takes PostgreSQL, Kafka and the PostgreSQL binaries from the environment.
func (b *bench) readEnv() error {
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
	return nil
}

// parseWorkloads reads -workloads; an empty set re-renders the outputs only.
func parseWorkloads(s string) (map[string]bool, error) {
	selected := map[string]bool{}
	for _, w := range strings.Split(s, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		switch w {
		case "W1", "W2", "W2E", "W3", "W4", "W5", "W6", "WT", "W3S":
			selected[w] = true
		case "":
		default:
			return nil, fmt.Errorf("-workloads: unknown workload %q (W1..W6, W2E, WT, W3S)", w)
		}
	}
	return selected, nil
}

// checkNeeds checks that Kafka, pgbench and pg_recvlogical are there for the selected workloads that need them.
func (b *bench) checkNeeds(selected map[string]bool) error {
	if (selected["W2"] || selected["W2E"] || selected["W3"] || selected["W5"] || selected["W6"] || selected["WT"]) && len(b.brokers) == 0 {
		return errors.New(`W2, W2E, W3, W5, W6 and WT need Kafka: PGOUTBOX_TEST_KAFKA_BROKERS is unset; run eval "$(scripts/kafka.sh up)"`)
	}
	if selected["W2"] || selected["W2E"] {
		if _, err := exec.LookPath(b.pgbench); err != nil {
			return fmt.Errorf("pgbench not found (%s): set PGOUTBOX_PG_BIN: %w", b.pgbench, err)
		}
	}
	if selected["W3"] || selected["W4"] || selected["WT"] {
		if _, err := exec.LookPath(b.recvlogical); err != nil {
			return fmt.Errorf("pg_recvlogical not found (%s): set PGOUTBOX_PG_BIN: %w", b.recvlogical, err)
		}
	}
	return nil
}

// parseLingers reads -kafka-lingers.
func parseLingers(s string) ([]time.Duration, error) {
	var lingers []time.Duration
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("-kafka-lingers: %q is not a duration >= 0", f)
		}
		lingers = append(lingers, d)
	}
	return lingers, nil
}
