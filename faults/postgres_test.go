//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

// PostgreSQL restarts (private cluster) with -m fast and -m immediate while the relay streams and
// transactions commit: the relay reconnects with backoff and resumes from confirmed_flush_lsn.
func TestPostgresRestart(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			cluster := pgtest.NewCluster(t)
			e := newEnv(t, cluster.NewDB(t)).withTopic(brokers, 3, nil)
			d := e.start("relay", e.config("restart-"+mode))
			chk := e.l.WatchI4(t, e.w.I4(e.slot))
			gen := e.l.Generate(oracle.GenConfig{Prefix: "pg-" + mode, Pause: 5 * time.Millisecond})
			var worst time.Duration
			const rounds = 2
			for range rounds {
				time.Sleep(1500 * time.Millisecond)
				at := time.Now()
				cluster.Restart(t, mode)
				if rec := e.markerDelivered(at, 90*time.Second); rec > worst {
					worst = rec
				}
			}
			time.Sleep(time.Second)
			_ = gen.Stop()
			v := e.l.Verify(t, 90*time.Second, true, topic.Source(t, e.brokers, e.topic))
			chk.Stop()
			reconnects := d.metric("pgoutbox_replication_reconnects_total")
			if !d.running() {
				t.Fatalf("the relay exited (%d) across PostgreSQL restarts", d.code)
			}
			if code := d.stop(30 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			unknown := e.l.Counts().Unknown
			e.row(fmt.Sprintf("PostgreSQL restart -m %s (2 rounds, private cluster)", mode), v, worst,
				fmt.Sprintf("restart begun → first new commit delivered; %d indeterminate commits; reconnects metric %s; %s", unknown, reconnects, chk))
		})
	}
}

// The relay's walsender is terminated with pg_terminate_backend three times.
func TestWalsenderTerminated(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	d := e.start("relay", e.config("terminated"))
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "term", Pause: 3 * time.Millisecond})
	var worst time.Duration
	for round := range 3 {
		time.Sleep(time.Second)
		at := time.Now()
		n := e.db.QueryInt(t, `SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.slot)
		if n != 1 {
			t.Fatalf("round %d: terminated %d walsenders, want 1", round, n)
		}
		if rec := e.markerDelivered(at, 60*time.Second); rec > worst {
			worst = rec
		}
	}
	_ = gen.Stop()
	v := e.l.Verify(t, 60*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	time.Sleep(300 * time.Millisecond) // the metric is sampled every 250 ms
	reconnects := d.metric("pgoutbox_replication_reconnects_total")
	if reconnects == "" || reconnects == "0" {
		t.Errorf("reconnects metric = %q after 3 terminated walsenders, want > 0", reconnects)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("walsender terminated (pg_terminate_backend, 3 rounds)", v, worst, fmt.Sprintf("reconnects metric %s; %s", reconnects, chk))
}

// proxiedURL points connString at the proxy.
func proxiedURL(t *testing.T, connString, addr string) string {
	t.Helper()
	u, err := url.Parse(connString)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// A TCP proxy sits between the relay and PostgreSQL (replication and pool connections alike); the
// generator writes directly. Blackhole: the relay must notice through its read timeout and reconnect
// once the network is back; reset: it reconnects at once; latency: it keeps up, nothing is re-delivered.
func TestPostgresProxy(t *testing.T) {
	cases := []struct {
		name   string
		fault  func(p *tcpproxy.Proxy)
		hold   time.Duration
		faulty bool
	}{
		{"blackhole", func(p *tcpproxy.Proxy) { p.Blackhole() }, 8 * time.Second, true},
		{"reset", func(p *tcpproxy.Proxy) { p.Reset() }, 0, true},
		{"latency", func(p *tcpproxy.Proxy) { p.SetLatency(40 * time.Millisecond) }, 10 * time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
			u, _ := url.Parse(e.db.ConnString)
			p, err := tcpproxy.New("127.0.0.1:0", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			c := e.config("proxy-" + tc.name)
			c.URL = proxiedURL(t, e.db.ConnString, p.Addr())
			d := e.start("relay", c)
			chk := e.l.WatchI4(t, e.w.I4(e.slot))
			gen := e.l.Generate(oracle.GenConfig{Prefix: "proxy-" + tc.name, Pause: 5 * time.Millisecond})
			time.Sleep(time.Second)
			at := time.Now()
			tc.fault(p)
			var rec time.Duration
			if tc.name == "latency" {
				rec = e.markerDelivered(time.Now(), 30*time.Second) // commit → delivery through the slow link
			}
			if tc.hold > 0 {
				time.Sleep(tc.hold)
				if tc.name == "blackhole" {
					// While the network is cut the slot must not move past anything unacked; nothing is
					// delivered either (the pool is cut too), so just record where it stands.
					t.Logf("blackholed for %s: slot active=%d, confirmed %s", tc.hold,
						e.db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name=$1 AND active", e.slot), e.confirmed())
				}
				p.Pass()
				p.SetLatency(0)
			}
			// Blackhole: the old connections stay dead; the relay must detect that by itself (read timeout).
			if r := e.markerDelivered(at, 120*time.Second); tc.name != "latency" {
				rec = r
			}
			time.Sleep(500 * time.Millisecond)
			_ = gen.Stop()
			v := e.l.Verify(t, 90*time.Second, tc.faulty, topic.Source(t, e.brokers, e.topic))
			chk.Stop()
			if !d.running() {
				t.Fatalf("the relay exited (%d) during the %s", d.code, tc.name)
			}
			reconnects := d.metric("pgoutbox_replication_reconnects_total")
			if tc.faulty && (reconnects == "" || reconnects == "0") {
				t.Errorf("reconnects metric = %q after a %s, want > 0", reconnects, tc.name)
			}
			if code := d.stop(30 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			notes := fmt.Sprintf("proxy connections accepted %d; reconnects metric %s; %s", p.Accepted(), reconnects, chk)
			switch tc.name {
			case "blackhole":
				notes = "cut for 8 s; recovery from the cut, includes the relay's 30 s read timeout; " + notes
			case "latency":
				notes = "+40 ms each way for 10 s; recovery = commit → delivery of a marker during the latency; " + notes
			}
			e.row("relay↔PostgreSQL TCP proxy: "+tc.name, v, rec, notes)
		})
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

var _ = context.Background
