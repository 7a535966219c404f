package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// sent is what the generator knows of one committed message.
type sent struct {
	key   string
	n     int           // position of the message within its key, in commit order
	upper pglogrepl.LSN // pg_current_wal_insert_lsn() after the commit: >= the transaction's end LSN
}

// oracle records what was committed, rolled back and delivered, and checks I1–I5.
type oracle struct {
	mu         sync.Mutex
	committed  map[string]sent
	rolledBack map[string]bool
	unknown    map[string]bool // commit outcome unknown (the connection broke during COMMIT)
	delivered  []outbox.Record
	seen       map[string]int
	next       map[string]int // per key: the position of its next committed message
}

func newOracle() *oracle {
	return &oracle{committed: map[string]sent{}, rolledBack: map[string]bool{}, unknown: map[string]bool{}, seen: map[string]int{}, next: map[string]int{}}
}

// Send makes the oracle an outbox.Sink that acks everything.
func (o *oracle) Send(_ context.Context, batch []outbox.Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range batch {
		o.delivered = append(o.delivered, r)
		o.seen[r.ID]++
	}
	return nil
}

func (o *oracle) handler(_ context.Context, m outbox.Message) error {
	return o.Send(context.Background(), []outbox.Record{{Message: m}})
}

func (o *oracle) deliveredCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}

// generate commits txs transactions from workers goroutines, each owning keysPerWorker keys; rollbackPct
// of the transactions roll back and some roll back a savepoint.
func (o *oracle) generate(t *testing.T, db *pgtest.DB, workers, keysPerWorker, txs, rollbackPct int) {
	t.Helper()
	if err := o.gen(db, workers, keysPerWorker, txs, rollbackPct); err != nil {
		t.Fatal(err)
	}
}

func (o *oracle) gen(db *pgtest.DB, workers, keysPerWorker, txs, rollbackPct int) error {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range txs / workers {
				size := 1 + rng.IntN(20)
				var msgs, spMsgs []outbox.Message
				for range size {
					k := fmt.Sprintf("w%d-k%d", w, rng.IntN(keysPerWorker))
					msgs = append(msgs, outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: k, Payload: []byte(k)})
				}
				if rng.IntN(10) == 0 {
					spMsgs = []outbox.Message{{ID: newID(), Destination: outbox.EventBus, Key: fmt.Sprintf("w%d-k0", w)}}
				}
				rollback := rng.IntN(100) < rollbackPct
				var upper pglogrepl.LSN
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					if err := outbox.Enqueue(ctx, "app", tx, msgs[:len(msgs)/2]...); err != nil {
						return err
					}
					if spMsgs != nil {
						sp, err := tx.Begin(ctx)
						if err != nil {
							return err
						}
						if err := outbox.Enqueue(ctx, "app", sp, spMsgs...); err != nil {
							return err
						}
						if err := sp.Rollback(ctx); err != nil {
							return err
						}
					}
					if err := outbox.Enqueue(ctx, "app", tx, msgs[len(msgs)/2:]...); err != nil {
						return err
					}
					if rollback {
						return errRollback
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollback) {
					o.mu.Lock()
					for _, m := range msgs {
						o.unknown[m.ID] = true
					}
					for _, m := range spMsgs {
						o.rolledBack[m.ID] = true
					}
					o.mu.Unlock()
					errs <- err
					return
				}
				var lsnErr error
				if !rollback {
					var s string
					// upper stays 0 (unknown: no I4 check for these) when the server went away meanwhile.
					if lsnErr = db.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); lsnErr == nil {
						upper, _ = pglogrepl.ParseLSN(s)
					}
				}
				o.mu.Lock()
				for _, m := range spMsgs {
					o.rolledBack[m.ID] = true
				}
				for _, m := range msgs {
					if rollback {
						o.rolledBack[m.ID] = true
						continue
					}
					o.committed[m.ID] = sent{key: m.Key, n: o.next[m.Key], upper: upper}
					o.next[m.Key]++
				}
				o.mu.Unlock()
				if lsnErr != nil {
					errs <- lsnErr
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

var errRollback = errors.New("rollback on purpose")

func newID() string { return mustV7() }

// waitDelivered waits until every committed message was delivered or dead-lettered.
func (o *oracle) waitDelivered(t *testing.T, db *pgtest.DB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		o.mu.Lock()
		want := len(o.committed)
		o.mu.Unlock()
		dl := int(db.QueryInt(t, "SELECT count(DISTINCT id) FROM app.pkg_outbox_dead_letter"))
		got := o.deliveredCount()
		if got+dl >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: delivered %d + dead-lettered %d of %d committed", timeout, got, dl, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check asserts I1 (no loss, counting dead letters), I2 (no phantom), I3 (order per key over first
// deliveries) and, when faults is false, I5 (no duplicates). It returns the number of duplicates.
func (o *oracle) check(t *testing.T, db *pgtest.DB, faults bool) (dups int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	dead := map[string]bool{}
	rows, err := db.Pool.Query(context.Background(), "SELECT id::text FROM app.pkg_outbox_dead_letter")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		dead[id] = true
	}
	lost := 0
	for id := range o.committed {
		if o.seen[id] == 0 && !dead[id] {
			lost++
		}
	}
	phantom := 0
	for id := range o.seen {
		if o.rolledBack[id] {
			phantom++
		}
		if _, ok := o.committed[id]; !ok && !o.rolledBack[id] && !o.unknown[id] {
			t.Errorf("delivered id %s was never enqueued", id)
		}
	}
	order := 0
	last := map[string]int{}
	first := map[string]bool{}
	for _, r := range o.delivered {
		if first[r.ID] {
			dups++
			continue
		}
		first[r.ID] = true
		s, ok := o.committed[r.ID]
		if !ok {
			continue
		}
		if prev, ok := last[s.key]; ok && s.n < prev {
			order++
		}
		last[s.key] = s.n
	}
	t.Logf("oracle: committed %d, rolled back %d, delivered %d (%d duplicates), dead-lettered %d",
		len(o.committed), len(o.rolledBack), len(o.delivered), dups, len(dead))
	if lost != 0 || phantom != 0 || order != 0 {
		t.Errorf("I1 lost=%d, I2 phantom=%d, I3 order violations=%d: all must be 0", lost, phantom, order)
	}
	if !faults && dups != 0 {
		t.Errorf("I5: %d duplicates without any fault", dups)
	}
	return dups
}

// watchI4 polls the slot's confirmed_flush_lsn and checks that every committed message at or below it
// was already delivered (I4). It stops when ctx ends and returns the number of polls.
func (o *oracle) watchI4(ctx context.Context, t *testing.T, db *pgtest.DB, slot string) <-chan int {
	done := make(chan int, 1)
	go func() {
		polls := 0
		defer func() { done <- polls }()
		for ctx.Err() == nil {
			// While the slot's initial snapshot is pending, the messages committed before the slot's
			// creation lie below its confirmed position without being acked: the pending snapshot
			// (taken again if the relay stops) covers them, and the slot must not confirm anything
			// past its creation.
			var s *string
			var pending bool
			var created string
			err := db.Pool.QueryRow(ctx, `SELECT s.confirmed_flush_lsn::text, COALESCE(r.snapshot_pending, false),
				COALESCE(r.created_lsn::text, '0/0') FROM pg_replication_slots s
				LEFT JOIN app.pkg_outbox_relay r ON r.slot_name = s.slot_name WHERE s.slot_name = $1`, slot).Scan(&s, &pending, &created)
			if err == nil && s != nil {
				f, _ := pglogrepl.ParseLSN(*s)
				c, _ := pglogrepl.ParseLSN(created)
				polls++
				o.mu.Lock()
				if pending {
					if c != 0 && f != c {
						t.Errorf("I4: confirmed_flush_lsn %s moved past the slot's creation %s while its initial snapshot was pending", f, c)
					}
					o.mu.Unlock()
					time.Sleep(15 * time.Millisecond)
					continue
				}
				for id, m := range o.committed {
					if m.upper != 0 && m.upper <= f && o.seen[id] == 0 {
						var dl int
						_ = db.Pool.QueryRow(ctx, "SELECT count(*) FROM app.pkg_outbox_dead_letter WHERE id = $1", id).Scan(&dl)
						if dl == 0 {
							t.Errorf("I4: confirmed_flush_lsn %s passed message %s (committed by %s) before it was acked", f, id, m.upper)
						}
					}
				}
				o.mu.Unlock()
			}
			time.Sleep(15 * time.Millisecond)
		}
	}()
	return done
}

func slotName() string { return "t_" + pgtest.RandomSuffix() }

// relayDB returns a migrated database; with streaming, the pool's sessions (and so the relay's
// walsender) use logical_decoding_work_mem=64kB so that large transactions are really streamed.
func relayDB(t *testing.T, streaming bool) *pgtest.DB {
	t.Helper()
	db := migrated(t)
	if streaming {
		u, _ := url.Parse(db.ConnString)
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "options=-c%20logical_decoding_work_mem%3D64kB"
		db.Pool.Close()
		pool, err := pgxpoolNew(u.String())
		if err != nil {
			t.Fatal(err)
		}
		db.Pool = pool
		db.ConnString = u.String()
	}
	return db
}

func startRelay(t *testing.T, db *pgtest.DB, handlers map[outbox.Destination]outbox.Handler, opts ...outbox.Option) *outbox.Relay {
	t.Helper()
	opts = append([]outbox.Option{outbox.WithLogger(zaptest.NewLogger(t)), outbox.WithStatusInterval(100 * time.Millisecond)}, opts...)
	// Start's ctx is the relay's lifetime (cancelling it is a hard stop): the test ends it with Stop.
	r, err := outbox.Start(context.Background(), db.Pool, "app", handlers, opts...)
	if err != nil {
		t.Fatalf("outbox.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
	})
	return r
}

func sortedKeys[M ~map[K]V, K ~string, V any](m M) []string {
	var out []string
	for k := range m {
		out = append(out, string(k))
	}
	sort.Strings(out)
	return out
}
