package replication_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/replication"
)

// TestCloseConfirmsUnderLoad: Close's final status update reaches the slot even while the walsender
// is busy sending (the receiver stopped reading, socket buffers full). Closing the socket with unread
// data makes the kernel reset the connection, and a status update still unread by the walsender was
// lost with it; a restart then re-delivered everything since the last periodic update.
func TestCloseConfirmsUnderLoad(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	for round := range 5 {
		slot := newSlot()
		cfg := testConfig(slot, "close")
		cfg.StatusInterval = 10 * time.Second // only Close's final update confirms anything
		cfg.ReadTimeout = 30 * time.Second
		r := startBuffered(t, db, 1, cfg)
		r.waitState(t, replication.Streaming, 30*time.Second)

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { // keep the walsender busy until Close
			for ctx.Err() == nil {
				_, _ = db.Pool.Exec(ctx, `INSERT INTO app.pkg_outbox (id, destination, payload)
					SELECT gen_random_uuid(), 'dest', convert_to(repeat('x', 2000), 'UTF8') FROM generate_series(1, 200)`)
			}
		})
		c := r.nextCommit(t, 30*time.Second)
		for range 3 {
			c = r.nextCommit(t, 30*time.Second)
		}
		r.s.SetFlushed(c.TransactionEndLSN, c.CommitTime)
		time.Sleep(200 * time.Millisecond) // the walsender fills the socket buffers meanwhile
		cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := r.s.Close(cctx)
		ccancel()
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if got := slotConfirmed(t, db, slot); got < c.TransactionEndLSN {
			t.Fatalf("round %d: after Close the slot's confirmed_flush_lsn is %s, want at least %s (the final status update was lost)",
				round, got, c.TransactionEndLSN)
		}
		db.Exec(t, `SELECT pg_drop_replication_slot($1)`, slot)
	}
}
