//go:build !nokafka

package main_test

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestRunToKafkaFormats: routes.<dest>.kafka.format reaches the sink: one destination is produced in
// the debezium-outbox layout (id and eventType headers, the key, the payload as the value), another as
// structured CloudEvents with the configured source.
func TestRunToKafkaFormats(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	brokers := kafkatest.Brokers(t)
	dbzTopic, ceTopic := kafkatest.TopicName(t)+".dbz", kafkatest.TopicName(t)+".ce"
	kafkatest.CreateTopic(t, brokers, dbzTopic, 3, nil)
	kafkatest.CreateTopic(t, brokers, ceTopic, 3, nil)
	migrate(t, db)
	env := append(baseEnv(db), "PGOUTBOX_KAFKA_BROKERS="+strings.Join(brokers, ","))
	d := start(t, "kafka-formats", env, "--instance-id", "kafkafmt",
		"--set", "routes.orders.kafka.topic="+dbzTopic, "--set", "routes.orders.kafka.format=debezium-outbox",
		"--set", "routes.events.kafka.topic="+ceTopic, "--set", "routes.events.kafka.format=cloudevents-structured",
		"--set", "routes.events.kafka.cloudevents_source=urn:shop")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	orders := enqueue(t, db, "orders", 20, 10)
	events := enqueue(t, db, "events", 20, 10)

	dbz := readUntil(t, brokers, dbzTopic, len(orders))
	for _, r := range dbz {
		id, _ := kafkatest.Header(r, "id")
		pid, _ := kafkatest.Header(r, "pgoutbox-id")
		typ, _ := kafkatest.Header(r, "eventType")
		if id == "" || id != pid || typ != "Test" || !strings.HasPrefix(string(r.Key), "k") || !json.Valid(r.Value) {
			t.Fatalf("debezium-outbox record: key %q value %q headers %v", r.Key, r.Value, r.Headers)
		}
	}
	for _, r := range readUntil(t, brokers, ceTopic, len(events)) {
		var ev struct{ ID, Source, Type, Subject string }
		ct, _ := kafkatest.Header(r, "content-type")
		pid, _ := kafkatest.Header(r, "pgoutbox-id")
		if err := json.Unmarshal(r.Value, &ev); err != nil || !strings.HasPrefix(ct, "application/cloudevents+json") ||
			ev.ID != pid || ev.Source != "urn:shop" || ev.Type != "Test" || ev.Subject != string(r.Key) {
			t.Fatalf("cloudevents-structured record: content-type %q value %s (%v)", ct, r.Value, err)
		}
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(40 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// readUntil reads topic until it holds n records (within 60 s).
func readUntil(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs := kafkatest.ReadAll(t, brokers, topic)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d records reached topic %s", len(recs), n, topic)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
