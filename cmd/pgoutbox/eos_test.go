//go:build !nokafka

package main_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestRunExactlyOnceMixedRoutes: one outbox with a Kafka route in exactly-once mode and a webhook
// route. Both deliver everything (the Kafka route once, to a read_committed consumer), /metrics counts
// the Kafka transactions and their records, and a restart after a graceful stop delivers nothing again
// to either.
func TestRunExactlyOnceMixedRoutes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hooked := map[string]int{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hooked[r.Header.Get("Idempotency-Key")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hs.Close()
	db := pgtest.New(t)
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 3, nil)
	kafkatest.CreateTopic(t, brokers, topic+".pos", 1, map[string]string{"cleanup.policy": "compact"})
	migrate(t, db)
	env := append(baseEnv(db), "PGOUTBOX_KAFKA_BROKERS="+strings.Join(brokers, ","))
	args := []string{"--instance-id", "eos", "--route", "orders=kafka:" + topic,
		"--set", "kafka.exactly_once=true", "--set", "kafka.position_topic=" + topic + ".pos",
		"--set", "routes.hooks.webhook.url=" + hs.URL + "/hooks"}
	d := start(t, "eos", env, args...)
	d.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	orders, hooks := enqueue(t, db, "orders", 100, 10), enqueue(t, db, "hooks", 20, 5)

	committed := func() map[string]int {
		seen := map[string]int{}
		for _, r := range kafkatest.ReadCommitted(t, brokers, topic) {
			id, _ := kafkatest.Header(r, "pgoutbox-id")
			seen[id]++
		}
		return seen
	}
	deadline := time.Now().Add(60 * time.Second)
	for seen := committed(); len(seen) < len(orders); seen = committed() {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages reached topic %s (read_committed)", len(seen), len(orders), topic)
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.waitHTTP("/metrics", 30*time.Second, func(_ int, body string) bool {
		return metric(body, `pgoutbox_kafka_transaction_records_total`) == "100" &&
			metric(body, `pgoutbox_messages_delivered_total{destination="hooks"}`) == "20"
	})
	_, body := d.get("/metrics")
	if metric(body, `pgoutbox_kafka_transactions_total{outcome="committed"}`) == "0" || metric(body, `pgoutbox_kafka_transactions_total{outcome="aborted"}`) != "0" ||
		metric(body, `pgoutbox_kafka_producer_fenced_total`) != "0" {
		t.Errorf("transaction metrics: committed %s, aborted %s, fenced %s; want some committed, none aborted or fenced",
			metric(body, `pgoutbox_kafka_transactions_total{outcome="committed"}`), metric(body, `pgoutbox_kafka_transactions_total{outcome="aborted"}`),
			metric(body, `pgoutbox_kafka_producer_fenced_total`))
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(40 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}

	d2 := start(t, "eos-again", env, args...)
	d2.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	time.Sleep(2 * time.Second) // anything re-delivered would arrive by now
	d2.signal(syscall.SIGTERM)
	if code := d2.wait(40 * time.Second); code != 0 {
		t.Errorf("second run: exit %d", code)
	}
	seen := committed()
	for _, id := range orders {
		if seen[id] != 1 {
			t.Errorf("order %s seen %d times by read_committed, want 1", id, seen[id])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range hooks {
		if hooked[id] != 1 {
			t.Errorf("hook %s delivered %d times, want 1", id, hooked[id])
		}
	}
}
