//go:build faults

package faults

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgoutbox/pgoutbox/internal/natstest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

// writeRoute writes c with the event_bus route replaced by route (YAML flow mapping, e.g.
// "{nats: {subject: x}}") and returns the file's path.
func (c config) writeRoute(t *testing.T, route string) string {
	t.Helper()
	c.Topic, c.Webhook, c.Stdout = "", "", true
	p := c.write(t)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	const stdout = "  event_bus: {stdout: {}}\n"
	if !bytes.Contains(b, []byte(stdout)) {
		t.Fatalf("config without the stdout route to replace:\n%s", b)
	}
	b = bytes.Replace(b, []byte(stdout), []byte("  event_bus: "+route+"\n"), 1)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// natsScenario is one NATS scenario's world: the env, a stream on the server and a watcher of it.
type natsScenario struct {
	*env
	url, subject, stream string
	w                    *natstest.Watcher
}

// newNATSScenario creates a stream (duplicate window 2 minutes) for a fresh subject on the server at
// url, and watches it from the test (directly, never through a proxy).
func newNATSScenario(t *testing.T, serverURL string) *natsScenario {
	s := &natsScenario{env: newEnv(t, nil), url: serverURL, subject: "pgoutbox.faults." + natstest.Name(t)}
	s.stream = natstest.CreateStream(t, serverURL, jetstream.StreamConfig{Duplicates: 2 * time.Minute}, s.subject)
	s.w = natstest.Watch(t, serverURL, s.stream)
	return s
}

// start runs the daemon publishing event_bus to the scenario's subject through relayURL. Every run has
// the same instance id, so a restart after a kill terminates its stale walsender.
func (s *natsScenario) start(name, relayURL string) *daemon {
	s.t.Helper()
	c := s.config("nats-relay")
	c.Extra = fmt.Sprintf("nats:\n  urls: [%q]\n  ack_timeout: 2s\n  reconnect_wait: 200ms\n", relayURL)
	d := startDaemon(s.t, name, "--config", c.writeRoute(s.t, fmt.Sprintf("{nats: {subject: %q}}", s.subject)), "run")
	d.waitStreaming(60 * time.Second)
	return d
}

func (s *natsScenario) markerDelivered(since time.Time, timeout time.Duration) time.Duration {
	s.t.Helper()
	id := marker(s.t, s.l, "marker")
	if !s.w.WaitFor(id, timeout) {
		s.t.Fatalf("marker %s committed after the fault did not reach the stream within %s", id, timeout)
	}
	return time.Since(since)
}

func (s *natsScenario) verify(faulty bool) oracle.Verdict {
	return s.l.Verify(s.t, 120*time.Second, faulty, natstest.Source(s.t, s.url, s.stream))
}

// The NATS server (a scripts/nats.sh instance of our own, JetStream file store) is killed with SIGKILL
// mid-stream and restarted 10 s later: the slot does not move and nothing is dead-lettered while it is
// down; everything arrives once it is back, and the stream drops the re-published messages it had
// stored (Nats-Msg-Id within the duplicate window).
func TestNATSServerKillAndRestart(t *testing.T) {
	srv := natstest.Own(t)
	s := newNATSScenario(t, srv.URL)
	d := s.start("relay", srv.URL)
	chk := s.l.WatchI4(t, s.w.I4(s.slot))
	gen := s.l.Generate(oracle.GenConfig{Prefix: "nats", Pause: 5 * time.Millisecond})
	time.Sleep(1500 * time.Millisecond)
	srv.Kill9()
	down := time.Now()
	ready := s.kafkaOutage(d, 3*time.Second, 7*time.Second)
	srv.Run("up")
	rec := s.markerDelivered(down, 120*time.Second)
	_ = gen.Stop()
	v := s.verify(true)
	chk.Stop()
	if n := len(deadLetters(t, s.pool)); n != 0 {
		t.Errorf("%d dead letters from a NATS outage", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	s.row("NATS server kill -9 mid-stream, restarted after 10 s", v, rec,
		fmt.Sprintf("down → first new commit in the stream; slot frozen and 0 dead letters while down; /readyz said %q; %s", trim(ready, 90), chk))
}

// A TCP proxy between the relay and the NATS server swallows everything for 10 s (a silent cut): the
// destination blocks (PubAck timeouts), nothing is dead-lettered, the slot waits; once traffic passes
// again the relay reconnects and delivers everything.
func TestNATSUnreachable(t *testing.T) {
	serverURL := natstest.URL(t)
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.New("127.0.0.1:0", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	s := newNATSScenario(t, serverURL)
	d := s.start("relay", "nats://"+p.Addr())
	chk := s.l.WatchI4(t, s.w.I4(s.slot))
	gen := s.l.Generate(oracle.GenConfig{Prefix: "natsproxy", Pause: 5 * time.Millisecond})
	time.Sleep(time.Second)
	at := time.Now()
	p.Blackhole()
	ready := s.kafkaOutage(d, 3*time.Second, 7*time.Second)
	p.Pass()
	rec := s.markerDelivered(at, 120*time.Second)
	_ = gen.Stop()
	v := s.verify(true)
	chk.Stop()
	if n := len(deadLetters(t, s.pool)); n != 0 {
		t.Errorf("%d dead letters from a NATS network cut", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	s.row("relay↔NATS TCP proxy: blackhole 10 s", v, rec,
		fmt.Sprintf("cut → first new commit in the stream; slot frozen, 0 dead letters, /readyz %q; proxy connections %d; %s", trim(ready, 80), p.Accepted(), chk))
}

// The relay is killed with SIGKILL at random moments, 8 times within the stream's 2-minute duplicate
// window, while transactions keep committing: every restart re-publishes what was stored but not yet
// confirmed, and the stream drops it, so it holds every committed message exactly once.
func TestNATSRelayKill9NoDuplicates(t *testing.T) {
	s := newNATSScenario(t, natstest.URL(t))
	d := s.start("round0", s.url)
	chk := s.l.WatchI4(t, s.w.I4(s.slot))
	gen := s.l.Generate(oracle.GenConfig{Prefix: "natskill", Pause: 2 * time.Millisecond})
	started := time.Now()
	var worst time.Duration
	for round := 1; round <= 8; round++ {
		time.Sleep(time.Duration(300+round*137%900) * time.Millisecond)
		d.kill()
		killed := time.Now()
		d = s.start(fmt.Sprintf("round%d", round), s.url)
		worst = max(worst, s.markerDelivered(killed, 60*time.Second))
	}
	_ = gen.Stop()
	v := s.verify(true)
	chk.Stop()
	if within := time.Since(started); within > 2*time.Minute {
		t.Fatalf("the rounds took %s, longer than the duplicate window", within)
	}
	if v.Dups != 0 {
		t.Errorf("the stream holds %d duplicates after relay kills within the duplicate window, want 0", v.Dups)
	}
	if n := len(deadLetters(t, s.pool)); n != 0 {
		t.Errorf("%d dead letters from relay crashes", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM after the rounds: exit %d", code)
	}
	s.row("relay kill -9 ×8 publishing to NATS (duplicate window 2 min)", v, worst,
		fmt.Sprintf("restart → first new commit in the stream; duplicates in the stream %d (Nats-Msg-Id); %s", v.Dups, chk))
}
