//go:build faults

package faults

import (
	"bufio"
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
)

// lineLog collects the lines a process writes; safe for concurrent use.
type lineLog struct {
	mu  sync.Mutex
	all []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	l.all = append(l.all, s)
	l.mu.Unlock()
}

func (l *lineLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

func (l *lineLog) contains(sub string) bool {
	for _, s := range l.lines() {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (l *lineLog) tail(n int) string {
	all := l.lines()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n")
}

// daemon is one pgoutbox process.
type daemon struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout *lineLog
	stderr *lineLog
	done   chan struct{}
	code   int
	mu     sync.Mutex
	addr   string
}

// startDaemon runs the binary with args (for example "--config", path, "run"). The process is killed
// (SIGKILL) when t ends if it still runs.
func startDaemon(t *testing.T, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, stdout: &lineLog{}, stderr: &lineLog{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = append(cleanEnv(), "GOTRACEBACK=all")
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start pgoutbox %s: %v", name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); scan(stdout, d.stdout, nil) }()
	go func() { defer wg.Done(); scan(stderr, d.stderr, d.sawLog) }()
	go func() {
		wg.Wait()
		err := d.cmd.Wait()
		d.code = exitCodeOf(err)
		close(d.done)
	}()
	t.Cleanup(func() {
		if d.running() {
			d.kill()
		}
		if t.Failed() {
			t.Logf("pgoutbox %s (exit %d) stderr tail:\n%s", name, d.code, d.stderr.tail(25))
		}
	})
	return d
}

// cleanEnv is the test's environment without PGOUTBOX_* settings, which would override the config file.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGOUTBOX_") {
			out = append(out, kv)
		}
	}
	return out
}

func scan(r io.Reader, into *lineLog, each func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		l := sc.Text()
		into.add(l)
		if each != nil {
			each(l)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (d *daemon) sawLog(l string) {
	if !strings.Contains(l, "http server listening") {
		return
	}
	var m struct {
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(l), &m) == nil && m.Addr != "" {
		d.mu.Lock()
		d.addr = m.Addr
		d.mu.Unlock()
	}
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	_ = syscall.Kill(d.pid(), syscall.SIGKILL)
	<-d.done
}

// stop sends SIGTERM and returns the exit code (fails t after timeout).
func (d *daemon) stop(timeout time.Duration) int {
	d.t.Helper()
	_ = syscall.Kill(d.pid(), syscall.SIGTERM)
	return d.wait(timeout)
}

// wait returns the exit code once the process ends, or fails t after timeout.
func (d *daemon) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
		return d.code
	case <-time.After(timeout):
		d.t.Fatalf("pgoutbox %s still runs after %s; stderr tail:\n%s", d.name, timeout, d.stderr.tail(20))
		return -1
	}
}

func (d *daemon) httpAddr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

// get fetches path from the daemon's HTTP server; code 0 when it does not answer.
func (d *daemon) get(path string) (int, string) {
	addr := d.httpAddr()
	if addr == "" {
		return 0, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP polls path until ok accepts the answer; it fails t after timeout or when the process exits.
func (d *daemon) waitHTTP(path string, timeout time.Duration, ok func(code int, body string) bool) (int, string) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var code int
	var body string
	for {
		code, body = d.get(path)
		if ok(code, body) {
			return code, body
		}
		if !d.running() {
			d.t.Fatalf("pgoutbox %s exited with %d while waiting for %s; stderr tail:\n%s", d.name, d.code, path, d.stderr.tail(20))
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("pgoutbox %s: %s = %d %q after %s", d.name, path, code, strings.TrimSpace(body), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStreaming waits until /readyz says the instance streams.
func (d *daemon) waitStreaming(timeout time.Duration) {
	d.t.Helper()
	d.waitHTTP("/readyz", timeout, func(code int, body string) bool { return code == 200 && strings.Contains(body, "streaming") })
}

// metric returns the value of the first sample of /metrics matching series: a name, with labels or
// not (name{a="b"}). A sample matches when it has the name and at least the labels given, so a label
// the query leaves out (outbox="app") does not matter.
func (d *daemon) metric(series string) string {
	_, body := d.get("/metrics")
	name, want := splitSeries(series)
	for _, l := range strings.Split(body, "\n") {
		sample, value, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		if n, labels := splitSeries(sample); n == name && containsAll(labels, want) {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// splitSeries splits name{a="x",b="y"} into the name and its label pairs (a="x", b="y").
func splitSeries(s string) (string, []string) {
	name, rest, ok := strings.Cut(s, "{")
	if !ok || rest == "}" {
		return name, nil
	}
	return name, strings.Split(strings.TrimSuffix(rest, "}"), ",")
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// run runs the binary to completion (a CLI command) and returns its exit code, stdout and stderr.
func run(t *testing.T, timeout time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("pgoutbox %v did not finish within %s", args, timeout)
	}
	return exitCodeOf(err), out.String(), errb.String()
}

// config is what a scenario's configuration file says.
type config struct {
	URL      string
	Slot     string
	Instance string
	// exactly one of these routes event_bus
	Topic   string // kafka topic
	Stdout  bool
	Webhook string
	Brokers []string
	// KafkaExtra is appended inside the kafka section (lines indented by two spaces).
	KafkaExtra string
	// MaxAttempts overrides delivery.max_attempts (default 4).
	MaxAttempts int
	// DefaultDelivery keeps the relay's delivery defaults (max_attempts 10, backoff 100ms to 30s)
	// instead of the suite's fast retries.
	DefaultDelivery bool
	// Extra is appended verbatim (YAML at the top level).
	Extra string
}

// write writes the configuration into a file under t's temp dir and returns its path.
func (c config) write(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "database:\n  url: %q\nschema: app\n", c.URL)
	if c.Slot != "" {
		fmt.Fprintf(&b, "slot: %s\n", c.Slot)
	}
	if c.Instance != "" {
		fmt.Fprintf(&b, "instance_id: %s\n", c.Instance)
	}
	b.WriteString("routes:\n")
	switch {
	case c.Topic != "":
		fmt.Fprintf(&b, "  event_bus: {kafka: {topic: %q}}\n", c.Topic)
	case c.Webhook != "":
		fmt.Fprintf(&b, "  event_bus: {webhook: {url: %q, timeout: 5s}}\n", c.Webhook)
	default:
		b.WriteString("  event_bus: {stdout: {}}\n")
	}
	if len(c.Brokers) > 0 {
		fmt.Fprintf(&b, "kafka:\n  brokers: [%s]\n", strings.Join(c.Brokers, ", "))
		b.WriteString("  dial_timeout: 2s\n  read_timeout: 5s\n  write_timeout: 5s\n  produce_timeout: 5s\n  retry_backoff: 100ms\n")
		b.WriteString(c.KafkaExtra)
	}
	switch {
	case c.DefaultDelivery:
		b.WriteString("delivery:\n  handler_timeout: 8s\n")
	default:
		if c.MaxAttempts == 0 {
			c.MaxAttempts = 4
		}
		fmt.Fprintf(&b, "delivery:\n  max_attempts: %d\n", c.MaxAttempts)
		b.WriteString("  backoff_min: 20ms\n  backoff_max: 500ms\n  handler_timeout: 8s\n")
	}
	b.WriteString("http:\n  listen: 127.0.0.1:0\nslot_poll_interval: 500ms\ndrain_timeout: 15s\nlog:\n  level: info\n")
	b.WriteString(c.Extra)
	p := filepath.Join(t.TempDir(), fmt.Sprintf("pgoutbox-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
