package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// StopServer stops the cluster with pg_ctl -m mode ("fast" or "immediate") and leaves it stopped
// (connections are refused) until StartServer: a database that is down, for fault tests.
func (c *Cluster) StopServer(t testing.TB, mode string) {
	t.Helper()
	c.pgCtl(t, "-m", mode, "-w", "-t", "60", "stop")
}

// StartServer starts the cluster StopServer stopped, on the same port and data.
func (c *Cluster) StartServer(t testing.TB) {
	t.Helper()
	c.pgCtl(t, "-l", filepath.Join(c.dir, "pg.log"), "-w", "-t", "60", "start")
}

// pgCtl runs pg_ctl on the cluster's data directory, as the postgres user when running as root (as
// scripts/postgres.sh does).
func (c *Cluster) pgCtl(t testing.TB, args ...string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "bin"))
	if err != nil {
		t.Fatalf("pgtest: the cluster's binaries: %v", err)
	}
	argv := append([]string{filepath.Join(strings.TrimSpace(string(b)), "pg_ctl"), "-D", filepath.Join(c.dir, "data")}, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if os.Geteuid() == 0 {
		quoted := make([]string, len(argv))
		for i, a := range argv {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd = exec.Command("su", "postgres", "-s", "/bin/bash", "-c", strings.Join(quoted, " ")+" >/dev/null")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
