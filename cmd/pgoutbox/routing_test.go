//go:build !nokafka

package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// enqueueRouted commits one message per route for dest, all on key, in one transaction, and returns
// their ids in order.
func enqueueRouted(t *testing.T, db *pgtest.DB, dest, key string, routes ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var msgs []outbox.Message
	var out []string
	for i, r := range routes {
		id := uuid.Must(uuid.NewV7()).String()
		out = append(out, id)
		msgs = append(msgs, outbox.Message{ID: id, Destination: outbox.Destination(dest), Route: r, Key: key,
			Type: "Test", Payload: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	if err := outbox.Enqueue(ctx, schema, db.Pool, msgs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// topicIDs returns the message ids in topic, in order.
func topicIDs(t *testing.T, brokers []string, topic string) []string {
	t.Helper()
	var out []string
	for _, r := range kafkatest.ReadAll(t, brokers, topic) {
		id, _ := kafkatest.Header(r, "pgoutbox-id")
		out = append(out, id)
	}
	return out
}

// deadLetterErrors returns the dead-letter table, id → error.
func deadLetterErrors(t *testing.T, db *pgtest.DB) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := db.Pool.Query(ctx, "SELECT id::text, error FROM app.pkg_outbox_dead_letter")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, e string
		if err := rows.Scan(&id, &e); err != nil {
			t.Fatal(err)
		}
		out[id] = e
	}
	return out
}

// TestRunKafkaRoutingPrecedence: the daemon sends every message of a destination with a configured topic
// there, whatever its Route (the reported `--route event_bus=kafka:ob_1` with Routes `bench`); a
// destination without one takes the Route within routes.<dest>.kafka.allowed_topics, dead-letters a
// Route outside it naming the rule, retries then dead-letters a Route to a missing topic without
// blocking; the startup log and `status` say which rule applies.
func TestRunKafkaRoutingPrecedence(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	brokers := kafkatest.Brokers(t)
	base := kafkatest.TopicName(t)
	configured, allowed, outside := base+".ob_1", base+".orders.v1", base+".billing"
	for _, topic := range []string{configured, allowed, outside} {
		kafkatest.CreateTopic(t, brokers, topic, 1, nil)
	}
	missing := base + ".orders.missing"
	migrate(t, db)
	env := append(baseEnv(db), "PGOUTBOX_KAFKA_BROKERS="+strings.Join(brokers, ","))
	d := start(t, "routing", env, "--route", "event_bus=kafka:"+configured, "--route", "orders=kafka",
		"--set", "routes.orders.kafka.allowed_topics="+base+".orders.*", "--instance-id", "routing",
		"--set", "delivery.max_attempts=3", "--set", "delivery.backoff_min=20ms", "--set", "delivery.backoff_max=200ms")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	d.waitLog(`"destination":"event_bus","sink":"kafka topic `+configured+` (configured: every message goes there, its Route is ignored); format raw"`, 5*time.Second)
	d.waitLog(`"destination":"orders","sink":"kafka topic from each message's Route, allowed: `+base+`.orders.*`, 5*time.Second)

	bus := enqueueRouted(t, db, "event_bus", "k1", "bench", outside, "")
	orders := enqueueRouted(t, db, "orders", "k2", allowed, outside, missing, allowed)

	deadline := time.Now().Add(60 * time.Second)
	for len(deadLetterErrors(t, db)) < 2 || len(topicIDs(t, brokers, configured)) < len(bus) || len(topicIDs(t, brokers, allowed)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("not settled after 60s: dead letters %v, %s %v, %s %v", deadLetterErrors(t, db),
				configured, topicIDs(t, brokers, configured), allowed, topicIDs(t, brokers, allowed))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := topicIDs(t, brokers, configured); strings.Join(got, ",") != strings.Join(bus, ",") {
		t.Errorf("configured topic holds %v, want every event_bus message %v", got, bus)
	}
	// orders[3] is on the same key as the missing-topic message: it waits until that one is dead-lettered.
	if got := topicIDs(t, brokers, allowed); strings.Join(got, ",") != orders[0]+","+orders[3] {
		t.Errorf("allowed topic holds %v, want [%s %s]", got, orders[0], orders[3])
	}
	if got := topicIDs(t, brokers, outside); len(got) != 0 {
		t.Errorf("topic outside the allow-list got %v", got)
	}
	dead := deadLetterErrors(t, db)
	if e := dead[orders[1]]; !strings.Contains(e, "not an allowed topic (allowed topics: "+base+".orders.*)") {
		t.Errorf("Route outside allowed_topics: dead letter %q, want the rule named", e)
	}
	if e := dead[orders[2]]; !strings.Contains(e, missing) || !strings.Contains(e, "does not exist") {
		t.Errorf("Route to a missing topic: dead letter %q, want the topic named", e)
	}
	if len(dead) != 2 {
		t.Errorf("dead letters %v, want exactly 2", dead)
	}
	_, body := d.get("/metrics")
	if v := metric(body, `pgoutbox_destination_blocked{destination="orders"}`); v == "1" {
		t.Errorf("a Route to a missing topic blocked the destination")
	}
	if code, body := d.get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q after a Route to a missing topic", code, body)
	}

	code, out, errs := cli(t, env, "status", "--json",
		"--set", "routes.event_bus.kafka.topic="+configured, "--set", "routes.orders.kafka.allowed_topics="+base+".orders.*")
	if code != 0 {
		t.Fatalf("status: %d\n%s", code, errs)
	}
	var st struct {
		Routes []struct {
			Destination, Topic string
			TopicFrom          string   `json:"topic_from"`
			AllowedTopics      []string `json:"allowed_topics"`
			Format             string
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if got := fmt.Sprintf("%+v", st.Routes); got != fmt.Sprintf("[{Destination:event_bus Topic:%s TopicFrom:config AllowedTopics:[] Format:raw} {Destination:orders Topic: TopicFrom:route AllowedTopics:[%s.orders.*] Format:raw}]", configured, base) {
		t.Errorf("status routes = %s", got)
	}
	_, out, _ = cli(t, env, "status", "--set", "routes.orders.kafka.allowed_topics=a.*,b")
	if !strings.Contains(out, "route orders") || !strings.Contains(out, "kafka topic from each message's Route, allowed: a.*, b") {
		t.Errorf("status lacks the orders route:\n%s", out)
	}
	_, out, _ = cli(t, env, "status", "--set", "routes.orders.kafka.format=debezium-outbox", "--set", "kafka.exactly_once=true")
	if !strings.Contains(out, "format debezium-outbox; exactly once (Kafka transactions)") {
		t.Errorf("status lacks the orders route's format and exactly-once:\n%s", out)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(40 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
