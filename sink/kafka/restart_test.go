package kafka_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
)

// kafkaScript runs scripts/kafka.sh with a state dir of its own, so the test stops and starts a broker
// that no other test uses.
func kafkaScript(t *testing.T, dir string, args ...string) string {
	t.Helper()
	script, err := filepath.Abs("../../scripts/kafka.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, args...)
	cmd.Env = append(os.Environ(), "PGOUTBOX_KAFKA_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kafka.sh %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// The broker stops: Send reports the sink unavailable (nothing is dead-lettered); once the broker is
// back, the retried batch is delivered and nothing acked before is lost.
func TestBrokerRestartUnavailableThenRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own broker twice")
	}
	kafkatest.Brokers(t) // same skip/fail rules as every integration test
	if _, err := exec.LookPath("java"); err != nil {
		pgtest.SkipOrFail(t, "java not found: cannot start a dedicated broker with scripts/kafka.sh")
	}
	dir := filepath.Join(os.TempDir(), "pgoutbox-kafka-restart-"+strings.ReplaceAll(time.Now().Format("150405.000000"), ".", ""))
	t.Cleanup(func() { kafkaScript(t, dir, "clean") })
	line := strings.TrimSpace(kafkaScript(t, dir, "up"))
	addr := strings.TrimPrefix(line, "export "+kafkatest.EnvBrokers+"=")
	brokers := []string{addr}

	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 2, nil)
	s := newRealSink(t, brokers, map[string]string{string(sinktest.Destination): topic}, func(c *kafka.Config) {
		c.Retries = 2
		c.RetryBackoff = 100 * time.Millisecond
		c.DialTimeout = time.Second
		c.ReadTimeout = 3 * time.Second
		c.WriteTimeout = 3 * time.Second
		c.ProduceTimeout = 2 * time.Second
	})
	var a, b []outbox.Record
	for i := range 50 {
		a = append(a, sinktest.Record("k"+string(rune('a'+i%5)), i))
		b = append(b, sinktest.Record("k"+string(rune('a'+i%5)), 50+i))
	}
	if err := s.Send(ctx(t, 30*time.Second), a); err != nil {
		t.Fatalf("Send before the stop: %v", err)
	}

	kafkaScript(t, dir, "down")
	err := s.Send(ctx(t, 2*time.Minute), b)
	if !outbox.IsUnavailable(err) {
		t.Fatalf("Send with the broker down = %v, want unavailable", err)
	}
	t.Logf("broker down: %v", err)

	if again := strings.TrimSpace(kafkaScript(t, dir, "up")); again != line {
		t.Fatalf("broker came back as %q, was %q", again, line)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for { // what the relay does: retry the whole batch until it is acked
		err = s.Send(ctx(t, 30*time.Second), b)
		if err == nil {
			break
		}
		if !outbox.IsUnavailable(err) || time.Now().After(deadline) {
			t.Fatalf("Send after restart: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	seen := map[string]bool{}
	for _, r := range kafkatest.ReadAll(t, brokers, topic) {
		id, _ := kafkatest.Header(r, kafka.HeaderID)
		seen[id] = true
	}
	for _, r := range append(a, b...) {
		if !seen[r.ID] {
			t.Errorf("record %s acked but lost across the restart", r.ID)
		}
	}
}
