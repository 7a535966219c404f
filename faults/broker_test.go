//go:build faults

package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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
	addr string
}

func newScriptBroker(t *testing.T) *scriptBroker {
	t.Helper()
	kafkatest.Brokers(t) // same skip/fail rules as every Kafka test
	if _, err := exec.LookPath("java"); err != nil {
		pgtest.SkipOrFail(t, "java not found: cannot start a dedicated broker with scripts/kafka.sh")
	}
	b := &scriptBroker{t: t, dir: filepath.Join(os.TempDir(), "pgoutbox-faults-kafka-"+pgtest.RandomSuffix())}
	t.Cleanup(func() { b.script("clean") })
	line := strings.TrimSpace(b.script("up"))
	b.addr = strings.TrimPrefix(line, "export "+kafkatest.EnvBrokers+"=")
	return b
}

func (b *scriptBroker) script(args ...string) string {
	b.t.Helper()
	cmd := exec.Command(kafkaScriptPath, args...)
	cmd.Env = append(os.Environ(), "PGOUTBOX_KAFKA_DIR="+b.dir)
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

// proxiedBroker is a single-node KRaft broker started by the test itself (from the jars scripts/kafka.sh
// caches) whose advertised listener is a tcpproxy in front of it: every client connection, including the
// ones made after a metadata refresh, goes through the proxy. scripts/kafka.sh cannot do this because it
// always advertises the port it listens on.
type proxiedBroker struct {
	proxy *tcpproxy.Proxy
	cmd   *exec.Cmd
	dir   string
}

func kafkaLibs(t *testing.T) string {
	t.Helper()
	pom, err := os.ReadFile("../scripts/kafka/pom.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka.version>(.*?)</kafka.version>`).FindSubmatch(pom)
	if m == nil {
		t.Fatal("no kafka.version in scripts/kafka/pom.xml")
	}
	sum := sha256.Sum256(pom)
	cache := os.Getenv("PGOUTBOX_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "pgoutbox")
	}
	dir := filepath.Join(cache, fmt.Sprintf("kafka-%s-%s", m[1], hex.EncodeToString(sum[:])[:12]))
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		pgtest.SkipOrFail(t, "the Kafka jars are not cached in %s: run `scripts/kafka.sh up` once", dir)
	}
	return filepath.Join(dir, "libs")
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
	kafkatest.Brokers(t)
	if _, err := exec.LookPath("java"); err != nil {
		pgtest.SkipOrFail(t, "java not found: cannot start a dedicated broker")
	}
	libs := kafkaLibs(t)
	dir := filepath.Join(os.TempDir(), "pgoutbox-faults-pkafka-"+pgtest.RandomSuffix())
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	port, cport := freePort(t), freePort(t)
	proxy, err := tcpproxy.New("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	b := &proxiedBroker{proxy: proxy, dir: dir}
	t.Cleanup(func() {
		b.stop()
		_ = proxy.Close()
		_ = os.RemoveAll(dir)
	})
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://%[3]s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=%[4]s/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
`, port, cport, proxy.Addr(), dir)
	if err := os.WriteFile(filepath.Join(dir, "server.properties"), []byte(props), 0o644); err != nil {
		t.Fatal(err)
	}
	log4j := fmt.Sprintf("status = warn\nappender.file.type = File\nappender.file.name = FILE\nappender.file.fileName = %s/logs/server.log\n"+
		"appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%%d] %%p %%m (%%c)%%n\nrootLogger.level = INFO\n"+
		"rootLogger.appenderRef.file.ref = FILE\n", dir)
	if err := os.WriteFile(filepath.Join(dir, "log4j2.properties"), []byte(log4j), 0o644); err != nil {
		t.Fatal(err)
	}
	jopts := []string{"-Djava.awt.headless=true", "-Dlog4j2.configurationFile=" + filepath.Join(dir, "log4j2.properties"),
		"-Dkafka.logs.dir=" + filepath.Join(dir, "logs"), "-cp", libs + "/*"}
	id := "-"
	for strings.HasPrefix(id, "-") {
		raw := make([]byte, 16)
		_, _ = rand.Read(raw)
		id = base64.RawURLEncoding.EncodeToString(raw)
	}
	format := exec.Command("java", append(append([]string{"-Xmx256m"}, jopts...), "kafka.tools.StorageTool", "format", "-t", id,
		"-c", filepath.Join(dir, "server.properties"))...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("format the proxied broker: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "logs", "kafka.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	b.cmd = exec.Command("java", append(append([]string{"-Xms256m", "-Xmx512m", "-XX:+UseG1GC"}, jopts...), "kafka.Kafka",
		filepath.Join(dir, "server.properties"))...)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		cl, err := kgo.NewClient(kgo.SeedBrokers(proxy.Addr()))
		if err == nil {
			bs, err := kadm.NewClient(cl).ListBrokers(ctx)
			cl.Close()
			if err == nil && len(bs) == 1 {
				return b
			}
		}
		if ctx.Err() != nil {
			out, _ := os.ReadFile(filepath.Join(dir, "logs", "kafka.out"))
			t.Fatalf("the proxied broker did not answer within 90s:\n%s", lastLines(string(out), 20))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (b *proxiedBroker) addr() string { return b.proxy.Addr() }

func (b *proxiedBroker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	pid := b.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 150; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
