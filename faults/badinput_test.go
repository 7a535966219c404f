//go:build faults

package faults

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// Bad schema, slot and publication names, LSN strings and configuration files: each gets a clear error
// naming the input, the documented exit code, and writes nothing (no slot, no relay record, no schema).
func TestBadInputs(t *testing.T) {
	e := newEnv(t, nil)
	fresh := pgtest.New(t) // not migrated
	u, _ := url.Parse(e.db.ConnString)
	unreachable := *u
	unreachable.Host = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	noDB := *u
	noDB.Path = "/pgoutbox_no_such_database"
	good := e.config("bad")
	good.Stdout = true
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := good.write(t)
	base := func(extra ...string) []string { return append([]string{"--config", cfg}, extra...) }
	long := strings.Repeat("s", 55)
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"schema with SQL in it", base("--schema", `app"; DROP TABLE x; --`, "run"), 2, []string{"schema"}},
		{"schema too long (publication name over 63)", base("--schema", long, "run"), 2, []string{"schema", "54"}},
		{"schema reserved prefix pg_", base("--schema", "pg_app", "run"), 2, []string{"pg_"}},
		{"slot with upper case", base("--slot", "Bad-Slot", "run"), 2, []string{"slot"}},
		{"slot with a quote", base("--slot", "x'; DROP", "run"), 2, []string{"slot"}},
		{"slot of 64 characters", base("--slot", strings.Repeat("a", 64), "run"), 2, []string{"slot"}},
		{"start_lsn not an LSN", base("--set", "start_lsn=16/XYZ", "run"), 2, []string{"start_lsn"}},
		{"start_lsn a number", base("--set", "start_lsn=12345", "run"), 2, []string{"start_lsn"}},
		{"skip --to garbage", base("skip", "--to", "not-an-lsn"), 2, []string{"not-an-lsn"}},
		{"skip --to empty", base("skip", "--to", ""), 2, []string{"to"}},
		{"config: unknown key", []string{"--config", file("unknown.yaml", "database: {url: x}\nschema: app\nbogus_key: 1\n"), "run"}, 2, []string{"bogus_key"}},
		{"config: bad duration", []string{"--config", cfg, "--set", "delivery.backoff_min=5 parsecs", "run"}, 2, []string{"delivery.backoff_min"}},
		{"config: kafka acks 1", []string{"--config", cfg, "--set", "kafka.acks=1", "--set", "kafka.brokers=127.0.0.1:1", "run"}, 2, []string{"acks"}},
		{"config: malformed YAML", []string{"--config", file("broken.yaml", "database:\n  url: [unclosed\n"), "run"}, 2, []string{"broken.yaml"}},
		{"config: file missing", []string{"--config", filepath.Join(dir, "nope.yaml"), "run"}, 2, []string{"nope.yaml"}},
		{"config: route with two sinks", []string{"--config", file("tworoutes.yaml", fmt.Sprintf("database: {url: %q}\nschema: app\nslot: %s\nroutes:\n  event_bus: {stdout: {}, webhook: {url: \"http://127.0.0.1:1\"}}\n", e.db.ConnString, e.slot)), "run"}, 2, []string{"event_bus"}},
		{"config: no routes without --dev", []string{"--config", file("noroutes.yaml", fmt.Sprintf("database: {url: %q}\nschema: app\nslot: %s\n", e.db.ConnString, e.slot)), "run"}, 2, []string{"routes"}},
		{"config: negative max_attempts", []string{"--config", cfg, "--set", "delivery.max_attempts=-1", "run"}, 2, []string{"delivery.max_attempts"}},
		{"database unreachable", base("--database-url", unreachable.String(), "run"), 6, []string{"connect"}},
		{"database missing", base("--database-url", noDB.String(), "run"), 6, []string{"pgoutbox_no_such_database"}},
		{"schema not migrated", base("--database-url", fresh.ConnString, "run"), 3, []string{"migrate"}},
		{"replay: bad time", base("replay", "--since", "yesterday"), 2, []string{"since"}},
	}
	passed := 0
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			code, _, stderr := run(t, 60*time.Second, append([]string{"--http-listen", "127.0.0.1:0"}[:0], tc.args...)...)
			ok := true
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, lastLines(stderr, 6))
				ok = false
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, lastLines(stderr, 6))
					ok = false
				}
			}
			if strings.Contains(stderr, "panic") {
				t.Errorf("panic:\n%s", stderr)
				ok = false
			}
			if ok {
				passed++
			}
		})
	}
	// Nothing was written: no slot, no relay record, no stray schema, on either database.
	for _, db := range []*pgtest.DB{e.db, fresh} {
		if n := db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"); n != 0 {
			t.Errorf("%s: %d replication slots created by bad inputs", db.Name, n)
		}
		if n := db.QueryInt(t, "SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'app', 'information_schema') AND nspname NOT LIKE 'pg\\_%'"); n != 0 {
			t.Errorf("%s: %d schemas created by bad inputs", db.Name, n)
		}
	}
	if n := e.db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_relay"); n != 0 {
		t.Errorf("%d relay records written by bad inputs", n)
	}
	if n := fresh.QueryInt(t, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app'"); n != 0 {
		t.Errorf("the unmigrated database got an app schema")
	}
	report(t, row{Scenario: fmt.Sprintf("bad inputs (%d cases: names, LSNs, config files, database)", len(cases)), Recovery: "—",
		Notes: fmt.Sprintf("%d/%d gave the documented exit code and named the input; no slot, relay record or schema written", passed, len(cases))})
}
