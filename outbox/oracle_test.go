package outbox_test

import (
	"context"
	"net/url"
	"sort"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pgoutbox/pgoutbox/internal/oracle"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// harness is the oracle of the in-process tests: a ledger of what the test committed to db, and the
// sink (or handler, through Handle) the relay delivers to.
type harness struct {
	*oracle.Ledger
	*oracle.Sink
}

func newOracle(db *pgtest.DB) *harness {
	return &harness{Ledger: oracle.New(db.Pool, "app"), Sink: oracle.NewSink()}
}

// gen commits txs transactions (1–20 messages each) from workers goroutines, each owning keysPerWorker
// keys; rollbackPct of them roll back (negative: none) and some roll back a savepoint. It returns the
// first failure.
func (h *harness) gen(workers, keysPerWorker, txs, rollbackPct int) error {
	return h.Generate(oracle.GenConfig{Workers: workers, Keys: keysPerWorker, MaxTx: txs / workers, MaxMsgs: 20,
		RollbackPct: rollbackPct, Seed: 42}).Wait()
}

// commitBatch enqueues msgs in one committed transaction and records them.
func (h *harness) commitBatch(t *testing.T, msgs []outbox.Message) {
	t.Helper()
	if err := h.Commit(context.Background(), msgs, nil, false); err != nil {
		t.Fatal(err)
	}
}

// waitDelivered waits until every committed message was delivered or dead-lettered.
func (h *harness) waitDelivered(t *testing.T, timeout time.Duration) {
	t.Helper()
	h.WaitAll(t, timeout, h.Source())
}

// check asserts I1 (no loss, counting dead letters), I2 (no phantom), I3 (order per key over first
// deliveries), byte-exact keys and payloads and, when faults is false, I5 (no duplicates). It returns
// the number of duplicates.
func (h *harness) check(t *testing.T, faults bool) (dups int) {
	t.Helper()
	return h.Verify(t, 0, faults, h.Source()).Dups
}

// watchI4 checks I4 on slot until it is stopped.
func (h *harness) watchI4(t *testing.T, slot string) *oracle.I4Watch {
	return h.WatchI4(t, oracle.I4Config{Slot: slot, Delivered: h.Has})
}

func newID() string { return mustV7() }

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
