package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The peer comparison (-peers, `make bench-peers`): the real daemon (`pgoutbox run`), Debezium embedded with
// the Outbox Event Router (bench/peers/debezium) and pg_recvlogical, each a child process, on the same
// backlog and the same live load, into the same Kafka. It writes PEERS.md and peers.json into -out;
// BENCH.md embeds PEERS.md.
var (
	peersRatesFlag = flag.String("peers-rates", "1000,5000", "-peers: live-load rates in msgs/s (1 message per transaction)")
	peersSkipFlag  = flag.String("peers-skip", "", "-peers: comma-separated parts to skip: drain, live")
	peersDrainN    = flag.Int("peers-n", 0, "-peers: backlog size (default 1,000,000; -quick 100,000)")
)

// peersDBName is the database -peers creates (not the suite's, so both can run on one server).
const peersDBName = "pgoutbox_bench_peers"

// peerKind is how a peer reads the outbox.
type peerKind string

const (
	kindRecv     peerKind = "pg_recvlogical"
	kindPgoutbox peerKind = "pgoutbox"
	kindDebezium peerKind = "debezium"
)

// peer is one reader of the outbox with its settings.
type peer struct {
	Name     string            `json:"name"`
	Short    string            `json:"short"` // slot and topic name part: [a-z0-9_]
	Kind     peerKind          `json:"kind"`
	Settings string            `json:"settings"`           // spelled out in PEERS.md
	Debezium map[string]string `json:"debezium,omitempty"` // connector/engine properties over debeziumDefaults
}

// debeziumCommon are the settings every Debezium row shares (beside connection, slot, table and topic).
const debeziumCommon = "Debezium 3.6.1.Final embedded (`DebeziumEngine.create(KeyValueHeaderChangeEventFormat.of(SimpleString, Binary, JsonByteArray))`: the async engine, " +
	"record.processing.threads default), PostgresConnector with plugin.name=pgoutput, its own slot (created before the backlog), the pgoutbox publication " +
	"(publication.autocreate.mode=disabled: the outbox table, inserts only, so both relays decode the same stream), snapshot.mode=no_data, " +
	"FileOffsetBackingStore in a temp dir with offset.flush.interval.ms=1000 (pgoutbox confirms every 1 s too); Outbox Event Router: " +
	"table.field.event.id=id (→ header `id`), table.field.event.key=key (→ record key), table.field.event.payload=payload (→ value, bytes as stored), " +
	"type and destination → headers, route.by.field=destination with a fixed route.topic.replacement; Kafka producer acks=all, enable.idempotence=true, linger.ms=10, " +
	"the rest Kafka client 4.3 defaults (batch.size=16384, max.in.flight.requests.per.connection=5, no compression); the ChangeConsumer does what Debezium " +
	"Server's Kafka sink does: send every record of the batch, wait for every ack, then markProcessed each and markBatchFinished; JVM defaults (no -Xmx/-Xms)"

func peerSet(withRecv bool) []peer {
	var ps []peer
	if withRecv {
		ps = append(ps, peer{Name: "pg_recvlogical → /dev/null", Short: "recv", Kind: kindRecv,
			Settings: "`--start --endpos=<end LSN> -o proto_version=1 -o publication_names=<pgoutbox publication> -f /dev/null`: decoding only, nothing produced"})
	}
	return append(ps,
		peer{Name: "pgoutbox run → Kafka", Short: "pgo", Kind: kindPgoutbox,
			Settings: "the daemon binary (`go build ./cmd/pgoutbox`) with its defaults: kafka.linger 10ms, batch_bytes 1MiB, acks=all, idempotent, 16 lanes, " +
				"batch_size 500, max_in_flight 20000, status_interval 1s; `--route bench=kafka:<topic>`, create_slot=false (slot created before the backlog), initial_snapshot=false, log.level=warn"},
		peer{Name: "Debezium, defaults (poll.interval.ms=500)", Short: "dbz", Kind: kindDebezium,
			Settings: "connector defaults: poll.interval.ms=500, max.batch.size=2048, max.queue.size=8192"},
		peer{Name: "Debezium, poll.interval.ms=10", Short: "dbz10", Kind: kindDebezium,
			Settings: "poll.interval.ms=10 (how long the engine waits for more events before handing over a batch that is not full), max.batch.size=2048, max.queue.size=8192",
			Debezium: map[string]string{"poll.interval.ms": "10"}},
	)
}

// PeersResult is what peers.json holds.
type PeersResult struct {
	Command  string     `json:"command"`
	When     time.Time  `json:"when"`
	Machine  Machine    `json:"machine"`
	LoadAvg  []string   `json:"loadavg_start_end"` // /proc/loadavg at the start and the end
	Quick    bool       `json:"quick"`
	Java     string     `json:"java"`
	Debezium string     `json:"debezium_classpath_dir"`
	Peers    []peer     `json:"peers"`
	Drain    *PeerDrain `json:"drain,omitempty"`
	Live     *PeerLive  `json:"live,omitempty"`
	Notes    []string   `json:"notes,omitempty"`
}

// peersEnv is what the children need: binaries, classpath, connection settings.
type peersEnv struct {
	dir       string // temp dir: configs, offsets
	pgoutbox  string // daemon binary
	classpath string // Debezium peer
	java      string
}

// peersPlan is what the -peers flags ask for.
type peersPlan struct {
	rates []int           // live-load rates
	skip  map[string]bool // parts not run: drain, live
	n     int             // backlog size
}

// runPeers runs the peer comparison and writes PEERS.md and peers.json into out (BENCH.md is re-rendered
// from results.json so it embeds the new PEERS.md).
func (b *bench) runPeers(ctx context.Context, out string, machine Machine) error {
	plan, err := b.planPeers()
	if err != nil {
		return err
	}
	res := &PeersResult{Command: "go run ./cmd/pgoutbox-bench " + strings.Join(os.Args[1:], " "), When: time.Now().UTC(),
		Machine: machine, Quick: b.quick, Peers: peerSet(true), LoadAvg: []string{loadAvg()}}
	if done, err := keepSkippedPeers(out, plan.skip, res); done || err != nil {
		return err
	}
	env, err := b.preparePeers(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(env.dir)
	res.Java = javaVersion(env.java)
	res.Debezium = filepath.Dir(strings.SplitN(env.classpath, ":", 2)[0])
	if err := b.runPeerParts(ctx, out, env, plan, res); err != nil {
		return err
	}
	b.logf("wrote %s and %s", filepath.Join(out, "PEERS.md"), filepath.Join(out, "peers.json"))
	return nil
}

// planPeers reads the -peers flags and checks that what they ask for is there.
func (b *bench) planPeers() (peersPlan, error) {
	var p peersPlan
	rates, err := parseRates(*peersRatesFlag)
	if err != nil {
		return p, fmt.Errorf("-peers-rates: %w", err)
	}
	p.rates, p.skip = rates, map[string]bool{}
	for _, s := range strings.Split(*peersSkipFlag, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if s != "drain" && s != "live" {
				return p, fmt.Errorf("-peers-skip: unknown part %q (drain, live)", s)
			}
			p.skip[s] = true
		}
	}
	if len(b.brokers) == 0 {
		return p, errors.New(`-peers needs Kafka: PGOUTBOX_TEST_KAFKA_BROKERS is unset; run eval "$(scripts/kafka.sh up)"`)
	}
	if _, err := exec.LookPath(b.recvlogical); err != nil && !p.skip["drain"] {
		return p, fmt.Errorf("pg_recvlogical not found (%s): set PGOUTBOX_PG_BIN: %w", b.recvlogical, err)
	}
	p.n = *peersDrainN
	if p.n <= 0 {
		p.n = 1_000_000
		if b.quick {
			p.n = 100_000
		}
	}
	return p, nil
}

// keepSkippedPeers copies the previous results of the parts skipped this time from out/peers.json into res;
// when every part is skipped it re-renders PEERS.md and BENCH.md from them instead, and says it is done.
func keepSkippedPeers(out string, skip map[string]bool, res *PeersResult) (done bool, err error) {
	old, err := os.ReadFile(filepath.Join(out, "peers.json"))
	if err != nil || len(skip) == 0 {
		return false, nil
	}
	var prev PeersResult // a part skipped this time keeps its previous results
	if err := json.Unmarshal(old, &prev); err != nil {
		return false, fmt.Errorf("read %s: %w", filepath.Join(out, "peers.json"), err)
	}
	if skip["drain"] && skip["live"] { // nothing to run: re-render PEERS.md and BENCH.md
		return true, writePeers(out, &prev)
	}
	res.Drain, res.Live = prev.Drain, prev.Live
	// The part run now says when; so does the kept one if it ran apart already.
	if res.Drain != nil && res.Drain.When == "" {
		res.Drain.When, res.Drain.LoadAvg = prev.When.Format("2006-01-02 15:04 UTC"), prev.LoadAvg
	}
	if res.Live != nil && res.Live.When == "" {
		res.Live.When, res.Live.LoadAvg = prev.When.Format("2006-01-02 15:04 UTC"), prev.LoadAvg
	}
	return false, nil
}

// runPeerParts runs the drain and the live load (those not skipped), saving after each.
func (b *bench) runPeerParts(ctx context.Context, out string, env *peersEnv, plan peersPlan, res *PeersResult) error {
	save := func() error {
		res.LoadAvg = append(res.LoadAvg[:1], loadAvg())
		return writePeers(out, res)
	}
	partial := len(plan.skip) > 0
	stamp := func(when *string, load *[]string, start string) {
		if partial {
			*when, *load = res.When.Format("2006-01-02 15:04 UTC"), []string{start, loadAvg()}
		}
	}
	var err error
	if !plan.skip["drain"] {
		start := loadAvg()
		if res.Drain, err = b.peersDrain(ctx, env, plan.n); err != nil {
			return err
		}
		stamp(&res.Drain.When, &res.Drain.LoadAvg, start)
		if err := save(); err != nil {
			return err
		}
	}
	if !plan.skip["live"] {
		start := loadAvg()
		if res.Live, err = b.peersLive(ctx, env, plan.rates); err != nil {
			return err
		}
		stamp(&res.Live.When, &res.Live.LoadAvg, start)
	}
	return save()
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// preparePeers builds the daemon and the Debezium peer.
func (b *bench) preparePeers(ctx context.Context) (*peersEnv, error) {
	dir, err := os.MkdirTemp("", "pgoutbox-bench-peers-")
	if err != nil {
		return nil, err
	}
	env := &peersEnv{dir: dir, pgoutbox: filepath.Join(dir, "pgoutbox")}
	b.logf("peers: building cmd/pgoutbox")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", env.pgoutbox, "./cmd/pgoutbox").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("go build ./cmd/pgoutbox (run the bench from the repository root): %w: %s", err, tail(string(out), 2000))
	}
	if env.java, err = exec.LookPath("java"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("java not found (the Debezium peer needs Java 17+): %w", err)
	}
	b.logf("peers: building the Debezium peer (bench/peers/debezium/build.sh; Maven Central the first time)")
	cmd := exec.CommandContext(ctx, "bench/peers/debezium/build.sh")
	cmd.Stderr = os.Stderr
	cp, err := cmd.Output()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench/peers/debezium/build.sh: %w", err)
	}
	env.classpath = strings.TrimSpace(string(cp))
	return env, nil
}

func javaVersion(java string) string {
	out, err := exec.Command(java, "-version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// writePeers writes peers.json and PEERS.md, then re-renders BENCH.md (which embeds PEERS.md) from results.json.
func writePeers(dir string, r *PeersResult) error {
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "peers.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "PEERS.md"), []byte(peersMarkdown(r)), 0o644); err != nil {
		return err
	}
	old, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil // no suite results yet: BENCH.md is written by the next suite run
	}
	res := &Results{}
	if err := json.Unmarshal(old, res); err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, "results.json"), err)
	}
	return writeOutputs(dir, res)
}
