//go:build faults

package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/oracle/topic"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// A message over the topic's max.message.bytes is dead-lettered with the reason; the rest, its own key
// included, keeps flowing.
func TestPoisonTooLarge(t *testing.T) {
	e := newEnv(t, nil).withTopic(kafkatest.Brokers(t), 3, map[string]string{"max.message.bytes": "20000"})
	d := e.start("relay", e.config("poison-large"))
	gen := e.l.Generate(oracle.GenConfig{Prefix: "poison", Pause: 5 * time.Millisecond, MaxTx: 300})
	var poison []string
	for i := range 3 {
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("poison-w0-k%d", i), Type: "Test", Payload: bytes.Repeat([]byte{'p'}, 50_000)}
		poison = append(poison, m.ID)
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	<-gen.Done()
	v := e.l.Verify(t, 60*time.Second, false, topic.Source(t, e.brokers, e.topic))
	dead := deadLetters(t, e.pool)
	for _, id := range poison {
		if why, ok := dead[id]; !ok || !strings.Contains(why, "20000") {
			t.Errorf("too-large message %s: dead letter %v %q, want one naming the topic limit 20000", id, ok, why)
		}
	}
	if len(dead) != len(poison) {
		t.Errorf("%d dead letters, want exactly the %d poison messages", len(dead), len(poison))
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("poison: 3 messages over the topic's max.message.bytes (20000)", v, 0,
		fmt.Sprintf("%d dead-lettered with the limit named, the rest delivered in order, same keys included", v.Dead))
}

// A webhook handler that fails one message (5xx: retried, then dead-lettered after max_attempts) and
// rejects another (4xx: permanent, dead-lettered at once); the rest flows, in order per key.
func TestPoisonHandlerFailure(t *testing.T) {
	e := newEnv(t, nil)
	var mu sync.Mutex
	var got []oracle.Delivery
	attempts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("Idempotency-Key")
		mu.Lock()
		attempts[id]++
		mu.Unlock()
		switch {
		case bytes.HasPrefix(body, []byte("fail-5xx")):
			http.Error(w, "handler failed", http.StatusInternalServerError)
			return
		case bytes.HasPrefix(body, []byte("fail-4xx")):
			http.Error(w, "unprocessable", http.StatusUnprocessableEntity)
			return
		}
		mu.Lock()
		got = append(got, oracle.Delivery{ID: id, Key: r.Header.Get("X-Pgoutbox-Key"), Payload: body, Pos: "webhook"})
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	c := e.config("poison-handler")
	c.Webhook = srv.URL
	c.MaxAttempts = 3
	d := e.start("relay", c)
	gen := e.l.Generate(oracle.GenConfig{Prefix: "hook", Pause: 5 * time.Millisecond, MaxTx: 150})
	var poison []string
	for _, kind := range []string{"fail-5xx", "fail-4xx"} {
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: "hook-w0-k1", Type: "Test", Payload: []byte(kind)}
		poison = append(poison, m.ID)
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	<-gen.Done()
	v := e.l.Verify(t, 60*time.Second, false, func(context.Context) ([]oracle.Delivery, error) {
		mu.Lock()
		ds := append([]oracle.Delivery(nil), got...)
		mu.Unlock()
		// The webhook does not carry the key as a header: judge keys from the ledger.
		for i := range ds {
			s, _ := e.l.Lookup(ds[i].ID)
			ds[i].Key = s.Key
		}
		return ds, nil
	})
	dead := deadLetters(t, e.pool)
	for i, id := range poison {
		if _, ok := dead[id]; !ok {
			t.Errorf("poison message %d (%s) not dead-lettered", i, id)
		}
	}
	if len(dead) != 2 {
		t.Errorf("%d dead letters, want 2", len(dead))
	}
	t.Logf("dead letters: %v", dead)
	mu.Lock()
	a5, a4 := attempts[poison[0]], attempts[poison[1]]
	mu.Unlock()
	if a5 != 3 || a4 != 1 {
		t.Errorf("attempts: 5xx message %d (want max_attempts 3), 4xx message %d (want 1)", a5, a4)
	}
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("poison: webhook handler fails one message (5xx) and rejects one (4xx)", v, 0,
		fmt.Sprintf("5xx tried %d× then dead-lettered, 4xx tried %d× then dead-lettered; the rest delivered", a5, a4))
}

// A sink that fails everything (the route's topic does not exist): the destination blocks, nothing is
// dead-lettered, the slot does not move, /readyz says blocked; creating the topic lets everything through.
func TestSinkFailingEverything(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	e := newEnv(t, nil)
	e.brokers = brokers
	e.topic = kafkatest.TopicName(t) // not created yet
	c := e.config("failing")
	d := startDaemon(t, "relay", "--config", c.write(t), "run")
	d.waitHTTP("/readyz", 60*time.Second, func(code int, body string) bool { return strings.Contains(body, "blocked") || code == 200 })
	gen := e.l.Generate(oracle.GenConfig{Prefix: "failing", Pause: 5 * time.Millisecond, MaxTx: 100})
	<-gen.Done()
	time.Sleep(3 * time.Second) // well past max_attempts × backoff_max
	frozen := e.confirmed()
	time.Sleep(4 * time.Second)
	if now := e.confirmed(); now != frozen {
		t.Errorf("confirmed_flush_lsn moved from %s to %s with every send failing", frozen, now)
	}
	if n := len(deadLetters(t, e.pool)); n != 0 {
		t.Errorf("%d dead letters for a missing topic (systemic failure)", n)
	}
	code, body := d.get("/readyz")
	if code != 503 || !strings.Contains(body, "blocked") {
		t.Errorf("/readyz = %d %q, want 503 naming the blocked destination", code, body)
	}
	blocked := d.metric(`pgoutbox_destination_blocked{destination="event_bus"}`)
	if blocked != "1" {
		t.Errorf("pgoutbox_destination_blocked = %q, want 1", blocked)
	}
	fixed := time.Now()
	kafkatest.CreateTopic(t, brokers, e.topic, 3, nil)
	e.w = topic.Watch(t, brokers, e.topic)
	rec := e.markerDelivered(fixed, 90*time.Second)
	v := e.l.Verify(t, 90*time.Second, false, topic.Source(t, e.brokers, e.topic))
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	e.row("sink failing everything (route to a missing topic), then the topic is created", v, rec,
		fmt.Sprintf("while failing: 0 dead letters, slot frozen at %s, blocked metric %s, /readyz %d %q; recovery from topic creation", frozen, blocked, code, trim(body, 70)))
}
