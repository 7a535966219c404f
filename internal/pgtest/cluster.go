package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Cluster is a private PostgreSQL cluster for one test, for faults that would disturb other tests
// (restarts, crashes). It is started with scripts/postgres.sh under a temp dir and stopped at cleanup.
type Cluster struct {
	// URL connects to the cluster's postgres database.
	URL string
	dir string
}

// NewCluster starts a private cluster, or skips (fails under CI) when PostgreSQL binaries are missing.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	script := scriptPath()
	if _, err := os.Stat(script); err != nil {
		SkipOrFail(t, "scripts/postgres.sh not found: %v", err)
	}
	dir := filepath.Join(os.TempDir(), "pgoutbox-pg-"+RandomSuffix())
	cmd := exec.Command("bash", script, "up")
	cmd.Env = append(os.Environ(), "PGOUTBOX_PG_DIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		SkipOrFail(t, "cannot start a private PostgreSQL cluster (scripts/postgres.sh up): %v\n%s", err, out)
	}
	c := &Cluster{dir: dir}
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

func (c *Cluster) run(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{scriptPath()}, args...)...)
	cmd.Env = append(os.Environ(), "PGOUTBOX_PG_DIR="+c.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("pgtest: scripts/postgres.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func scriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "postgres.sh")
}
