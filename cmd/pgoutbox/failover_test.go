package main_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestFailoverSetting: replication.failover (PGOUTBOX_REPLICATION_FAILOVER) creates a failover slot on
// PostgreSQL 17+, and on an older server exits 2 naming the version it needs, without creating a slot.
func TestFailoverSetting(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	migrate(t, db)
	version := db.QueryInt(t, "SELECT current_setting('server_version_num')::int")
	env := append(baseEnv(db), "PGOUTBOX_REPLICATION_FAILOVER=true")
	if version < 170000 {
		code, _, stderr := cli(t, env, "run", "--route", "orders=stdout")
		if code != 2 || !strings.Contains(stderr, "PostgreSQL 17") {
			t.Errorf("server_version_num %d: exit code = %d, want 2 naming PostgreSQL 17:\n%s", version, code, stderr)
		}
		if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", db.Name); n != 0 {
			t.Errorf("%d slots created on a server without failover slots", n)
		}
		return
	}
	d := start(t, "failover", env, "--route", "orders=stdout")
	d.waitHTTP("/readyz", 30*time.Second, func(code int, _ string) bool { return code == 200 })
	if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND failover", db.Name); n != 1 {
		t.Errorf("server_version_num %d: slot %s is not a failover slot", version, db.Name)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code = %d", code)
	}
}
