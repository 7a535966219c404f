//go:build !nokafka

package main_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestRunToKafka: the daemon delivers to a Kafka topic (acks=all) and /readyz reports a missing topic.
func TestRunToKafka(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.TopicName(t)
	kafkatest.CreateTopic(t, brokers, topic, 3, nil)
	migrate(t, db)
	env := append(baseEnv(db), "PGOUTBOX_KAFKA_BROKERS="+strings.Join(brokers, ","))
	missing := topic + ".missing"
	d := start(t, "kafka", env, "--route", "orders=kafka:"+topic, "--route", "lost=kafka:"+missing, "--instance-id", "kafka")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, _ string) bool { return code == 200 })
	sent := enqueue(t, db, "orders", 100, 10)

	deadline := time.Now().Add(60 * time.Second)
	for {
		recs := kafkatest.ReadAll(t, brokers, topic)
		got := map[string]bool{}
		for _, r := range recs {
			if id, ok := kafkatest.Header(r, "pgoutbox-id"); ok {
				got[id] = true
			} else {
				got[string(r.Key)+"?"] = true
			}
		}
		all := true
		for _, id := range sent {
			all = all && got[id]
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages reached topic %s", len(recs), len(sent), topic)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// A destination whose topic does not exist blocks (no dead letters) and shows in /readyz and /metrics.
	enqueue(t, db, "lost", 1, 1)
	_, body := d.waitHTTP("/readyz", 30*time.Second, func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "blocked destination lost")
	})
	t.Logf("readyz while blocked:\n%s", body)
	d.waitHTTP("/metrics", 10*time.Second, func(_ int, body string) bool {
		return metric(body, `pgoutbox_destination_blocked{destination="lost"}`) == "1"
	})
	if n := db.QueryInt(t, "SELECT count(*) FROM app.pkg_outbox_dead_letter"); n != 0 {
		t.Errorf("%d dead letters while the topic is missing, want 0", n)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(40 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}
