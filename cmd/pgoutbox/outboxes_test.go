package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// enqueueTo commits n messages for dest into schema's outbox, one transaction, returning their ids.
func enqueueTo(t *testing.T, db *pgtest.DB, schema, dest string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []string
	var msgs []outbox.Message
	for i := range n {
		id := uuid.Must(uuid.NewV7()).String()
		ids = append(ids, id)
		msgs = append(msgs, outbox.Message{ID: id, Destination: outbox.Destination(dest), Key: fmt.Sprintf("k%d", i%5), Type: "Test",
			Payload: []byte(fmt.Sprintf(`{"schema":%q,"n":%d}`, schema, i))})
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, schema, tx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestRunSeveralOutboxes: one daemon runs four outboxes in two databases. Three deliver; the fourth
// (its schema never migrated) fails with exit code 3 and stops alone: the others go on delivering,
// /readyz and /healthz name each outbox, metrics carry the outbox label, the admin commands need
// --outbox, and after SIGTERM the process exits 3 naming the failed outbox.
func TestRunSeveralOutboxes(t *testing.T) {
	t.Parallel()
	db1, db2 := pgtest.New(t), pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range []struct {
		db     *pgtest.DB
		schema string
	}{{db1, "app"}, {db1, "billing"}, {db2, "app"}} {
		if err := outbox.Migrate(ctx, m.db.Pool, m.schema); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`database: {url: %q}
http: {listen: "127.0.0.1:0"}
log: {format: json}
slot_poll_interval: 200ms
drain_timeout: 20s
routes: {orders: {stdout: {}}}
outboxes:
  - {name: shop, schema: app, slot: %s_shop}
  - {name: billing, schema: billing, slot: %s_billing, delivery: {max_attempts: 3}}
  - {name: crm, database: {url: %q}, schema: app, slot: %s}
  - {name: ghost, schema: never_migrated, slot: %s_ghost}
`, db1.ConnString, db1.Name, db1.Name, db2.ConnString, db2.Name, db1.Name)
	file := filepath.Join(t.TempDir(), "multi.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := start(t, "multi", nil, "--config", file)
	d.waitLog("outbox ghost: FATAL", 30*time.Second)
	d.waitHTTP("/readyz", 30*time.Second, func(_ int, b string) bool { return strings.Contains(b, "3 of 4 outboxes ready") })
	var want []string
	for _, src := range []struct {
		db     *pgtest.DB
		schema string
	}{{db1, "app"}, {db1, "billing"}, {db2, "app"}} {
		want = append(want, enqueueTo(t, src.db, src.schema, "orders", 40)...)
	}
	d.stdout.waitFor(t, 60*time.Second, "the 120 messages of the three running outboxes", hasAll(want))

	code, body := d.get("/readyz")
	for _, w := range []string{"not ready: 3 of 4 outboxes ready", "shop: ready (state streaming)", "crm: ready (state streaming)",
		"ghost: not ready: state failed: not streaming; relay failed:"} {
		if code != 503 || !strings.Contains(body, w) {
			t.Errorf("/readyz = %d %q, want 503 with %q", code, body, w)
		}
	}
	if code, body := d.get("/readyz?outbox=billing"); code != 200 || !strings.Contains(body, "ready (state streaming)") {
		t.Errorf("/readyz?outbox=billing = %d %q", code, body)
	}
	if code, body := d.get("/healthz"); code != 200 || !strings.Contains(body, "ok: 3 of 4 outboxes run") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	_, body = d.waitHTTP("/metrics", 10*time.Second, func(_ int, b string) bool {
		return metric(b, `pgoutbox_messages_delivered_total{destination="orders",outbox="crm"}`) == "40"
	})
	for series, v := range map[string]string{
		`pgoutbox_messages_delivered_total{destination="orders",outbox="shop"}`:    "40",
		`pgoutbox_messages_delivered_total{destination="orders",outbox="billing"}`: "40",
		`pgoutbox_role{outbox="ghost",role="failed"}`:                              "1",
		`pgoutbox_role{outbox="shop",role="streaming"}`:                            "1",
	} {
		if got := metric(body, series); got != v {
			t.Errorf("%s = %q, want %s", series, got, v)
		}
	}
	if !strings.Contains(d.stderr.String(), "pgoutbox migrate --outbox ghost") {
		t.Errorf("stderr lacks the migrate hint naming the outbox:\n%s", d.stderr)
	}

	code, _, stderr := cli(t, nil, "status", "--config", file)
	if code != 2 || !strings.Contains(stderr, "4 outboxes (shop, billing, crm, ghost): choose one with --outbox") {
		t.Errorf("status without --outbox: exit %d\n%s", code, stderr)
	}
	code, out, stderr := cli(t, nil, "status", "--config", file, "--outbox", "crm")
	if code != 0 || !strings.Contains(out, "crm") || !strings.Contains(out, db2.Name) {
		t.Errorf("status --outbox crm: exit %d\n%s\n%s", code, out, stderr)
	}

	d.signal(syscall.SIGTERM)
	if code := d.wait(40 * time.Second); code != 3 {
		t.Errorf("exit code after SIGTERM = %d, want 3 (the failed outbox's)", code)
	}
	d.waitLog("1 of 4 outboxes failed: ghost (exit 3)", time.Second)
}

// TestSeveralOutboxesExitRule: an outbox whose database cannot be reached is started again and again
// (not failed: the process runs on and a signal exits 0); when every outbox failed for good the process
// exits by itself with their code.
func TestSeveralOutboxesExitRule(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	write := func(yaml string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	head := fmt.Sprintf("database: {url: %q}\nhttp: {listen: \"127.0.0.1:0\"}\nroutes: {orders: {stdout: {}}}\noutboxes:\n", db.ConnString)
	file := write(head + fmt.Sprintf("  - {name: up, schema: app, slot: %s}\n", db.Name) +
		"  - {name: down, database: {url: \"postgres://relay:hunter2@127.0.0.1:1/x?connect_timeout=1\"}, schema: app}\n")
	d := start(t, "retry", nil, "--config", file)
	d.waitHTTP("/readyz", 30*time.Second, func(_ int, b string) bool {
		return strings.Contains(b, "up: ready (state streaming)") && strings.Contains(b, "down: not ready: state backoff: not streaming; starting again after: connect to PostgreSQL")
	})
	d.waitLog("outbox stopped: starting it again", time.Second)
	ids := enqueue(t, db, "orders", 10, 5)
	d.stdout.waitFor(t, 30*time.Second, "the running outbox's messages", hasAll(ids))
	if strings.Contains(d.stderr.String(), "hunter2") {
		t.Errorf("the password leaked:\n%s", d.stderr)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM with one outbox retrying: exit %d, want 0 (nothing failed for good)", code)
	}

	file = write(head + "  - {name: a, schema: nope_a, slot: x_a}\n  - {name: b, schema: nope_b, slot: x_b}\n")
	code, _, stderr := cli(t, nil, "run", "--config", file)
	if code != 3 || !strings.Contains(stderr, "2 of 2 outboxes failed: a (exit 3), b (exit 3)") {
		t.Errorf("every outbox not migrated: exit %d, want 3 naming both:\n%s", code, stderr)
	}
	// Different codes: 3 (not migrated) and 5 (slot missing with create_slot: false) exit 1.
	file = write(head + "  - {name: a, schema: nope_a, slot: x_a}\n" +
		fmt.Sprintf("  - {name: b, schema: app, slot: %s_none, create_slot: false}\n", db.Name))
	code, _, stderr = cli(t, nil, "run", "--config", file)
	if code != 1 || !strings.Contains(stderr, "2 of 2 outboxes failed: a (exit 3), b (exit 5)") {
		t.Errorf("outboxes failing with 3 and 5: exit %d, want 1 naming both:\n%s", code, stderr)
	}
	code, _, stderr = cli(t, nil, "run", "--config", file, "--outbox", "c")
	if code != 2 || !strings.Contains(stderr, `--outbox "c": no such outbox (configured: a, b)`) {
		t.Errorf("run --outbox c: exit %d:\n%s", code, stderr)
	}
	code, _, stderr = cli(t, nil, "run", "--config", file, "--outbox", "b")
	if code != 5 || strings.Contains(stderr, "outbox a") {
		t.Errorf("run --outbox b runs b alone: exit %d, want 5 without a word of a:\n%s", code, stderr)
	}
}
