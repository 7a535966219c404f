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

// Messages written through the WAL alone (the LogicalMessage transport, two Enqueue calls in three;
// the third writes rows, so transactions mix both on the same keys) under load, while the relay
// (logical_messages: true) is killed with SIGKILL at random moments, 10 times. Nothing is retained
// outside the WAL, so the slot's confirmed position is all there is: every committed message must
// still arrive, nothing rolled back (transactions, savepoints) ever, and order per key holds across
// both transports.
func TestLogicalMessagesKill9(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	e.l.UseTransports(outbox.LogicalMessage, outbox.LogicalMessage, outbox.Table)
	c := e.config("logical")
	c.Extra = "logical_messages: true\n"
	d := e.start("round0", c)
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "logical", Workers: 3, Pause: 2 * time.Millisecond})
	rng := mrand.New(mrand.NewPCG(18, uint64(time.Now().UnixNano())))
	var worst time.Duration
	const rounds = 10
	deadline := time.Now().Add(3 * time.Minute)
	for round := 1; round <= rounds; round++ {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		d.kill()
		killed := time.Now()
		d = startDaemon(t, fmt.Sprintf("round%d", round), "--config", c.write(t), "run")
		if rec := e.markerDelivered(killed, 60*time.Second); rec > worst {
			worst = rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rounds did not fit in 3 minutes (round %d)", rounds, round)
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
	rows := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox")
	if rows == 0 || int(rows) >= v.Committed {
		t.Errorf("%d rows in pkg_outbox for %d committed messages: want the table transport's share only", rows, v.Committed)
	}
	e.row("logical messages (WAL only, mixed with rows) under load, relay kill -9 at random moments (10 rounds)", v, worst,
		fmt.Sprintf("2 of 3 Enqueue calls via pg_logical_emit_message; %d of %d messages in pkg_outbox; %s", rows, v.Committed, chk))
}
