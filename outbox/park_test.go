package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// One poison message under steady load over many keys, relay defaults but for MaxAttempts (6, so
// that the retries take ~3 s instead of ~50): the healthy keys, including those hashed to the poison's
// lane, keep flowing (≥ 99.9% delivered within 1 s of their commit) while the poison retries; the
// poison is dead-lettered after MaxAttempts; the later messages of its key wait for it and then are
// delivered in order; the slot's confirmed position never passes the parked record; 0 lost.
func TestRelayPoisonKeyHoldsOnlyItsKey(t *testing.T) {
	db := migrated(t)
	o := newOracle(db)
	poisonID := newID()
	var poisonCalls atomic.Int64
	var lastPoisonCall atomic.Int64
	var mu sync.Mutex
	deliveredAt := map[string]time.Time{}
	handler := func(ctx context.Context, m outbox.Message) error {
		if m.ID == poisonID {
			poisonCalls.Add(1)
			lastPoisonCall.Store(time.Now().UnixNano())
			return errors.New("handler says no")
		}
		mu.Lock()
		deliveredAt[m.ID] = time.Now()
		mu.Unlock()
		return o.Handle(ctx, m)
	}
	r := startRelay(t, db, map[outbox.Destination]outbox.Handler{outbox.EventBus: handler},
		outbox.WithSlotName(slotName()), outbox.WithMaxAttempts(6))

	committedAt := map[string]time.Time{}
	commit := func(m outbox.Message) {
		o.commitBatch(t, []outbox.Message{m})
		committedAt[m.ID] = time.Now()
	}
	commit(outbox.Message{ID: poisonID, Destination: outbox.EventBus, Key: "poison", Payload: []byte("0")})
	var followers []string
	var parkedSeen atomic.Bool
	stopWatch := watchParked(t, r, &parkedSeen)
	// 200 msgs/s over 500 keys for 4 s, one message per transaction; the poison key gets two more.
	const rate, keys = 200, 500
	start := time.Now()
	for i := range 4 * rate {
		if i%rate == rate/2 && len(followers) < 2 {
			m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: "poison", Payload: fmt.Append(nil, len(followers)+1)}
			followers = append(followers, m.ID)
			commit(m)
		}
		commit(outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprint("key-", i%keys), Payload: fmt.Append(nil, i)})
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / rate)))
	}
	o.waitDelivered(t, 60*time.Second)
	stopWatch()
	o.check(t, false)

	if n := poisonCalls.Load(); n != 6 {
		t.Errorf("poison tried %d times, want MaxAttempts 6", n)
	}
	if !parkedSeen.Load() {
		t.Error("Stats().Parked never showed the poison key parked")
	}
	mu.Lock()
	defer mu.Unlock()
	dead := time.Unix(0, lastPoisonCall.Load())
	for i, id := range followers {
		if at := deliveredAt[id]; !at.After(dead) {
			t.Errorf("poison key follower %d delivered at %s, before the poison's last attempt at %s", i, at.Format(time.StampMicro), dead.Format(time.StampMicro))
		}
	}
	if len(followers) == 2 && !deliveredAt[followers[0]].Before(deliveredAt[followers[1]]) {
		t.Error("poison key followers delivered out of order")
	}
	late, healthy := 0, 0
	for id, c := range committedAt {
		if id == poisonID || id == followers[0] || id == followers[1] {
			continue
		}
		healthy++
		if deliveredAt[id].Sub(c) > time.Second {
			late++
		}
	}
	t.Logf("%d of %d healthy messages took over 1 s from commit to delivery; poison retried for %s",
		late, healthy, dead.Sub(committedAt[poisonID]).Round(time.Millisecond))
	if late*1000 > healthy {
		t.Errorf("%d of %d healthy messages took over 1 s: over 0.1%%, the poison held back other keys", late, healthy)
	}
	if st := r.Stats(); st.Parked.Keys != 0 || st.Parked.Records != 0 || st.InFlight != 0 {
		t.Errorf("after the run: %+v, want nothing parked or in flight", st)
	}
}

// watchParked polls r.Stats while the test runs: whenever a key is parked, the confirmed position
// must not have passed its oldest record (I4), and seen is set.
func watchParked(t *testing.T, r *outbox.Relay, seen *atomic.Bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			st := r.Stats()
			if st.Parked.Keys == 0 {
				continue
			}
			seen.Store(true)
			if st.ConfirmedLSN > st.Parked.OldestLSN {
				t.Errorf("confirmed %s past the oldest parked record at %s", st.ConfirmedLSN, st.Parked.OldestLSN)
			}
			if st.Parked.Since.IsZero() || st.Parked.Records < 1 {
				t.Errorf("parked stats incomplete: %+v", st.Parked)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// A relay stopped while a key is parked (the drain gives up on the parked message) does not confirm
// past it: the next start re-delivers the poison and what followed it (duplicates after a fault, I5),
// delivers the key in order once the poison succeeds, and nothing is lost.
func TestRelayRestartWhileParked(t *testing.T) {
	db := migrated(t)
	o := newOracle(db)
	slot := slotName()
	poisonID := newID()
	var failing atomic.Bool
	failing.Store(true)
	handler := func(ctx context.Context, m outbox.Message) error {
		if m.ID == poisonID && failing.Load() {
			return errors.New("not yet")
		}
		return o.Handle(ctx, m)
	}
	handlers := map[outbox.Destination]outbox.Handler{outbox.EventBus: handler}
	opts := []outbox.Option{outbox.WithSlotName(slot), outbox.WithRetryBackoff(50*time.Millisecond, 200*time.Millisecond)}
	r := startRelay(t, db, handlers, opts...)
	msgs := []outbox.Message{{ID: poisonID, Destination: outbox.EventBus, Key: "poison", Payload: []byte("p")}}
	for i := range 60 {
		key := fmt.Sprint("k", i%12)
		if i%10 == 0 {
			key = "poison"
		}
		msgs = append(msgs, outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: key, Payload: fmt.Append(nil, i)})
	}
	o.commitBatch(t, msgs[:30])
	o.commitBatch(t, msgs[30:])
	deadline := time.Now().Add(30 * time.Second)
	for o.Count() < 54 || r.Stats().Parked.Records != 7 { // 54 of other keys delivered; the poison and its 6 followers wait
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d, parked %+v; want 54 delivered and 7 parked", o.Count(), r.Stats().Parked)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := r.Stop(stopCtx)
	cancel()
	t.Logf("stop while parked: %v", err)
	var confirmed string
	if err := db.Pool.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if delivered := o.Count(); delivered != 54 {
		t.Fatalf("%d delivered before the restart, want 54", delivered)
	}
	failing.Store(false)
	r2 := startRelay(t, db, handlers, opts...)
	o.waitDelivered(t, 30*time.Second)
	if dups := o.check(t, true); dups == 0 {
		t.Errorf("no duplicates after restarting below the parked message (confirmed %s): the slot passed it", confirmed)
	}
	if st := r2.Stats(); st.DeadLettered != 0 {
		t.Errorf("%d dead letters, want 0", st.DeadLettered)
	}
}
