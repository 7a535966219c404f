package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseProps reads a Java properties file the way java.util.Properties does for the escapes propEscape writes.
func parseProps(t *testing.T, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line without '=': %q", line)
		}
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
				switch v[i] {
				case 'n':
					b.WriteByte('\n')
				case 'r':
					b.WriteByte('\r')
				default:
					b.WriteByte(v[i])
				}
				continue
			}
			b.WriteByte(v[i])
		}
		m[k] = b.String()
	}
	return m
}

func TestDebeziumProps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		peer peer
		want map[string]string
	}{
		{"defaults", "postgres://relay:s3cr%3Dt%23x@db.local:6432/app?sslmode=require", peerSet(false)[1], map[string]string{
			"database.hostname": "db.local", "database.port": "6432", "database.user": "relay", "database.password": "s3cr=t#x",
			"database.dbname": "app", "database.sslmode": "require",
			"plugin.name": "pgoutput", "slot.name": "pd_dbz_0", "publication.name": "pgoutbox_pd", "publication.autocreate.mode": "disabled",
			"table.include.list": "pd.pkg_outbox", "snapshot.mode": "no_data",
			"offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore", "offset.storage.file.filename": "/tmp/x/pd_dbz_0.offsets",
			"transforms.outbox.type":                 "io.debezium.transforms.outbox.EventRouter",
			"transforms.outbox.table.field.event.id": "id", "transforms.outbox.table.field.event.key": "key",
			"transforms.outbox.table.field.event.payload": "payload", "transforms.outbox.route.topic.replacement": "t.pd",
			"producer.bootstrap.servers": "127.0.0.1:1,127.0.0.1:2", "producer.acks": "all", "producer.enable.idempotence": "true", "producer.linger.ms": "10",
		}},
		{"poll interval lowered, default port and sslmode", "postgres://postgres@127.0.0.1/bench", peerSet(false)[2], map[string]string{
			"poll.interval.ms": "10", "database.port": "5432", "database.sslmode": "prefer", "database.password": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := debeziumProps(tt.url, []string{"127.0.0.1:1", "127.0.0.1:2"}, tt.peer, "pd", "pd_dbz_0", "t.pd", "/tmp/x/pd_dbz_0.offsets")
			if err != nil {
				t.Fatal(err)
			}
			got := parseProps(t, s)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if _, ok := got["poll.interval.ms"]; ok != (tt.peer.Debezium["poll.interval.ms"] != "") {
				t.Errorf("poll.interval.ms set = %v for peer %s", ok, tt.peer.Name)
			}
		})
	}
	if _, err := debeziumProps("postgres:///bench", nil, peerSet(false)[1], "pd", "s", "t", "o"); err == nil {
		t.Error("a URL without host and user: no error")
	}
}

func TestSeqTrackerWindow(t *testing.T) {
	t.Parallel()
	tr := newSeqTracker(10)
	base := time.Unix(1000, 0)
	for i := range 6 {
		s, err := tr.take()
		if err != nil {
			t.Fatal(err)
		}
		tr.commitAt[s].Store(base.Add(time.Duration(i) * time.Second).UnixNano())
	}
	// 0: before the window; 1: 5 ms; 2: 20 ms; 3: received before its COMMIT returned (counts as 0);
	// 4: never received; 5: after the window.
	recv := map[int64]time.Duration{0: time.Millisecond, 1: 5 * time.Millisecond, 2: 20 * time.Millisecond, 3: -time.Millisecond, 5: time.Millisecond}
	for s, d := range recv {
		tr.recv(seqPayload(s, 200), time.Unix(0, tr.commitAt[s].Load()).Add(d))
	}
	tr.recv(seqPayload(1, 200), base.Add(time.Hour)) // a duplicate keeps the first receipt
	tr.recv([]byte("short"), base)                   // not a bench payload
	h, missing := tr.window(base.Add(time.Second), base.Add(5*time.Second), tr.next.Load())
	if h.Count() != 3 || missing != 1 {
		t.Fatalf("window: %d latencies, %d missing; want 3 and 1", h.Count(), missing)
	}
	if s := h.Summary(); s.MaxMS < 19 || s.MaxMS > 25 {
		t.Errorf("max %.1f ms, want ~20 (a duplicate must not count)", s.MaxMS)
	}
	if tr.received.Load() != 5 {
		t.Errorf("received %d, want 5", tr.received.Load())
	}
	for range 4 {
		_, _ = tr.take()
	}
	if _, err := tr.take(); err == nil {
		t.Error("take past the tracker's size: no error")
	}
}

func TestPeerChildUsage(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &peerChild{name: "busy sh", cmd: cmd, exited: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	defer c.stop()
	var cpu float64
	var hwm int64
	for deadline := time.Now().Add(20 * time.Second); cpu == 0 && time.Now().Before(deadline); {
		var err error
		if cpu, hwm, err = c.usage(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cpu <= 0 || hwm <= 0 {
		t.Fatalf("usage of a busy child: cpu %.2f s, VmHWM %d B; want both > 0", cpu, hwm)
	}
	c.stop()
	select {
	case <-c.exited:
	default:
		t.Fatal("stop returned before the child exited")
	}
}

func TestPeersSectionInBench(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "results.json"), []byte(`{"command":"suite"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &PeersResult{Command: "go run ./cmd/pgoutbox-bench -peers", Peers: peerSet(true), LoadAvg: []string{"1.00 1.00 1.00", "2.00 2.00 2.00"},
		Drain: &PeerDrain{N: 1000, Partitions: 8, Repeats: 1, Variants: []PeerDrainVariant{
			{Name: "pg_recvlogical → /dev/null", Baseline: true, Rate: Summary{Median: 100_000}},
			{Name: "Debezium, defaults (poll.interval.ms=500)", Rate: Summary{Median: 20_000}, RatioToRecv: Summary{Median: 0.2}},
		}},
		Live: &PeerLive{Rates: []int{1000}, Variants: []PeerLiveVariant{
			{Name: "pgoutbox run → Kafka", Short: "pgo", Points: []PeerLivePoint{{Rate: 1000, Runs: []PeerLiveRun{{LoadAvg: "1.5 1 1"}}}}},
			{Name: "Debezium, defaults (poll.interval.ms=500)", Short: "dbz", Points: []PeerLivePoint{{Rate: 1000}}},
		}},
	}
	r.Live.Variants[0].Points[0].P50MS, r.Live.Variants[0].Points[0].P99MS = Summary{Median: 10}, Summary{Median: 20}
	r.Live.Variants[1].Points[0].P50MS, r.Live.Variants[1].Points[0].P99MS = Summary{Median: 500}, Summary{Median: 1000}
	if err := writePeers(dir, r); err != nil {
		t.Fatal(err)
	}
	bench, err := os.ReadFile(filepath.Join(dir, "BENCH.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Peers", "| Debezium, defaults (poll.interval.ms=500) | 20000 | 0.20 |", "poll.interval.ms=500, max.batch.size=2048, max.queue.size=8192",
		"1000 msgs/s: p50 50.0×, p99 50.0×", "| 1.5 |"} {
		if !strings.Contains(string(bench), want) {
			t.Errorf("BENCH.md lacks %q", want)
		}
	}
	var back PeersResult
	j, _ := os.ReadFile(filepath.Join(dir, "peers.json"))
	if err := json.Unmarshal(j, &back); err != nil || back.Drain == nil || len(back.Live.Variants) != 2 {
		t.Fatalf("peers.json does not read back: %v", err)
	}
}
