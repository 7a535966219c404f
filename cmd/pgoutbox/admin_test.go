package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

func TestMigrateAndRolesDryRunNeedNoDatabase(t *testing.T) {
	t.Parallel()
	code, out, errs := cli(t, []string{"PGOUTBOX_SCHEMA=shop"}, "migrate", "--dry-run")
	if code != 0 || !strings.Contains(out, `CREATE TABLE IF NOT EXISTS "shop".pkg_outbox`) || !strings.Contains(out, "CREATE PUBLICATION") {
		t.Errorf("migrate --dry-run = %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = cli(t, nil, "roles", "--dry-run", "--schema", "shop", "--relay-role", "r1", "--app-role", "a1")
	for _, want := range []string{`CREATE ROLE "r1" LOGIN REPLICATION NOSUPERUSER`, `GRANT INSERT ON "shop".pkg_outbox TO "a1"`,
		`GRANT SELECT, INSERT ON "shop".pkg_outbox_dead_letter TO "r1"`, `GRANT SELECT, INSERT, UPDATE, DELETE ON "shop".pkg_outbox_relay TO "r1"`} {
		if !strings.Contains(out, want) {
			t.Errorf("roles --dry-run lacks %q (exit %d)\n%s\n%s", want, code, out, errs)
		}
	}
	if code, _, errs := cli(t, nil, "roles", "--dry-run", "--relay-role", "Bad;Role"); code != 2 || !strings.Contains(errs, "--relay-role") {
		t.Errorf("bad role name: exit %d\n%s", code, errs)
	}
	if code, out, _ := cli(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "pgoutbox test") {
		t.Errorf("version = %d %q", code, out)
	}
}

func TestAdminCommands(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	env := baseEnv(db)
	migrate(t, db)
	migrate(t, db) // idempotent

	// status before the first run: no slot yet.
	code, out, errs := cli(t, env, "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d\n%s", code, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st["exists"] != false || st["slot"] != db.Name || st["schema"] != schema {
		t.Errorf("status before run: %v", st)
	}

	d := start(t, "relay", env, "--route", "orders=stdout", "--instance-id", "admin")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })
	sent := enqueue(t, db, "orders", 10, 10)
	d.stdout.waitFor(t, 30*time.Second, "deliveries", hasAll(sent))

	// The initial snapshot (empty here) completes at the relay's next confirm after its acks.
	var rec map[string]any
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, out, errs = cli(t, env, "status", "--json")
		if code != 0 {
			t.Fatalf("status: %d\n%s", code, errs)
		}
		st = map[string]any{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		rec, _ = st["relay_record"].(map[string]any)
		if rec["snapshot_pending"] == false || time.Now().After(deadline) {
			break
		}
	}
	if st["exists"] != true || st["active"] != true || st["wal_status"] != "reserved" || st["active_application_name"] != "pgoutbox-admin" ||
		rec == nil || st["confirmed_flush_lsn"] == "" || st["dead_letters"] != 0.0 || rec["snapshot_pending"] != false {
		t.Errorf("status while running: %s", out)
	}
	if _, ok := st["lag_bytes"]; !ok {
		t.Errorf("status lacks lag_bytes: %s", out)
	}
	code, out, _ = cli(t, env, "status")
	for _, want := range []string{"confirmed_flush_lsn", "wal_status", "reserved", "dead_letters", "active_instance", "initial snapshot"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}

	// replay
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	code, out, errs = cli(t, env, "replay", "--since", since, "--dry-run")
	if code != 0 || !strings.Contains(out, "10 message(s) would be replayed") || !strings.Contains(out, "0 of them only through the --margin 1h0m0s") {
		t.Errorf("replay --dry-run = %d %q %q", code, out, errs)
	}
	code, out, errs = cli(t, env, "replay", "--id", sent[0], "--id", sent[1])
	if code != 0 || !strings.Contains(out, "replayed 2 message(s)") {
		t.Errorf("replay --id = %d %q %q", code, out, errs)
	}
	d.stdout.waitFor(t, 30*time.Second, "replayed messages", func(all []string) bool {
		c := counts(all)
		return c[sent[0]] == 2 && c[sent[1]] == 2
	})
	for _, bad := range [][]string{{"replay"}, {"replay", "--since", "yesterday"}, {"replay", "--since", since, "--until", since}, {"replay", "--since", since, "--margin", "-1h"}} {
		if code, _, errs := cli(t, env, bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", bad, code, errs)
		}
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// dlq: dead letters written directly.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dl := pgx.Identifier{schema, "pkg_outbox_dead_letter"}.Sanitize()
	for i, dest := range []string{"mail", "mail", "sms"} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO `+dl+` (id, destination, key, payload, created_at, error, attempts,
			first_failed_at, last_failed_at, commit_lsn) VALUES ($1, $2, 'k', 'p', now(), 'boom '||$3::int, 10, now(), now(), '0/1')`,
			sent[i], dest, i); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errs = cli(t, env, "dlq", "list", "--json")
	var list []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 3 {
		t.Fatalf("dlq list --json = %d %q %q", code, out, errs)
	}
	code, out, _ = cli(t, env, "dlq", "list", "--destination", "sms")
	if code != 0 || !strings.Contains(out, sent[2]) || strings.Contains(out, sent[0]) || !strings.Contains(out, "boom 2") {
		t.Errorf("dlq list --destination = %d\n%s", code, out)
	}
	for _, verb := range []string{"requeue", "purge"} {
		if code, _, errs := cli(t, env, "dlq", verb); code != 2 || !strings.Contains(errs, "--all") {
			t.Errorf("dlq %s without a filter: exit %d\n%s", verb, code, errs)
		}
	}
	code, out, _ = cli(t, env, "dlq", "purge", "--all", "--dry-run")
	if code != 0 || !strings.Contains(out, "3 dead letter(s) would be purged") {
		t.Errorf("purge --dry-run = %d %q", code, out)
	}
	before := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox")
	code, out, _ = cli(t, env, "dlq", "requeue", "--id", sent[0])
	if code != 0 || !strings.Contains(out, "requeued 1") {
		t.Errorf("requeue = %d %q", code, out)
	}
	if after := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox"); after != before+1 {
		t.Errorf("outbox rows %d → %d, want one more", before, after)
	}
	code, out, _ = cli(t, env, "dlq", "purge", "--destination", "mail")
	if code != 0 || !strings.Contains(out, "purged 1") {
		t.Errorf("purge --destination = %d %q", code, out)
	}
	code, out, _ = cli(t, env, "dlq", "purge", "--all")
	if code != 0 || !strings.Contains(out, "purged 1") {
		t.Errorf("purge --all = %d %q", code, out)
	}

	// skip
	if code, _, errs := cli(t, env, "skip", "--to", "not-an-lsn"); code != 2 || !strings.Contains(errs, "invalid LSN") {
		t.Errorf("skip bad LSN: exit %d\n%s", code, errs)
	}
	if code, _, errs := cli(t, env, "skip", "--to", "0/1"); code != 5 || !strings.Contains(errs, "confirmed_flush_lsn") {
		t.Errorf("skip behind: exit %d, want 5\n%s", code, errs)
	}
	var cur string
	if err := db.Pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&cur); err != nil {
		t.Fatal(err)
	}
	code, out, errs = cli(t, env, "skip", "--to", cur)
	if code != 0 || !strings.Contains(out, "moved to "+cur) {
		t.Errorf("skip = %d %q %q", code, out, errs)
	}
}

// TestLeastPrivilegeRoles: the roles SQL is enough for the relay to stream, confirm and dead-letter.
func TestLeastPrivilegeRoles(t *testing.T) {
	t.Parallel()
	server := pgtest.Server(t)
	suffix := pgtest.RandomSuffix()
	relayRole, appRole := "relay_"+suffix, "app_"+suffix
	t.Cleanup(func() { // after the database is dropped (cleanups run last-in first-out)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, server); err == nil {
			_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+relayRole)
			_, _ = conn.Exec(ctx, "DROP ROLE IF EXISTS "+appRole)
			conn.Close(ctx)
		}
	})
	db := pgtest.New(t)
	env := baseEnv(db)
	migrate(t, db)
	if code, out, errs := cli(t, env, "roles", "--relay-role", relayRole, "--app-role", appRole); code != 0 {
		t.Fatalf("roles: %d\n%s\n%s", code, out, errs)
	}
	if code, _, errs := cli(t, env, "roles", "--relay-role", relayRole, "--app-role", appRole); code != 0 {
		t.Fatalf("roles again (idempotent): %d\n%s", code, errs)
	}
	db.Exec(t, "ALTER ROLE "+relayRole+" PASSWORD 'relay-secret'")

	// The relay runs as the relay role; the password comes from PGOUTBOX_DATABASE_PASSWORD.
	relayURL := strings.Replace(db.ConnString, "postgres://postgres@", "postgres://"+relayRole+"@", 1)
	if relayURL == db.ConnString {
		t.Fatalf("cannot rewrite the user of %s to the relay role", db.ConnString)
	}
	renv := append(baseEnv(db), "PGOUTBOX_DATABASE_URL="+relayURL, "PGOUTBOX_DATABASE_PASSWORD=relay-secret")
	d := start(t, "relay-role", renv, "--route", "orders=stdout", "--instance-id", "leastpriv",
		"--set", "delivery.max_attempts=1")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })

	// The app role can enqueue and nothing else.
	appURL := strings.Replace(db.ConnString, "postgres://postgres@", "postgres://"+appRole+"@", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := pgx.Connect(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, `INSERT INTO app.pkg_outbox (id, destination, payload) VALUES
		(gen_random_uuid(), 'orders', 'a'), (gen_random_uuid(), 'nowhere', 'b')`); err != nil {
		t.Fatalf("app role cannot enqueue: %v", err)
	}
	if _, err := app.Exec(ctx, "SELECT * FROM app.pkg_outbox"); err == nil {
		t.Error("app role can read the outbox")
	}
	d.stdout.waitFor(t, 30*time.Second, "a delivery", func(all []string) bool { return len(ids(all)) == 1 })
	deadline := time.Now().Add(30 * time.Second)
	for db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the message without a route was not dead-lettered by the relay role")
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if strings.Contains(d.stderr.String(), "relay-secret") {
		t.Error("the password appears in the logs")
	}
}

// TestConfigErrorsFromTheBinary: bad configuration exits 2 with a message naming the key.
func TestConfigErrorsFromTheBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	db := "PGOUTBOX_DATABASE_URL=postgres://u@127.0.0.1:1/db"
	tests := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"no routes", []string{db}, []string{"run"}, []string{"routes", "--dev"}},
		{"unknown key in file", nil, []string{"run", "--config", file("unknown.yaml", "database: {url: x}\nroutez: {}\n")},
			[]string{"routez", "unknown key", "line 2"}},
		{"bad duration in file", nil, []string{"run", "--config", file("dur.yaml", "database: {url: x}\ndelivery:\n  backoff_max: forever\n")},
			[]string{"delivery.backoff_max", "invalid duration"}},
		{"bad LSN", []string{db}, []string{"run", "--dev", "--set", "start_lsn=12345"}, []string{"start_lsn", "invalid LSN"}},
		{"unsafe acks via env", []string{db, "PGOUTBOX_KAFKA_ACKS=1"}, []string{"run", "--dev"}, []string{"kafka.acks", "unsafe"}},
		{"unsafe acks in file", nil, []string{"run", "--config", file("acks.yaml",
			"database: {url: x}\nkafka: {brokers: [\"k:9092\"], acks: 0}\nroutes: {o: {kafka: {topic: t}}}\n")}, []string{"kafka.acks", "unsafe"}},
		{"bad env value", []string{db, "PGOUTBOX_DELIVERY_LANES=lots"}, []string{"run", "--dev"}, []string{"delivery.lanes", "PGOUTBOX_DELIVERY_LANES"}},
		{"bad route flag", []string{db}, []string{"run", "--route", "orders=carrier-pigeon"}, []string{"--route", "carrier-pigeon"}},
		{"kafka route without brokers", []string{db}, []string{"run", "--route", "orders=kafka:t"}, []string{"kafka.brokers"}},
		{"missing database", nil, []string{"status"}, []string{"database.url"}},
		{"missing config file", nil, []string{"run", "--config", "/nonexistent.yaml"}, []string{"config file"}},
		{"unknown flag", nil, []string{"run", "--nope"}, []string{"unknown flag"}},
		{"bad listen", []string{db}, []string{"run", "--dev", "--http-listen", "nowhere"}, []string{"http.listen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errs := cli(t, tt.env, tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2\n%s", code, errs)
			}
			for _, w := range tt.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
}
