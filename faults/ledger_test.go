//go:build faults

package faults

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// sent is what the generator knows of one committed message.
type sent struct {
	key     string
	n       int           // position of the message within its key, in commit order
	upper   pglogrepl.LSN // pg_current_wal_insert_lsn() read after the COMMIT returned: >= the commit's end LSN; 0 unknown
	payload []byte
	at      time.Time
}

// ledger records every message the generator committed, rolled back, or lost track of (indeterminate:
// the connection broke before the COMMIT's result was known). Safe for concurrent use.
type ledger struct {
	mu         sync.Mutex
	committed  map[string]sent
	rolledBack map[string]bool
	unknown    map[string]bool
	next       map[string]int
	txErrors   int
	lastErr    error
}

func newLedger() *ledger {
	return &ledger{committed: map[string]sent{}, rolledBack: map[string]bool{}, unknown: map[string]bool{}, next: map[string]int{}}
}

// failures describes the generator's failed transactions, for the notes.
func (l *ledger) failures() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.txErrors == 0 {
		return "no failed transactions"
	}
	return fmt.Sprintf("%d failed transactions (%d indeterminate messages), last: %s", l.txErrors, len(l.unknown), trim(l.lastErr.Error(), 60))
}

func (l *ledger) counts() (committed, rolledBack, unknown int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.committed), len(l.rolledBack), len(l.unknown)
}

var errRollback = errors.New("rollback on purpose")

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// commit enqueues msgs in one transaction (plus, when sp is set, a savepoint holding sp that is rolled
// back) and records the outcome. rollback makes the transaction roll back on purpose.
func (l *ledger) commit(ctx context.Context, pool *pgxpool.Pool, msgs, sp []outbox.Message, rollback bool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.Enqueue(ctx, "app", tx, msgs[:len(msgs)/2]...); err != nil {
			return err
		}
		if len(sp) > 0 {
			s, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if err := outbox.Enqueue(ctx, "app", s, sp...); err != nil {
				return err
			}
			if err := s.Rollback(ctx); err != nil {
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
	var upper pglogrepl.LSN
	if err == nil {
		var s string
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if pool.QueryRow(lctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s) == nil {
			upper, _ = pglogrepl.ParseLSN(s)
		}
		cancel()
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range sp {
		if err == nil || errors.Is(err, errRollback) {
			l.rolledBack[m.ID] = true
		} else {
			l.unknown[m.ID] = true
		}
	}
	for _, m := range msgs {
		switch {
		case err == nil:
			l.committed[m.ID] = sent{key: m.Key, n: l.next[m.Key], upper: upper, payload: m.Payload, at: now}
			l.next[m.Key]++
		case errors.Is(err, errRollback):
			l.rolledBack[m.ID] = true
		default:
			// Only a failed COMMIT is truly indeterminate, but any failure is treated so: the oracle neither
			// requires nor forbids these ids.
			l.unknown[m.ID] = true
		}
	}
	if err != nil && !errors.Is(err, errRollback) {
		l.txErrors++
		l.lastErr = err
		return err
	}
	return nil
}

// marker commits one message on its own key and returns its id: a probe for "is the relay delivering
// what commits now". It retries while the database is unavailable (up to a minute).
func (l *ledger) marker(t *testing.T, pool *pgxpool.Pool, key string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: key, Type: "Marker", Payload: []byte("marker " + key)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l.commit(ctx, pool, []outbox.Message{m}, nil, false)
		cancel()
		if err == nil {
			return m.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit marker: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// genConfig shapes the generated traffic.
type genConfig struct {
	Workers     int           // concurrent transactions; each worker owns its keys, so per-key commit order is defined
	Keys        int           // keys per worker
	MaxMsgs     int           // messages per transaction: 1..MaxMsgs
	Payload     int           // random payload bytes per message (0: a short text)
	RollbackPct int           // transactions rolled back on purpose
	Pause       time.Duration // between transactions of one worker
	MaxTx       int           // per worker; 0 = until stopped
}

func (g genConfig) withDefaults() genConfig {
	if g.Workers == 0 {
		g.Workers = 2
	}
	if g.Keys == 0 {
		g.Keys = 8
	}
	if g.MaxMsgs == 0 {
		g.MaxMsgs = 8
	}
	if g.RollbackPct == 0 {
		g.RollbackPct = 10
	}
	return g
}

// generator runs genConfig traffic in the background until stop is called.
type generator struct {
	cancel context.CancelFunc
	done   chan struct{}
	l      *ledger
}

// generate starts traffic into pool. Errors (a restarting server, a cut connection) are recorded as
// indeterminate transactions and the worker carries on after a short pause.
func (l *ledger) generate(pool *pgxpool.Pool, prefix string, g genConfig) *generator {
	g = g.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	gen := &generator{cancel: cancel, done: make(chan struct{}), l: l}
	var wg sync.WaitGroup
	for w := range g.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for i := 0; g.MaxTx == 0 || i < g.MaxTx; i++ {
				if ctx.Err() != nil {
					return
				}
				var msgs, sp []outbox.Message
				for range 1 + rng.IntN(g.MaxMsgs) {
					k := fmt.Sprintf("%s-w%d-k%d", prefix, w, rng.IntN(g.Keys))
					msgs = append(msgs, genMessage(k, g.Payload, i))
				}
				if rng.IntN(10) == 0 {
					sp = []outbox.Message{genMessage(fmt.Sprintf("%s-w%d-k0", prefix, w), g.Payload, i)}
				}
				tctx, tcancel := context.WithTimeout(ctx, 15*time.Second)
				err := l.commit(tctx, pool, msgs, sp, rng.IntN(100) < g.RollbackPct)
				tcancel()
				if err != nil {
					select {
					case <-ctx.Done():
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
				if g.Pause > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(g.Pause):
					}
				}
			}
		}()
	}
	go func() { wg.Wait(); close(gen.done) }()
	return gen
}

// stop ends the traffic and waits for the workers.
func (g *generator) stop() {
	g.cancel()
	<-g.done
}

func genMessage(key string, payload, i int) outbox.Message {
	m := outbox.Message{ID: newID(), Destination: outbox.EventBus, Key: key, Type: "Test",
		Headers: map[string]string{"x-n": fmt.Sprint(i)}}
	if payload > 0 {
		m.Payload = make([]byte, payload)
		_, _ = rand.Read(m.Payload)
	} else {
		m.Payload = []byte(fmt.Sprintf(`{"key":%q,"i":%d}`, key, i))
	}
	return m
}
