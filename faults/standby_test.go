//go:build faults

package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
)

// Two relays on one slot: one streams, the other waits as a standby; the active one is killed with
// SIGKILL and the standby takes over, resuming from confirmed_flush_lsn.
func TestStandbyTakeover(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, nil)
	a := e.start("active", e.config("relay-a"))
	b := startDaemon(t, "standby", "--config", e.config("relay-b").write(t), "run")
	_, body := b.waitHTTP("/readyz", 60*time.Second, func(code int, body string) bool { return code == 503 && strings.Contains(body, "standby") })
	if role := b.metric(`pgoutbox_role{role="standby"}`); role != "1" {
		t.Errorf("second instance: pgoutbox_role{standby} = %q, want 1", role)
	}
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "standby", Pause: 5 * time.Millisecond})
	time.Sleep(2 * time.Second)
	a.kill()
	killed := time.Now()
	b.waitStreaming(60 * time.Second)
	takeover := time.Since(killed)
	rec := e.markerDelivered(killed, 60*time.Second)
	time.Sleep(500 * time.Millisecond)
	_ = gen.Stop()
	v := e.l.Verify(t, 60*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if code := b.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("two relays on one slot, the active one killed (-9)", v, rec,
		fmt.Sprintf("standby said %q; streaming %s after the kill (wal_sender_timeout 5s); %s", trim(body, 60), takeover.Round(100*time.Millisecond), chk))
}
