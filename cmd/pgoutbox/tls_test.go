package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestRunOverTLSWithPasswordFile: against a server that accepts only TLS with scram-sha-256, the
// daemon configured with database.password_file and a URL with sslmode=verify-full, sslrootcert and
// pool_max_conns (no password in it) migrates, streams, delivers, reports status and skips; the
// password appears in no output.
func TestRunOverTLSWithPasswordFile(t *testing.T) {
	t.Parallel()
	tc := pgtest.NewTLSCluster(t)
	db := tc.NewDB(t)
	pwFile := filepath.Join(t.TempDir(), "db-password")
	if err := os.WriteFile(pwFile, []byte(tc.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := tc.URL(db.Name) + "&pool_max_conns=3"
	if strings.Contains(url, tc.Password) || !strings.Contains(url, "sslmode=verify-full") {
		t.Fatalf("URL %s: want verify-full and no password", url)
	}
	env := append(baseEnv(db), "PGOUTBOX_DATABASE_URL="+url, "PGOUTBOX_DATABASE_PASSWORD_FILE="+pwFile)
	var output strings.Builder
	code, out, errs := cli(t, env, "migrate")
	output.WriteString(out + errs)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errs)
	}
	d := start(t, "tls", env, "--route", "orders=stdout", "--instance-id", "tls-daemon")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })
	want := enqueue(t, db, "orders", 50, 10)
	d.stdout.waitFor(t, 30*time.Second, "every message", hasAll(want))
	code, out, errs = cli(t, env, "status")
	output.WriteString(out + errs)
	if code != 0 || !strings.Contains(out, "pgoutbox-tls-daemon") {
		t.Errorf("status: exit %d\n%s%s", code, out, errs)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	output.WriteString(d.stdout.String() + d.stderr.String())
	// One-connection commands parse the URL as the pool does: pool_max_conns does not reach the server.
	db.Exec(t, "CREATE TABLE IF NOT EXISTS wal_filler (n int)")
	db.Exec(t, "INSERT INTO wal_filler VALUES (1)")
	var cur string
	if err := db.Pool.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&cur); err != nil {
		t.Fatal(err)
	}
	code, out, errs = cli(t, env, "skip", "--to", cur)
	output.WriteString(out + errs)
	if code != 0 {
		t.Errorf("skip: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(output.String(), tc.Password) {
		t.Error("the password appears in the output")
	}
}
