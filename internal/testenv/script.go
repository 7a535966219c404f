package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Script is a server that one of the service scripts (scripts/nats.sh, scripts/rabbitmq.sh) started
// for one test in a state dir of its own (its own ports and data), so that the test may stop, kill,
// restart or reconfigure it without touching the server other tests share. `clean` removes it when
// the test ends. Not safe for concurrent use.
type Script struct {
	t       testing.TB
	path    string // the script
	dirEnv  string // the variable naming its state dir
	pidFile string // in the state dir: the server's pid
	Dir     string // the state dir
	URL     string // what the script's export line says
}

// StartScript runs `scripts/<name> up` with dirEnv naming a new state dir and returns the server, its
// URL taken from the export line of urlEnv. pidFile is the file of the state dir holding the server's
// pid (for Kill9).
func StartScript(t testing.TB, name, dirEnv, urlEnv, pidFile string) *Script {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgoutbox-"+strings.TrimSuffix(name, ".sh")+"-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Script{t: t, path: filepath.Join(repoRoot(), "scripts", name), dirEnv: dirEnv, pidFile: pidFile, Dir: dir}
	t.Cleanup(func() { s.Run("clean") })
	s.URL = strings.TrimPrefix(strings.TrimSpace(s.Run("up")), "export "+urlEnv+"=")
	return s
}

// Run runs the script with args against the server's state dir and returns what it printed on
// stdout; it fails the test when the script fails.
func (s *Script) Run(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.path, args...)
	cmd.Env = append(os.Environ(), s.dirEnv+"="+s.Dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("%s %v: %v\n%s", filepath.Base(s.path), args, err, stderr.String())
	}
	return string(out)
}

// Kill9 sends SIGKILL to the server (the pid its script recorded) and waits until it is gone.
func (s *Script) Kill9() {
	s.t.Helper()
	path := filepath.Join(s.Dir, s.pidFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		s.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		s.t.Fatalf("bad pid file %s: %q", path, raw)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("pid %d survived SIGKILL", pid)
}

// repoRoot is the checkout this file is in (internal/testenv/ below it).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
