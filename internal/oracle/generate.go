package oracle

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// GenConfig shapes generated traffic. The zero value is valid.
type GenConfig struct {
	Prefix      string        // key prefix: keys are "<prefix>-w<worker>-k<n>" ("w<worker>-k<n>" without one)
	Workers     int           // concurrent transactions; each owns its keys, so per-key commit order is defined (0: 2)
	Keys        int           // keys per worker (0: 8)
	MaxMsgs     int           // messages per transaction: 1..MaxMsgs (0: 8)
	Payload     int           // random payload bytes per message (0: a short JSON text)
	RollbackPct int           // transactions rolled back on purpose (0: 10; negative: none)
	Pause       time.Duration // between transactions of one worker
	MaxTx       int           // transactions per worker; 0: until stopped
	Seed        uint64        // seeds the workers' random sizes and keys (0: the clock)
}

func (g GenConfig) withDefaults() GenConfig {
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
	if g.Seed == 0 {
		g.Seed = uint64(time.Now().UnixNano())
	}
	return g
}

func (g GenConfig) key(w, k int) string {
	if g.Prefix == "" {
		return fmt.Sprintf("w%d-k%d", w, k)
	}
	return fmt.Sprintf("%s-w%d-k%d", g.Prefix, w, k)
}

// failurePause is how long a worker waits after a failed transaction (a restarting server, a cut
// connection) before it carries on.
const failurePause = 200 * time.Millisecond

// Generator is traffic running in the background; see [Ledger.Generate]. Safe for concurrent use.
type Generator struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

// Generate starts g's traffic: each worker commits transactions of random sizes on its own keys through
// [Ledger.Commit]; RollbackPct of them roll back on purpose, and one in ten also holds a savepoint (on the
// worker's first key) that is rolled back. A failed transaction is recorded (indeterminate) and the worker
// carries on after a short pause; [Generator.Wait] returns the first failure.
func (l *Ledger) Generate(g GenConfig) *Generator {
	g = g.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	gen := &Generator{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for w := range g.Workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), g.Seed))
			for i := 0; g.MaxTx == 0 || i < g.MaxTx; i++ {
				if ctx.Err() != nil {
					return
				}
				var msgs, sp []outbox.Message
				for range 1 + rng.IntN(g.MaxMsgs) {
					msgs = append(msgs, NewMessage(g.key(w, rng.IntN(g.Keys)), g.Payload, i))
				}
				if rng.IntN(10) == 0 {
					sp = []outbox.Message{NewMessage(g.key(w, 0), g.Payload, i)}
				}
				rollback := rng.IntN(100) < g.RollbackPct
				tctx, tcancel := context.WithTimeout(ctx, 15*time.Second)
				err := l.Commit(tctx, msgs, sp, rollback)
				tcancel()
				if err != nil {
					if ctx.Err() != nil {
						return // stopped mid-transaction: recorded, not a failure
					}
					gen.fail(fmt.Errorf("worker %d, transaction %d: %w", w, i, err))
					if !sleep(ctx, failurePause) {
						return
					}
				}
				if g.Pause > 0 && !sleep(ctx, g.Pause) {
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(gen.done) }()
	return gen
}

func (g *Generator) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
	}
}

// Done is closed when every worker has ended.
func (g *Generator) Done() <-chan struct{} { return g.done }

// Wait waits until every worker has done its MaxTx transactions and returns the first failure.
func (g *Generator) Wait() error {
	<-g.done
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Stop ends the traffic (a transaction in flight is cancelled and recorded as indeterminate), waits for
// the workers and returns the first failure before the stop.
func (g *Generator) Stop() error {
	g.cancel()
	return g.Wait()
}

// sleep waits d; it returns false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// NewID returns a new message id (a UUIDv7).
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// NewMessage returns a message for the event bus on key with a new id, type "Test", header x-n = i and
// payload random bytes (a short JSON text when payload is 0).
func NewMessage(key string, payload, i int) outbox.Message {
	m := outbox.Message{ID: NewID(), Destination: outbox.EventBus, Key: key, Type: "Test",
		Headers: map[string]string{"x-n": fmt.Sprint(i)}}
	if payload > 0 {
		m.Payload = make([]byte, payload)
		_, _ = rand.Read(m.Payload)
	} else {
		m.Payload = fmt.Appendf(nil, `{"key":%q,"i":%d}`, key, i)
	}
	return m
}
