//go:build faults

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// PostgreSQL 17 failover: a primary and a synchronous standby that synchronizes the relay's failover
// slot (sync_replication_slots on the standby, synchronized_standby_slots on the primary). The relay
// (replication.failover: true) reaches them through one URL listing both with
// target_session_attrs=read-write, and streams to Kafka under load. The primary is stopped with
// -m immediate and the standby promoted: the same relay process reconnects to it and continues from
// the synchronized slot's position, with nothing lost and nothing from rolled-back transactions.
func TestPostgresFailover(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	primary := pgtest.NewCluster17(t)
	standby := primary.Standby(t, true)
	e := newEnv(t, pgtest.NewFailoverDB(t, primary, standby)).withTopic(brokers, 3, nil)
	c := e.config("failover")
	c.Extra = "replication:\n  failover: true\n"
	d := e.start("relay", c)
	chk := e.l.WatchI4(t, e.w.I4(e.slot))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "failover", Pause: 5 * time.Millisecond})

	began := time.Now()
	synced := e.waitSyncedSlot(standby, 90*time.Second)
	syncWait := time.Since(began).Round(100 * time.Millisecond)
	t.Logf("the standby's copy of the slot reached %s after %s", synced, syncWait)
	time.Sleep(time.Second) // under load: the relay is ahead of the synchronized copy again
	primaryConfirmed := e.confirmed()
	at := time.Now()
	primary.StopServer(t, "immediate")
	standby.Promote(t)
	rec := e.markerDelivered(at, 120*time.Second)
	time.Sleep(2 * time.Second) // more load on the new primary
	_ = gen.Stop()
	v := e.l.Verify(t, 90*time.Second, true, topic.Source(t, e.brokers, e.topic))
	chk.Stop()
	if !d.running() {
		t.Fatalf("the relay exited (%d) across the failover", d.code)
	}
	reconnects := d.metric("pgoutbox_replication_reconnects_total")
	if reconnects == "" || reconnects == "0" {
		t.Errorf("reconnects metric = %q after the failover, want > 0", reconnects)
	}
	if !d.stderr.contains("new timeline") {
		t.Errorf("the relay did not log that it continued on the promoted standby's new timeline")
	}
	if n := e.db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND failover AND synced", e.slot); n != 1 {
		t.Errorf("the promoted standby has no synchronized failover slot %s", e.slot)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	unknown := e.l.Counts().Unknown
	e.row("PostgreSQL 17 failover: primary stopped (-m immediate), synchronous standby promoted (private clusters)", v, rec,
		fmt.Sprintf("failover slot synchronized at %s (%s after the relay started), primary's slot at %s when stopped; recovery = stop → first new commit delivered through the promoted standby; %d indeterminate commits; reconnects metric %s; %s",
			synced, syncWait, primaryConfirmed, unknown, reconnects, chk))
}

// waitSyncedSlot waits until the standby holds a persistent synchronized copy of the slot that has
// caught up with the primary's slot as it was when the wait began, checkpointing the primary meanwhile
// (a checkpoint logs the running transactions that move the slot's catalog horizon, which a new copy
// waits for). It returns the copy's position.
func (e *env) waitSyncedSlot(standby *pgtest.Cluster, timeout time.Duration) pglogrepl.LSN {
	e.t.Helper()
	u, err := pgtest.WithDatabase(standby.URL, e.db.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var sb *pgx.Conn
	for sb == nil { // the standby replays the database's creation after it confirmed it, even a synchronous one
		if sb, err = pgx.Connect(ctx, u); err != nil {
			select {
			case <-ctx.Done():
				e.t.Fatalf("connect to the standby: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	defer sb.Close(context.Background())
	want, err := pglogrepl.ParseLSN(e.confirmed())
	if err != nil {
		e.t.Fatalf("primary's slot: %v", err)
	}
	for {
		e.db.Exec(e.t, "CHECKPOINT")
		var got *string
		err := sb.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
			WHERE slot_name = $1 AND synced AND NOT temporary AND invalidation_reason IS NULL`, e.slot).Scan(&got)
		if err == nil && got != nil {
			if lsn, perr := pglogrepl.ParseLSN(*got); perr == nil && lsn >= want {
				return lsn
			}
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("the standby has no synchronized copy of slot %s at %s or later after %s (last: %v, %v)", e.slot, want, timeout, got, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
