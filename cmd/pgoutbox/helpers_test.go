package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// bin is the pgoutbox binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pgoutbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "pgoutbox")
	build := exec.Command("go", "build", "-race", "-ldflags", "-X main.version=test", "-o", bin, ".")
	if os.Getenv("PGOUTBOX_TEST_NORACE") != "" {
		build = exec.Command("go", "build", "-ldflags", "-X main.version=test", "-o", bin, ".")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build pgoutbox:", err)
		return 1
	}
	return m.Run()
}

const schema = "app"

// lines collects the lines a process writes, safe for concurrent use.
type lines struct {
	mu  sync.Mutex
	all []string
	cond
}

type cond struct{ ch chan struct{} }

func newLines() *lines { return &lines{cond: cond{ch: make(chan struct{})}} }

func (l *lines) add(s string) {
	l.mu.Lock()
	l.all = append(l.all, s)
	close(l.ch)
	l.ch = make(chan struct{})
	l.mu.Unlock()
}

func (l *lines) snapshot() ([]string, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...), l.ch
}

func (l *lines) String() string {
	s, _ := l.snapshot()
	return strings.Join(s, "\n")
}

// waitFor waits until pred holds over the lines collected so far.
func (l *lines) waitFor(t *testing.T, timeout time.Duration, what string, pred func([]string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		all, ch := l.snapshot()
		if pred(all) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

func (l *lines) read(r io.Reader, done *sync.WaitGroup) {
	defer done.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l.add(sc.Text())
	}
}

// daemon is a pgoutbox process.
type daemon struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout *lines
	stderr *lines
	done   chan struct{}
	code   int
	addr   string
}

// baseEnv points the binary at db with JSON logs on a free port.
func baseEnv(db *pgtest.DB) []string {
	return []string{
		"PGOUTBOX_DATABASE_URL=" + db.ConnString,
		"PGOUTBOX_SCHEMA=" + schema,
		"PGOUTBOX_SLOT=" + db.Name, // slots are cluster-wide: one per test database
		"PGOUTBOX_HTTP_LISTEN=127.0.0.1:0",
		"PGOUTBOX_LOG_FORMAT=json",
		"PGOUTBOX_SLOT_POLL_INTERVAL=200ms",
		"PGOUTBOX_DRAIN_TIMEOUT=20s",
	}
}

func command(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	return cmd
}

// cleanEnv is the test's environment without PGOUTBOX_ configuration keys (the test servers' URLs stay).
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PGOUTBOX_") && !strings.HasPrefix(kv, "PGOUTBOX_TEST_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// start runs `pgoutbox run` with env and args and waits until its HTTP server listens.
func start(t *testing.T, name string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, stdout: newLines(), stderr: newLines(), done: make(chan struct{})}
	d.cmd = command(env, append([]string{"run"}, args...)...)
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errp, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go d.stdout.read(out, &readers)
	go d.stderr.read(errp, &readers)
	go func() {
		readers.Wait()
		_ = d.cmd.Wait()
		d.code = d.cmd.ProcessState.ExitCode()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", d.name, d.stderr)
		}
	})
	d.stderr.waitFor(t, 30*time.Second, name+" http server", func(all []string) bool {
		for _, l := range all {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "http server listening" {
				d.addr, _ = m["addr"].(string)
				return true
			}
		}
		select {
		case <-d.done:
			t.Fatalf("%s exited with %d before listening:\n%s", name, d.code, d.stderr)
		default:
		}
		return false
	})
	return d
}

// waitLog waits for a log line containing s.
func (d *daemon) waitLog(s string, timeout time.Duration) {
	d.t.Helper()
	d.stderr.waitFor(d.t, timeout, d.name+" log "+s, func(all []string) bool {
		for _, l := range all {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	})
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %s: %v", sig, err)
	}
}

func (d *daemon) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
		return d.code
	case <-time.After(timeout):
		d.t.Fatalf("%s did not exit within %s", d.name, timeout)
		return -1
	}
}

func (d *daemon) get(path string) (int, string) {
	d.t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.addr + path)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP polls path until pred(code, body) holds.
func (d *daemon) waitHTTP(path string, timeout time.Duration, pred func(int, string) bool) (int, string) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := d.get(path)
		if pred(code, body) {
			return code, body
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s %s: condition not met within %s; last %d:\n%s", d.name, path, timeout, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ids returns the message ids printed by the stdout sink, in order.
func ids(all []string) []string {
	var out []string
	for _, l := range all {
		var m struct {
			ID string `json:"id"`
		}
		if json.Unmarshal([]byte(l), &m) == nil && m.ID != "" {
			out = append(out, m.ID)
		}
	}
	return out
}

func counts(all []string) map[string]int {
	c := map[string]int{}
	for _, id := range ids(all) {
		c[id]++
	}
	return c
}

// hasAll reports whether every id in want was printed.
func hasAll(want []string) func([]string) bool {
	return func(all []string) bool {
		c := counts(all)
		for _, id := range want {
			if c[id] == 0 {
				return false
			}
		}
		return true
	}
}

// enqueue commits n messages for dest in transactions of per, returning their ids.
func enqueue(t *testing.T, db *pgtest.DB, dest string, n, per int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []string
	for i := 0; i < n; i += per {
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []outbox.Message
		for j := i; j < min(i+per, n); j++ {
			id := uuid.Must(uuid.NewV7()).String()
			out = append(out, id)
			msgs = append(msgs, outbox.Message{ID: id, Destination: outbox.Destination(dest), Key: fmt.Sprintf("k%d", j%7),
				Type: "Test", Payload: []byte(fmt.Sprintf(`{"n":%d}`, j))})
		}
		if err := outbox.Enqueue(ctx, schema, tx, msgs...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// cli runs a one-shot pgoutbox command and returns its exit code, stdout and stderr.
func cli(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := command(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run %v: %v", args, err)
		}
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

func migrate(t *testing.T, db *pgtest.DB) {
	t.Helper()
	if code, out, errs := cli(t, baseEnv(db), "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errs)
	}
}

// metric returns the value of the first sample of series (a name, with labels or not: name{a="b"}) in
// the /metrics body, or "". A sample matches when it has the name and at least the labels given, so
// labels the query leaves out (outbox="…") do not matter.
func metric(body, series string) string {
	name, want := splitSeries(series)
	for _, l := range strings.Split(body, "\n") {
		sample, value, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		n, labels := splitSeries(sample)
		if n != name {
			continue
		}
		if hasLabels(labels, want) {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// splitSeries splits name{a="x",b="y"} into the name and its label pairs (a="x", b="y").
func splitSeries(s string) (string, []string) {
	name, rest, ok := strings.Cut(s, "{")
	if !ok {
		return s, nil
	}
	rest = strings.TrimSuffix(rest, "}")
	if rest == "" {
		return name, nil
	}
	return name, strings.Split(rest, ",")
}

func hasLabels(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
