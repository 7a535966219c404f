//go:build debezium

package kafka_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/kafka"
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

// EnvDebeziumClasspath is the Java classpath of the bench's Debezium peer (bench/peers/debezium/build.sh
// prints it); `make test-debezium` sets it.
const EnvDebeziumClasspath = "PGOUTBOX_TEST_DEBEZIUM_CLASSPATH"

// TestDebeziumRouterParity runs the real Debezium Outbox Event Router (Debezium embedded, the bench's
// peer: PostgreSQL connector on pgoutbox's publication, io.debezium.transforms.outbox.EventRouter with
// table.field.event.key=key and table.fields.additional.placement=type:header:eventType) on messages
// enqueued in pkg_outbox, and produces the same messages with the debezium-outbox format: the records
// have the same key and value bytes, and every header the router sets (but its __debezium.context.…
// ones) is in ours with the same value (the peer writes header values as JSON, Debezium Server's
// default; null stays null). Run with `make test-debezium` (Java 17+ and Maven; not run by CI).
func TestDebeziumRouterParity(t *testing.T) {
	cp := os.Getenv(EnvDebeziumClasspath)
	if cp == "" {
		t.Fatalf("%s is unset: run `make test-debezium`, which builds the Debezium peer and sets it", EnvDebeziumClasspath)
	}
	brokers := kafkatest.Brokers(t)
	db := pgtest.New(t)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	dbzTopic, ourTopic := kafkatest.TopicName(t)+".debezium", kafkatest.TopicName(t)+".pgoutbox"
	kafkatest.CreateTopic(t, brokers, dbzTopic, 1, nil)
	kafkatest.CreateTopic(t, brokers, ourTopic, 1, nil)
	slot := "pgoutbox_parity_" + strings.ToLower(pgtest.RandomSuffix())
	stop := startDebezium(t, cp, db, brokers, slot, dbzTopic)
	defer stop()
	deadline := time.Now().Add(3 * time.Minute)
	for db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", slot) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Debezium's replication slot is not active after 3 minutes")
		}
		time.Sleep(time.Second)
	}
	msgs := []outbox.Message{
		{ID: "0190b0f8-0000-7000-8000-000000000001", Destination: "orders", Key: "order-42", Type: "OrderCreated",
			Payload: []byte(`{"id": 42, "lines": [1, 2]}`), Headers: map[string]string{"traceparent": "00-1-2-01"}},
		{ID: "0190b0f8-0000-7000-8000-000000000002", Destination: "orders", Key: "order-43", Type: "OrderShipped", Payload: []byte{0, 1, 0xfe, 0xff}},
		{ID: "0190b0f8-0000-7000-8000-000000000003", Destination: "orders", Payload: []byte{}}, // no key, no type, empty payload
	}
	if err := outbox.Enqueue(ctx, "app", db.Pool, msgs...); err != nil {
		t.Fatal(err)
	}
	recs := make([]outbox.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = outbox.Record{Message: m}
	}
	s := newRealSink(t, brokers, map[string]string{"orders": ourTopic}, func(c *kafka.Config) {
		c.Formats = map[string]recordformat.Format{"orders": {Name: kafka.FormatDebeziumOutbox}}
	})
	if err := s.Send(ctx, recs); err != nil {
		t.Fatal(err)
	}
	var dbz []*kgo.Record
	for dbz = kafkatest.ReadAll(t, brokers, dbzTopic); len(dbz) < len(msgs); dbz = kafkatest.ReadAll(t, brokers, dbzTopic) {
		if time.Now().After(deadline) {
			t.Fatalf("Debezium produced %d of %d records in 3 minutes", len(dbz), len(msgs))
		}
		time.Sleep(time.Second)
	}
	ours := kafkatest.ReadAll(t, brokers, ourTopic)
	for i := range msgs {
		compareWithRouter(t, msgs[i], dbz[i], ours[i])
	}
}

// compareWithRouter checks that ours, the debezium-outbox record of m, matches dbz, the router's.
func compareWithRouter(t *testing.T, m outbox.Message, dbz, ours *kgo.Record) {
	t.Helper()
	if !bytes.Equal(dbz.Key, ours.Key) || (dbz.Key == nil) != (ours.Key == nil) || !bytes.Equal(dbz.Value, ours.Value) {
		t.Errorf("message %s: key/value %q/%q, the router's %q/%q", m.ID, ours.Key, ours.Value, dbz.Key, dbz.Value)
	}
	router := map[string]bool{}
	for _, h := range dbz.Headers {
		if strings.HasPrefix(h.Key, "__debezium.context.") {
			continue // the engine's context (connector, task, run id): not carried, see docs/daemon.md
		}
		router[h.Key] = true
		var want *string
		if err := json.Unmarshal(h.Value, &want); err != nil {
			t.Fatalf("message %s: the router's header %s=%s is not a JSON string or null: %v", m.ID, h.Key, h.Value, err)
		}
		got, ok := header(ours, h.Key)
		switch {
		case !ok:
			t.Errorf("message %s: the router sets header %s=%s, ours has none", m.ID, h.Key, h.Value)
		case want == nil && got != nil || want != nil && (got == nil || string(got) != *want):
			t.Errorf("message %s: header %s is %q (null %v), the router's %s", m.ID, h.Key, got, got == nil, h.Value)
		}
	}
	var extra []string
	for _, h := range ours.Headers {
		if !router[h.Key] && !strings.HasPrefix(h.Key, "pgoutbox-") && m.Headers[h.Key] == "" {
			extra = append(extra, h.Key)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 || !router["id"] || !router["eventType"] {
		t.Errorf("message %s: headers the router does not set: %v; the router's: %v", m.ID, extra, router)
	}
}

func header(r *kgo.Record, key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// startDebezium starts the bench's Debezium peer on db's outbox, routing every record to topic, and
// returns a function that stops it (and shows its log when the test failed).
func startDebezium(t *testing.T, classpath string, db *pgtest.DB, brokers []string, slot, topic string) func() {
	t.Helper()
	u, err := url.Parse(db.ConnString)
	if err != nil || u.User == nil {
		t.Fatalf("the Debezium peer needs a postgres://user@host:port/db URL (%v)", err)
	}
	pw, _ := u.User.Password()
	dir := t.TempDir()
	props := map[string]string{
		"name": "pgoutbox-parity", "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
		"offset.storage":               "org.apache.kafka.connect.storage.FileOffsetBackingStore",
		"offset.storage.file.filename": filepath.Join(dir, "offsets"),
		"database.hostname":            u.Hostname(), "database.port": u.Port(), "database.user": u.User.Username(),
		"database.password": pw, "database.dbname": strings.TrimPrefix(u.Path, "/"),
		"database.sslmode": "disable", "topic.prefix": "pgoutbox-parity", "plugin.name": "pgoutput", "slot.name": slot,
		"publication.name": "pgoutbox_app", "publication.autocreate.mode": "disabled",
		"table.include.list": "app.pkg_outbox", "snapshot.mode": "no_data",
		"header.converter.schemas.enable": "false", "transforms": "outbox",
		"transforms.outbox.type":                              "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.table.field.event.key":             "key", // pgoutbox's column for the aggregate id
		"transforms.outbox.table.fields.additional.placement": "type:header:eventType",
		"transforms.outbox.route.by.field":                    "destination", // pgoutbox has no aggregatetype column
		"transforms.outbox.route.topic.replacement":           topic,
		"producer.bootstrap.servers":                          strings.Join(brokers, ","), "producer.acks": "all",
	}
	esc := strings.NewReplacer(`\`, `\\`, "=", `\=`, ":", `\:`, "#", `\#`, "!", `\!`, "\n", `\n`)
	var sb strings.Builder
	for k, v := range props {
		fmt.Fprintf(&sb, "%s=%s\n", k, esc.Replace(v))
	}
	file := filepath.Join(dir, "debezium.properties")
	if err := os.WriteFile(file, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command("java", "-cp", classpath, "io.github.pgoutbox.bench.OutboxBench", file)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the Debezium peer: %v", err)
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("Debezium peer output:\n%s", log.String())
		}
	}
}
