//go:build faults

package faults

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// env is one scenario's world: a migrated database, a slot name, a ledger and (for Kafka scenarios)
// a topic with a watcher.
type env struct {
	t       *testing.T
	db      *pgtest.DB
	pool    *pgxpool.Pool
	slot    string
	l       *oracle.Ledger
	brokers []string
	topic   string
	w       *topic.Watcher
}

// newEnv migrates a fresh database (on the shared cluster unless db is given).
func newEnv(t *testing.T, db *pgtest.DB) *env {
	t.Helper()
	if db == nil {
		db = pgtest.New(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := outbox.Migrate(ctx, db.Pool, "app"); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &env{t: t, db: db, pool: db.Pool, slot: "faults_" + pgtest.RandomSuffix(), l: oracle.New(db.Pool, "app")}
}

// withTopic creates a topic (3 partitions unless told) on brokers and watches it.
func (e *env) withTopic(brokers []string, partitions int, configs map[string]string) *env {
	e.t.Helper()
	if partitions == 0 {
		partitions = 3
	}
	e.brokers = brokers
	e.topic = kafkatest.TopicName(e.t)
	kafkatest.CreateTopic(e.t, brokers, e.topic, partitions, configs)
	e.w = topic.Watch(e.t, brokers, e.topic)
	return e
}

// config returns a daemon configuration for this env; url overrides the database URL (a proxy).
func (e *env) config(instance string) config {
	return config{URL: e.db.ConnString, Slot: e.slot, Instance: instance, Topic: e.topic, Brokers: e.brokers}
}

// start runs `pgoutbox --config c run` and waits until it streams.
func (e *env) start(name string, c config) *daemon {
	e.t.Helper()
	d := startDaemon(e.t, name, "--config", c.write(e.t), "run")
	d.waitStreaming(60 * time.Second)
	return d
}

// confirmed returns the slot's confirmed_flush_lsn ("" when the slot does not exist).
func (e *env) confirmed() string {
	var s *string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&s)
	if s == nil {
		return ""
	}
	return *s
}

// slots returns the number of replication slots named e.slot.
func (e *env) slots() int64 {
	return e.db.QueryInt(e.t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", e.slot)
}

// deliveredWithin commits a marker and waits until it reaches the topic; it returns the time from
// since (the fault) to the delivery, or fails t.
func (e *env) markerDelivered(since time.Time, timeout time.Duration) time.Duration {
	e.t.Helper()
	id := marker(e.t, e.l, "marker")
	if !e.w.WaitFor(id, timeout) {
		e.t.Fatalf("marker %s committed after the fault was not delivered within %s", id, timeout)
	}
	return time.Since(since)
}

func (e *env) row(scenario string, v oracle.Verdict, recovery time.Duration, notes string) {
	e.t.Helper()
	report(e.t, row{Scenario: scenario, Messages: v.Committed, Lost: v.Lost, Phantom: v.Phantom, Duplicated: v.Dups,
		Order: v.Order, Recovery: dur(recovery), Notes: notes})
}
