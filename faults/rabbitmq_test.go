//go:build faults

package faults

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/rabbitmqtest"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

// rabbitScenario is one RabbitMQ scenario's world: the env, a durable direct exchange with one durable
// queue bound for "events", and a consumer recording the queue (it reconnects after a broker restart;
// a message it had not acked comes again, a duplicate after a fault).
type rabbitScenario struct {
	*env
	url, exchange, queue string
	c                    *rabbitmqtest.Consumer
}

func newRabbitScenario(t *testing.T, brokerURL string) *rabbitScenario {
	s := &rabbitScenario{env: newEnv(t, nil), url: brokerURL}
	ex, queues := rabbitmqtest.Topology(t, brokerURL, "direct", "events")
	s.exchange, s.queue = ex, queues[0]
	s.c = rabbitmqtest.Consume(t, brokerURL, s.queue)
	return s
}

// start runs the daemon publishing event_bus to the scenario's exchange through relayURL.
func (s *rabbitScenario) start(name, relayURL string) *daemon {
	s.t.Helper()
	c := s.config("rabbitmq-relay")
	c.Extra = fmt.Sprintf("rabbitmq:\n  url: %q\n  confirm_timeout: 2s\n  heartbeat: 2s\n  dial_timeout: 2s\n  reconnect_wait: 200ms\n", relayURL)
	d := startDaemon(s.t, name, "--config", c.writeRoute(s.t, fmt.Sprintf("{rabbitmq: {exchange: %q, routing_key: events}}", s.exchange)), "run")
	d.waitStreaming(60 * time.Second)
	return d
}

func (s *rabbitScenario) markerDelivered(since time.Time, timeout time.Duration) time.Duration {
	s.t.Helper()
	id := marker(s.t, s.l, "marker")
	if !s.c.WaitFor(id, timeout) {
		s.t.Fatalf("marker %s committed after the fault did not reach the queue within %s", id, timeout)
	}
	return time.Since(since)
}

// The RabbitMQ node (a scripts/rabbitmq.sh instance of our own) is killed with SIGKILL mid-stream and
// restarted 10 s later: the slot does not move and nothing is dead-lettered while it is down; every
// confirmed message survives in the durable queue and the rest arrives once it is back.
func TestRabbitMQBrokerKillAndRestart(t *testing.T) {
	b := rabbitmqtest.Own(t)
	s := newRabbitScenario(t, b.URL)
	d := s.start("relay", b.URL)
	chk := s.l.WatchI4(t, s.c.I4(s.url, s.queue, s.slot))
	gen := s.l.Generate(oracle.GenConfig{Prefix: "rabbit", Pause: 5 * time.Millisecond})
	time.Sleep(1500 * time.Millisecond)
	chk.Stop() // the I4 watcher reads the queue's depth, which a dead broker cannot tell
	b.Kill9()
	down := time.Now()
	ready := s.kafkaOutage(d, 3*time.Second, 7*time.Second)
	b.Run("up")
	rec := s.markerDelivered(down, 120*time.Second)
	_ = gen.Stop()
	v := s.l.Verify(t, 120*time.Second, true, s.c.Source())
	if n := len(deadLetters(t, s.pool)); n != 0 {
		t.Errorf("%d dead letters from a RabbitMQ outage", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	s.row("RabbitMQ node kill -9 mid-stream, restarted after 10 s", v, rec,
		fmt.Sprintf("down → first new commit in the queue; slot frozen and 0 dead letters while down; /readyz said %q; I4 watched before the kill: %s", trim(ready, 90), chk))
}

// A TCP proxy between the relay and the broker swallows everything for 10 s (a silent cut): the
// destination blocks (confirm timeouts), nothing is dead-lettered, the slot waits; once traffic passes
// again the relay reconnects and delivers everything.
func TestRabbitMQUnreachable(t *testing.T) {
	brokerURL := rabbitmqtest.URL(t)
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New("127.0.0.1:0", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	s := newRabbitScenario(t, brokerURL)
	via := *u
	via.Host = p.Addr()
	d := s.start("relay", via.String())
	chk := s.l.WatchI4(t, s.c.I4(s.url, s.queue, s.slot))
	gen := s.l.Generate(oracle.GenConfig{Prefix: "rabbitproxy", Pause: 5 * time.Millisecond})
	time.Sleep(time.Second)
	at := time.Now()
	p.Blackhole()
	ready := s.kafkaOutage(d, 3*time.Second, 7*time.Second)
	p.Pass()
	rec := s.markerDelivered(at, 120*time.Second)
	_ = gen.Stop()
	v := s.l.Verify(t, 120*time.Second, true, s.c.Source())
	chk.Stop()
	if n := len(deadLetters(t, s.pool)); n != 0 {
		t.Errorf("%d dead letters from a RabbitMQ network cut", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	s.row("relay↔RabbitMQ TCP proxy: blackhole 10 s", v, rec,
		fmt.Sprintf("cut → first new commit in the queue; slot frozen, 0 dead letters, /readyz %q; proxy connections %d; %s", trim(ready, 80), p.Accepted(), chk))
}
