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

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// hookLog is a webhook endpoint that fails (500) every attempt at the poison message and records when
// each other message arrives.
type hookLog struct {
	mu        sync.Mutex
	poison    string
	attempts  int
	lastTry   time.Time
	arrived   map[string]time.Time
	order     []oracle.Delivery
	committed map[string]time.Time
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("Idempotency-Key")
	h.mu.Lock()
	defer h.mu.Unlock()
	if id == h.poison {
		h.attempts++
		h.lastTry = time.Now()
		http.Error(w, "cannot process this one", http.StatusInternalServerError)
		return
	}
	if _, ok := h.arrived[id]; !ok {
		h.arrived[id] = time.Now()
	}
	h.order = append(h.order, oracle.Delivery{ID: id, Payload: bytes.Clone(body), Pos: "webhook"})
}

// One poison message under steady load over many keys, relay defaults (max_attempts 10, backoff
// 100ms to 30s: ~50 s of retries): ≥ 99.9% of the healthy messages arrive within 1 s of their commit
// while the poison key retries; the poison is dead-lettered after max_attempts; the later messages of
// its key wait for it, then arrive in order; metrics, /readyz and `pgoutbox status` show the parked
// key; the slot reaches the end once the poison is dead-lettered; 0 lost.
func TestPoisonKeyIsolation(t *testing.T) {
	e := newEnv(t, nil)
	h := &hookLog{poison: newID(), arrived: map[string]time.Time{}, committed: map[string]time.Time{}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := e.config("parked")
	c.Webhook, c.DefaultDelivery = srv.URL, true
	c.Extra = "readiness:\n  max_parked_age: 5s\n"
	d := e.start("relay", c)

	commit := func(m outbox.Message) {
		if err := e.l.Commit(context.Background(), []outbox.Message{m}, nil, false); err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.committed[m.ID] = time.Now()
		h.mu.Unlock()
	}
	commit(outbox.Message{ID: h.poison, Destination: outbox.EventBus, Key: "poison", Type: "Test", Payload: []byte("poison")})
	var followers []string
	var seen parkedView
	const rate, keys = 200, 500
	start := time.Now()
	for i := 0; ; i++ {
		if i%(5*rate) == 5*rate-1 && len(followers) < 2 { // at 5 s and 10 s
			m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: "poison", Type: "Test", Payload: fmt.Append(nil, "follower-", len(followers))}
			followers = append(followers, m.ID)
			commit(m)
		}
		commit(outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprint("key-", i%keys), Type: "Test", Payload: fmt.Append(nil, i)})
		if i == 15*rate {
			seen = observeParked(t, d, c)
		}
		h.mu.Lock()
		dead := h.attempts >= 10
		h.mu.Unlock()
		if dead && time.Since(start) > 20*time.Second || time.Since(start) > 3*time.Minute {
			break
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / rate)))
	}
	v := e.l.Verify(t, 60*time.Second, false, func(context.Context) ([]oracle.Delivery, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		ds := append([]oracle.Delivery(nil), h.order...)
		for i := range ds {
			s, _ := e.l.Lookup(ds[i].ID)
			ds[i].Key = s.Key
		}
		return ds, nil
	})
	caughtUp := e.slotReachesEnd(30 * time.Second)
	late, healthy, notes := h.judge(t, followers)
	if code := d.stop(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
	if dead := deadLetters(t, e.pool); len(dead) != 1 || dead[h.poison] == "" {
		t.Errorf("dead letters %v, want exactly the poison message", dead)
	}
	if !seen.ok() {
		t.Errorf("while parked: %s", seen)
	}
	e.row("poison key under load (200 msgs/s over 500 keys), relay defaults", v, caughtUp,
		fmt.Sprintf("%s; %d of %d healthy messages over 1 s; while parked: %s", notes, late, healthy, seen))
}

// judge checks the poison's attempts, the order of its key and the healthy messages' latency.
func (h *hookLog) judge(t *testing.T, followers []string) (late, healthy int, notes string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.attempts != 10 {
		t.Errorf("poison tried %d times, want max_attempts 10", h.attempts)
	}
	for i, id := range followers {
		if at := h.arrived[id]; !at.After(h.lastTry) {
			t.Errorf("poison key follower %d arrived at %s, before the poison's last attempt at %s", i, at.Format(time.StampMilli), h.lastTry.Format(time.StampMilli))
		}
	}
	if len(followers) == 2 && !h.arrived[followers[0]].Before(h.arrived[followers[1]]) {
		t.Error("poison key followers arrived out of order")
	}
	isFollower := map[string]bool{h.poison: true}
	for _, id := range followers {
		isFollower[id] = true
	}
	for id, c := range h.committed {
		if isFollower[id] {
			continue
		}
		healthy++
		if at, ok := h.arrived[id]; !ok || at.Sub(c) > time.Second {
			late++
		}
	}
	if late*1000 > healthy {
		t.Errorf("%d of %d healthy messages arrived over 1 s after their commit: over 0.1%%, the poison held back other keys", late, healthy)
	}
	retried := h.lastTry.Sub(h.committed[h.poison]).Round(time.Second)
	return late, healthy, fmt.Sprintf("poison tried %d× over %s then dead-lettered, its 2 later messages after it in order", h.attempts, retried)
}

// parkedView is what the daemon showed while the poison key was parked.
type parkedView struct{ metric, readyz, status string }

func (p parkedView) ok() bool {
	return p.metric == "1" && strings.Contains(p.readyz, "1 keys parked") && strings.HasPrefix(p.status, "parked keys 1 (")
}

func (p parkedView) String() string {
	return fmt.Sprintf("pgoutbox_parked_keys %s, /readyz %q, status %q", p.metric, trim(p.readyz, 90), trim(p.status, 90))
}

// observeParked reads the parked key from /metrics, /readyz (max_parked_age 5s) and `pgoutbox status`.
func observeParked(t *testing.T, d *daemon, c config) parkedView {
	var v parkedView
	v.metric = d.metric("pgoutbox_parked_keys")
	_, v.readyz = d.get("/readyz")
	_, out, errOut := run(t, 30*time.Second, "--config", c.write(t), "status")
	for _, l := range strings.Split(out+errOut, "\n") {
		if strings.Contains(l, "parked keys") {
			v.status = strings.Join(strings.Fields(l), " ")
		}
	}
	return v
}

// slotReachesEnd waits until the slot's confirmed position reaches the WAL position read now (every
// message committed so far is confirmed) and returns how long that took.
func (e *env) slotReachesEnd(timeout time.Duration) time.Duration {
	e.t.Helper()
	var end string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&end); err != nil {
		e.t.Fatal(err)
	}
	began := time.Now()
	for {
		var reached bool
		err := e.pool.QueryRow(context.Background(), "SELECT COALESCE(confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
			e.slot, end).Scan(&reached)
		if err == nil && reached {
			return time.Since(began)
		}
		if time.Since(began) > timeout {
			e.t.Fatalf("the slot did not reach %s within %s after the poison was dead-lettered (confirmed %s)", end, timeout, e.confirmed())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
