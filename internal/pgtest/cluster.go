package pgtest

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// EnvPG17Bin names the environment variable holding the PostgreSQL 17 server binaries
// (`PGOUTBOX_PG_MAJOR=17 scripts/postgres.sh fetch` prints it; .ci/run sets it).
const EnvPG17Bin = "PGOUTBOX_PG17_BIN"

// Cluster is a private PostgreSQL cluster for one test, for faults that would disturb other tests
// (restarts, crashes, failovers). It is started with scripts/postgres.sh under a temp dir and stopped
// (and removed) at cleanup.
type Cluster struct {
	// URL connects to the cluster's postgres database.
	URL string
	dir string
	env []string // extra environment of every scripts/postgres.sh call
}

// NewCluster starts a private cluster, or skips (fails under CI) when PostgreSQL binaries are missing.
// It runs the version scripts/postgres.sh picks (PGOUTBOX_PG_MAJOR, else the newest Debian one).
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, nil, "up")
}

// NewCluster17 starts a private PostgreSQL 17 cluster from the binaries in PGOUTBOX_PG17_BIN, or skips
// with a message saying how to get them (fails under CI).
func NewCluster17(t testing.TB) *Cluster {
	t.Helper()
	bin := os.Getenv(EnvPG17Bin)
	if bin == "" {
		SkipOrFail(t, "PostgreSQL 17 binaries needed: run `pg17=$(PGOUTBOX_PG_MAJOR=17 scripts/postgres.sh fetch) && eval \"$pg17\"` (sets %s)", EnvPG17Bin)
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		SkipOrFail(t, "%s=%s: %v", EnvPG17Bin, bin, err)
	}
	return startCluster(t, []string{"PGOUTBOX_PG_MAJOR=17", EnvPG17Bin + "=" + bin}, "up")
}

// Standby starts a physical standby of c (scripts/postgres.sh standby): streaming replication through
// a physical slot, hot_standby_feedback on, and on PostgreSQL 17 sync_replication_slots on the standby
// and synchronized_standby_slots on c. sync makes it c's synchronous standby: a commit on c returns
// once the standby has it. It is stopped and removed at cleanup, before c.
func (c *Cluster) Standby(t testing.TB, sync bool) *Cluster {
	t.Helper()
	args := []string{"standby"}
	if sync {
		args = append(args, "sync")
	}
	return startCluster(t, append(append([]string(nil), c.env...), "PGOUTBOX_PG_PRIMARY_DIR="+c.dir), args...)
}

func startCluster(t testing.TB, env []string, args ...string) *Cluster {
	t.Helper()
	script := scriptPath()
	if _, err := os.Stat(script); err != nil {
		SkipOrFail(t, "scripts/postgres.sh not found: %v", err)
	}
	c := &Cluster{dir: filepath.Join(os.TempDir(), "pgoutbox-pg-"+RandomSuffix()), env: env}
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = c.environ()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.run(t, "down")
		SkipOrFail(t, "cannot start a private PostgreSQL cluster (scripts/postgres.sh %s): %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "export "+EnvURL+"="); ok {
			c.URL = strings.Trim(v, "'")
		}
	}
	if c.URL == "" {
		t.Fatalf("pgtest: scripts/postgres.sh printed no %s:\n%s", EnvURL, out)
	}
	t.Cleanup(func() { c.run(t, "down") })
	return c
}

// Restart restarts the cluster with pg_ctl -m mode ("fast" or "immediate").
func (c *Cluster) Restart(t testing.TB, mode string) {
	t.Helper()
	c.run(t, "restart", mode)
}

// Promote promotes a standby (pg_ctl promote, waiting until it accepts writes).
func (c *Cluster) Promote(t testing.TB) {
	t.Helper()
	c.run(t, "promote")
}

// Host returns the cluster's host:port.
func (c *Cluster) Host() string {
	u, err := url.Parse(c.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// MultiHostURL returns a URL for database name that lists the hosts of every cluster in cs, in order,
// with target_session_attrs=read-write: a connection goes to whichever of them is the primary.
func MultiHostURL(name string, cs ...*Cluster) string {
	hosts := make([]string, len(cs))
	for i, c := range cs {
		hosts[i] = c.Host()
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/" + name + "?sslmode=disable&target_session_attrs=read-write"
}

func (c *Cluster) environ() []string {
	return append(append(os.Environ(), c.env...), "PGOUTBOX_PG_DIR="+c.dir)
}

func (c *Cluster) run(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{scriptPath()}, args...)...)
	cmd.Env = c.environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("pgtest: scripts/postgres.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func scriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "postgres.sh")
}
