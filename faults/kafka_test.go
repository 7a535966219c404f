//go:build faults

package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

// kafkaOutage checks what must hold while the sink is down: the slot does not move, nothing is
// dead-lettered, /readyz says why. It returns the /readyz body.
func (e *env) kafkaOutage(d *daemon, settle, hold time.Duration) string {
	e.t.Helper()
	time.Sleep(settle) // in-flight sends fail, the lanes block
	frozen := e.confirmed()
	time.Sleep(hold)
	if now := e.confirmed(); now != frozen {
		e.t.Errorf("confirmed_flush_lsn moved from %s to %s while the broker was unreachable", frozen, now)
	}
	if n := len(deadLetters(e.t, e.pool)); n != 0 {
		e.t.Errorf("%d dead letters while the broker was unreachable", n)
	}
	code, body := d.get("/readyz")
	if code != 503 || !strings.Contains(body, "blocked") {
		e.t.Errorf("/readyz while the broker is unreachable = %d %q, want 503 naming the blocked destination", code, strings.TrimSpace(body))
	}
	return strings.TrimSpace(body)
}

// The broker (a scripts/kafka.sh instance of our own) is killed with SIGKILL mid-stream and restarted
// 10 s later; then stopped gracefully and restarted. The slot must not move while it is down, nothing
// is dead-lettered, and everything arrives once it is back.
func TestKafkaBrokerKillAndRestart(t *testing.T) {
	b := newScriptBroker(t)
	for _, mode := range []string{"kill -9", "graceful stop"} {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			e := newEnv(t, nil).withTopic([]string{b.addr}, 3, nil)
			d := e.start("relay", e.config("kafka-"+strings.ReplaceAll(mode, " ", "")))
			chk := e.l.WatchI4(t, e.w.I4(e.slot))
			gen := e.l.Generate(oracle.GenConfig{Prefix: "kafka", Pause: 5 * time.Millisecond})
			time.Sleep(1500 * time.Millisecond)
			if mode == "kill -9" {
				b.kill9()
			} else {
				b.script("down")
			}
			down := time.Now()
			ready := e.kafkaOutage(d, 3*time.Second, 7*time.Second)
			b.script("up")
			rec := e.markerDelivered(down, 120*time.Second)
			_ = gen.Stop()
			v := e.l.Verify(t, 120*time.Second, true, topic.Source(t, e.brokers, e.topic))
			chk.Stop()
			if n := len(deadLetters(t, e.pool)); n != 0 {
				t.Errorf("%d dead letters from a broker outage", n)
			}
			if code := d.stop(30 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			e.row(fmt.Sprintf("Kafka broker %s mid-stream, restarted after 10 s", mode), v, rec,
				fmt.Sprintf("down → first new commit delivered; slot frozen and 0 dead letters while down; /readyz said %q; %s", trim(ready, 90), chk))
		})
	}
}

// A TCP proxy sits between the relay and a broker that advertises the proxy's address.
func TestKafkaProxy(t *testing.T) {
	b := newProxiedBroker(t)
	cases := []struct {
		name   string
		fault  func(p *tcpproxy.Proxy)
		hold   time.Duration
		faulty bool
	}{
		{"blackhole", func(p *tcpproxy.Proxy) { p.Blackhole() }, 10 * time.Second, true},
		{"reset", func(p *tcpproxy.Proxy) { p.Reset() }, 0, true},
		{"latency", func(p *tcpproxy.Proxy) { p.SetLatency(40 * time.Millisecond) }, 10 * time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := b.proxy
			p.Pass()
			p.SetLatency(0)
			e := newEnv(t, nil).withTopic([]string{b.addr()}, 3, nil)
			d := e.start("relay", e.config("kproxy-"+tc.name))
			chk := e.l.WatchI4(t, e.w.I4(e.slot))
			gen := e.l.Generate(oracle.GenConfig{Prefix: "kproxy-" + tc.name, Pause: 5 * time.Millisecond})
			time.Sleep(time.Second)
			at := time.Now()
			tc.fault(p)
			var rec time.Duration
			notes := ""
			switch tc.name {
			case "blackhole":
				ready := e.kafkaOutage(d, 3*time.Second, tc.hold-3*time.Second)
				notes = fmt.Sprintf("cut for 10 s (the test's own consumer too); slot frozen, 0 dead letters, /readyz %q; ", trim(ready, 80))
				p.Pass()
			case "latency":
				rec = e.markerDelivered(time.Now(), 30*time.Second)
				time.Sleep(tc.hold)
				p.SetLatency(0)
				notes = "+40 ms each way for 10 s; recovery = commit → delivery of a marker during the latency; "
			}
			if r := e.markerDelivered(at, 120*time.Second); tc.name != "latency" {
				rec = r
			}
			time.Sleep(500 * time.Millisecond)
			_ = gen.Stop()
			v := e.l.Verify(t, 120*time.Second, tc.faulty, topic.Source(t, e.brokers, e.topic))
			chk.Stop()
			if n := len(deadLetters(t, e.pool)); n != 0 {
				t.Errorf("%d dead letters from a Kafka network fault", n)
			}
			if code := d.stop(30 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			e.row("relay↔Kafka TCP proxy: "+tc.name, v, rec, notes+fmt.Sprintf("proxy connections accepted %d; %s", p.Accepted(), chk))
		})
	}
}

func trim(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
