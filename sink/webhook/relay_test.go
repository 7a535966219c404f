package webhook_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// Endpoint behaviours of [endpoint].
const (
	answerOK   = iota
	answerSlow // takes 2 s per request (it has the message when it arrives)
	answer503  // Service Unavailable, Retry-After 1
)

// endpoint is a real HTTP receiver whose behaviour the test switches; it keeps every message it
// accepted (a 2xx, or arrived while slow) for the oracle.
type endpoint struct {
	mode     atomic.Int32
	requests atomic.Int64
	mu       sync.Mutex
	got      []oracle.Delivery
	seen     map[string]bool
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.requests.Add(1)
	mode := e.mode.Load()
	if mode == answer503 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	id := r.Header.Get(webhook.HeaderID)
	e.mu.Lock()
	e.got = append(e.got, oracle.Delivery{ID: id, Payload: body, Pos: r.URL.Path})
	e.seen[id] = true
	e.mu.Unlock()
	if mode == answerSlow {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *endpoint) has(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[id]
}

// source returns what the endpoint accepted, keys taken from the ledger (the sink sends no key).
func (e *endpoint) source(l *oracle.Ledger) oracle.Source {
	return func(context.Context) ([]oracle.Delivery, error) {
		e.mu.Lock()
		ds := append([]oracle.Delivery(nil), e.got...)
		e.mu.Unlock()
		for i := range ds {
			s, _ := l.Lookup(ds[i].ID)
			ds[i].Key = s.Key
		}
		return ds, nil
	}
}

// relayEnv is PostgreSQL → relay → webhook sink → endpoint.
type relayEnv struct {
	t    *testing.T
	db   *pgtest.DB
	slot string
	l    *oracle.Ledger
	ep   *endpoint
}

func newRelayEnv(t *testing.T, mode int32, cfg func(*webhook.Config), opts ...outbox.Option) (*relayEnv, *outbox.Relay) {
	t.Helper()
	db := pgtest.New(t)
	if err := outbox.Migrate(context.Background(), db.Pool, "app"); err != nil {
		t.Fatal(err)
	}
	e := &relayEnv{t: t, db: db, slot: "t_" + pgtest.RandomSuffix(), l: oracle.New(db.Pool, "app"), ep: &endpoint{seen: map[string]bool{}}}
	e.ep.mode.Store(mode)
	hs := httptest.NewServer(e.ep)
	t.Cleanup(hs.Close)
	s := newSink(t, hs.URL+"/hooks", cfg)
	opts = append([]outbox.Option{outbox.WithSlotName(e.slot), outbox.WithSink(outbox.EventBus, s),
		outbox.WithLogger(zaptest.NewLogger(t)), outbox.WithStatusInterval(100 * time.Millisecond),
		outbox.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond), outbox.WithMaxAttempts(2)}, opts...)
	r, err := outbox.Start(context.Background(), db.Pool, "app", nil, opts...)
	if err != nil {
		t.Fatalf("outbox.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
	})
	return e, r
}

func (e *relayEnv) confirmed() string {
	var s string
	_ = e.db.Pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&s)
	return s
}

// waitRequests waits until the endpoint has had n requests (fewer come when messages are
// dead-lettered instead of retried: the test's assertions then say so).
func (e *relayEnv) waitRequests(n int64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for e.ep.requests.Load() < n {
		if time.Now().After(deadline) {
			e.t.Errorf("the endpoint had %d requests in %s, want %d", e.ep.requests.Load(), timeout, n)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitConfirmedPast waits until the slot confirms past frozen.
func (e *relayEnv) waitConfirmedPast(frozen string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for e.confirmed() == frozen {
		if time.Now().After(deadline) {
			e.t.Errorf("confirmed_flush_lsn still %s %s after everything was delivered", frozen, timeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An endpoint that takes 2 s per request while the relay's send deadline (handler timeout) is 1 s:
// nothing is dead-lettered, no attempt is counted, the slot waits; once the endpoint is fast again
// everything is delivered (I1–I4).
func TestRelaySlowEndpointNothingDeadLettered(t *testing.T) {
	t.Parallel()
	e, r := newRelayEnv(t, answerSlow, nil, outbox.WithHandlerTimeout(time.Second))
	i4 := e.l.WatchI4(t, oracle.I4Config{Slot: e.slot, Delivered: e.ep.has})
	if err := e.l.Generate(oracle.GenConfig{Workers: 1, Keys: 6, MaxTx: 15}).Wait(); err != nil {
		t.Fatal(err)
	}
	e.waitRequests(30, 30*time.Second) // several 1 s rounds of every key's head: max_attempts (2) many times over
	frozen := e.confirmed()
	if st := r.Stats(); st.DeadLettered != 0 || st.Failures != 0 || st.Delivered != 0 {
		t.Errorf("while the endpoint is slower than the deadline: %+v, want nothing delivered, failed or dead-lettered", st)
	}
	e.ep.mode.Store(answerOK)
	v := e.l.Verify(t, 60*time.Second, true, e.ep.source(e.l))
	i4.Stop()
	if v.Dead != 0 || r.Stats().DeadLettered != 0 {
		t.Errorf("%d messages dead-lettered, want 0 (a slow endpoint is systemic)", v.Dead)
	}
	if st := r.Stats(); st.Failures != 0 {
		t.Errorf("%d failed attempts counted, want 0", st.Failures)
	}
	e.waitConfirmedPast(frozen, 30*time.Second)
}

// An endpoint answering 503 for a while: 0 dead letters, no attempt counted, the slot frozen while it
// fails, everything delivered afterwards.
func TestRelay503FreezesSlotThenDelivers(t *testing.T) {
	t.Parallel()
	e, r := newRelayEnv(t, answer503, nil)
	i4 := e.l.WatchI4(t, oracle.I4Config{Slot: e.slot, Delivered: e.ep.has})
	if err := e.l.Generate(oracle.GenConfig{Workers: 2, Keys: 4, MaxTx: 10}).Wait(); err != nil {
		t.Fatal(err)
	}
	e.waitRequests(3, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // 5 status intervals: what preceded the first message is confirmed
	frozen := e.confirmed()
	e.waitRequests(e.ep.requests.Load()+10, 15*time.Second) // 10 more rounds
	time.Sleep(time.Second)
	if now := e.confirmed(); now != frozen {
		t.Errorf("confirmed_flush_lsn moved from %s to %s while every request got 503", frozen, now)
	}
	if st := r.Stats(); st.DeadLettered != 0 || st.Failures != 0 || st.Delivered != 0 {
		t.Errorf("while 503: %+v, want nothing delivered, failed or dead-lettered", st)
	}
	e.ep.mode.Store(answerOK)
	v := e.l.Verify(t, 60*time.Second, false, e.ep.source(e.l))
	i4.Stop()
	if v.Dead != 0 {
		t.Errorf("%d messages dead-lettered, want 0", v.Dead)
	}
	e.waitConfirmedPast(frozen, 30*time.Second)
}
