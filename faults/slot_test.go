//go:build faults

package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

const (
	exitNotMigrated = 3
	exitSlotLost    = 4
)

// stdoutRun starts a stdout relay on e, commits some traffic, waits for it and stops the relay gracefully.
func (e *env) stdoutWarmup(name string) (*daemon, config) {
	e.t.Helper()
	c := e.config(name)
	c.Stdout = true
	d := e.start(name, c)
	gen := e.l.Generate(oracle.GenConfig{Prefix: name, MaxTx: 30})
	<-gen.Done()
	e.l.Verify(e.t, 30*time.Second, false, stdoutSource(e.t, d))
	return d, c
}

// expectFatal waits for d to exit and checks the exit code and that stderr names want.
func expectFatal(t *testing.T, d *daemon, code int, want ...string) string {
	t.Helper()
	got := -1
	select {
	case <-d.done:
		got = d.code
	case <-time.After(60 * time.Second):
		d.kill()
		t.Errorf("pgoutbox %s still ran 60 s after the fault (killed); want exit %d; last log: %s", d.name, code, d.stderr.tail(1))
		return fmt.Sprintf("BUG: did not exit within 60 s (relay state went to \"stopped\", process kept running); last log: %s", trim(d.stderr.tail(1), 200))
	}
	stderr := strings.Join(d.stderr.lines(), "\n")
	if got != code {
		t.Errorf("exit code %d, want %d; stderr:\n%s", got, code, lastLines(stderr, 10))
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr does not mention %q:\n%s", w, lastLines(stderr, 10))
		}
	}
	for _, l := range d.stderr.lines() {
		if strings.HasPrefix(l, "pgoutbox: FATAL") {
			return l
		}
	}
	return lastLines(stderr, 1)
}

func dropSlot(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _ = e.pool.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.slot)
		_, err := e.pool.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", e.slot)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("drop slot: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The recorded slot is dropped, while the relay is stopped and while it runs: `run` exits 4 with the
// slot named and the replay hint, and never recreates the slot.
func TestSlotDropped(t *testing.T) {
	for _, when := range []string{"while stopped", "while streaming"} {
		t.Run(strings.ReplaceAll(when, " ", "_"), func(t *testing.T) {
			e := newEnv(t, nil)
			d, c := e.stdoutWarmup("dropped")
			at := time.Now()
			if when == "while stopped" {
				if code := d.stop(30 * time.Second); code != 0 {
					t.Fatalf("SIGTERM: exit %d", code)
				}
				dropSlot(t, e)
				d = startDaemon(t, "restart", "--config", c.write(t), "run")
			} else {
				dropSlot(t, e)
			}
			fatal := expectFatal(t, d, exitSlotLost, e.slot, "replay")
			took := time.Since(at)
			time.Sleep(time.Second)
			if n := e.slots(); n != 0 {
				t.Errorf("the slot was recreated (%d) after it was dropped", n)
			}
			report(t, row{Scenario: "slot dropped " + when, Messages: e.l.Counts().Committed, Recovery: "—",
				Notes: fmt.Sprintf("exit %d after %s, slot not recreated; %s", d.code, took.Round(100*time.Millisecond), trim(fatal, 150))})
		})
	}
}

// The slot is invalidated by max_slot_wal_keep_size while the relay is down (private cluster): `run`
// exits 4 naming wal_status lost, and the slot is not recreated.
func TestSlotInvalidated(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	e := newEnv(t, cluster.NewDB(t))
	e.db.SetServerSetting(t, "max_slot_wal_keep_size", "1MB")
	d, c := e.stdoutWarmup("invalidated")
	if code := d.stop(30 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	e.db.Exec(t, "CREATE TABLE churn (id bigserial, pad text)")
	deadline := time.Now().Add(90 * time.Second)
	var status string
	for {
		e.db.Exec(t, "INSERT INTO churn (pad) SELECT repeat('x', 500) FROM generate_series(1, 40000)")
		e.db.Exec(t, "SELECT pg_switch_wal()")
		e.db.Exec(t, "CHECKPOINT")
		_ = e.pool.QueryRow(context.Background(), "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&status)
		if status == "lost" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot wal_status %q after 90s of WAL churn, want lost", status)
		}
	}
	at := time.Now()
	d = startDaemon(t, "restart", "--config", c.write(t), "run")
	fatal := expectFatal(t, d, exitSlotLost, e.slot, "lost")
	if n := e.db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND wal_status = 'lost'", e.slot); n != 1 {
		t.Errorf("the invalidated slot was replaced or dropped (%d lost slots left)", n)
	}
	report(t, row{Scenario: "slot invalidated (max_slot_wal_keep_size=1MB, wal_status lost)", Messages: e.l.Counts().Committed, Recovery: "—",
		Notes: fmt.Sprintf("exit %d after %s; %s", d.code, time.Since(at).Round(100*time.Millisecond), trim(fatal, 150))})
}

// The publication is dropped, before a start and while streaming: exit 3 with the publication named.
func TestPublicationDropped(t *testing.T) {
	for _, when := range []string{"before start", "while streaming"} {
		t.Run(strings.ReplaceAll(when, " ", "_"), func(t *testing.T) {
			e := newEnv(t, nil)
			d, c := e.stdoutWarmup("nopub")
			if when == "before start" {
				if code := d.stop(30 * time.Second); code != 0 {
					t.Fatalf("SIGTERM: exit %d", code)
				}
			}
			at := time.Now()
			e.db.Exec(t, "DROP PUBLICATION pgoutbox_app")
			if when == "before start" {
				d = startDaemon(t, "restart", "--config", c.write(t), "run")
			} else {
				gen := e.l.Generate(oracle.GenConfig{Prefix: "nopub2", MaxTx: 20, Pause: 50 * time.Millisecond})
				<-gen.Done()
			}
			fatal := expectFatal(t, d, exitNotMigrated, "pgoutbox_app")
			if n := e.slots(); n != 1 {
				t.Errorf("%d slots after the failure, want the original one kept", n)
			}
			report(t, row{Scenario: "publication dropped " + when, Messages: e.l.Counts().Committed, Recovery: "—",
				Notes: fmt.Sprintf("exit %d after %s; %s", d.code, time.Since(at).Round(100*time.Millisecond), trim(fatal, 150))})
		})
	}
}
