//go:build faults

package faults

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

const kafkaScriptPath = "../scripts/kafka.sh"

// scriptBroker is a broker started by scripts/kafka.sh in a state dir of its own, so that the test may
// kill and restart it without disturbing the shared one.
type scriptBroker struct {
	t    *testing.T
	dir  string
	env  []string // extra environment for kafka.sh
	addr string
}

func newScriptBroker(t *testing.T) *scriptBroker { t.Helper(); return startScriptBroker(t) }

// startScriptBroker starts a broker with kafka.sh in a fresh state dir, with env added to kafka.sh's
// environment; it is removed when t ends.
func startScriptBroker(t *testing.T, env ...string) *scriptBroker {
	t.Helper()
	kafkatest.Brokers(t) // same skip/fail rules as every Kafka test
	if _, err := exec.LookPath("java"); err != nil {
		pgtest.SkipOrFail(t, "java not found: cannot start a dedicated broker with scripts/kafka.sh")
	}
	b := &scriptBroker{t: t, dir: filepath.Join(os.TempDir(), "pgoutbox-faults-kafka-"+pgtest.RandomSuffix()), env: env}
	t.Cleanup(func() { b.script("clean") })
	line := strings.TrimSpace(b.script("up"))
	b.addr = strings.TrimPrefix(line, "export "+kafkatest.EnvBrokers+"=")
	return b
}

func (b *scriptBroker) script(args ...string) string {
	b.t.Helper()
	cmd := exec.Command(kafkaScriptPath, args...)
	cmd.Env = append(append(os.Environ(), "PGOUTBOX_KAFKA_DIR="+b.dir), b.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.t.Fatalf("kafka.sh %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// kill9 sends SIGKILL to the broker's JVM (the pid kafka.sh recorded) and waits until it is gone.
func (b *scriptBroker) kill9() {
	b.t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.dir, "kafka.pid"))
	if err != nil {
		b.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		b.t.Fatalf("bad pid file: %q", raw)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("broker pid %d survived SIGKILL", pid)
}

// proxiedBroker is a broker started by scripts/kafka.sh whose advertised listener is a tcpproxy in
// front of it (PGOUTBOX_KAFKA_PORT, PGOUTBOX_KAFKA_ADVERTISED): every client connection, including the
// ones made after a metadata refresh, goes through the proxy.
type proxiedBroker struct {
	proxy  *tcpproxy.Proxy
	broker *scriptBroker
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := tcpproxy.New("127.0.0.1:0", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	port := p.Port()
	_ = p.Close()
	return port
}

func newProxiedBroker(t *testing.T) *proxiedBroker {
	t.Helper()
	port := freePort(t)
	proxy, err := tcpproxy.New("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	sb := startScriptBroker(t, "PGOUTBOX_KAFKA_PORT="+strconv.Itoa(port), "PGOUTBOX_KAFKA_ADVERTISED="+proxy.Addr())
	if sb.addr != proxy.Addr() {
		t.Fatalf("kafka.sh advertises %q, want the proxy %s", sb.addr, proxy.Addr())
	}
	return &proxiedBroker{proxy: proxy, broker: sb}
}

func (b *proxiedBroker) addr() string { return b.proxy.Addr() }
