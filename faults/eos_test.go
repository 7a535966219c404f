//go:build faults

package faults

import (
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// withExactlyOnce creates a compacted position topic and returns c with kafka.exactly_once on.
func (e *env) withExactlyOnce(c config, extra string) config {
	e.t.Helper()
	pos := e.topic + ".positions"
	kafkatest.CreateTopic(e.t, e.brokers, pos, 1, map[string]string{"cleanup.policy": "compact"})
	c.KafkaExtra += fmt.Sprintf("  exactly_once: true\n  position_topic: %q\n%s", pos, extra)
	return c
}

// waitSnapshotComplete waits until the slot's initial snapshot is recorded as complete.
func (e *env) waitSnapshotComplete(timeout time.Duration) {
	e.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		var pending bool
		if err := e.pool.QueryRow(e.t.Context(), `SELECT snapshot_pending FROM app.pkg_outbox_relay WHERE slot_name = $1`, e.slot).Scan(&pending); err == nil && !pending {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the initial snapshot of slot %s is not complete after %s", e.slot, timeout)
		}
	}
}

// Exactly-once mode: the relay is killed with SIGKILL 10 times at random moments and 5 times right
// after a batch reached Kafka (before the status update), while transactions keep committing. A
// read_committed consumer must see every committed message exactly once.
func TestExactlyOnceKill9(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	c := e.withExactlyOnce(e.config("eoskill"), "")
	d := e.start("round0", c)
	gen := e.l.Generate(oracle.GenConfig{Prefix: "eoskill", Pause: 2 * time.Millisecond})
	// Exactly-once starts once the initial snapshot is complete: a crash before that takes the snapshot
	// again, whose rows are delivered again in any mode (TestRelayKill9DuringInitialSnapshot).
	e.waitSnapshotComplete(30 * time.Second)
	rng := mrand.New(mrand.NewPCG(11, uint64(time.Now().UnixNano())))
	var worst time.Duration
	afterAck := 0
	for round := 1; round <= 15; round++ {
		if round <= 10 {
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		} else { // right after a batch is in Kafka: the slot has most likely not been confirmed past it
			var msgs []outbox.Message
			for i := range 100 {
				msgs = append(msgs, oracle.NewMessage(fmt.Sprintf("eosack-k%d", i%10), 0, i))
			}
			before := e.confirmed()
			if err := e.l.Commit(t.Context(), msgs, nil, false); err != nil {
				t.Fatal(err)
			}
			if !e.w.WaitFor(msgs[len(msgs)-1].ID, 30*time.Second) {
				t.Fatalf("round %d: batch not in the topic", round)
			}
			d.kill()
			if e.confirmed() == before {
				afterAck++
			}
		}
		if d.running() {
			d.kill()
		}
		killed := time.Now()
		d = startDaemon(t, fmt.Sprintf("round%d", round), "--config", c.write(t), "run")
		if rec := e.markerDelivered(killed, 60*time.Second); rec > worst {
			worst = rec
		}
	}
	_ = gen.Stop()
	v := e.l.Verify(t, 120*time.Second, false, topic.CommittedSource(t, e.brokers, e.topic)) // false: any duplicate fails
	for _, ex := range v.Examples {
		t.Log(ex)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM after the rounds: exit %d, want 0", code)
	}
	if n := len(deadLetters(t, e.pool)); n != 0 {
		t.Errorf("%d dead letters from relay crashes", n)
	}
	e.row("exactly-once: relay kill -9, 10 at random moments + 5 right after the Kafka commit (read_committed consumer)", v, worst,
		fmt.Sprintf("%d/5 kills landed before the slot confirm; 0 duplicates required", afterAck))
}

// Exactly-once mode, two relays on one slot: the active one is paused (SIGSTOP) inside an open Kafka
// transaction, the standby takes over (its producer fences the paused one's transactional.id), then
// the paused one resumes: its commit is fenced and nothing it sent becomes visible to read_committed
// consumers; it exits (code 1) instead of failing every Send, and started again, as a supervisor
// would, it stands by; every committed message is seen exactly once.
func TestExactlyOnceZombieFenced(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	// A transaction stays open 2s after its first message: the pause lands inside one.
	ca := e.withExactlyOnce(e.config("zombie-a"), "  commit_interval: 2s\n").write(t)
	a := startDaemon(t, "active", "--config", ca, "run")
	a.waitStreaming(60 * time.Second)
	cb := e.config("zombie-b")
	cb.KafkaExtra = fmt.Sprintf("  exactly_once: true\n  position_topic: %q\n", e.topic+".positions")
	b := startDaemon(t, "standby", "--config", cb.write(t), "run")
	b.waitHTTP("/readyz", 60*time.Second, func(code int, body string) bool { return strings.Contains(body, "standby") })
	gen := e.l.Generate(oracle.GenConfig{Prefix: "zombie", Pause: 5 * time.Millisecond})
	time.Sleep(3 * time.Second)
	if err := syscall.Kill(a.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	b.waitStreaming(60 * time.Second) // after wal_sender_timeout (5s) the slot is free
	took := time.Since(paused)
	time.Sleep(3 * time.Second) // the new active relay delivers
	if err := syscall.Kill(a.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	code := a.wait(60 * time.Second)
	fenced := a.stderr.contains("producer fenced") && a.stderr.contains("FATAL")
	if code != 1 || !fenced {
		t.Errorf("the resumed zombie exited %d, want 1 with its producer fenced (FATAL); stderr tail:\n%s", code, a.stderr.tail(20))
	}
	again := startDaemon(t, "zombie-restarted", "--config", ca, "run")
	again.waitHTTP("/readyz", 60*time.Second, func(code int, body string) bool { return strings.Contains(body, "standby") })
	rec := e.markerDelivered(time.Now(), 60*time.Second)
	_ = gen.Stop()
	v := e.l.Verify(t, 120*time.Second, false, topic.CommittedSource(t, e.brokers, e.topic))
	if code := again.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM of the restarted zombie (standing by): exit %d, want 0", code)
	}
	if code := b.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM of the new active relay: exit %d, want 0", code)
	}
	e.row("exactly-once: active relay paused (SIGSTOP) in an open Kafka transaction, standby takes over, zombie resumed", v, took,
		fmt.Sprintf("zombie fenced, exited %d, restarted as a standby; marker after resume %s; read_committed consumer", code, rec.Round(10*time.Millisecond)))
}

// Exactly-once mode: the broker (our own) is killed with SIGKILL mid-stream and restarted 10 s later.
// The slot does not move while it is down, nothing is dead-lettered, and a read_committed consumer sees
// every committed message exactly once afterwards (transactions cut by the kill are aborted or
// completed by the broker, never half visible, never produced twice).
func TestExactlyOnceBrokerKill(t *testing.T) {
	b := newScriptBroker(t)
	e := newEnv(t, nil).withTopic([]string{b.addr}, 3, nil)
	d := e.start("relay", e.withExactlyOnce(e.config("eos-broker"), ""))
	e.waitSnapshotComplete(60 * time.Second)
	gen := e.l.Generate(oracle.GenConfig{Prefix: "eosbroker", Pause: 5 * time.Millisecond})
	time.Sleep(1500 * time.Millisecond)
	b.kill9()
	down := time.Now()
	ready := e.kafkaOutage(d, 3*time.Second, 7*time.Second)
	b.script("up")
	rec := e.markerDelivered(down, 120*time.Second)
	_ = gen.Stop()
	v := e.l.Verify(t, 120*time.Second, false, topic.CommittedSource(t, e.brokers, e.topic))
	if n := len(deadLetters(t, e.pool)); n != 0 {
		t.Errorf("%d dead letters from a broker outage", n)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("exactly-once: Kafka broker kill -9 mid-stream, restarted after 10 s (read_committed consumer)", v, rec,
		fmt.Sprintf("down → first new commit delivered; slot frozen and 0 dead letters while down; /readyz said %q", trim(ready, 90)))
}
