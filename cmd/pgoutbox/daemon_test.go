package main_test

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestGracefulStop: SIGTERM drains and exits 0; every message is printed exactly once within a run, a
// restart re-prints nothing that was delivered before the stop, and nothing is lost across it.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	env := baseEnv(db)
	// Committed before the relay ever ran: the first start delivers it from the slot's initial snapshot.
	before := enqueue(t, db, "orders", 100, 10)
	d := start(t, "run1", env, "--route", "orders=stdout", "--instance-id", "graceful")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, body string) bool { return code == 200 })
	during := enqueue(t, db, "orders", 100, 5)
	d.stdout.waitFor(t, 30*time.Second, "the first 200 messages", hasAll(append(before, during...)))

	// Scrape metrics while running.
	_, body := d.waitHTTP("/metrics", 10*time.Second, func(_ int, b string) bool {
		return metric(b, `pgoutbox_messages_delivered_total{destination="orders"}`) == "200" && metric(b, "pgoutbox_snapshot_pending") == "0"
	})
	// Every series of the relay carries the outbox label: the schema names the implicit outbox.
	for _, want := range []string{`pgoutbox_role{outbox="app",role="streaming"} 1`, `pgoutbox_role{outbox="app",role="standby"} 0`,
		`pgoutbox_destination_blocked{destination="orders",outbox="app"} 0`, `pgoutbox_slot_lag_bytes{outbox="app"}`,
		`pgoutbox_slot_confirmed_lsn{outbox="app"}`, `pgoutbox_slot_wal_status{outbox="app",status="reserved"} 1`,
		`pgoutbox_snapshot_pending{outbox="app"} 0`, `pgoutbox_in_flight_messages{outbox="app"}`, `pgoutbox_dead_letters{outbox="app"} 0`,
		`pgoutbox_commit_to_ack_seconds_count{destination="orders",outbox="app"} 200`, `pgoutbox_replication_reconnects_total{outbox="app"} 0`,
		`pgoutbox_build_info{version="test"} 1`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The 100 messages enqueued while streaming came in 10 transactions, each decoded once.
	for _, stage := range []string{"walsender", "receive"} {
		if n := metric(body, `pgoutbox_source_delay_seconds_count{outbox="app",stage="`+stage+`"}`); n == "" || n == "0" {
			t.Errorf("pgoutbox_source_delay_seconds{stage=%q} counted %q transactions", stage, n)
		}
	}
	if code, body := d.get("/healthz"); code != 200 || !strings.Contains(body, "streaming") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := d.get("/readyz"); code != 200 || !strings.Contains(body, "streaming") {
		t.Errorf("/readyz = %d %q", code, body)
	}

	// SIGTERM while messages keep being committed.
	var wg sync.WaitGroup
	var racing []string
	wg.Add(1)
	go func() { defer wg.Done(); racing = enqueue(t, db, "orders", 300, 3) }()
	d.stdout.waitFor(t, 30*time.Second, "some of the racing messages", func(all []string) bool { return len(all) >= 230 })
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	wg.Wait()
	d.waitLog("relay stopped", time.Second)
	for id, n := range counts(allOf(d.stdout)) {
		if n != 1 {
			t.Errorf("run 1 printed %s %d times", id, n)
		}
	}

	// Restart: nothing delivered before the stop comes again; everything missing arrives.
	d2 := start(t, "run2", env, "--route", "orders=stdout", "--instance-id", "graceful")
	marker := enqueue(t, db, "orders", 1, 1)
	all := append(append(append([]string{}, before...), during...), racing...)
	d2.stdout.waitFor(t, 60*time.Second, "every message across both runs", func(l2 []string) bool {
		return hasAll(append(all, marker...))(append(allOf(d.stdout), l2...))
	})
	c2 := counts(allOf(d2.stdout))
	for _, id := range append(before, during...) {
		if c2[id] > 0 {
			t.Errorf("message %s, delivered and confirmed before the graceful stop, was re-delivered", id)
		}
	}
	c1 := counts(allOf(d.stdout))
	dups := 0
	for id := range c2 {
		if c1[id] > 0 {
			dups++
		}
	}
	t.Logf("run 1 printed %d, run 2 printed %d, %d re-delivered (in flight at the stop)", len(c1), len(c2), dups)
	d2.signal(syscall.SIGINT)
	if code := d2.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGINT = %d, want 0", code)
	}
}

func allOf(l *lines) []string { s, _ := l.snapshot(); return s }

// TestKillRestartNoLoss: SIGKILL mid-stream, restart: every committed message arrives (duplicates allowed).
func TestKillRestartNoLoss(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	env := baseEnv(db)
	d := start(t, "victim", env, "--route", "orders=stdout", "--instance-id", "killme")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })

	var wg sync.WaitGroup
	var produced []string
	wg.Add(1)
	go func() { defer wg.Done(); produced = enqueue(t, db, "orders", 1500, 5) }()
	d.stdout.waitFor(t, 30*time.Second, "some deliveries", func(all []string) bool { return len(all) >= 200 })
	d.signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
	wg.Wait()

	d2 := start(t, "restarted", env, "--route", "orders=stdout", "--instance-id", "killme")
	d2.stdout.waitFor(t, 60*time.Second, "all 1500 messages across both runs", func(l2 []string) bool {
		return hasAll(produced)(append(allOf(d.stdout), l2...))
	})
	t.Logf("first run printed %d lines before SIGKILL, second %d", len(allOf(d.stdout)), len(allOf(d2.stdout)))
	d2.signal(syscall.SIGTERM)
	if code := d2.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code = %d", code)
	}
}

// TestStandbyTakeover: a second instance reports standby, then takes over when the first is killed.
func TestStandbyTakeover(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	env := baseEnv(db)
	a := start(t, "active", env, "--route", "orders=stdout", "--instance-id", "node-a")
	a.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })
	b := start(t, "standby", env, "--route", "orders=stdout", "--instance-id", "node-b")
	code, _ := b.waitHTTP("/readyz", 30*time.Second, func(_ int, body string) bool { return strings.Contains(body, "standby") })
	if code != 503 {
		t.Errorf("standby /readyz = %d, want 503", code)
	}
	b.waitHTTP("/metrics", 10*time.Second, func(_ int, body string) bool {
		return metric(body, `pgoutbox_role{role="standby"}`) == "1"
	})
	if code, _ := b.get("/healthz"); code != 200 {
		t.Errorf("standby /healthz = %d, want 200", code)
	}
	first := enqueue(t, db, "orders", 20, 4)
	a.stdout.waitFor(t, 30*time.Second, "active delivers", hasAll(first))
	if n := len(ids(allOf(b.stdout))); n != 0 {
		t.Errorf("standby printed %d messages", n)
	}

	// status shows the active instance.
	if code, out, errs := cli(t, env, "status"); code != 0 || !strings.Contains(out, "pgoutbox-node-a") {
		t.Errorf("status = %d\n%s\n%s", code, out, errs)
	}

	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	second := enqueue(t, db, "orders", 20, 4)
	b.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	b.stdout.waitFor(t, 30*time.Second, "standby delivers after takeover", hasAll(second))
	b.waitHTTP("/metrics", 10*time.Second, func(_ int, body string) bool {
		return metric(body, `pgoutbox_role{role="streaming"}`) == "1"
	})
	b.signal(syscall.SIGTERM)
	if code := b.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code = %d", code)
	}
}

// TestSlotLostExitCode: a recorded slot that is gone fails loudly with exit code 4 and the replay hint.
func TestSlotLostExitCode(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	env := baseEnv(db)
	d := start(t, "first", env, "--route", "orders=stdout", "--instance-id", "lost")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })
	ids1 := enqueue(t, db, "orders", 5, 5)
	d.stdout.waitFor(t, 30*time.Second, "deliveries", hasAll(ids1))
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code = %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.Pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", db.Name); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, env, "run", "--route", "orders=stdout")
	if code != 4 {
		t.Errorf("exit code = %d, want 4 (slot lost)\n%s", code, stderr)
	}
	for _, want := range []string{"FATAL", "lost", "pgoutbox replay --since"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestNotMigratedExitCode: running against a schema without tables exits 3 and says to migrate.
func TestNotMigratedExitCode(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	code, _, stderr := cli(t, baseEnv(db), "run", "--route", "orders=stdout")
	if code != 3 || !strings.Contains(stderr, "pgoutbox migrate") {
		t.Errorf("exit code = %d, want 3 with a migrate hint:\n%s", code, stderr)
	}
	code, _, stderr = cli(t, baseEnv(db), "status")
	if code != 3 || !strings.Contains(stderr, "pgoutbox migrate") {
		t.Errorf("status exit code = %d, want 3:\n%s", code, stderr)
	}
}

// TestDatabaseUnreachable: exit 6, and the password never appears.
func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	env := []string{"PGOUTBOX_DATABASE_URL=postgres://relay:hunter2@127.0.0.1:1/app?connect_timeout=2", "PGOUTBOX_HTTP_LISTEN=127.0.0.1:0",
		"PGOUTBOX_LOG_FORMAT=json"}
	code, out, stderr := cli(t, env, "run", "--route", "orders=stdout")
	if code != 6 {
		t.Errorf("exit code = %d, want 6\n%s", code, stderr)
	}
	if strings.Contains(stderr+out, "hunter2") {
		t.Errorf("the password leaked:\n%s", stderr)
	}
	if !strings.Contains(stderr, "xxxxx") {
		t.Errorf("want the redacted URL in the log:\n%s", stderr)
	}
}
