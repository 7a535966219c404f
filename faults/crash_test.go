//go:build faults

package faults

import (
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// The relay is killed with SIGKILL at random moments, 20 times, while transactions keep committing;
// each restart (same instance id, so its stale walsender is terminated) resumes from confirmed_flush_lsn.
func TestRelayKill9Random(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	c := e.config("kill9")
	d := e.start("round0", c)
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "kill9", Pause: 2 * time.Millisecond})
	rng := mrand.New(mrand.NewPCG(7, uint64(time.Now().UnixNano())))
	var worst time.Duration
	const rounds = 20
	deadline := time.Now().Add(4 * time.Minute)
	for round := 1; round <= rounds; round++ {
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		d.kill()
		killed := time.Now()
		d = startDaemon(t, fmt.Sprintf("round%d", round), "--config", c.write(t), "run")
		if rec := e.markerDelivered(killed, 60*time.Second); rec > worst {
			worst = rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 rounds did not fit in 4 minutes (round %d)", round)
		}
	}
	_ = gen.Stop()
	v := e.l.Verify(t, 90*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM after the rounds: exit %d, want 0", code)
	}
	if n := len(deadLetters(t, e.pool)); n != 0 {
		t.Errorf("%d dead letters from relay crashes", n)
	}
	e.row("relay kill -9 at random moments (20 rounds)", v, worst, fmt.Sprintf("restart → first new commit delivered; %s", chk))
}

// The worst moment: the sink has acked (the records are in Kafka) but the relay has not sent its next
// status update. A crash there must re-deliver (duplicates, same id), never lose.
func TestRelayKill9AfterAck(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	c := e.config("killack")
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	var worst time.Duration
	redelivered := 0
	const rounds = 5
	for round := range rounds {
		d := e.start(fmt.Sprintf("round%d", round), c)
		var ids []string
		var msgs []outbox.Message
		for i := range 200 {
			m := oracle.NewMessage(fmt.Sprintf("ack-k%d", i%10), 0, i)
			msgs = append(msgs, m)
			ids = append(ids, m.ID)
		}
		before := e.confirmed()
		if err := e.l.Commit(t.Context(), msgs, nil, false); err != nil {
			t.Fatal(err)
		}
		// Spin until the last record is in the topic, then kill at once: the sink acked, the status update
		// (every second) has most likely not gone out.
		if !e.w.WaitFor(ids[len(ids)-1], 30*time.Second) {
			t.Fatalf("round %d: batch not delivered", round)
		}
		d.kill()
		killed := time.Now()
		after := e.confirmed()
		if after == before {
			redelivered++
		}
		t.Logf("round %d: confirmed_flush_lsn %s before the batch, %s after the kill", round, before, after)
		d = e.start(fmt.Sprintf("round%d-restart", round), c)
		if rec := e.markerDelivered(killed, 60*time.Second); rec > worst {
			worst = rec
		}
		if code := d.stop(30 * time.Second); code != 0 {
			t.Errorf("SIGTERM: exit %d", code)
		}
	}
	v := e.l.Verify(t, 60*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if redelivered > 0 && v.Dups == 0 {
		t.Errorf("%d rounds were killed before the slot moved past an acked batch, yet nothing was re-delivered", redelivered)
	}
	e.row("relay kill -9 right after the sink ack, before the status update (5 rounds)", v, worst,
		fmt.Sprintf("%d/%d kills landed before the confirm; %s", redelivered, rounds, chk))
}

// Messages committed before the relay's first start come from the slot's initial snapshot. SIGKILL
// while its rows are being delivered (traffic continues throughout): the restart finds the snapshot
// pending, drops the slot, takes a new snapshot and delivers everything — duplicates, no loss.
func TestRelayKill9DuringInitialSnapshot(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	c := e.config("snapkill")
	gen := e.l.Generate(oracle.GenConfig{Prefix: "snap", Workers: 4, MaxMsgs: 50, RollbackPct: 5})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if e.l.Counts().Committed >= 30_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("30k messages not committed within 60s")
		}
	}
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	d := startDaemon(t, "first", "--config", c.write(t), "run")
	for deadline := time.Now().Add(60 * time.Second); e.w.Count() < 2000; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first start delivered %d messages in 60s, want 2000 of its snapshot", e.w.Count())
		}
	}
	d.kill()
	killed := time.Now()
	var pending bool
	_ = e.pool.QueryRow(t.Context(), `SELECT snapshot_pending FROM app.pkg_outbox_relay WHERE slot_name = $1`, e.slot).Scan(&pending)
	d = e.start("restart", c)
	rec := e.markerDelivered(killed, 120*time.Second)
	_ = gen.Stop()
	v := e.l.Verify(t, 120*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d, want 0", code)
	}
	if pending && v.Dups == 0 {
		t.Error("killed with the snapshot pending, yet the restart re-delivered nothing: was the snapshot taken again?")
	}
	e.row("relay kill -9 during the initial snapshot (30k+ messages committed before the first start)", v, rec,
		fmt.Sprintf("snapshot pending at the kill: %v; restart retakes it; %s", pending, chk))
}
